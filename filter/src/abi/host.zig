//! The Proxy-Wasm ABI 0.2.1 host functions: each `extern` declaration sits directly above its
//! typed wrapper. Wrappers switch over the status: expected outcomes become values (NOT_FOUND →
//! null, CAS_MISMATCH on shared data → error.CasMismatch); any other status is reported through
//! `failed` (logged once per kind of call, counted in tokenlimit_host_call_failures every time)
//! and returned as error.HostFailure. So a caller that treats a failure as "absent" does so
//! knowingly: the failure itself was never dropped. Nothing outside this file calls an `extern`.
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

/// The host functions, by their ABI names, for reporting failures (one log line per kind per VM).
pub const Call = enum {
    proxy_log,
    proxy_get_log_level,
    clock_time_get,
    proxy_get_buffer_bytes,
    proxy_set_buffer_bytes,
    proxy_get_header_map_value,
    proxy_add_header_map_value,
    proxy_replace_header_map_value,
    proxy_remove_header_map_value,
    proxy_get_property,
    proxy_set_property,
    proxy_get_shared_data,
    proxy_set_shared_data,
    proxy_send_local_response,
    proxy_done,
    proxy_continue_stream,
    proxy_http_call,
    proxy_set_effective_context,
    proxy_set_tick_period_milliseconds,
    proxy_redis_init,
    proxy_redis_call,
    environ_get,
    proxy_define_metric,
    proxy_record_metric,
    proxy_increment_metric,
};

/// Metric id of `tokenlimit.host_call_failures` (abi/metrics.zig defines it at VM start); 0
/// until then, when failures are only logged.
pub var failures_metric_id: u32 = 0;
var failures_logged = std.EnumSet(Call).empty;

/// Reports an unexpected status of `call`: counted every time, logged the first time per kind
/// (a failing host call tends to fail on every request; one line says it, the metric says how
/// often). Returns the error for the caller to handle.
fn failed(call: Call, status: u32) error{HostFailure} {
    if (failures_metric_id != 0) _ = proxy_increment_metric(failures_metric_id, 1);
    if (!failures_logged.contains(call)) {
        failures_logged.insert(call);
        // A failing proxy_log has nowhere to report itself; the metric still counts it.
        if (call != .proxy_log) logf(.err, "host call {s} failed with status {d}; further failures of this call are counted in tokenlimit_host_call_failures", .{ @tagName(call), status });
    }
    return error.HostFailure;
}

/// For calls whose only expected status is OK.
fn check(call: Call, status: u32) error{HostFailure}!void {
    if (status != @backingInt(Status.ok)) return failed(call, status);
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
/// What a callback tells Envoy. `pause` is StopIteration (headers) or StopIterationAndBuffer
/// (body: held up to Envoy's buffer limit, then 413); `hold_body` is body-only
/// StopIterationAndWatermark (held under flow control, no size limit).
pub const Action = enum(u32) { @"continue" = 0, pause = 1, hold_body = 2 };

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

/// Whether Envoy would write a message at `level`. The level is asked once (proxy_get_log_level)
/// and then cached: a debug line is neither formatted nor handed to the host when Envoy would
/// drop it. `refreshLogLevel` (on configure and on every tick) follows a level changed at run
/// time through Envoy's admin /logging.
pub fn logEnabled(level: LogLevel) bool {
    const current = log_level_cached orelse refreshLogLevel();
    return @backingInt(level) >= @backingInt(current);
}

var log_level_cached: ?LogLevel = null;

pub fn refreshLogLevel() LogLevel {
    log_level_cached = .info; // what a failing proxy_get_log_level logs its failure at
    const current = logLevel();
    log_level_cached = current;
    return current;
}

pub fn log(level: LogLevel, message: []const u8) void {
    if (!logEnabled(level)) return;
    const status = proxy_log(@backingInt(level), message.ptr, message.len);
    if (status != @backingInt(Status.ok)) failed(.proxy_log, status) catch {}; // counted; nowhere to log
}

extern "env" fn proxy_get_log_level(ret_level: *u32) u32;

pub fn logLevel() LogLevel {
    var level: u32 = @backingInt(LogLevel.info);
    check(.proxy_get_log_level, proxy_get_log_level(&level)) catch return .info;
    if (level > @backingInt(LogLevel.critical)) return .critical;
    return @fromBackingInt(@intCast(level));
}

/// Formats into a stack buffer (message.zig: `{s}` and `{d}`); a line longer than the buffer
/// is cut, never dropped. Inline, so a call site only lists its arguments; the level check
/// and the formatting are `logWith`, once in the module (issue 17, module size).
pub inline fn logf(level: LogLevel, comptime format: []const u8, args: anytype) void {
    logWith(level, format, &text.argsOf(args));
}

noinline fn logWith(level: LogLevel, format: []const u8, args: []const text.Arg) void {
    if (!logEnabled(level)) return; // not formatted for a line Envoy would drop
    var buffer: [1024]u8 = undefined;
    log(level, buffer[0..text.interpolate(&buffer, format, args)]);
}

// ---- time ------------------------------------------------------------------------------------

extern "wasi_snapshot_preview1" fn clock_time_get(clock_id: u32, precision: u64, ret_time: *u64) u16;

/// Wall-clock time in milliseconds since the Unix epoch (windows are aligned to it).
pub fn nowMs() u64 {
    var time_ns: u64 = 0;
    const realtime = 0;
    const errno = clock_time_get(realtime, 1_000_000, &time_ns);
    if (errno != 0) failed(.clock_time_get, errno) catch return 0;
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
        else => return failed(.proxy_get_buffer_bytes, status),
    }
}

