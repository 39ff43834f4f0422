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
//
// The host's functions, the ABI's numbers and the small helpers over them are in
// abi_probe_host.zig (imported as `host`); this file holds the callbacks and their state.
const std = @import("std");
const host = @import("abi_probe_host.zig");

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

// ---- lifecycle ------------------------------------------------------------------------------
export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const s = host.alloc.alloc(u8, size) catch return null;
    return s.ptr;
}

export fn proxy_on_context_create(ctx: u32, parent: u32) void {
    if (parent != 0) modes[slot(ctx)] = .none;
}

export fn proxy_on_vm_start(ctx: u32, size: usize) u32 {
    _ = ctx;
    var cfg: host.HostBytes = .{};
    _ = host.getBuffer(host.VM_CONFIGURATION, size, &cfg);
    defer cfg.release();
    host.logf(2, "probe: vm start config={s}", .{cfg.slice()});
    return 1;
}

export fn proxy_on_configure(ctx: u32, size: usize) u32 {
    _ = ctx;
    var cfg: host.HostBytes = .{};
    const st = host.getBuffer(host.PLUGIN_CONFIGURATION, size, &cfg);
    defer cfg.release();
    host.logf(2, "probe: configure status={d} config={s}", .{ st, cfg.slice() });
    if (std.mem.eql(u8, cfg.slice(), "reject")) return 0;

    if (!metrics_defined) {
        const c = "probe.requests_total";
        const g = "probe.inflight";
        const h = "probe.latency_ms";
        _ = host.proxy_define_metric(0, c, c.len, &counter_id);
        _ = host.proxy_define_metric(1, g, g.len, &gauge_id);
        _ = host.proxy_define_metric(2, h, h.len, &histogram_id);
        metrics_defined = true;
    }
    _ = host.proxy_set_tick_period_milliseconds(1000);
    const user = "probe";
    const pass = "secret";
    const rst = host.proxy_redis_init(REDIS_UPSTREAM, REDIS_UPSTREAM.len, user, user.len, pass, pass.len, 1000);
    const name = "probe_root";
    const pst = host.proxy_set_property(name, name.len, "root", 4);
    host.logf(1, "probe: redis_init status={d} root set_property status={d}", .{ rst, pst });
    return 1;
}

export fn proxy_on_tick(ctx: u32) void {
    ticks += 1;
    host.logf(1, "probe: tick {d} on context {d}", .{ ticks, ctx });
}

export fn proxy_on_done(ctx: u32) u32 {
    _ = ctx;
    return 1;
}

export fn proxy_on_delete(ctx: u32) void {
    modes[slot(ctx)] = .none;
}

export fn proxy_on_log(ctx: u32) void {
    var path: host.HostBytes = .{};
    const pst = host.getHeader(host.REQUEST_HEADERS, ":path", &path);
    defer path.release();
    var status: host.HostBytes = .{};
    const sst = host.getHeader(host.RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    host.logf(2, "probe: on_log ctx={d} path={s} ({d}) status={s} ({d})", .{ ctx, path.slice(), pst, status.slice(), sst });
}

// ---- request path ---------------------------------------------------------------------------
export fn proxy_on_request_headers(ctx: u32, num_headers: usize, end_of_stream: u32) u32 {
    _ = end_of_stream;
    _ = host.proxy_increment_metric(counter_id, 1);
    var probe: host.HostBytes = .{};
    _ = host.getHeader(host.REQUEST_HEADERS, "x-probe", &probe);
    defer probe.release();
    const mode = std.meta.stringToEnum(Mode, probe.slice()) orelse .none;
    modes[slot(ctx)] = mode;
    host.logf(1, "probe: request headers ctx={d} n={d} mode={s}", .{ ctx, num_headers, @tagName(mode) });
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
        else => host.CONTINUE,
    };
}

export fn proxy_on_request_body(ctx: u32, size: usize, end_of_stream: u32) u32 {
    return body(host.REQUEST_BODY, modes[slot(ctx)], size, end_of_stream != 0);
}

