//! The Proxy-Wasm ABI 0.2.1 host functions: each `extern` declaration sits directly above its
//! typed wrapper. Wrappers turn the status into a value (NOT_FOUND → null, CAS_MISMATCH →
//! error.CasMismatch) and every other failure into an error the caller must handle.
//! Nothing outside this file calls an `extern` function.
const std = @import("std");
const text = @import("message.zig");

pub const allocator = std.heap.wasm_allocator;

/// Status codes from the spec (abi-versions/v0.2.1).
pub const Status = enum(u32) {
    ok = 0,
    not_found = 1,
    bad_argument = 2,
    serialization_failure = 3,
    parse_failure = 4,
    invalid_memory_access = 6,
    empty = 7,
    cas_mismatch = 8,
    internal_failure = 10,
    unimplemented = 12,
    _,
};

pub const Error = error{ HostFailure, CasMismatch, OutOfMemory };

fn check(status: u32) Error!void {
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return,
        .cas_mismatch => return error.CasMismatch,
        else => return error.HostFailure,
    }
}

pub const LogLevel = enum(u32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4, critical = 5 };
pub const MapType = enum(u32) {
    request_headers = 0,
    request_trailers = 1,
    response_headers = 2,
    response_trailers = 3,
    http_call_response_headers = 6,
};
pub const BufferType = enum(u32) {
    request_body = 0,
    response_body = 1,
    http_call_response_body = 4,
    vm_configuration = 6,
    plugin_configuration = 7,
    redis_call_response = 9,
};
pub const MetricType = enum(u32) { counter = 0, gauge = 1, histogram = 2 };
pub const Action = enum(u32) { @"continue" = 0, pause = 1 };

/// Bytes the host allocated in our memory (through proxy_on_memory_allocate); we own them.
pub const HostBytes = struct {
    bytes: []u8,

    pub fn deinit(self: *HostBytes) void {
        if (self.bytes.len > 0) allocator.free(self.bytes);
        self.* = undefined;
    }
};

fn hostBytes(ptr: ?[*]u8, len: usize) HostBytes {
    if (ptr == null or len == 0) return .{ .bytes = &.{} };
    return .{ .bytes = ptr.?[0..len] };
}

// ---- logging -------------------------------------------------------------------------------

extern "env" fn proxy_log(level: u32, message: [*]const u8, message_len: usize) u32;

pub fn log(level: LogLevel, message: []const u8) void {
    // A failed log call has nowhere to be reported; dropping it is the only option.
    _ = proxy_log(@backingInt(level), message.ptr, message.len);
}

extern "env" fn proxy_get_log_level(ret_level: *u32) u32;

pub fn logLevel() LogLevel {
    var level: u32 = @backingInt(LogLevel.info);
    if (proxy_get_log_level(&level) != 0) return .info;
    if (level > @backingInt(LogLevel.critical)) return .critical;
    return @fromBackingInt(@intCast(level));
}

/// Formats into a stack buffer (message.zig: `{s}` and `{d}`); a line longer than the buffer
/// is cut, never dropped.
pub fn logf(level: LogLevel, comptime format: []const u8, args: anytype) void {
    var buffer: [1024]u8 = undefined;
    log(level, text.print(&buffer, format, args));
}

// ---- time ------------------------------------------------------------------------------------

extern "wasi_snapshot_preview1" fn clock_time_get(clock_id: u32, precision: u64, ret_time: *u64) u16;

/// Wall-clock time in milliseconds since the Unix epoch (windows are aligned to it).
pub fn nowMs() u64 {
    var time_ns: u64 = 0;
    const realtime = 0;
    if (clock_time_get(realtime, 1_000_000, &time_ns) != 0) return 0;
    return time_ns / std.time.ns_per_ms;
}

// ---- buffers ---------------------------------------------------------------------------------

extern "env" fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, ret_ptr: *?[*]u8, ret_size: *usize) u32;

/// Returns null when the buffer is empty or absent.
pub fn getBuffer(buffer_type: BufferType, start: usize, max_size: usize) Error!?HostBytes {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    const status = proxy_get_buffer_bytes(@backingInt(buffer_type), start, max_size, &ptr, &len);
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return hostBytes(ptr, len),
        .not_found, .empty => return null,
        else => return error.HostFailure,
    }
}