extern "env" fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: [*]const u8, data_len: usize) u32;

/// Replaces `size` bytes at `start` of the buffer with `data`.
pub fn setBuffer(buffer_type: BufferType, start: usize, size: usize, data: []const u8) Error!void {
    return check(.proxy_set_buffer_bytes, proxy_set_buffer_bytes(@backingInt(buffer_type), start, size, data.ptr, data.len));
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
        else => return failed(.proxy_get_header_map_value, status),
    }
}

extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn addHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    return check(.proxy_add_header_map_value, proxy_add_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

extern "env" fn proxy_replace_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn replaceHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    return check(.proxy_replace_header_map_value, proxy_replace_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

extern "env" fn proxy_remove_header_map_value(map: u32, key: [*]const u8, key_len: usize) u32;

pub fn removeHeader(map: MapType, name: []const u8) Error!void {
    const status = proxy_remove_header_map_value(@backingInt(map), name.ptr, name.len);
    if (status == @backingInt(Status.not_found)) return; // removing an absent header is done
    return check(.proxy_remove_header_map_value, status);
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
        else => return failed(.proxy_get_property, status),
    }
}

extern "env" fn proxy_set_property(path: [*]const u8, path_len: usize, value: [*]const u8, value_len: usize) u32;

pub fn setProperty(path: []const u8, value: []const u8) Error!void {
    return check(.proxy_set_property, proxy_set_property(path.ptr, path.len, value.ptr, value.len));
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
        else => return failed(.proxy_get_shared_data, status),
    }
}

extern "env" fn proxy_set_shared_data(key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize, cas: u32) u32;

/// `cas` 0 writes unconditionally; otherwise error.CasMismatch when another writer came first.
pub fn setSharedData(key: []const u8, value: []const u8, cas: u32) Error!void {
    const status = proxy_set_shared_data(key.ptr, key.len, value.ptr, value.len, cas);
    switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => return,
        .cas_mismatch => return error.CasMismatch, // another worker wrote first: the caller retries
        else => return failed(.proxy_set_shared_data, status),
    }
}

// ---- streams ---------------------------------------------------------------------------------

extern "env" fn proxy_send_local_response(status_code: u32, details: [*]const u8, details_len: usize, body: [*]const u8, body_len: usize, headers: [*]const u8, headers_len: usize, grpc_status: i32) u32;

/// `serialized_headers` is a header map in the spec's wire format (see HeaderMapWriter).
pub fn sendLocalResponse(status_code: u32, details: []const u8, body: []const u8, serialized_headers: []const u8) Error!void {
    const no_grpc_status = -1;
    return check(.proxy_send_local_response, proxy_send_local_response(status_code, details.ptr, details.len, body.ptr, body.len, serialized_headers.ptr, serialized_headers.len, no_grpc_status));
}

extern "env" fn proxy_done() u32;

/// Lets the host delete a context whose proxy_on_done answered "not yet".
pub fn done() Error!void {
    return check(.proxy_done, proxy_done());
}