export fn proxy_on_response_headers(ctx: u32, num_headers: usize, end_of_stream: u32) u32 {
    _ = num_headers;
    _ = end_of_stream;
    var status: host.HostBytes = .{};
    _ = host.getHeader(host.RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    host.logf(1, "probe: response headers ctx={d} status={s}", .{ ctx, status.slice() });
    switch (modes[slot(ctx)]) {
        .headers => {
            host.addHeader(host.RESPONSE_HEADERS, "x-probe-response", "1");
            // Envoy forgets the request headers once they were continued.
            var late: host.HostBytes = .{};
            const st = host.getHeader(host.REQUEST_HEADERS, "x-in", &late);
            late.release();
            host.addHeaderInt(host.RESPONSE_HEADERS, "x-late-request-header-status", st);
        },
        .local_response => host.addHeader(host.RESPONSE_HEADERS, "x-probe-saw-local-reply", status.slice()),
        else => {},
    }
    return host.CONTINUE;
}

export fn proxy_on_response_body(ctx: u32, size: usize, end_of_stream: u32) u32 {
    return body(host.RESPONSE_BODY, modes[slot(ctx)], size, end_of_stream != 0);
}

fn body(kind: u32, mode: Mode, size: usize, eos: bool) u32 {
    var data: host.HostBytes = .{};
    _ = host.getBuffer(kind, size, &data);
    defer data.release();
    switch (mode) {
        .body_replace => _ = host.proxy_set_buffer_bytes(kind, 0, size, "REPLACED", 8),
        .body_prepend => _ = host.proxy_set_buffer_bytes(kind, 0, 0, "PRE-", 4),
        .body_append => _ = host.proxy_set_buffer_bytes(kind, size, 0, "-POST", 5),
        .body_buffer => {
            if (!eos) return host.PAUSE;
            host.logf(1, "probe: buffered body kind={d} size={d} data={s}", .{ kind, size, data.slice() });
        },
        else => {},
    }
    return host.CONTINUE;
}

// ---- capabilities ---------------------------------------------------------------------------
fn doLog() u32 {
    var level: u32 = 99;
    _ = host.proxy_get_log_level(&level);
    host.logf(1, "probe: log level={d}", .{level});
    const out = "probe stdout line\n";
    const err = "probe stderr line\n";
    var written: usize = 0;
    _ = host.fd_write(1, &[_]host.Ciovec{.{ .base = out, .len = out.len }}, 1, &written);
    _ = host.fd_write(2, &[_]host.Ciovec{ .{ .base = err, .len = 6 }, .{ .base = err[6..], .len = err.len - 6 } }, 2, &written);
    return host.CONTINUE;
}

fn doHeaders() u32 {
    var in: host.HostBytes = .{};
    const st = host.getHeader(host.REQUEST_HEADERS, "x-in", &in);
    defer in.release();
    host.addHeader(host.REQUEST_HEADERS, "x-added", if (st == host.OK) in.slice() else "missing");
    _ = host.proxy_replace_header_map_value(host.REQUEST_HEADERS, "x-replace", 9, "replaced", 8);
    _ = host.proxy_remove_header_map_value(host.REQUEST_HEADERS, "x-remove", 8);
    var pairs: host.HostBytes = .{};
    _ = host.proxy_get_header_map_pairs(host.REQUEST_HEADERS, &pairs.ptr, &pairs.len);
    defer pairs.release();
    host.addHeaderInt(host.REQUEST_HEADERS, "x-pairs", host.pairCount(pairs.slice()));
    host.addHeader(host.REQUEST_HEADERS, "x-path-from-pairs", host.findPair(pairs.slice(), ":path") orelse "none");
    return host.CONTINUE;
}

fn doSharedData() u32 {
    var key_hdr: host.HostBytes = .{};
    _ = host.getHeader(host.REQUEST_HEADERS, "x-key", &key_hdr);
    defer key_hdr.release();
    const key = if (key_hdr.len > 0) key_hdr.slice() else "probe-counter";
    var attempts: u32 = 0;
    var status: u32 = 0;
    var next: u64 = 0;
    while (attempts < 5) {
        attempts += 1;
        var value: host.HostBytes = .{};
        var cas: u32 = 0;
        const gst = host.proxy_get_shared_data(key.ptr, key.len, &value.ptr, &value.len, &cas);
        const current: u64 = if (gst == host.OK) std.fmt.parseInt(u64, value.slice(), 10) catch 0 else 0;
        value.release();
        next = current + 1;
        var buf: [24]u8 = undefined;
        const text = std.mem.print(&buf, "{d}", .{next}) catch unreachable;
        status = host.proxy_set_shared_data(key.ptr, key.len, text.ptr, text.len, cas);
        if (status != host.CAS_MISMATCH) break;
    }
    host.addHeaderInt(host.REQUEST_HEADERS, "x-shared-value", next);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-shared-attempts", attempts);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-shared-status", status);
    return host.CONTINUE;
}

fn doProperty() u32 {
    var name: host.HostBytes = .{};
    _ = host.getHeader(host.REQUEST_HEADERS, "x-property", &name);
    defer name.release();
    var path: [128]u8 = undefined;
    const n = @min(name.len, path.len);
    for (name.slice()[0..n], 0..) |c, i| path[i] = if (c == '.') 0 else c;
    var value: host.HostBytes = .{};
    const st = host.proxy_get_property(&path, n, &value.ptr, &value.len);
    defer value.release();
    host.addHeaderInt(host.REQUEST_HEADERS, "x-property-status", st);
    if (st == host.OK) host.addHeader(host.REQUEST_HEADERS, "x-property-value", value.slice());
    const key = "probe_decision";
    const sst = host.proxy_set_property(key, key.len, "allowed", 7);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-set-property-status", sst);
    return host.CONTINUE;
}

