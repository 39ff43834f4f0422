// abi_probe: a tiny proxy-wasm module that exercises the test host in tests/support/proxywasm_host/.
//
// Build (the tests do this into pytest's tmp dir):
//   python -m ziglang build-exe tests/support/abi_probe.zig -target wasm32-freestanding \
//     -fno-entry -rdynamic -O ReleaseSmall -femit-bin=<dir>/abi_probe.wasm
//
// The request header `x-probe: <mode>` picks the capability one request exercises; results come
// back as request/response headers the host records, log lines, metrics or shared data. Every
// buffer the host allocates through proxy_on_memory_allocate is freed again, so the module's
// memory stays flat across many requests (the host's leak check relies on that).
const std = @import("std");

const alloc = std.heap.wasm_allocator;

// ---- host functions -------------------------------------------------------------------------
extern "env" fn proxy_log(level: u32, msg: [*]const u8, len: usize) u32;
extern "env" fn proxy_get_log_level(ret: *u32) u32;
extern "env" fn proxy_set_tick_period_milliseconds(ms: u32) u32;
extern "env" fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_set_buffer_bytes(kind: u32, start: usize, size: usize, ptr: [*]const u8, len: usize) u32;
extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, klen: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize) u32;
extern "env" fn proxy_replace_header_map_value(map: u32, key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize) u32;
extern "env" fn proxy_remove_header_map_value(map: u32, key: [*]const u8, klen: usize) u32;
extern "env" fn proxy_get_header_map_pairs(map: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_get_shared_data(key: [*]const u8, klen: usize, ret_ptr: *?[*]u8, ret_len: *usize, cas: *u32) u32;
extern "env" fn proxy_set_shared_data(key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize, cas: u32) u32;
extern "env" fn proxy_get_property(path: [*]const u8, plen: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
extern "env" fn proxy_set_property(path: [*]const u8, plen: usize, val: [*]const u8, vlen: usize) u32;
extern "env" fn proxy_define_metric(kind: u32, name: [*]const u8, nlen: usize, ret_id: *u32) u32;
extern "env" fn proxy_increment_metric(id: u32, delta: i64) u32;
extern "env" fn proxy_record_metric(id: u32, value: u64) u32;
extern "env" fn proxy_get_metric(id: u32, ret: *u64) u32;
extern "env" fn proxy_send_local_response(code: u32, det: [*]const u8, dlen: usize, body: [*]const u8, blen: usize, hdrs: [*]const u8, hlen: usize, grpc: i32) u32;
extern "env" fn proxy_http_call(up: [*]const u8, ulen: usize, hdrs: [*]const u8, hlen: usize, body: [*]const u8, blen: usize, trl: [*]const u8, tlen: usize, timeout_ms: u32, ret_id: *u32) u32;
extern "env" fn proxy_set_effective_context(ctx: u32) u32;
extern "env" fn proxy_continue_stream(kind: u32) u32;
extern "env" fn proxy_redis_init(up: [*]const u8, ulen: usize, user: [*]const u8, user_len: usize, pass: [*]const u8, plen: usize, timeout_ms: u32) u32;
extern "env" fn proxy_redis_call(up: [*]const u8, ulen: usize, query: [*]const u8, qlen: usize, ret_id: *u32) u32;

const Ciovec = extern struct { base: [*]const u8, len: usize };
extern "wasi_snapshot_preview1" fn clock_time_get(id: u32, precision: u64, ret: *u64) u32;
extern "wasi_snapshot_preview1" fn fd_write(fd: u32, iovs: [*]const Ciovec, n: usize, written: *usize) u32;

// ---- ABI constants --------------------------------------------------------------------------
const OK: u32 = 0;
const CAS_MISMATCH: u32 = 8;
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const HTTP_CALL_RESPONSE_BODY: u32 = 4;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;
const REDIS_CALL_RESPONSE: u32 = 9;
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

const REDIS_UPSTREAM = "outbound|6379||redis.local";

// ---- state ----------------------------------------------------------------------------------
const Mode = enum(u8) {
    none,
    log,
    headers,
    body_replace,
    body_prepend,
    body_append,
    body_buffer,
    shared_data,
    property,
    metrics,
    local_response,
    http_call,
    redis,
    clock,
    trap,
};

var modes: [256]Mode = @splat(.none);
const Pending = struct { id: u32 = 0, ctx: u32 = 0 };
var pending: [32]Pending = @splat(.{});
var metrics_defined = false;
var counter_id: u32 = 0;
var gauge_id: u32 = 0;
var histogram_id: u32 = 0;
var ticks: u32 = 0;

// ---- helpers --------------------------------------------------------------------------------
/// A buffer the host allocated through proxy_on_memory_allocate; freed with `release`.
const HostBytes = struct {
    ptr: ?[*]u8 = null,
    len: usize = 0,

    fn slice(self: HostBytes) []const u8 {
        if (self.ptr) |p| return p[0..self.len];
        return "";
    }
    fn release(self: HostBytes) void {
        if (self.ptr) |p| if (self.len > 0) alloc.free(p[0..self.len]);
    }
};

fn logf(level: u32, comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const s = std.mem.print(&buf, fmt, args) catch buf[0..];
    _ = proxy_log(level, s.ptr, s.len);
}

fn getHeader(map: u32, key: []const u8, out: *HostBytes) u32 {
    out.* = .{};
    return proxy_get_header_map_value(map, key.ptr, key.len, &out.ptr, &out.len);
}

fn addHeader(map: u32, key: []const u8, value: []const u8) void {
    _ = proxy_add_header_map_value(map, key.ptr, key.len, value.ptr, value.len);
}

fn addHeaderInt(map: u32, key: []const u8, value: u64) void {
    var buf: [24]u8 = undefined;
    const s = std.mem.print(&buf, "{d}", .{value}) catch return;
    addHeader(map, key, s);
}

fn getBuffer(kind: u32, size: usize, out: *HostBytes) u32 {
    out.* = .{};
    return proxy_get_buffer_bytes(kind, 0, size, &out.ptr, &out.len);
}

fn slot(ctx: u32) usize {
    return ctx & 0xff;
}

fn remember(id: u32, ctx: u32) void {
    for (&pending) |*p| {
        if (p.id == 0) {
            p.* = .{ .id = id, .ctx = ctx };
            return;
        }
    }
}

fn forget(id: u32) u32 {
    for (&pending) |*p| {
        if (p.id == id) {
            const ctx = p.ctx;
            p.* = .{};
            return ctx;
        }
    }
    return 0;
}

/// Serializes header pairs as the ABI wants: u32 count, (u32 klen, u32 vlen)*, then each key
/// and value NUL-terminated; little-endian.
fn serializePairs(buf: []u8, pairs: []const [2][]const u8) []const u8 {
    var pos: usize = 0;
    std.mem.writeInt(u32, buf[0..4], @intCast(pairs.len), .little);
    pos = 4;
    for (pairs) |p| {
        std.mem.writeInt(u32, buf[pos..][0..4], @intCast(p[0].len), .little);
        std.mem.writeInt(u32, buf[pos + 4 ..][0..4], @intCast(p[1].len), .little);
        pos += 8;
    }
    for (pairs) |p| {
        for (p) |s| {
            @memcpy(buf[pos..][0..s.len], s);
            buf[pos + s.len] = 0;
            pos += s.len + 1;
        }
    }
    return buf[0..pos];
}

/// Finds `key` in a serialized header map; returns its value or null.
fn findPair(data: []const u8, key: []const u8) ?[]const u8 {
    if (data.len < 4) return null;
    const n = std.mem.readInt(u32, data[0..4], .little);
    var sizes_at: usize = 4;
    var pos: usize = 4 + 8 * @as(usize, n);
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        const kl = std.mem.readInt(u32, data[sizes_at..][0..4], .little);
        const vl = std.mem.readInt(u32, data[sizes_at + 4 ..][0..4], .little);
        sizes_at += 8;
        const k = data[pos .. pos + kl];
        const v = data[pos + kl + 1 .. pos + kl + 1 + vl];
        pos += kl + vl + 2;
        if (std.mem.eql(u8, k, key)) return v;
    }
    return null;
}

fn pairCount(data: []const u8) u32 {
    if (data.len < 4) return 0;
    return std.mem.readInt(u32, data[0..4], .little);
}

// ---- lifecycle ------------------------------------------------------------------------------
export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const s = alloc.alloc(u8, size) catch return null;
    return s.ptr;
}

