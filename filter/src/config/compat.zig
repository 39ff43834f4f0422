//! The rule field `compat` (docs/config.md, docs/higress-compat.md): "" (default) keeps
//! tokenlimit's own Redis counters; "higress" (2.0.1's keys) and "higress-1.0" (1.0.x's keys)
//! read and write Higress ai-token-ratelimit's own keys with Higress's counting, so the old
//! plugin and tokenlimit share one budget during a rolling upgrade
//! (store/higress_compat.zig, contract/higress_compat.lua). Pure.
const std = @import("std");
const config = @import("config.zig");

pub const Compat = enum {
    none,
    /// Higress 2.0.1 (the console's version): keys `higress-token-ratelimit:{<rule>}:...`.
    higress,
    /// Higress 1.0.x: keys `higress-token-ratelimit:<rule>:...` (no hash tag).
    higress_1_0,

    /// How the config spells each value.
    pub fn text(self: Compat) []const u8 {
        return switch (self) {
            .none => "",
            .higress => "higress",
            .higress_1_0 => "higress-1.0",
        };
    }

    pub fn fromText(spelled: []const u8) ?Compat {
        for (std.meta.tags(Compat)) |tag| if (std.mem.eql(u8, tag.text(), spelled)) return tag;
        return null;
    }
};

pub const expected = "one of \"\", \"higress\", \"higress-1.0\"";

/// Why a rule cannot run under `compat` (Higress's keys hold only what Higress counts), or
/// null. Each reason names the field to change.
pub fn refusal(rule: *const config.Rule) ?[]const u8 {
    if (rule.compat == .none) return null;
    if (rule.redis == null) return "needs redis: Higress's counters live in Redis";
    if (rule.admission != .postpaid) return "needs admission postpaid: Higress charges after the response and reserves nothing";
    if (rule.algorithm != .fixed) return "needs algorithm fixed: Higress counts in fixed windows";
    const default_weights: @TypeOf(rule.weights) = .{};
    if (!std.meta.eql(rule.weights, default_weights)) return "cannot be used with weights: Higress counts input + output tokens unweighted";
    for (rule.items) |item| {
        for (item.keys) |key| {
            for (key.limits.requests) |limit| {
                if (limit != null) return "cannot be used with request_per_* limits: Higress's keys count tokens only";
            }
            for (key.limits.cost) |limit| {
                if (limit != null) return "cannot be used with cost_per_* limits: Higress's keys count tokens only";
            }
        }
    }
    return null;
}

const testing = std.testing;

test "compat: the spellings a config may use" {
    try testing.expectEqual(Compat.none, Compat.fromText("").?);
    try testing.expectEqual(Compat.higress, Compat.fromText("higress").?);
    try testing.expectEqual(Compat.higress_1_0, Compat.fromText("higress-1.0").?);
    try testing.expectEqual(@as(?Compat, null), Compat.fromText("Higress"));
}

test "compat: only what Higress's keys can hold" {
    const redis: config.Redis = .{ .service_name = "redis.dns" };
    const tokens = [_]config.LimitKey{.{ .text = "*", .matcher = .any, .limits = .{ .tokens = .{ null, 100, null, null, null, null } } }};
    const items = [_]config.RuleItem{.{ .limit_type = .global, .source = "", .keys = &tokens }};
    var rule: config.Rule = .{ .name = "r", .items = &items, .redis = redis };
    try testing.expectEqual(@as(?[]const u8, null), refusal(&rule));
    rule.compat = .higress;
    try testing.expectEqual(@as(?[]const u8, null), refusal(&rule));
    rule.algorithm = .sliding;
    try testing.expect(refusal(&rule) != null);
    rule.algorithm = .fixed;
    rule.redis = null;
    rule.compat = .higress_1_0;
    try testing.expect(std.mem.indexOf(u8, refusal(&rule).?, "redis") != null);
    rule.redis = redis;
    const requests = [_]config.LimitKey{.{ .text = "*", .matcher = .any, .limits = .{ .requests = .{ 5, null, null, null, null, null } } }};
    const request_items = [_]config.RuleItem{.{ .limit_type = .global, .source = "", .keys = &requests }};
    rule.items = &request_items;
    try testing.expect(std.mem.indexOf(u8, refusal(&rule).?, "request_per_") != null);
}
