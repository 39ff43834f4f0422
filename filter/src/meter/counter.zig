//! Budget counters by name: `counterKey` is the counter's name in every store (and in
//! `tokenlimit usage`, which computes the same name in Python), `identity` what of the caller
//! goes into it. Pure.
const std = @import("std");
const budget = @import("budget.zig");
const config = @import("../config/config.zig");
const message = @import("../abi/message.zig");
const sha256 = @import("../match/sha256.zig");

/// Counters one request may touch: every matching item times its windows and units.
pub const counters_max = config.rule_items_max * std.meta.tags(budget.Window).len * std.meta.tags(config.Unit).len;
/// budget.lua answers 2 + 3 integers per counter; the Redis store reads at most this many.
pub const reply_counters_max = 576;
comptime {
    std.debug.assert(counters_max <= reply_counters_max);
}

pub const counter_key_bytes_max = 256;
pub const CounterKey = struct {
    bytes: [counter_key_bytes_max]u8 = undefined,
    len: usize = 0,

    pub fn slice(self: *const CounterKey) []const u8 {
        return self.bytes[0..self.len];
    }
};

/// Hex of the first 16 bytes of SHA-256: how credentials appear in stores and logs.
pub const HashedValue = [32]u8;

pub fn hashValue(value: []const u8) HashedValue {
    const digest = sha256.hash(value);
    return std.fmt.bytesToHex(digest[0..16].*, .lower);
}

/// The identity of a caller within an item as it may be stored and logged: hashed when the
/// value may be a credential, as-is otherwise (values too long for a key are hashed as well).
pub fn identity(limit_type: config.LimitType, value: []const u8, out: *HashedValue) []const u8 {
    if (limit_type == .global) return "global";
    if (limit_type.hashesValue() or value.len > out.len or !isPlain(value)) {
        out.* = hashValue(value);
        return out;
    }
    return value;
}

fn isPlain(value: []const u8) bool {
    for (value) |c| if (c <= ' ' or c >= 0x7f or c == ':' or c == '{' or c == '}') return false;
    return true;
}

/// `tokenlimit:{<rule>}:<type>[:<source>]:<unit>:<window seconds>:<identity>[:m=<model>]` — the
/// counter's name in every store. The `{rule}` hash tag keeps one request's counters on one
/// Redis Cluster slot (one script touches them all). It leaves out the matched `limit_keys`
/// entry, so editing a limit keeps the usage counted so far. `model` is set for `per_model`
/// items only (already through `identity`: plain or hashed); `m=` tells it from an identity.
pub fn counterKey(rule_name: []const u8, item: *const config.RuleItem, unit: config.Unit, w: budget.Window, caller: []const u8, model: ?[]const u8) error{Overflow}!CounterKey {
    const separator: []const u8 = if (item.source.len > 0) ":" else "";
    const model_separator: []const u8 = if (model != null) ":m=" else "";
    var seconds: [20]u8 = undefined;
    // Joined, not std.fmt.bufPrint: every request names its counters (issue 17: ~400 Wasm
    // instructions a name fewer, and a smaller module).
    const parts = [_][]const u8{
        "tokenlimit:{", rule_name, "}:",                                   @tagName(item.limit_type), separator, item.source,     ":",
        @tagName(unit), ":",       message.decimal(&seconds, w.seconds()), ":",                       caller,    model_separator, model orelse "",
    };
    var key: CounterKey = .{};
    key.len = (message.join(&key.bytes, &parts) orelse return error.Overflow).len;
    return key;
}

test "counter: keys hash credentials and keep addresses readable" {
    const item = config.RuleItem{ .limit_type = .per_header, .source = "authorization", .keys = &.{} };
    var hashed: HashedValue = undefined;
    const caller = identity(item.limit_type, "Bearer sk-secret", &hashed);
    try std.testing.expect(std.mem.indexOf(u8, caller, "sk-secret") == null);
    try std.testing.expectEqual(@as(usize, 32), caller.len);
    const key = try counterKey("chat", &item, .tokens, .minute, caller, null);
    try std.testing.expect(std.mem.startsWith(u8, key.slice(), "tokenlimit:{chat}:per_header:authorization:tokens:60:"));
    // Pinned so `tokenlimit usage --key` (Python) computes the same name.
    try std.testing.expectEqualStrings("afa6f8ec47e70b6579157f844acfdd33", &hashValue("Bearer sk-secret"));

    const ip_item = config.RuleItem{ .limit_type = .per_ip, .source = "from-remote-addr", .keys = &.{} };
    const ip_key = try counterKey("chat", &ip_item, .requests, .hour, identity(.per_ip, "10.1.2.3", &hashed), null);
    try std.testing.expectEqualStrings("tokenlimit:{chat}:per_ip:from-remote-addr:requests:3600:10.1.2.3", ip_key.slice());
    const global_item = config.RuleItem{ .limit_type = .global, .source = "", .keys = &.{} };
    const global_key = try counterKey("chat", &global_item, .tokens, .day, identity(.global, "", &hashed), null);
    try std.testing.expectEqualStrings("tokenlimit:{chat}:global:tokens:86400:global", global_key.slice());
}

test "counter: per_model keys gain a model segment; model items key on the model" {
    var hashed: HashedValue = undefined;
    var hashed_model: HashedValue = undefined;
    const item = config.RuleItem{ .limit_type = .per_consumer, .source = "", .keys = &.{}, .per_model = true };
    const key = try counterKey("chat", &item, .tokens, .minute, identity(.per_consumer, "alice", &hashed), identity(.per_model, "gpt-4o", &hashed_model));
    try std.testing.expectEqualStrings("tokenlimit:{chat}:per_consumer:tokens:60:alice:m=gpt-4o", key.slice());
    const quota = config.RuleItem{ .limit_type = .per_model, .source = "", .keys = &.{} };
    const quota_key = try counterKey("chat", &quota, .tokens, .minute, identity(.per_model, "gpt-4o", &hashed), null);
    try std.testing.expectEqualStrings("tokenlimit:{chat}:per_model:tokens:60:gpt-4o", quota_key.slice());
    // An odd model (a colon, a space, longer than 32 bytes) is hashed like any odd identity.
    try std.testing.expectEqual(@as(usize, 32), identity(.per_model, "org:model name", &hashed).len);
}
