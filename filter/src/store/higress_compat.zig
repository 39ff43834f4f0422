//! `compat: higress` / `compat: higress-1.0` (config/compat.zig): the Redis store on Higress
//! ai-token-ratelimit's own keys, with its own counting (contract/higress_compat.lua), so an
//! old Higress plugin and tokenlimit enforce one budget while a rolling upgrade swaps them.
//!
//! What Higress does, read from plugins/wasm-go/extensions/ai-token-ratelimit/main.go of
//! Higress 1.0.x (alibaba/higress, commit 4e0d691) and 2.0.1 (higress-group/higress, 8e4041c):
//! - a key per matching rule item and window: `higress-token-ratelimit:{<rule_name>}:
//!   <limit_by_*>:<window s>:<limit_by value as written>:<request value>` (2.0.1; 1.0.x has no
//!   braces), `...:global_threshold:<window s>` for `global_threshold`; the request value is
//!   the raw header / decoded parameter / cookie / `x-mse-consumer` / address (Go's
//!   `net.IP.String`), never hashed;
//! - at the request a read-only check (GET, TTL) that refuses when a count is more than its
//!   threshold; at the end of the response INCRBY input + output tokens while the count is at
//!   most the threshold, EXPIRE on the first charge: the window opens at the first charge.
//!
//! The calls go through redis.zig (the same transports, circuit and retry queue as
//! budget.lua's); the check answers in budget.lua's admit shape, so admission reads it with
//! script.readAdmitReply. The check reserves nothing, so there is nothing to release.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const host = @import("../abi/host.zig");
const redis = @import("redis.zig");
const resp = @import("resp.zig");
const script = @import("script.zig");
const sha256 = @import("../match/sha256.zig");
const store = @import("store.zig");

pub const source = @embedFile("higress_compat.lua");
/// EVALSHA name, computed at build time.
pub const sha: [40]u8 = blk: {
    @setEvalBranchQuota(1_000_000);
    var digest: [20]u8 = undefined;
    std.crypto.hash.Sha1.hash(source, &digest, .{});
    break :blk std.fmt.bytesToHex(digest, .lower);
};

pub const prefix = "higress-token-ratelimit";
/// Room for a rule name (256 bytes), a `limit_by_*` value (128) and a request value of a few
/// hundred bytes (an API key, an address). A key that would be longer carries `=` + the
/// SHA-256 of the request value instead: still limited, but not shared with Higress.
pub const key_bytes_max = 1024;

pub const Key = struct {
    bytes: [key_bytes_max]u8 = undefined,
    len: usize = 0,

    pub fn slice(self: *const Key) []const u8 {
        return self.bytes[0..self.len];
    }
};

/// Higress's name of an item's type in its keys.
fn typeName(limit_type: config.LimitType) []const u8 {
    return switch (limit_type) {
        .global => "global_threshold",
        inline else => |tag| "limit_by_" ++ @tagName(tag),
    };
}

/// The `limit_by_*` value as Higress keeps it (its `ruleItem.Key`): as written; for consumers
/// the header it reads, `x-mse-consumer`.
fn itemName(item: *const config.RuleItem) []const u8 {
    return switch (item.limit_type) {
        .consumer, .per_consumer => "x-mse-consumer",
        else => if (item.written_source.len > 0) item.written_source else item.source,
    };
}

/// Higress's key for one item's window; `value` is the request's value as Higress reads it.
pub fn key(compat: config.Compat, rule_name: []const u8, item: *const config.RuleItem, window: budget.Window, value: []const u8) Key {
    std.debug.assert(compat != .none);
    const open: []const u8, const close: []const u8 = if (compat == .higress) .{ "{", "}" } else .{ "", "" };
    var out: Key = .{};
    const written = if (item.limit_type == .global)
        std.fmt.bufPrint(&out.bytes, "{s}:{s}{s}{s}:global_threshold:{d}", .{ prefix, open, rule_name, close, window.seconds() })
    else
        std.fmt.bufPrint(&out.bytes, "{s}:{s}{s}{s}:{s}:{d}:{s}:{s}", .{ prefix, open, rule_name, close, typeName(item.limit_type), window.seconds(), itemName(item), value });
    if (written) |text| {
        out.len = text.len;
        return out;
    } else |_| {}
    // Rule name (256) + name (128) + the framing + a 65-byte hash always fits.
    const hashed = std.fmt.bytesToHex(sha256.hash(value), .lower);
    const text = std.fmt.bufPrint(&out.bytes, "{s}:{s}{s}{s}:{s}:{d}:{s}:={s}", .{ prefix, open, rule_name, close, typeName(item.limit_type), window.seconds(), itemName(item), &hashed }) catch unreachable;
    out.len = text.len;
    return out;
}

comptime {
    std.debug.assert(prefix.len + 4 + config.rule_name_bytes_max + "limit_by_per_consumer".len + 8 + config.source_name_bytes_max + 2 + 64 < key_bytes_max);
}

/// Asks whether every counter has room: `check`, then (threshold, window s) per key.
pub fn admit(settings: config.Redis, counters: []const store.Counter, caller: store.Caller) !void {
    const tail = try checkArguments(host.allocator, counters);
    errdefer host.allocator.free(tail);
    try redis.callHigress(.admit, settings, tail, caller);
}

/// Charges `tokens` (input + output) to every key, as Higress's response phase; no call for 0
/// (Higress charges only when it saw usage).
pub fn settle(settings: config.Redis, counters: []const store.Counter, tokens: u64, caller: store.Caller) !void {
    if (tokens == 0) return;
    const tail = try chargeArguments(host.allocator, counters, tokens);
    try redis.callHigress(.settle, settings, tail, caller);
}

