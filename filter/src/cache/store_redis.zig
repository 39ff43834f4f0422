//! The Redis response cache: contract/cache.lua's protocol (pure; redis.zig sends it through
//! the same transports as budgets: the bridge, or Higress's Redis ABI). The TTL lives in Redis
//! (`SET ... PX`), so an expired answer is gone without the filter's help; the entry still
//! carries its own expiry (entry.zig) and the filter checks both.
const std = @import("std");
const key = @import("key.zig");
const resp = @import("../store/resp.zig");
const entry = @import("entry.zig");
const bounds = @import("limits");

/// The script the bridge allows by SHA (bridge/guard.py loads every contract/*.lua).
pub const source = @embedFile("cache.lua");
pub const sha: [40]u8 = blk: {
    @setEvalBranchQuota(1_000_000);
    var digest: [20]u8 = undefined;
    std.crypto.hash.Sha1.hash(source, &digest, .{});
    break :blk std.fmt.bytesToHex(digest, .lower);
};

/// The longest `get` reply: a bulk string holding the largest entry the config allows.
pub const reply_bytes_max = "$999999999\r\n".len + entry.header_bytes + entry.content_type_bytes_max + bounds.cache_entry_bytes_max + 2;

/// `tokenlimit:cache:{<hex digest>}`: hash-tagged, so Redis Cluster places it by the digest.
pub const Name = [18 + 64 + 1]u8;

pub fn name(digest: key.Digest) Name {
    var out: Name = undefined;
    // Concatenated, not bufPrint: a format is its own formatting code (issue 17, module size).
    out = ("tokenlimit:cache:{" ++ std.fmt.bytesToHex(digest, .lower) ++ "}").*;
    return out;
}

/// The arguments after the script of a `get` (numkeys, key, "get").
pub fn getArguments(allocator: std.mem.Allocator, digest: key.Digest) ![]u8 {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, 1);
    try tail.arg(allocator, &name(digest));
    try tail.arg(allocator, "get");
    return tail.bytes.toOwnedSlice(allocator);
}

/// The arguments after the script of a `set` (numkeys, key, "set", entry, ttl in ms).
pub fn setArguments(allocator: std.mem.Allocator, digest: key.Digest, bytes: []const u8, ttl_ms: u64) ![]u8 {
    std.debug.assert(ttl_ms > 0);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, 1);
    try tail.arg(allocator, &name(digest));
    try tail.arg(allocator, "set");
    try tail.arg(allocator, bytes);
    try tail.argInt(allocator, ttl_ms);
    return tail.bytes.toOwnedSlice(allocator);
}

/// The whole command: EVALSHA (or EVAL with the source, once Redis said NOSCRIPT).
pub fn command(allocator: std.mem.Allocator, arguments: []const u8, as_eval: bool) ![]u8 {
    var out: resp.Command = .{};
    errdefer out.deinit(allocator);
    try out.begin(allocator, 2 + @import("../store/script.zig").countArguments(arguments));
    try out.arg(allocator, if (as_eval) "EVAL" else "EVALSHA");
    try out.arg(allocator, if (as_eval) source else &sha);
    try out.bytes.appendSlice(allocator, arguments);
    return out.bytes.toOwnedSlice(allocator);
}

/// A `get` reply: the entry's bytes (a slice of `reply`), none, or not a bulk reply at all.
pub const GetReply = union(enum) { found: []const u8, none, other };

pub fn readGet(reply: []const u8) GetReply {
    if (reply.len < 3 or reply[0] != '$') return .other;
    const line_end = std.mem.indexOf(u8, reply, "\r\n") orelse return .other;
    if (std.mem.eql(u8, reply[1..line_end], "-1")) return .none;
    const length = std.fmt.parseInt(usize, reply[1..line_end], 10) catch return .other;
    const start = line_end + 2;
    if (reply.len < start + length + 2) return .other;
    return .{ .found = reply[start..][0..length] };
}

test "cache script: commands and replies on the wire" {
    const a = std.testing.allocator;
    const digest: key.Digest = @splat(0xab);
    const get = try getArguments(a, digest);
    defer a.free(get);
    const whole = try command(a, get, false);
    defer a.free(whole);
    const hex = std.fmt.bytesToHex(digest, .lower);
    const expected = "*5\r\n$7\r\nEVALSHA\r\n$40\r\n" ++ sha ++ "\r\n$1\r\n1\r\n$83\r\ntokenlimit:cache:{" ++ hex ++ "}\r\n$3\r\nget\r\n";
    try std.testing.expectEqualStrings(expected, whole);
    const set = try setArguments(a, digest, "x\r\ny", 60_000);
    defer a.free(set);
    try std.testing.expect(std.mem.endsWith(u8, set, "$3\r\nset\r\n$4\r\nx\r\ny\r\n$5\r\n60000\r\n"));
    try std.testing.expectEqualStrings("x\r\ny", readGet("$4\r\nx\r\ny\r\n").found);
    try std.testing.expectEqual(GetReply.none, readGet("$-1\r\n"));
    try std.testing.expectEqual(GetReply.other, readGet("$9\r\nshort\r\n"));
    try std.testing.expectEqual(GetReply.other, readGet(":1\r\n"));
}
