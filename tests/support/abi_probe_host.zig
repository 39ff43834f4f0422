// abi_probe_host: the host side of tests/support/abi_probe.zig, the probe module's imports.
//
// The proxy-wasm and WASI functions the probe calls, the ABI's numbers, and thin helpers over
// them (header and buffer reads, header-map serialization). The probe's callbacks, its state and
// the capabilities it exercises stay in abi_probe.zig, which imports this file.
const std = @import("std");

/// The allocator behind proxy_on_memory_allocate, so HostBytes.release frees what the host got.
pub const alloc = std.heap.wasm_allocator;

// ---- host functions -------------------------------------------------------------------------
pub extern "env" fn proxy_log(level: u32, msg: [*]const u8, len: usize) u32;
pub extern "env" fn proxy_get_log_level(ret: *u32) u32;
pub extern "env" fn proxy_set_tick_period_milliseconds(ms: u32) u32;
pub extern "env" fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_set_buffer_bytes(kind: u32, start: usize, size: usize, ptr: [*]const u8, len: usize) u32;
pub extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, klen: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_add_header_map_value(map: u32, key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize) u32;
pub extern "env" fn proxy_replace_header_map_value(map: u32, key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize) u32;
pub extern "env" fn proxy_remove_header_map_value(map: u32, key: [*]const u8, klen: usize) u32;
pub extern "env" fn proxy_get_header_map_pairs(map: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_get_shared_data(key: [*]const u8, klen: usize, ret_ptr: *?[*]u8, ret_len: *usize, cas: *u32) u32;
pub extern "env" fn proxy_set_shared_data(key: [*]const u8, klen: usize, val: [*]const u8, vlen: usize, cas: u32) u32;
pub extern "env" fn proxy_get_property(path: [*]const u8, plen: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_set_property(path: [*]const u8, plen: usize, val: [*]const u8, vlen: usize) u32;
pub extern "env" fn proxy_define_metric(kind: u32, name: [*]const u8, nlen: usize, ret_id: *u32) u32;
pub extern "env" fn proxy_increment_metric(id: u32, delta: i64) u32;
pub extern "env" fn proxy_record_metric(id: u32, value: u64) u32;
pub extern "env" fn proxy_get_metric(id: u32, ret: *u64) u32;
pub extern "env" fn proxy_send_local_response(code: u32, det: [*]const u8, dlen: usize, body: [*]const u8, blen: usize, hdrs: [*]const u8, hlen: usize, grpc: i32) u32;
pub extern "env" fn proxy_http_call(up: [*]const u8, ulen: usize, hdrs: [*]const u8, hlen: usize, body: [*]const u8, blen: usize, trl: [*]const u8, tlen: usize, timeout_ms: u32, ret_id: *u32) u32;
pub extern "env" fn proxy_set_effective_context(ctx: u32) u32;
pub extern "env" fn proxy_continue_stream(kind: u32) u32;
pub extern "env" fn proxy_redis_init(up: [*]const u8, ulen: usize, user: [*]const u8, user_len: usize, pass: [*]const u8, plen: usize, timeout_ms: u32) u32;
pub extern "env" fn proxy_redis_call(up: [*]const u8, ulen: usize, query: [*]const u8, qlen: usize, ret_id: *u32) u32;

pub const Ciovec = extern struct { base: [*]const u8, len: usize };
pub extern "wasi_snapshot_preview1" fn clock_time_get(id: u32, precision: u64, ret: *u64) u32;
pub extern "wasi_snapshot_preview1" fn fd_write(fd: u32, iovs: [*]const Ciovec, n: usize, written: *usize) u32;

// ---- ABI constants --------------------------------------------------------------------------
pub const OK: u32 = 0;
pub const CAS_MISMATCH: u32 = 8;
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const VM_CONFIGURATION: u32 = 6;
pub const PLUGIN_CONFIGURATION: u32 = 7;
pub const REDIS_CALL_RESPONSE: u32 = 9;
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;

// ---- helpers --------------------------------------------------------------------------------
/// A buffer the host allocated through proxy_on_memory_allocate; freed with `release`.
pub const HostBytes = struct {
    ptr: ?[*]u8 = null,
    len: usize = 0,

    pub fn slice(self: HostBytes) []const u8 {
        if (self.ptr) |p| return p[0..self.len];
        return "";
    }
    pub fn release(self: HostBytes) void {
        if (self.ptr) |p| if (self.len > 0) alloc.free(p[0..self.len]);
    }
};

pub fn logf(level: u32, comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const s = std.mem.print(&buf, fmt, args) catch buf[0..];
    _ = proxy_log(level, s.ptr, s.len);
}

pub fn getHeader(map: u32, key: []const u8, out: *HostBytes) u32 {
    out.* = .{};
    return proxy_get_header_map_value(map, key.ptr, key.len, &out.ptr, &out.len);
}

pub fn addHeader(map: u32, key: []const u8, value: []const u8) void {
    _ = proxy_add_header_map_value(map, key.ptr, key.len, value.ptr, value.len);
}

pub fn addHeaderInt(map: u32, key: []const u8, value: u64) void {
    var buf: [24]u8 = undefined;
    const s = std.mem.print(&buf, "{d}", .{value}) catch return;
    addHeader(map, key, s);
}

pub fn getBuffer(kind: u32, size: usize, out: *HostBytes) u32 {
    out.* = .{};
    return proxy_get_buffer_bytes(kind, 0, size, &out.ptr, &out.len);
}
/// Serializes header pairs as the ABI wants: u32 count, (u32 klen, u32 vlen)*, then each key
/// and value NUL-terminated; little-endian.
pub fn serializePairs(buf: []u8, pairs: []const [2][]const u8) []const u8 {
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
pub fn findPair(data: []const u8, key: []const u8) ?[]const u8 {
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

pub fn pairCount(data: []const u8) u32 {
    if (data.len < 4) return 0;
    return std.mem.readInt(u32, data[0..4], .little);
}
