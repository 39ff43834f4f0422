//! Settlement, pure: what a finished request costs. The reservation made at admission is
//! replaced by this cost in the store that admitted it (context.zig makes the store call).
const std = @import("std");
const usage = @import("../usage/usage.zig");

pub const Charge = struct {
    tokens: u64,
    /// No usage was reported (an upstream without it, an aborted stream): the cost is
    /// estimated from the response's size.
    estimated: bool,

    /// The `tokenlimit_usage` access-log value.
    pub fn label(self: Charge, response_ok: bool) []const u8 {
        if (!response_ok) return "none";
        return if (self.estimated) "estimated" else "reported";
    }
};

/// Upstream refusals and errors (`response_ok` false) cost nothing. Otherwise the reported
/// usage under the rule's weights, or ~4 bytes a token of what was seen rather than nothing.
pub fn charge(response_ok: bool, seen: usage.Usage, response_bytes: u64, weights: usage.Weights) Charge {
    if (!response_ok) return .{ .tokens = 0, .estimated = false };
    if (!seen.seen()) return .{ .tokens = @min(std.math.divCeil(u64, response_bytes, 4) catch 0, usage.request_tokens_max), .estimated = true };
    return .{ .tokens = seen.weighted(weights), .estimated = false };
}

const testing = std.testing;

test "settle: a failed upstream response costs nothing" {
    const cost = charge(false, .{ .input_tokens = 10, .output_tokens = 5 }, 4096, .{});
    try testing.expectEqual(@as(u64, 0), cost.tokens);
    try testing.expectEqualStrings("none", cost.label(false));
}

test "settle: reported usage is charged under the rule's weights" {
    const cost = charge(true, .{ .input_tokens = 10, .output_tokens = 5 }, 4096, .{ .output_milli = 3000 });
    try testing.expectEqual(@as(u64, 25), cost.tokens);
    try testing.expectEqualStrings("reported", cost.label(true));
}

test "settle: without reported usage, about four bytes a token, rounded up" {
    const cost = charge(true, .{}, 9, .{});
    try testing.expectEqual(@as(u64, 3), cost.tokens);
    try testing.expect(cost.estimated);
    try testing.expectEqualStrings("estimated", cost.label(true));
    try testing.expectEqual(@as(u64, 0), charge(true, .{}, 0, .{}).tokens);
}