extern "env" fn proxy_continue_stream(stream_type: u32) u32;

pub fn continueRequest() Error!void {
    return check(.proxy_continue_stream, proxy_continue_stream(0));
}

// ---- calls out -------------------------------------------------------------------------------

extern "env" fn proxy_http_call(upstream: [*]const u8, upstream_len: usize, headers: [*]const u8, headers_len: usize, body: [*]const u8, body_len: usize, trailers: [*]const u8, trailers_len: usize, timeout_ms: u32, ret_call_id: *u32) u32;

/// Starts an HTTP call to an Envoy cluster; the answer arrives in proxy_on_http_call_response.
pub fn httpCall(cluster: []const u8, serialized_headers: []const u8, body: []const u8, timeout_ms: u32) Error!u32 {
    var call_id: u32 = 0;
    const no_trailers = [_]u8{ 0, 0, 0, 0 };
    try check(.proxy_http_call, proxy_http_call(cluster.ptr, cluster.len, serialized_headers.ptr, serialized_headers.len, body.ptr, body.len, &no_trailers, no_trailers.len, timeout_ms, &call_id));
    return call_id;
}

extern "env" fn proxy_set_effective_context(context_id: u32) u32;

/// Makes later host calls act on `context_id` (needed in callbacks that arrive on the root).
pub fn setEffectiveContext(context_id: u32) Error!void {
    return check(.proxy_set_effective_context, proxy_set_effective_context(context_id));
}

extern "env" fn proxy_set_tick_period_milliseconds(period_ms: u32) u32;

pub fn setTickPeriod(period_ms: u32) Error!void {
    return check(.proxy_set_tick_period_milliseconds, proxy_set_tick_period_milliseconds(period_ms));
}

/// Higress's Redis ABI: only the Higress build references these (a stock Envoy refuses to load
/// a module that imports them).
pub const higress = struct {
    extern "env" fn proxy_redis_init(upstream: [*]const u8, upstream_len: usize, username: [*]const u8, username_len: usize, password: [*]const u8, password_len: usize, timeout_ms: u32) u32;

    pub fn redisInit(upstream: []const u8, username: []const u8, password: []const u8, timeout_ms: u32) Error!void {
        return check(.proxy_redis_init, proxy_redis_init(upstream.ptr, upstream.len, username.ptr, username.len, password.ptr, password.len, timeout_ms));
    }

    extern "env" fn proxy_redis_call(upstream: [*]const u8, upstream_len: usize, query: [*]const u8, query_len: usize, ret_callout_id: *u32) u32;

    /// Sends one RESP command; the reply arrives in proxy_on_redis_call_response (buffer 9).
    pub fn redisCall(upstream: []const u8, query: []const u8) Error!u32 {
        var callout_id: u32 = 0;
        try check(.proxy_redis_call, proxy_redis_call(upstream.ptr, upstream.len, query.ptr, query.len, &callout_id));
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
    const sizes_errno = environ_sizes_get(&count, &size);
    if (sizes_errno != 0) failed(.environ_get, sizes_errno) catch return null;
    if (count == 0 or size > 64 * 1024) return null;
    const pointers = allocator.alloc([*:0]u8, count) catch return null;
    defer allocator.free(pointers);
    const buffer = allocator.alloc(u8, size) catch return null;
    defer allocator.free(buffer);
    const errno = environ_get(pointers.ptr, buffer.ptr);
    if (errno != 0) failed(.environ_get, errno) catch return null;
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
    try check(.proxy_define_metric, proxy_define_metric(@backingInt(metric_type), name.ptr, name.len, &id));
    return id;
}

extern "env" fn proxy_record_metric(metric_id: u32, value: u64) u32;

/// Metrics never fail a request: a failure is reported and the request goes on. Id 0 is a
/// metric the host refused to define (reported then), so it is not called.
pub fn recordMetric(metric_id: u32, value: u64) void {
    if (metric_id == 0) return;
    check(.proxy_record_metric, proxy_record_metric(metric_id, value)) catch {};
}

extern "env" fn proxy_increment_metric(metric_id: u32, offset: i64) u32;

/// As recordMetric: reported, never failing the request.
pub fn incrementMetric(metric_id: u32, offset: i64) void {
    if (metric_id == 0) return;
    check(.proxy_increment_metric, proxy_increment_metric(metric_id, offset)) catch {};
}
