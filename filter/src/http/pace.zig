//! `pace_above` (issue 13), pure: above a share of a budget, an admitted request is held for the
//! interval that spreads what is left of the budget over the rest of its window, so the rest
//! lasts to the window's end instead of going in one burst. A token bucket's interval is its
//! natural rate (its window per `limit`). No host calls: context.zig holds the request.
const std = @import("std");
const admission = @import("admission.zig");
const store = @import("../store/store.zig");

pub const Delay = struct {
    ms: u64,
    /// The counter that asked for the longest interval (its name keys the spacing).
    index: usize,
};

/// The hold for a request admitted against `counters` (their checks as admission left them), or
/// null when every budget is at or below `pace_above_milli`. Never longer than `max_wait_ms`.
pub fn delay(counters: []const store.Counter, pace_above_milli: u32, estimate: admission.Estimate, max_wait_ms: u64) ?Delay {
    std.debug.assert(pace_above_milli > 0 and pace_above_milli < 1000);
    var longest: ?Delay = null;
    for (counters, 0..) |counter, index| {
        const ms = interval(counter, pace_above_milli, estimate) orelse continue;
        if (longest == null or ms > longest.?.ms) longest = .{ .ms = ms, .index = index };
    }
    var result = longest orelse return null;
    result.ms = @min(result.ms, max_wait_ms);
    return result;
}

/// One counter's interval, or null when it is not above the threshold.
fn interval(counter: store.Counter, pace_above_milli: u32, estimate: admission.Estimate) ?u64 {
    const limit = counter.check.limit;
    if (limit == 0) return null;
    // The share spent before this request: admission's check includes what it added.
    const before = counter.check.used -| counter.reserved;
    if (@as(u128, before) * 1000 <= @as(u128, limit) * pace_above_milli) return null;
    // What one request spends: what it reserved, else (postpaid) its estimate.
    const size = @max(1, if (counter.admit_amount > 0) counter.admit_amount else switch (counter.unit) {
        .requests => 1,
        .tokens => estimate.tokens,
        .cost => estimate.cost,
    });
    if (counter.budget.algorithm == .token_bucket) {
        return mulDiv(counter.budget.window.lengthMs(), size, limit);
    }
    // Requests of this size the rest of the window still has room for, spread over its rest.
    const left = (limit -| before);
    if (left == 0) return counter.check.reset_in_ms;
    return mulDiv(counter.check.reset_in_ms, size, @max(left, size));
}

fn mulDiv(a: u64, b: u64, c: u64) u64 {
    std.debug.assert(c > 0);
    return @intCast(@min(@as(u128, a) * b / c, std.math.maxInt(u64)));
}

const testing = std.testing;

fn counterAt(used: u64, limit: u64, reset_in_ms: u64) store.Counter {
    return .{
        .key = .{},
        .budget = .{ .algorithm = .fixed, .window = .minute, .limit = limit },
        .unit = .requests,
        .admit_amount = 1,
        .reserved = 1,
        .check = .{ .limit = limit, .used = used, .reset_in_ms = reset_in_ms },
    };
}

test "pace: at or below the threshold, no hold" {
    const counters = [_]store.Counter{counterAt(86, 100, 30_000)}; // 85 used before this one
    try testing.expectEqual(@as(?Delay, null), delay(&counters, 850, .{ .tokens = 0 }, 5000));
}

test "pace: above it, the rest of the window is spread over the room left" {
    // 90 used before, 10 left, 30 s to go: one request every 3 s.
    const counters = [_]store.Counter{counterAt(91, 100, 30_000)};
    try testing.expectEqual(Delay{ .ms = 3000, .index = 0 }, delay(&counters, 850, .{ .tokens = 0 }, 5000).?);
    // Never beyond max_wait_ms.
    try testing.expectEqual(@as(u64, 1000), delay(&counters, 850, .{ .tokens = 0 }, 1000).?.ms);
}

test "pace: a token bucket is paced at its natural rate" {
    var counter = counterAt(91, 600, 100);
    counter.budget = .{ .algorithm = .token_bucket, .window = .minute, .limit = 600 };
    counter.unit = .tokens;
    counter.admit_amount = 0; // postpaid: the estimate sizes it
    counter.reserved = 0;
    counter.check.used = 590;
    const counters = [_]store.Counter{counter};
    // 600 tokens a minute: 50 tokens every 5 s.
    try testing.expectEqual(@as(u64, 5000), delay(&counters, 500, .{ .tokens = 50 }, 60_000).?.ms);
}

test "pace: the counter asking for the longest interval decides" {
    const counters = [_]store.Counter{ counterAt(91, 100, 30_000), counterAt(96, 100, 20_000) };
    try testing.expectEqual(Delay{ .ms = 4000, .index = 1 }, delay(&counters, 850, .{ .tokens = 0 }, 5000).?);
}