export fn proxy_on_context_create(ctx: u32, parent: u32) void {
    if (parent != 0) modes[slot(ctx)] = .none;
}

export fn proxy_on_vm_start(ctx: u32, size: usize) u32 {
    _ = ctx;
    var cfg: HostBytes = .{};
    _ = getBuffer(VM_CONFIGURATION, size, &cfg);
    defer cfg.release();
    logf(2, "probe: vm start config={s}", .{cfg.slice()});
    return 1;
}

export fn proxy_on_configure(ctx: u32, size: usize) u32 {
    _ = ctx;
    var cfg: HostBytes = .{};
    const st = getBuffer(PLUGIN_CONFIGURATION, size, &cfg);
    defer cfg.release();
    logf(2, "probe: configure status={d} config={s}", .{ st, cfg.slice() });
    if (std.mem.eql(u8, cfg.slice(), "reject")) return 0;

    if (!metrics_defined) {
        const c = "probe.requests_total";
        const g = "probe.inflight";
        const h = "probe.latency_ms";
        _ = proxy_define_metric(0, c, c.len, &counter_id);
        _ = proxy_define_metric(1, g, g.len, &gauge_id);
        _ = proxy_define_metric(2, h, h.len, &histogram_id);
        metrics_defined = true;
    }
    _ = proxy_set_tick_period_milliseconds(1000);
    const user = "probe";
    const pass = "secret";
    const rst = proxy_redis_init(REDIS_UPSTREAM, REDIS_UPSTREAM.len, user, user.len, pass, pass.len, 1000);
    const name = "probe_root";
    const pst = proxy_set_property(name, name.len, "root", 4);
    logf(1, "probe: redis_init status={d} root set_property status={d}", .{ rst, pst });
    return 1;
}

