//! Soft limits (`warn_at`, issue 12): a budget past its warning fraction is named on admitted
//! responses (`x-tokenlimit-warning`), counted (`tokenlimit_budget_warnings`) and logged once
//! per window. Pure but for `addWarning` (the host calls) and the worker's small table of when
//! each counter was last logged.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const store = @import("../store/store.zig");
const admission = @import("admission.zig");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const metrics = @import("../abi/metrics.zig");

pub const header_name = "x-tokenlimit-warning";

/// The warning fraction (thousandths) of a counter: its item's, else its rule's; 0: none.
pub fn warnAtMilli(rule: *const config.Rule, counter: *const store.Counter) u32 {
    if (counter.item) |item| if (item.warn_at_milli > 0) return item.warn_at_milli;
    return rule.warn_at_milli;
}

/// Whether `check` has used at least `milli` thousandths of its limit.
pub fn crossed(check: budget.Check, milli: u32) bool {
    if (milli == 0 or check.limit == 0) return false;
    return @as(u128, check.used) * 1000 >= @as(u128, check.limit) * milli;
}

/// The counter past its warning fraction that has used the most of its budget, or null.
pub fn mostUsed(rule: *const config.Rule, counters: []const store.Counter) ?*const store.Counter {
    var found: ?*const store.Counter = null;
    for (counters) |*counter| {
        if (!crossed(counter.check, warnAtMilli(rule, counter))) continue;
        if (found == null or permille(counter.check) > permille(found.?.check)) found = counter;
    }
    return found;
}

fn permille(check: budget.Check) u64 {
    return @intCast(@min(@as(u128, check.used) * 1000 / @max(check.limit, 1), std.math.maxInt(u64)));
}

/// The header's value: "tokens per minute: 85% used".
pub fn describe(counter: *const store.Counter, buffer: []u8) []const u8 {
    const percent = @min(permille(counter.check) / 10, 999);
    return std.fmt.bufPrint(buffer, "{s} per {s}: {d}% used", .{ @tagName(counter.unit), @tagName(counter.budget.window), percent }) catch "";
}

/// When this worker last logged each counter (by a hash of its name): one line per window per
/// counter, in a fixed table (a collision logs once more, never grows memory).
var logged: [256]struct { digest: u64 = 0, at_ms: u64 = 0 } = @splat(.{});

/// Whether a warning about `counter` should be logged now: not logged within its window yet.
pub fn firstInWindow(counter: *const store.Counter, now_ms: u64) bool {
    const digest = std.hash.Wyhash.hash(0, counter.key.slice()) | 1;
    const slot = &logged[@intCast(digest % logged.len)];
    const window_ms = counter.budget.window.lengthMs();
    if (slot.digest == digest and now_ms -| slot.at_ms < window_ms) return false;
    slot.* = .{ .digest = digest, .at_ms = now_ms };
    return true;
}

/// `warn_at`: the budget past its warning fraction that is fullest, on the admitted response;
/// counted, and logged once per window.
pub fn addWarning(rule: *const config.Rule, counters: []const store.Counter) void {
    const counter = mostUsed(rule, counters) orelse return;
    var buffer: [96]u8 = undefined;
    const text = describe(counter, &buffer);
    host.replaceHeader(.response_headers, header_name, text) catch {};
    host.incrementMetric(metrics.plugin.budget_warnings, 1);
    labelled.countBudgetWarned(if (rule.configured_name.len > 0) rule.configured_name else rule.name); // issue 16
    if (firstInWindow(counter, host.nowMs())) {
        host.logf(.warn, "rule {s}: budget {s} past its warn_at: {s}", .{ rule.name, admission.counterIdentity(counter.key.slice()), text });
    }
}

const testing = std.testing;

test "warn: a budget past its fraction is named, the fullest first, logged once a window" {
    const items = [_]config.RuleItem{.{ .limit_type = .global, .source = "", .keys = &.{}, .warn_at_milli = 900 }};
    const rule = config.Rule{ .name = "r", .items = &items, .warn_at_milli = 800 };
    var counters = [_]store.Counter{
        .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = 100 }, .unit = .tokens, .check = .{ .limit = 100, .used = 85, .reset_in_ms = 1 } },
        .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .day, .limit = 10 }, .unit = .requests, .check = .{ .limit = 10, .used = 8, .reset_in_ms = 1 }, .item = &items[0] },
    };
    counters[0].key.len = 1;
    counters[0].key.bytes[0] = 'a';
    // The first is past the rule's 0.8; the second is under its item's 0.9.
    try testing.expectEqual(&counters[0], mostUsed(&rule, &counters).?);
    var buffer: [64]u8 = undefined;
    try testing.expectEqualStrings("tokens per minute: 85% used", describe(&counters[0], &buffer));
    counters[1].check.used = 10;
    try testing.expectEqual(&counters[1], mostUsed(&rule, &counters).?);
    try testing.expect(!crossed(.{ .limit = 100, .used = 79, .reset_in_ms = 0 }, 800));
    try testing.expect(firstInWindow(&counters[0], 1_000));
    try testing.expect(!firstInWindow(&counters[0], 59_000));
    try testing.expect(firstInWindow(&counters[0], 61_000));
}
