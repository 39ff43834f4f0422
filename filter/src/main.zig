//! Proxy-Wasm ABI 0.2.1 exports: the host calls these; each finds its context in the table and
//! hands over to `filter.zig`. Contexts are created and freed here and nowhere else.
const std = @import("std");
const filter = @import("http/context.zig");
const host = @import("abi/host.zig");
const redis_store = @import("store/redis.zig");

const allocator = host.allocator;

var root_contexts: std.AutoHashMapUnmanaged(u32, *filter.RootContext) = .empty;
var http_contexts: std.AutoHashMapUnmanaged(u32, *filter.HttpContext) = .empty;

export fn proxy_abi_version_0_2_1() void {}

/// Memory the host hands to us (header values, bodies) is allocated here and freed by us.
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const bytes = allocator.alloc(u8, size) catch return null;
    return bytes.ptr;
}

export fn proxy_on_vm_start(root_context_id: u32, vm_config_size: u32) u32 {
    _ = root_context_id;
    _ = vm_config_size;
    filter.metrics = filter.Metrics.define();
    redis_store.start();
    return 1;
}

export fn proxy_on_context_create(context_id: u32, parent_context_id: u32) void {
    if (parent_context_id == 0) {
        const root = allocator.create(filter.RootContext) catch return outOfMemory("root context");
        root.* = .{ .id = context_id };
        root_contexts.put(allocator, context_id, root) catch {
            allocator.destroy(root);
            return outOfMemory("root context table");
        };
        return;
    }
    const http = allocator.create(filter.HttpContext) catch return outOfMemory("http context");
    http.* = .{ .id = context_id, .root_id = parent_context_id };
    http_contexts.put(allocator, context_id, http) catch {
        allocator.destroy(http);
        return outOfMemory("http context table");
    };
}

fn outOfMemory(what: []const u8) void {
    // A request without a context is passed through unlimited; say so loudly.
    host.logf(.critical, "out of memory creating {s}; requests pass unlimited", .{what});
}

export fn proxy_on_configure(root_context_id: u32, plugin_config_size: u32) u32 {
    const root = root_contexts.get(root_context_id) orelse return 0;
    return @intFromBool(root.configure(plugin_config_size));
}

export fn proxy_on_request_headers(context_id: u32, header_count: u32, end_of_stream: u32) u32 {
    _ = header_count;
    const http = http_contexts.get(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(http.onRequestHeaders(root_contexts.get(http.root_id), end_of_stream != 0));
}

export fn proxy_on_request_body(context_id: u32, body_size: u32, end_of_stream: u32) u32 {
    const http = http_contexts.get(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(http.onRequestBody(body_size, end_of_stream != 0));
}

export fn proxy_on_request_trailers(context_id: u32, trailer_count: u32) u32 {
    _ = context_id;
    _ = trailer_count;
    return @backingInt(host.Action.@"continue");
}

export fn proxy_on_response_headers(context_id: u32, header_count: u32, end_of_stream: u32) u32 {
    _ = header_count;
    const http = http_contexts.get(context_id) orelse return @backingInt(host.Action.@"continue");
    const action = http.onResponseHeaders();
    if (end_of_stream != 0) http.onLog(); // a header-only response ends here
    return @backingInt(action);
}

export fn proxy_on_response_body(context_id: u32, body_size: u32, end_of_stream: u32) u32 {
    const http = http_contexts.get(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(http.onResponseBody(body_size, end_of_stream != 0));
}

export fn proxy_on_response_trailers(context_id: u32, trailer_count: u32) u32 {
    _ = trailer_count;
    const http = http_contexts.get(context_id) orelse return @backingInt(host.Action.@"continue");
    return @backingInt(http.onResponseTrailers());
}

export fn proxy_on_log(context_id: u32) void {
    const http = http_contexts.get(context_id) orelse return;
    http.onLog();
}

export fn proxy_on_done(context_id: u32) u32 {
    const http = http_contexts.get(context_id) orelse return 1;
    return @intFromBool(http.onDone());
}

export fn proxy_on_delete(context_id: u32) void {
    if (http_contexts.fetchRemove(context_id)) |entry| {
        entry.value.deinit();
        allocator.destroy(entry.value);
        return;
    }
    if (root_contexts.fetchRemove(context_id)) |entry| {
        entry.value.deinit();
        allocator.destroy(entry.value);
    }
}

export fn proxy_on_tick(root_context_id: u32) void {
    redis_store.onTick(root_context_id);
}

/// A reply from the tokenlimit bridge (stock Envoy build).
export fn proxy_on_http_call_response(root_context_id: u32, call_id: u32, header_count: u32, body_size: u32, trailer_count: u32) void {
    _ = root_context_id;
    _ = trailer_count;
    const status = if (header_count > 0) host.httpCallStatus() else null;
    var bridge_error_buffer: [64]u8 = undefined;
    var bridge_error: []const u8 = "";
    if (host.getHeader(.http_call_response_headers, "x-tokenlimit-bridge-error") catch null) |value| {
        var bytes = value;
        defer bytes.deinit();
        const n = @min(bytes.bytes.len, bridge_error_buffer.len);
        @memcpy(bridge_error_buffer[0..n], bytes.bytes[0..n]);
        bridge_error = bridge_error_buffer[0..n];
    }
    var body = if (status == 200 and body_size > 0) host.getBuffer(.http_call_response_body, 0, body_size) catch null else null;
    defer if (body) |*bytes| bytes.deinit();
    const reply: ?[]const u8 = if (body) |bytes| bytes.bytes else null;
    deliver(redis_store.onReply(call_id, reply, redis_store.bridgeReply(status, bridge_error)));
}

/// A reply from Redis through Higress's Redis ABI (Higress build).
export fn proxy_on_redis_call_response(root_context_id: u32, call_id: u32, status: u32, response_size: u32) void {
    _ = root_context_id;
    var body = if (status == 0 and response_size > 0) host.getBuffer(.redis_call_response, 0, response_size) catch null else null;
    defer if (body) |*bytes| bytes.deinit();
    const reply: ?[]const u8 = if (body) |bytes| bytes.bytes else null;
    deliver(redis_store.onReply(call_id, reply, .redis_unreachable));
}

fn deliver(delivery: ?redis_store.Delivery) void {
    const ready = delivery orelse return;
    // The request may have ended (client gone) while it waited: nothing left to resume.
    const http = http_contexts.get(ready.http_context_id) orelse return;
    host.setEffectiveContext(http.id) catch return;
    http.onStoreReply(ready.outcome);
}
