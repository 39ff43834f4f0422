//! Proxy-Wasm ABI 0.2.1 exports: the host calls these; each finds its context in the table and
//! hands over to http/ (requests, configuration) or store/ (replies of calls out). Contexts are
//! created and freed here and nowhere else.
const std = @import("std");
const host = @import("abi/host.zig");
const http = @import("http/context.zig");
const metrics = @import("abi/metrics.zig");
const redis = @import("store/redis.zig");
const root = @import("http/root.zig");
const wait = @import("http/wait.zig"); // near the limit (issue 13)

const allocator = host.allocator;

/// Every live context, root and HTTP, in one table: one hash map instantiation instead of two
/// (issue 17, module size), keyed by a multiplicative hash (the host numbers contexts 1, 2, 3,
/// ...; std's Wyhash is a kilobyte of code for a u32).
var contexts: std.HashMapUnmanaged(u32, Context, IdContext, std.hash_map.default_max_load_percentage) = .empty;

const Context = union(enum) {
    root: *root.RootContext,
    http: *http.HttpContext,
};

const IdContext = struct {
    pub fn hash(_: IdContext, id: u32) u64 {
        return @as(u64, id) *% 0x9E3779B97F4A7C15; // Fibonacci hashing: the top bits vary
    }
    pub fn eql(_: IdContext, a: u32, b: u32) bool {
        return a == b;
    }
};

fn rootContext(context_id: u32) ?*root.RootContext {
    return switch (contexts.get(context_id) orelse return null) {
        .root => |context| context,
        .http => null,
    };
}

export fn proxy_abi_version_0_2_1() void {}

/// Memory the host hands to us (header values, bodies) is allocated here and freed by us.
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const bytes = allocator.alloc(u8, size) catch return null;
    return bytes.ptr;
}

export fn proxy_on_vm_start(root_context_id: u32, vm_config_size: u32) u32 {
    _ = root_context_id;
    _ = vm_config_size;
    metrics.define();
    redis.start();
    return 1;
}

export fn proxy_on_context_create(context_id: u32, parent_context_id: u32) void {
    if (parent_context_id == 0) {
        const context = allocator.create(root.RootContext) catch return outOfMemory("root context");
        context.* = .{ .id = context_id };
        contexts.put(allocator, context_id, .{ .root = context }) catch {
            allocator.destroy(context);
            return outOfMemory("root context table");
        };
        return;
    }
    const context = allocator.create(http.HttpContext) catch return outOfMemory("http context");
    context.* = .{ .id = context_id, .root_id = parent_context_id };
    contexts.put(allocator, context_id, .{ .http = context }) catch {
        allocator.destroy(context);
        return outOfMemory("http context table");
    };
}

fn outOfMemory(what: []const u8) void {
    // A request without a context is passed through unlimited; say so loudly.
    host.logf(.critical, "out of memory creating {s}; requests pass unlimited", .{what});
}

export fn proxy_on_configure(root_context_id: u32, plugin_config_size: u32) u32 {
    const context = rootContext(root_context_id) orelse return 0;
    std.debug.assert(context.id == root_context_id);
    _ = host.refreshLogLevel();
    return @intFromBool(context.configure(plugin_config_size));
}

/// The HTTP context of `context_id`, or null for one the table does not hold (created while
/// memory ran out: such a request passes unlimited).
fn httpContext(context_id: u32) ?*http.HttpContext {
    const context = switch (contexts.get(context_id) orelse return null) {
        .http => |context| context,
        .root => return null,
    };
    std.debug.assert(context.id == context_id);
    return context;
}

export fn proxy_on_request_headers(context_id: u32, header_count: u32, end_of_stream: u32) u32 {
    _ = header_count;
    const context = httpContext(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(context.onRequestHeaders(rootContext(context.root_id), end_of_stream != 0));
}

export fn proxy_on_request_body(context_id: u32, body_size: u32, end_of_stream: u32) u32 {
    const context = httpContext(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(context.onRequestBody(body_size, end_of_stream != 0));
}

export fn proxy_on_request_trailers(context_id: u32, trailer_count: u32) u32 {
    _ = context_id;
    _ = trailer_count;
    return @backingInt(host.Action.@"continue");
}

export fn proxy_on_response_headers(context_id: u32, header_count: u32, end_of_stream: u32) u32 {
    _ = header_count;
    const context = httpContext(context_id) orelse return @backingInt(host.Action.@"continue");
    const action = context.onResponseHeaders();
    if (end_of_stream != 0) context.onLog(); // a header-only response ends here
    return @backingInt(action);
}

export fn proxy_on_response_body(context_id: u32, body_size: u32, end_of_stream: u32) u32 {
    const context = httpContext(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(context.onResponseBody(body_size, end_of_stream != 0));
}

export fn proxy_on_response_trailers(context_id: u32, trailer_count: u32) u32 {
    _ = trailer_count;
    const context = httpContext(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(context.onResponseTrailers());
}

export fn proxy_on_log(context_id: u32) void {
    const context = httpContext(context_id) orelse return;
    context.onLog();
}

export fn proxy_on_done(context_id: u32) u32 {
    const context = httpContext(context_id) orelse return 1;
    return @intFromBool(context.onDone());
}

export fn proxy_on_delete(context_id: u32) void {
    const entry = contexts.fetchRemove(context_id) orelse return;
    switch (entry.value) {
        inline else => |context| {
            context.deinit();
            allocator.destroy(context);
        },
    }
}

export fn proxy_on_tick(root_context_id: u32) void {
    _ = host.refreshLogLevel(); // follows a level changed through Envoy's admin
    wait.onTick(root_context_id, &httpContext);
    deliver(redis.onTick(root_context_id)); // coalesced admissions past their deadline
}

/// A reply from the tokenlimit bridge (stock Envoy build).
export fn proxy_on_http_call_response(root_context_id: u32, call_id: u32, header_count: u32, body_size: u32, trailer_count: u32) void {
    _ = root_context_id;
    _ = trailer_count;
    deliver(redis.onHttpCallResponse(call_id, header_count, body_size));
}

/// A reply from Redis through Higress's Redis ABI (Higress build).
export fn proxy_on_redis_call_response(root_context_id: u32, call_id: u32, status: u32, response_size: u32) void {
    _ = root_context_id;
    deliver(redis.onRedisCallResponse(call_id, status, response_size));
}

fn deliver(first: ?redis.Delivery) void {
    // One reply may answer several requests (coalesced admissions, store/coalesce.zig).
    var next = first;
    while (next) |ready| : (next = redis.nextDelivery()) {
        // The request may have ended (client gone) while it waited: nothing left to resume.
        const context = httpContext(ready.http_context_id) orelse continue;
        host.setEffectiveContext(context.id) catch continue;
        context.onStoreReply(ready.outcome);
    }
}