export fn proxy_on_tick(ctx: u32) void {
    ticks += 1;
    logf(1, "probe: tick {d} on context {d}", .{ ticks, ctx });
}

export fn proxy_on_done(ctx: u32) u32 {
    _ = ctx;
    return 1;
}

export fn proxy_on_delete(ctx: u32) void {
    modes[slot(ctx)] = .none;
}

export fn proxy_on_log(ctx: u32) void {
    var path: HostBytes = .{};
    const pst = getHeader(REQUEST_HEADERS, ":path", &path);
    defer path.release();
    var status: HostBytes = .{};
    const sst = getHeader(RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    logf(2, "probe: on_log ctx={d} path={s} ({d}) status={s} ({d})", .{ ctx, path.slice(), pst, status.slice(), sst });
}

// ---- request path ---------------------------------------------------------------------------
export fn proxy_on_request_headers(ctx: u32, num_headers: usize, end_of_stream: u32) u32 {
    _ = end_of_stream;
    _ = proxy_increment_metric(counter_id, 1);
    var probe: HostBytes = .{};
    _ = getHeader(REQUEST_HEADERS, "x-probe", &probe);
    defer probe.release();
    const mode = std.meta.stringToEnum(Mode, probe.slice()) orelse .none;
    modes[slot(ctx)] = mode;
    logf(1, "probe: request headers ctx={d} n={d} mode={s}", .{ ctx, num_headers, @tagName(mode) });
    return switch (mode) {
        .log => doLog(),
        .headers => doHeaders(),
        .shared_data => doSharedData(),
        .property => doProperty(),
        .metrics => doMetrics(),
        .local_response => doLocalResponse(),
        .http_call => doHttpCall(ctx),
        .redis => doRedis(ctx),
        .clock => doClock(),
        .trap => @trap(),
        else => CONTINUE,
    };
}

export fn proxy_on_request_body(ctx: u32, size: usize, end_of_stream: u32) u32 {
    return body(REQUEST_BODY, modes[slot(ctx)], size, end_of_stream != 0);
}

export fn proxy_on_response_headers(ctx: u32, num_headers: usize, end_of_stream: u32) u32 {
    _ = num_headers;
    _ = end_of_stream;
    var status: HostBytes = .{};
    _ = getHeader(RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    logf(1, "probe: response headers ctx={d} status={s}", .{ ctx, status.slice() });
    switch (modes[slot(ctx)]) {
        .headers => {
            addHeader(RESPONSE_HEADERS, "x-probe-response", "1");
            // Envoy forgets the request headers once they were continued.
            var late: HostBytes = .{};
            const st = getHeader(REQUEST_HEADERS, "x-in", &late);
            late.release();
            addHeaderInt(RESPONSE_HEADERS, "x-late-request-header-status", st);
        },
        .local_response => addHeader(RESPONSE_HEADERS, "x-probe-saw-local-reply", status.slice()),
        else => {},
    }
    return CONTINUE;
}

export fn proxy_on_response_body(ctx: u32, size: usize, end_of_stream: u32) u32 {
    return body(RESPONSE_BODY, modes[slot(ctx)], size, end_of_stream != 0);
}

fn body(kind: u32, mode: Mode, size: usize, eos: bool) u32 {
    var data: HostBytes = .{};
    _ = getBuffer(kind, size, &data);
    defer data.release();
    switch (mode) {
        .body_replace => _ = proxy_set_buffer_bytes(kind, 0, size, "REPLACED", 8),
        .body_prepend => _ = proxy_set_buffer_bytes(kind, 0, 0, "PRE-", 4),
        .body_append => _ = proxy_set_buffer_bytes(kind, size, 0, "-POST", 5),
        .body_buffer => {
            if (!eos) return PAUSE;
            logf(1, "probe: buffered body kind={d} size={d} data={s}", .{ kind, size, data.slice() });
        },
        else => {},
    }
    return CONTINUE;
}

// ---- capabilities ---------------------------------------------------------------------------
fn doLog() u32 {
    var level: u32 = 99;
    _ = proxy_get_log_level(&level);
    logf(1, "probe: log level={d}", .{level});
    const out = "probe stdout line\n";
    const err = "probe stderr line\n";
    var written: usize = 0;
    _ = fd_write(1, &[_]Ciovec{.{ .base = out, .len = out.len }}, 1, &written);
    _ = fd_write(2, &[_]Ciovec{ .{ .base = err, .len = 6 }, .{ .base = err[6..], .len = err.len - 6 } }, 2, &written);
    return CONTINUE;
}

fn doHeaders() u32 {
    var in: HostBytes = .{};
    const st = getHeader(REQUEST_HEADERS, "x-in", &in);
    defer in.release();
    addHeader(REQUEST_HEADERS, "x-added", if (st == OK) in.slice() else "missing");
    _ = proxy_replace_header_map_value(REQUEST_HEADERS, "x-replace", 9, "replaced", 8);
    _ = proxy_remove_header_map_value(REQUEST_HEADERS, "x-remove", 8);
    var pairs: HostBytes = .{};
    _ = proxy_get_header_map_pairs(REQUEST_HEADERS, &pairs.ptr, &pairs.len);
    defer pairs.release();
    addHeaderInt(REQUEST_HEADERS, "x-pairs", pairCount(pairs.slice()));
    addHeader(REQUEST_HEADERS, "x-path-from-pairs", findPair(pairs.slice(), ":path") orelse "none");
    return CONTINUE;
}

fn doSharedData() u32 {
    var key_hdr: HostBytes = .{};
    _ = getHeader(REQUEST_HEADERS, "x-key", &key_hdr);
    defer key_hdr.release();
    const key = if (key_hdr.len > 0) key_hdr.slice() else "probe-counter";
    var attempts: u32 = 0;
    var status: u32 = 0;
    var next: u64 = 0;
    while (attempts < 5) {
        attempts += 1;
        var value: HostBytes = .{};
        var cas: u32 = 0;
        const gst = proxy_get_shared_data(key.ptr, key.len, &value.ptr, &value.len, &cas);
        const current: u64 = if (gst == OK) std.fmt.parseInt(u64, value.slice(), 10) catch 0 else 0;
        value.release();
        next = current + 1;
        var buf: [24]u8 = undefined;
        const text = std.mem.print(&buf, "{d}", .{next}) catch unreachable;
        status = proxy_set_shared_data(key.ptr, key.len, text.ptr, text.len, cas);
        if (status != CAS_MISMATCH) break;
    }
    addHeaderInt(REQUEST_HEADERS, "x-shared-value", next);
    addHeaderInt(REQUEST_HEADERS, "x-shared-attempts", attempts);
    addHeaderInt(REQUEST_HEADERS, "x-shared-status", status);
    return CONTINUE;
}

fn doProperty() u32 {
    var name: HostBytes = .{};
    _ = getHeader(REQUEST_HEADERS, "x-property", &name);
    defer name.release();
    var path: [128]u8 = undefined;
    const n = @min(name.len, path.len);
    for (name.slice()[0..n], 0..) |c, i| path[i] = if (c == '.') 0 else c;
    var value: HostBytes = .{};
    const st = proxy_get_property(&path, n, &value.ptr, &value.len);
    defer value.release();
    addHeaderInt(REQUEST_HEADERS, "x-property-status", st);
    if (st == OK) addHeader(REQUEST_HEADERS, "x-property-value", value.slice());
    const key = "probe_decision";
    const sst = proxy_set_property(key, key.len, "allowed", 7);
    addHeaderInt(REQUEST_HEADERS, "x-set-property-status", sst);
    return CONTINUE;
}

fn doMetrics() u32 {
    _ = proxy_increment_metric(gauge_id, 5);
    _ = proxy_increment_metric(gauge_id, -2);
    _ = proxy_record_metric(histogram_id, 42);
    var value: u64 = 0;
    _ = proxy_get_metric(counter_id, &value);
    addHeaderInt(REQUEST_HEADERS, "x-metric-requests", value);
    addHeaderInt(REQUEST_HEADERS, "x-metric-zero-increment-status", proxy_increment_metric(counter_id, 0));
    return CONTINUE;
}

fn doLocalResponse() u32 {
    var buf: [128]u8 = undefined;
    const hdrs = serializePairs(&buf, &.{
        .{ "retry-after", "7" },
        .{ "x-probe-reason", "budget" },
    });
    const details = "probe_limited";
    const text = "limited\n";
    _ = proxy_send_local_response(429, details, details.len, text, text.len, hdrs.ptr, hdrs.len, -1);
    // Returning CONTINUE on purpose: Envoy stops iteration after a local response anyway.
    return CONTINUE;
}

fn doHttpCall(ctx: u32) u32 {
    var ctx_text: [12]u8 = undefined;
    const ctx_s = std.mem.print(&ctx_text, "{d}", .{ctx}) catch unreachable;
    var buf: [256]u8 = undefined;
    const hdrs = serializePairs(&buf, &.{
        .{ ":method", "POST" },
        .{ ":path", "/check" },
        .{ ":authority", "bridge" },
        .{ "x-probe-ctx", ctx_s },
    });
    const up = "probe_cluster";
    const payload = "ping";
    var id: u32 = 0;
    const st = proxy_http_call(up, up.len, hdrs.ptr, hdrs.len, payload, payload.len, "", 0, 500, &id);
    if (st != OK) {
        addHeaderInt(REQUEST_HEADERS, "x-call-dispatch-status", st);
        return CONTINUE;
    }
    remember(id, ctx);
    return PAUSE;
}

export fn proxy_on_http_call_response(root: u32, id: u32, num_headers: usize, body_size: usize, num_trailers: usize) void {
    const ctx = forget(id);
    logf(1, "probe: http call response root={d} id={d} headers={d} body={d} trailers={d}", .{ root, id, num_headers, body_size, num_trailers });
    var status: HostBytes = .{};
    _ = getHeader(HTTP_CALL_RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    var data: HostBytes = .{};
    _ = getBuffer(HTTP_CALL_RESPONSE_BODY, body_size, &data);
    defer data.release();
    if (ctx == 0 or proxy_set_effective_context(ctx) != OK) return;
    if (num_headers == 0) {
        const msg = "call failed\n";
        _ = proxy_send_local_response(503, "probe_call_failed", 17, msg, msg.len, "", 0, -1);
        return;
    }
    addHeader(REQUEST_HEADERS, "x-call-status", status.slice());
    addHeader(REQUEST_HEADERS, "x-call-body", data.slice());
    _ = proxy_continue_stream(0);
}

fn doRedis(ctx: u32) u32 {
    const query = "*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n";
    var id: u32 = 0;
    const st = proxy_redis_call(REDIS_UPSTREAM, REDIS_UPSTREAM.len, query, query.len, &id);
    if (st != OK) {
        addHeaderInt(REQUEST_HEADERS, "x-redis-dispatch-status", st);
        return CONTINUE;
    }
    remember(id, ctx);
    return PAUSE;
}

export fn proxy_on_redis_call_response(root: u32, id: u32, status: u32, size: usize) void {
    const ctx = forget(id);
    logf(1, "probe: redis response root={d} id={d} status={d} size={d}", .{ root, id, status, size });
    var reply: HostBytes = .{};
    _ = getBuffer(REDIS_CALL_RESPONSE, size, &reply);
    defer reply.release();
    if (ctx == 0 or proxy_set_effective_context(ctx) != OK) return;
    if (status != 0) {
        addHeaderInt(REQUEST_HEADERS, "x-redis-status", status);
    } else {
        var flat: [128]u8 = undefined;
        const n = @min(reply.len, flat.len);
        for (reply.slice()[0..n], 0..) |c, i| flat[i] = if (c == '\r' or c == '\n') '|' else c;
        addHeader(REQUEST_HEADERS, "x-redis-reply", flat[0..n]);
    }
    _ = proxy_continue_stream(0);
}

fn doClock() u32 {
    var realtime: u64 = 0;
    var monotonic: u64 = 0;
    _ = clock_time_get(0, 1, &realtime);
    _ = clock_time_get(1, 1, &monotonic);
    addHeaderInt(REQUEST_HEADERS, "x-realtime-ns", realtime);
    addHeaderInt(REQUEST_HEADERS, "x-monotonic-ns", monotonic);
    return CONTINUE;
}
