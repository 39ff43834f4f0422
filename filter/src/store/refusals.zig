//! Counters known to be over budget (issue 17): a small per-worker cache, filled from the
//! Redis store's admit replies, so that a key that refuses every request is not asked again
//! until it resets. A request with any counter in it is refused locally, with the same 429 and
//! `x-ratelimit-*` headers the script's reply would have given (the cached used and limit, the
//! reset counted down on this worker's clock). 0 Redis calls for such a request.
//!
//! What is cached: only counters whose reply shows them exhausted (used >= limit), which refuse
//! any amount; a counter that refused only because a large reservation did not fit is not (a
//! smaller request may fit). Keyed by a hash of the counter key and its budget (algorithm,
//! window, limit), so a changed limit is a different entry.
//!
//! How long, and refunds: an entry lives until the counter's reset as the reply gave it,
//! counted from when the admission was asked (never later than the real reset). Room can come
//! back earlier in two ways: a sliding window's weighted past shrinks continuously, and under
//! `reserve` a reservation settled below its estimate frees room. For those counters (sliding,
//! or token and cost counters that reserve) an entry lives at most `refundable_hold_ms`, so a
//! refund is seen within that time per worker. Fixed windows, token buckets (whose reset is
//! when one token is back) and request counters are held to their reset. Shadow mode never
//! reads or fills the cache (its admissions must reach Redis to be counted).
//!
//! Bounded and allocation-free: `slots` entries, direct-mapped by hash; a colliding key takes
//! the slot (the old key is simply asked again).
const std = @import("std");
const budget = @import("../meter/budget.zig");
const store = @import("store.zig");

pub const slots = 4096;
/// The longest a refusal is trusted where room can come back before the reset.
pub const refundable_hold_ms: u64 = 1000;

comptime {
    std.debug.assert(std.math.isPowerOfTwo(slots));
}

const Entry = struct {
    /// 0: empty.
    hash: u64 = 0,
    /// This worker's clock: the entry is void from then on.
    until_ms: u64 = 0,
    /// For the rejection headers.
    used: u64 = 0,
    limit: u64 = 0,
    /// The counter's reset (this worker's clock), for Retry-After.
    reset_at_ms: u64 = 0,
};

pub const Cache = struct {
    entries: [slots]Entry = @splat(.{}),

    /// The index of a counter known to be exhausted at `now_ms`, with its `check` filled for
    /// the rejection; null when every counter must be asked.
    pub fn refusing(self: *Cache, counters: []store.Counter, now_ms: u64) ?usize {
        for (counters, 0..) |*counter, index| {
            const hash = hashOf(counter);
            const entry = &self.entries[slotOf(hash)];
            if (entry.hash != hash) continue;
            if (now_ms >= entry.until_ms) {
                entry.* = .{};
                continue;
            }
            counter.check = .{ .used = entry.used, .limit = entry.limit, .reset_in_ms = @max(entry.reset_at_ms -| now_ms, 1) };
            counter.reserved = 0;
            return index;
        }
        return null;
    }

    /// Learns from an admit reply read into `counters` (their checks filled): each exhausted
    /// counter is kept until its reset, as the module doc says. `asked_ms`: when the admission
    /// was asked, on this worker's clock.
    pub fn learn(self: *Cache, counters: []const store.Counter, asked_ms: u64) void {
        for (counters) |*counter| {
            if (!counter.check.exhausted() or counter.check.reset_in_ms == 0) continue;
            const hash = hashOf(counter);
            const reset_at_ms = asked_ms +| counter.check.reset_in_ms;
            const refundable = counter.budget.algorithm == .sliding or (counter.unit != .requests and counter.admit_amount > 0);
            self.entries[slotOf(hash)] = .{
                .hash = hash,
                .until_ms = if (refundable) @min(reset_at_ms, asked_ms +| refundable_hold_ms) else reset_at_ms,
                .used = counter.check.used,
                .limit = counter.check.limit,
                .reset_at_ms = reset_at_ms,
            };
        }
    }
};

fn slotOf(hash: u64) usize {
    return @intCast(hash & (slots - 1));
}

fn hashOf(counter: *const store.Counter) u64 {
    return counter.tableHash(0x746f6b656e6c696d); // "tokenlim"
}

const testing = std.testing;

fn testCounter(key: []const u8, algorithm: budget.Algorithm, unit: @FieldType(store.Counter, "unit"), amount: u64) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = algorithm, .window = .minute, .limit = 100 }, .unit = unit, .admit_amount = amount };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

test "refusals: an exhausted fixed-window counter is refused locally until its reset" {
    var cache: Cache = .{};
    var counters = [_]store.Counter{ testCounter("k:ok", .fixed, .tokens, 0), testCounter("k:full", .fixed, .tokens, 0) };
    counters[0].check = .{ .used = 5, .limit = 100, .reset_in_ms = 30_000 };
    counters[1].check = .{ .used = 120, .limit = 100, .reset_in_ms = 30_000 };
    cache.learn(&counters, 1_000);
    var asked = [_]store.Counter{ testCounter("k:ok", .fixed, .tokens, 0), testCounter("k:full", .fixed, .tokens, 0) };
    try testing.expectEqual(@as(?usize, 1), cache.refusing(&asked, 11_000));
    try testing.expectEqual(budget.Check{ .used = 120, .limit = 100, .reset_in_ms = 20_000 }, asked[1].check);
    try testing.expectEqual(@as(?usize, null), cache.refusing(asked[0..1], 11_000)); // it had room
    try testing.expectEqual(@as(?usize, null), cache.refusing(&asked, 31_000)); // reset: ask again
    try testing.expectEqual(@as(?usize, null), cache.refusing(&asked, 11_000)); // and forgotten
}

test "refusals: a changed limit is another entry" {
    var cache: Cache = .{};
    var counters = [_]store.Counter{testCounter("k", .fixed, .requests, 1)};
    counters[0].check = .{ .used = 100, .limit = 100, .reset_in_ms = 30_000 };
    cache.learn(&counters, 0);
    var raised = [_]store.Counter{testCounter("k", .fixed, .requests, 1)};
    raised[0].budget.limit = 200;
    try testing.expectEqual(@as(?usize, null), cache.refusing(&raised, 1));
    try testing.expectEqual(@as(?usize, 0), cache.refusing(&counters, 1)); // request counters: to the reset
}

test "refusals: room that a refund or a sliding window can free is trusted for a second only" {
    var cache: Cache = .{};
    var counters = [_]store.Counter{ testCounter("reserve", .fixed, .tokens, 40), testCounter("slide", .sliding, .tokens, 0) };
    for (&counters) |*counter| counter.check = .{ .used = 100, .limit = 100, .reset_in_ms = 30_000 };
    cache.learn(&counters, 0);
    try testing.expectEqual(@as(?usize, 0), cache.refusing(counters[0..1], refundable_hold_ms - 1));
    try testing.expectEqual(@as(?usize, 0), cache.refusing(counters[1..2], refundable_hold_ms - 1));
    try testing.expectEqual(@as(?usize, null), cache.refusing(&counters, refundable_hold_ms));
}

test "refusals: a counter that refused only a large reservation is not cached" {
    var cache: Cache = .{};
    var counters = [_]store.Counter{testCounter("k", .fixed, .tokens, 90)};
    counters[0].check = .{ .used = 50, .limit = 100, .reset_in_ms = 30_000 };
    cache.learn(&counters, 0);
    try testing.expectEqual(@as(?usize, null), cache.refusing(&counters, 1));
}