fn doMetrics() u32 {
    _ = host.proxy_increment_metric(gauge_id, 5);
    _ = host.proxy_increment_metric(gauge_id, -2);
    _ = host.proxy_record_metric(histogram_id, 42);
    var value: u64 = 0;
    _ = host.proxy_get_metric(counter_id, &value);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-metric-requests", value);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-metric-zero-increment-status", host.proxy_increment_metric(counter_id, 0));
    return host.CONTINUE;
}

fn doLocalResponse() u32 {
    var buf: [128]u8 = undefined;
    const hdrs = host.serializePairs(&buf, &.{
        .{ "retry-after", "7" },
        .{ "x-probe-reason", "budget" },
    });
    const details = "probe_limited";
    const text = "limited\n";
    _ = host.proxy_send_local_response(429, details, details.len, text, text.len, hdrs.ptr, hdrs.len, -1);
    // Returning CONTINUE on purpose: Envoy stops iteration after a local response anyway.
    return host.CONTINUE;
}

fn doHttpCall(ctx: u32) u32 {
    var ctx_text: [12]u8 = undefined;
    const ctx_s = std.mem.print(&ctx_text, "{d}", .{ctx}) catch unreachable;
    var buf: [256]u8 = undefined;
    const hdrs = host.serializePairs(&buf, &.{
        .{ ":method", "POST" },
        .{ ":path", "/check" },
        .{ ":authority", "bridge" },
        .{ "x-probe-ctx", ctx_s },
    });
    const up = "probe_cluster";
    const payload = "ping";
    var id: u32 = 0;
    const st = host.proxy_http_call(up, up.len, hdrs.ptr, hdrs.len, payload, payload.len, "", 0, 500, &id);
    if (st != host.OK) {
        host.addHeaderInt(host.REQUEST_HEADERS, "x-call-dispatch-status", st);
        return host.CONTINUE;
    }
    remember(id, ctx);
    return host.PAUSE;
}

export fn proxy_on_http_call_response(root: u32, id: u32, num_headers: usize, body_size: usize, num_trailers: usize) void {
    const ctx = forget(id);
    host.logf(1, "probe: http call response root={d} id={d} headers={d} body={d} trailers={d}", .{ root, id, num_headers, body_size, num_trailers });
    var status: host.HostBytes = .{};
    _ = host.getHeader(host.HTTP_CALL_RESPONSE_HEADERS, ":status", &status);
    defer status.release();
    var data: host.HostBytes = .{};
    _ = host.getBuffer(host.HTTP_CALL_RESPONSE_BODY, body_size, &data);
    defer data.release();
    if (ctx == 0 or host.proxy_set_effective_context(ctx) != host.OK) return;
    if (num_headers == 0) {
        const msg = "call failed\n";
        _ = host.proxy_send_local_response(503, "probe_call_failed", 17, msg, msg.len, "", 0, -1);
        return;
    }
    host.addHeader(host.REQUEST_HEADERS, "x-call-status", status.slice());
    host.addHeader(host.REQUEST_HEADERS, "x-call-body", data.slice());
    _ = host.proxy_continue_stream(0);
}

fn doRedis(ctx: u32) u32 {
    const query = "*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n";
    var id: u32 = 0;
    const st = host.proxy_redis_call(REDIS_UPSTREAM, REDIS_UPSTREAM.len, query, query.len, &id);
    if (st != host.OK) {
        host.addHeaderInt(host.REQUEST_HEADERS, "x-redis-dispatch-status", st);
        return host.CONTINUE;
    }
    remember(id, ctx);
    return host.PAUSE;
}

export fn proxy_on_redis_call_response(root: u32, id: u32, status: u32, size: usize) void {
    const ctx = forget(id);
    host.logf(1, "probe: redis response root={d} id={d} status={d} size={d}", .{ root, id, status, size });
    var reply: host.HostBytes = .{};
    _ = host.getBuffer(host.REDIS_CALL_RESPONSE, size, &reply);
    defer reply.release();
    if (ctx == 0 or host.proxy_set_effective_context(ctx) != host.OK) return;
    if (status != 0) {
        host.addHeaderInt(host.REQUEST_HEADERS, "x-redis-status", status);
    } else {
        var flat: [128]u8 = undefined;
        const n = @min(reply.len, flat.len);
        for (reply.slice()[0..n], 0..) |c, i| flat[i] = if (c == '\r' or c == '\n') '|' else c;
        host.addHeader(host.REQUEST_HEADERS, "x-redis-reply", flat[0..n]);
    }
    _ = host.proxy_continue_stream(0);
}

fn doClock() u32 {
    var realtime: u64 = 0;
    var monotonic: u64 = 0;
    _ = host.clock_time_get(0, 1, &realtime);
    _ = host.clock_time_get(1, 1, &monotonic);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-realtime-ns", realtime);
    host.addHeaderInt(host.REQUEST_HEADERS, "x-monotonic-ns", monotonic);
    return host.CONTINUE;
}