pub fn checkArguments(allocator: std.mem.Allocator, counters: []const store.Counter) ![]u8 {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(allocator, &tail, counters);
    try tail.arg(allocator, "check");
    for (counters) |*counter| {
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, counter.budget.window.seconds());
    }
    return tail.bytes.toOwnedSlice(allocator);
}

pub fn chargeArguments(allocator: std.mem.Allocator, counters: []const store.Counter, tokens: u64) ![]u8 {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(allocator, &tail, counters);
    try tail.arg(allocator, "charge");
    for (counters) |*counter| {
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, counter.budget.window.seconds());
        try tail.argInt(allocator, tokens);
    }
    return tail.bytes.toOwnedSlice(allocator);
}

fn appendKeys(allocator: std.mem.Allocator, tail: *resp.Command, counters: []const store.Counter) !void {
    std.debug.assert(counters.len > 0);
    try tail.argInt(allocator, counters.len);
    for (counters) |*counter| {
        std.debug.assert(counter.higress_key.len > 0 and counter.unit == .tokens);
        try tail.arg(allocator, counter.higress_key.slice());
    }
}

/// The whole command: EVALSHA (or EVAL with the source, once Redis said NOSCRIPT) + arguments.
pub fn command(allocator: std.mem.Allocator, arguments: []const u8, as_eval: bool) ![]u8 {
    var out: resp.Command = .{};
    errdefer out.deinit(allocator);
    try out.begin(allocator, 2 + script.countArguments(arguments));
    try out.arg(allocator, if (as_eval) "EVAL" else "EVALSHA");
    try out.arg(allocator, if (as_eval) source else &sha);
    try out.bytes.appendSlice(allocator, arguments);
    return out.bytes.toOwnedSlice(allocator);
}

const testing = std.testing;

fn testCounter(compat: config.Compat, item: *const config.RuleItem, window: budget.Window, limit: u64, value: []const u8) store.Counter {
    return .{
        .key = .{},
        .higress_key = key(compat, "chat", item, window, value),
        .budget = .{ .algorithm = .fixed, .window = window, .limit = limit },
        .unit = .tokens,
    };
}

test "higress_compat: keys as Higress 2.0.1 and 1.0.x format them" {
    const header = config.RuleItem{ .limit_type = .per_header, .source = "x-api-key", .written_source = "X-Api-Key", .keys = &.{} };
    // main.go AiTokenRateLimitFormat: prefix:{rule}:type:window:ruleItem.Key:value (2.0.1).
    try testing.expectEqualStrings("higress-token-ratelimit:{chat}:limit_by_per_header:60:X-Api-Key:sk-1", key(.higress, "chat", &header, .minute, "sk-1").slice());
    try testing.expectEqualStrings("higress-token-ratelimit:chat:limit_by_per_header:3600:X-Api-Key:sk-1", key(.higress_1_0, "chat", &header, .hour, "sk-1").slice());
    const global = config.RuleItem{ .limit_type = .global, .source = "", .keys = &.{} };
    try testing.expectEqualStrings("higress-token-ratelimit:{chat}:global_threshold:86400", key(.higress, "chat", &global, .day, "").slice());
    const consumer = config.RuleItem{ .limit_type = .consumer, .source = "", .keys = &.{} };
    try testing.expectEqualStrings("higress-token-ratelimit:chat:limit_by_consumer:1:x-mse-consumer:alice", key(.higress_1_0, "chat", &consumer, .second, "alice").slice());
    const ip = config.RuleItem{ .limit_type = .per_ip, .source = "from-header-X-Real-IP", .keys = &.{} };
    try testing.expectEqualStrings("higress-token-ratelimit:{r:1}:limit_by_per_ip:60:from-header-X-Real-IP:10.0.0.1", key(.higress, "r:1", &ip, .minute, "10.0.0.1").slice());
}

test "higress_compat: a value too long for a key is hashed, never cut" {
    const header = config.RuleItem{ .limit_type = .header, .source = "authorization", .keys = &.{} };
    const long: [key_bytes_max]u8 = @splat('v');
    const made = key(.higress, "chat", &header, .minute, &long);
    try testing.expect(std.mem.startsWith(u8, made.slice(), "higress-token-ratelimit:{chat}:limit_by_header:60:authorization:="));
    try testing.expectEqual(made.slice().len, "higress-token-ratelimit:{chat}:limit_by_header:60:authorization:=".len + 64);
}

test "higress_compat: check and charge arguments carry threshold, window and tokens per key" {
    const global = config.RuleItem{ .limit_type = .global, .source = "", .keys = &.{} };
    const counters = [_]store.Counter{testCounter(.higress, &global, .minute, 300, "")};
    const check = try checkArguments(testing.allocator, &counters);
    defer testing.allocator.free(check);
    try testing.expectEqualStrings("$1\r\n1\r\n$50\r\nhigress-token-ratelimit:{chat}:global_threshold:60\r\n$5\r\ncheck\r\n$3\r\n300\r\n$2\r\n60\r\n", check);
    const charge = try chargeArguments(testing.allocator, &counters, 42);
    defer testing.allocator.free(charge);
    try testing.expect(std.mem.endsWith(u8, charge, "$6\r\ncharge\r\n$3\r\n300\r\n$2\r\n60\r\n$2\r\n42\r\n"));
    const whole = try command(testing.allocator, charge, false);
    defer testing.allocator.free(whole);
    try testing.expect(std.mem.startsWith(u8, whole, "*8\r\n$7\r\nEVALSHA\r\n$40\r\n" ++ sha ++ "\r\n"));
    const eval = try command(testing.allocator, check, true);
    defer testing.allocator.free(eval);
    try testing.expect(std.mem.indexOf(u8, eval, source) != null); // the whole script travels (contract/min/, no comments to look for)
}