extern "env" fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: [*]const u8, data_len: usize) u32;

/// Replaces `size` bytes at `start` of the buffer with `data`.
pub fn setBuffer(buffer_type: BufferType, start: usize, size: usize, data: []const u8) Error!void {
    return check(proxy_set_buffer_bytes(@backingInt(buffer_type), start, size, data.ptr, data.len));
}

// ---- header maps -----------------------------------------------------------------------------

extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, key_len: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;

/// The header's value, or null when the header is absent.
pub fn getHeader(map: MapType, name: []const u8) Error!?HostBytes {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    const status = proxy_get_header_map_value(@backingInt(map), name.ptr, name.len, &ptr, &len);
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return hostBytes(ptr, len),
        .not_found => return null,
        else => return error.HostFailure,
    }
}

extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn addHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    return check(proxy_add_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

extern "env" fn proxy_replace_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn replaceHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    return check(proxy_replace_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

extern "env" fn proxy_remove_header_map_value(map: u32, key: [*]const u8, key_len: usize) u32;

pub fn removeHeader(map: MapType, name: []const u8) Error!void {
    const status = proxy_remove_header_map_value(@backingInt(map), name.ptr, name.len);
    if (status == @backingInt(Status.not_found)) return;
    return check(status);
}

// ---- properties ------------------------------------------------------------------------------

extern "env" fn proxy_get_property(path: [*]const u8, path_len: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;

/// `path` segments are separated by NUL bytes (e.g. "source\x00address").
pub fn getProperty(path: []const u8) Error!?HostBytes {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    const status = proxy_get_property(path.ptr, path.len, &ptr, &len);
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return hostBytes(ptr, len),
        .not_found => return null,
        else => return error.HostFailure,
    }
}

extern "env" fn proxy_set_property(path: [*]const u8, path_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn setProperty(path: []const u8, value: []const u8) Error!void {
    return check(proxy_set_property(path.ptr, path.len, value.ptr, value.len));
}

// ---- shared data -----------------------------------------------------------------------------

extern "env" fn proxy_get_shared_data(key: [*]const u8, key_len: usize, ret_value: *?[*]u8, ret_value_len: *usize, ret_cas: *u32) u32;

pub const SharedValue = struct { value: HostBytes, cas: u32 };

/// The value and its compare-and-swap token, or null when the key was never set.
pub fn getSharedData(key: []const u8) Error!?SharedValue {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    var cas: u32 = 0;
    const status = proxy_get_shared_data(key.ptr, key.len, &ptr, &len, &cas);
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return .{ .value = hostBytes(ptr, len), .cas = cas },
        .not_found => return null,
        else => return error.HostFailure,
    }
}

extern "env" fn proxy_set_shared_data(key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize, cas: u32) u32;

/// `cas` 0 writes unconditionally; otherwise error.CasMismatch when another writer came first.
pub fn setSharedData(key: []const u8, value: []const u8, cas: u32) Error!void {
    return check(proxy_set_shared_data(key.ptr, key.len, value.ptr, value.len, cas));
}

// ---- streams ---------------------------------------------------------------------------------

extern "env" fn proxy_send_local_response(status_code: u32, details: [*]const u8, details_len: usize, body: [*]const u8, body_len: usize, headers: [*]const u8, headers_len: usize, grpc_status: i32) u32;

/// `serialized_headers` is a header map in the spec's wire format (see HeaderMapWriter).
pub fn sendLocalResponse(status_code: u32, details: []const u8, body: []const u8, serialized_headers: []const u8) Error!void {
    const no_grpc_status = -1;
    return check(proxy_send_local_response(status_code, details.ptr, details.len, body.ptr, body.len, serialized_headers.ptr, serialized_headers.len, no_grpc_status));
}

extern "env" fn proxy_done() u32;

/// Lets the host delete a context whose proxy_on_done answered "not yet".
pub fn done() Error!void {
    return check(proxy_done());
}

extern "env" fn proxy_continue_stream(stream_type: u32) u32;

pub fn continueRequest() Error!void {
    return check(proxy_continue_stream(0));
}

/// Reads a header of the HTTP call response being delivered (map 6), as a number.
pub fn httpCallStatus() ?u16 {
    var status = (getHeader(.http_call_response_headers, ":status") catch return null) orelse return null;
    defer status.deinit();
    return std.fmt.parseInt(u16, status.bytes, 10) catch null;
}

// ---- calls out -------------------------------------------------------------------------------

extern "env" fn proxy_http_call(upstream: [*]const u8, upstream_len: usize, headers: [*]const u8, headers_len: usize, body: [*]const u8, body_len: usize, trailers: [*]const u8, trailers_len: usize, timeout_ms: u32, ret_call_id: *u32) u32;

/// Starts an HTTP call to an Envoy cluster; the answer arrives in proxy_on_http_call_response.
pub fn httpCall(cluster: []const u8, serialized_headers: []const u8, body: []const u8, timeout_ms: u32) Error!u32 {
    var call_id: u32 = 0;
    const no_trailers = [_]u8{ 0, 0, 0, 0 };
    try check(proxy_http_call(cluster.ptr, cluster.len, serialized_headers.ptr, serialized_headers.len, body.ptr, body.len, &no_trailers, no_trailers.len, timeout_ms, &call_id));
    return call_id;
}

extern "env" fn proxy_set_effective_context(context_id: u32) u32;

/// Makes later host calls act on `context_id` (needed in callbacks that arrive on the root).
pub fn setEffectiveContext(context_id: u32) Error!void {
    return check(proxy_set_effective_context(context_id));
}

extern "env" fn proxy_set_tick_period_milliseconds(period_ms: u32) u32;

pub fn setTickPeriod(period_ms: u32) Error!void {
    return check(proxy_set_tick_period_milliseconds(period_ms));
}

/// Higress's Redis ABI: only the Higress build references these (a stock Envoy refuses to load
/// a module that imports them).
pub const higress = struct {
    extern "env" fn proxy_redis_init(upstream: [*]const u8, upstream_len: usize, username: [*]const u8, username_len: usize, password: [*]const u8, password_len: usize, timeout_ms: u32) u32;

    pub fn redisInit(upstream: []const u8, username: []const u8, password: []const u8, timeout_ms: u32) Error!void {
        return check(proxy_redis_init(upstream.ptr, upstream.len, username.ptr, username.len, password.ptr, password.len, timeout_ms));
    }

    extern "env" fn proxy_redis_call(upstream: [*]const u8, upstream_len: usize, query: [*]const u8, query_len: usize, ret_callout_id: *u32) u32;

    /// Sends one RESP command; the reply arrives in proxy_on_redis_call_response (buffer 9).
    pub fn redisCall(upstream: []const u8, query: []const u8) Error!u32 {
        var callout_id: u32 = 0;
        try check(proxy_redis_call(upstream.ptr, upstream.len, query.ptr, query.len, &callout_id));
        return callout_id;
    }
};

// ---- environment (WASI) ----------------------------------------------------------------------

extern "wasi_snapshot_preview1" fn environ_sizes_get(ret_count: *usize, ret_buffer_size: *usize) u16;
extern "wasi_snapshot_preview1" fn environ_get(ret_pointers: [*][*:0]u8, ret_buffer: [*]u8) u16;

/// A variable Envoy passes to the VM (`vm_config.environment_variables`), copied into `out`.
/// How secrets such as the bridge token reach the filter without being in its config.
pub fn environmentVariable(name: []const u8, out: []u8) ?[]u8 {
    var count: usize = 0;
    var size: usize = 0;
    if (environ_sizes_get(&count, &size) != 0 or count == 0 or size > 64 * 1024) return null;
    const pointers = allocator.alloc([*:0]u8, count) catch return null;
    defer allocator.free(pointers);
    const buffer = allocator.alloc(u8, size) catch return null;
    defer allocator.free(buffer);
    if (environ_get(pointers.ptr, buffer.ptr) != 0) return null;
    for (pointers) |pointer| {
        const entry = std.mem.span(pointer);
        if (entry.len > name.len and entry[name.len] == '=' and std.mem.eql(u8, entry[0..name.len], name)) {
            const value = entry[name.len + 1 ..];
            if (value.len > out.len) return null;
            @memcpy(out[0..value.len], value);
            return out[0..value.len];
        }
    }
    return null;
}

// ---- metrics ---------------------------------------------------------------------------------

extern "env" fn proxy_define_metric(metric_type: u32, name: [*]const u8, name_len: usize, ret_id: *u32) u32;

pub fn defineMetric(metric_type: MetricType, name: []const u8) Error!u32 {
    var id: u32 = 0;
    try check(proxy_define_metric(@backingInt(metric_type), name.ptr, name.len, &id));
    return id;
}

extern "env" fn proxy_record_metric(metric_id: u32, value: u64) u32;

pub fn recordMetric(metric_id: u32, value: u64) void {
    _ = proxy_record_metric(metric_id, value); // best effort, as increments
}

/// Defines one metric per field of `T` (each a u32 id) named `prefix ++ field`: a gauge when
/// the field name is listed in `gauges`, else a counter. A metric the host refuses gets id 0,
/// which later increments simply miss: metrics never fail a request.
pub fn defineMetrics(comptime T: type, comptime prefix: []const u8, comptime gauges: []const []const u8) T {
    var defined: T = .{};
    inline for (comptime std.meta.fieldNames(T)) |name| {
        const is_gauge = comptime for (gauges) |gauge| {
            if (std.mem.eql(u8, gauge, name)) break true;
        } else false;
        @field(defined, name) = defineMetric(if (is_gauge) .gauge else .counter, prefix ++ name) catch 0;
    }
    return defined;
}

extern "env" fn proxy_increment_metric(metric_id: u32, offset: i64) u32;

pub fn incrementMetric(metric_id: u32, offset: i64) void {
    // Metrics are best effort: a failed increment must not fail the request.
    _ = proxy_increment_metric(metric_id, offset);
}

// ---- header map wire format ------------------------------------------------------------------

/// Serializes headers in the spec's format into a caller-provided buffer:
/// u32 count, (u32 name_len, u32 value_len) per pair, then each name and value NUL-terminated.
pub fn HeaderMapWriter(comptime pairs_max: usize) type {
    return struct {
        const Self = @This();
        names: [pairs_max][]const u8 = undefined,
        values: [pairs_max][]const u8 = undefined,
        count: usize = 0,

        pub fn add(self: *Self, name: []const u8, value: []const u8) void {
            std.debug.assert(self.count < pairs_max);
            self.names[self.count] = name;
            self.values[self.count] = value;
            self.count += 1;
        }

        pub fn serializedSize(self: *const Self) usize {
            var size: usize = 4 + 8 * self.count;
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                size += name.len + 1 + value.len + 1;
            }
            return size;
        }

        pub fn write(self: *const Self, out: []u8) error{NoSpaceLeft}![]u8 {
            const size = self.serializedSize();
            if (out.len < size) return error.NoSpaceLeft;
            std.mem.writeInt(u32, out[0..4], @intCast(self.count), .little);
            var at: usize = 4;
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                std.mem.writeInt(u32, out[at..][0..4], @intCast(name.len), .little);
                std.mem.writeInt(u32, out[at + 4 ..][0..4], @intCast(value.len), .little);
                at += 8;
            }
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                @memcpy(out[at..][0..name.len], name);
                out[at + name.len] = 0;
                at += name.len + 1;
                @memcpy(out[at..][0..value.len], value);
                out[at + value.len] = 0;
                at += value.len + 1;
            }
            std.debug.assert(at == size);
            return out[0..size];
        }
    };
}

test "header map wire format matches the spec's byte layout" {
    var writer: HeaderMapWriter(2) = .{};
    writer.add("a", "bc");
    writer.add("retry-after", "7");
    var buffer: [64]u8 = undefined;
    const bytes = try writer.write(&buffer);
    const expected = [_]u8{
        2, 0, 0, 0, // two pairs
        1, 0, 0, 0, 2, 0, 0, 0, // "a" → "bc"
        11, 0, 0, 0, 1, 0, 0, 0, // "retry-after" → "7"
    } ++ "a\x00bc\x00retry-after\x007\x00".*;
    try std.testing.expectEqualSlices(u8, &expected, bytes);
}
