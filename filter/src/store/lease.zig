//! Leases for hot keys (issue 17, docs/redis.md "Leases"): a gateway worker takes a slice of a
//! counter's budget from Redis in one script call (contract/budget.lua `lease`) and admits
//! against it locally until it is spent; then the next request asks for the next slice. On a
//! hot key that is one Redis call per slice instead of one per request.
//!
//! The invariants, and where each is kept:
//! - The sum handed out never exceeds the limit: the script grants at most `limit - used` and
//!   counts the grant as used at once. A worker admits only what its slice still covers.
//! - No charge is lost or doubled: every reservation made against a slice is inside a grant
//!   Redis already counted. A settlement below the reservation gives the difference back to
//!   the slice (same window only, as the script's refunds); one above it is taken from the
//!   slice while the slice covers it (postpaid charges are), else it goes to Redis as an
//!   ordinary settlement (the caller falls back), which adds `actual - reserved` there; so
//!   does one this table cannot place (its slot was reused). A slice never goes negative and
//!   a worker holds no debt. A lease call whose answer never comes is given back by
//!   `lease_return` under the request's marker (applied once, whichever runs first).
//! - A slice's unused remainder goes back to Redis with the worker's next lease call for the
//!   key (the call's `carry`), so renewing never strands it. A remainder still held when the
//!   window ends lapses with the window (Redis's record resets then anyway). A key that goes
//!   quiet mid-window keeps its remainder until the window ends: that is budget nobody uses,
//!   never budget spent twice; at most one slice per worker per key.
//! - Fixed windows of a fixed length only (second to day, no `time_zone`): a sliding window
//!   weighs the past continuously and a token bucket refills continuously, so a slice taken
//!   now would not stay inside the budget later; the config refuses `lease` with another
//!   `algorithm`, and counters with calendar windows take the ordinary path.
//! - One lease call in flight per key and worker: requests that find one going take the
//!   ordinary admit path meanwhile (one call each, as without leases).
//!
//! Bounded and allocation-free: `slots` entries, direct-mapped by the counter's hash (key and
//! budget). A slot holding a live remainder or a call in flight is never taken by another key;
//! that key takes the ordinary path.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const resp = @import("resp.zig");
const script = @import("script.zig");
const store = @import("store.zig");

pub const slots = 4096;

comptime {
    std.debug.assert(std.math.isPowerOfTwo(slots));
}

const Slot = struct {
    /// 0: empty.
    hash: u64 = 0,
    /// What is left of the slice (never negative: see the module doc).
    remaining: u64 = 0,
    /// The end of the slice's window, on this worker's clock and on Redis's.
    window_end_ms: u64 = 0,
    window_end_server_ms: u64 = 0,
    /// Redis's usage as the last grant reported it (it counts this slice whole), for headers.
    used_at_grant: u64 = 0,
    /// A lease call for the key is on its way until then (0: none).
    in_flight_until_ms: u64 = 0,

    fn live(self: *const Slot, now_ms: u64) bool {
        return now_ms < self.in_flight_until_ms or (self.remaining > 0 and now_ms < self.window_end_ms);
    }
};

/// What one counter's lease call asks for (budget.lua `lease`, 7 arguments a counter).
pub const Ask = struct { want: u64, need: u64, carry: u64, carry_end_ms: u64 };

pub const Table = struct {
    entries: [slots]Slot = @splat(.{}),

    /// Admits `counters` against this worker's slices when every one of them covers its
    /// amount: fills each counter's check, reservation and admission time (Redis's clock) and
    /// marks it `leased`. False (nothing changed) when any counter must ask Redis.
    pub fn admitLocal(self: *Table, counters: []store.Counter, now_ms: u64) bool {
        for (counters) |*counter| {
            if (!leasable(counter)) return false;
            const slot = self.slotOf(counter);
            if (slot.hash != hashOf(counter) or now_ms >= slot.window_end_ms) return false;
            const need = needOf(counter);
            if (slot.remaining < @max(need, 1)) return false;
        }
        for (counters) |*counter| {
            const slot = self.slotOf(counter);
            const need = needOf(counter);
            slot.remaining -= need;
            counter.reserved = need;
            counter.leased = true;
            counter.admitted_at_ms = slot.window_end_server_ms -| (slot.window_end_ms - now_ms);
            counter.check = .{ .limit = counter.budget.limit, .used = slot.used_at_grant -| slot.remaining, .reset_in_ms = slot.window_end_ms - now_ms };
        }
        return true;
    }

    /// Whether a lease call may go for `counters` now: every counter is leasable, its slot is
    /// free or its own, and no lease call for it is in flight.
    pub fn canAsk(self: *Table, counters: []const store.Counter, now_ms: u64) bool {
        for (counters) |*counter| {
            if (!leasable(counter)) return false;
            const slot = self.slotOf(counter);
            if (now_ms < slot.in_flight_until_ms) return false;
            if (slot.hash != hashOf(counter) and slot.live(now_ms)) return false;
        }
        return true;
    }

    /// Claims each counter's slot for a lease call (canAsk said yes), takes its remainder as
    /// the call's carry and writes the lease's arguments into `asks`.
    pub fn begin(self: *Table, counters: []const store.Counter, fraction_milli: u32, now_ms: u64, flight_ms: u64, asks: []Ask) void {
        std.debug.assert(asks.len == counters.len and fraction_milli > 0 and fraction_milli <= 1000);
        std.debug.assert(self.canAsk(counters, now_ms));
        for (counters, asks) |*counter, *ask| {
            const slot = self.slotOf(counter);
            const hash = hashOf(counter);
            if (slot.hash != hash) slot.* = .{ .hash = hash };
            const current = now_ms < slot.window_end_ms;
            ask.* = .{
                .want = sliceOf(counter.budget.limit, fraction_milli),
                .need = needOf(counter),
                .carry = if (current) slot.remaining else 0,
                .carry_end_ms = if (current) slot.window_end_server_ms else 0,
            };
            slot.remaining = 0;
            slot.in_flight_until_ms = now_ms +| flight_ms;
        }
    }

    /// Reads a lease reply (an admit reply followed by one grant per counter) into
    /// `counters`, as script.readAdmitReply does, and keeps each grant beyond the request's
    /// own amount as the worker's slice. `asked_ms`: when the call was asked (this worker's
    /// clock).
    pub fn readReply(self: *Table, counters: []store.Counter, values: []const i64, asked_ms: u64) store.Admission {
        if (values.len != 2 + 4 * counters.len) return .{ .failed = .bad_reply };
        const answer = script.readAdmitReply(counters, values[0 .. 2 + 3 * counters.len], false);
        const grants = values[2 + 3 * counters.len ..];
        const server_now_ms: u64 = @intCast(@max(values[1], 0));
        for (counters, grants) |*counter, grant_value| {
            const slot = self.slotOf(counter);
            if (slot.hash != hashOf(counter)) continue; // cannot happen while in flight; asked again
            slot.in_flight_until_ms = 0;
            const window_end_ms = asked_ms +| counter.check.reset_in_ms;
            if (window_end_ms != slot.window_end_ms) {
                // A new window: whatever a settlement gave back to the old one lapsed with it.
                if (slot.window_end_ms != 0 and asked_ms >= slot.window_end_ms) slot.remaining = 0;
                slot.window_end_ms = window_end_ms;
                slot.window_end_server_ms = server_now_ms +| counter.check.reset_in_ms;
            }
            slot.used_at_grant = counter.check.used;
            if (answer != .decided or answer.decided != null) continue;
            const grant: u64 = @intCast(@max(grant_value, 0));
            // The script grants at least the request's amount; a reply saying less is not
            // trusted with a slice (the request still holds what Redis added for it).
            slot.remaining += grant -| counter.reserved;
            counter.leased = true;
        }
        return answer;
    }

    /// Where a settlement of leased counters goes (Table.settle).
    pub const Settled = enum {
        /// Against the slices, no call.
        local,
        /// To Redis as it is: a slot is gone (or the counters were not leased).
        redis,
        /// To Redis with each counter's reservation raised by `covered`: a cost above the
        /// reservation that its slice could not cover; the slice gave what it had.
        redis_covered,
    };

    /// Settles leased counters against their slices, no call: a cost above the reservation is
    /// taken from the slice (postpaid charges all of theirs this way), a refund (below it, same
    /// window) goes back to it. When a slice cannot cover an overrun, its remainder goes into
    /// the overrun (`covered`) and the rest is for Redis, which adds `actual - reserved -
    /// covered` there; every other counter of the request is then settled in Redis too (its
    /// reservation is inside a grant Redis counted). Without this, a postpaid request admitted
    /// on a slice's last tokens would leave them for the next one, and the next, unbounded.
    pub fn settle(self: *Table, counters: []const store.Counter, actual_tokens: u64, now_ms: u64, covered: []u64) Settled {
        std.debug.assert(covered.len == counters.len);
        var overrun = false;
        for (counters) |*counter| {
            if (!counter.leased) return .redis;
            const slot = self.slotOf(counter);
            if (slot.hash != hashOf(counter)) return .redis;
            const actual = actualOf(counter, actual_tokens);
            if (actual > counter.reserved and (now_ms >= slot.window_end_ms or slot.remaining < actual - counter.reserved)) overrun = true;
        }
        if (overrun) {
            for (counters, covered) |*counter, *cover| {
                const slot = self.slotOf(counter);
                const actual = actualOf(counter, actual_tokens);
                cover.* = 0;
                if (actual <= counter.reserved) continue;
                cover.* = if (now_ms < slot.window_end_ms) @min(slot.remaining, actual - counter.reserved) else 0;
                slot.remaining -= cover.*;
            }
            return .redis_covered;
        }
        for (counters) |*counter| {
            const slot = self.slotOf(counter);
            const actual = actualOf(counter, actual_tokens);
            if (actual > counter.reserved) {
                slot.remaining -= actual - counter.reserved;
            } else if (now_ms < slot.window_end_ms and windowEnd(counter) == slot.window_end_server_ms) {
                slot.remaining += counter.reserved - actual;
            }
        }
        return .local;
    }

    fn slotOf(self: *Table, counter: *const store.Counter) *Slot {
        return &self.entries[@intCast(hashOf(counter) & (slots - 1))];
    }
};

/// Fixed windows of a fixed length (see the module doc).
pub fn leasable(counter: *const store.Counter) bool {
    return counter.budget.algorithm == .fixed and !counter.budget.window.isCalendar(counter.budget.zone);
}

/// The slice a lease asks for: `fraction` of the limit, at least 1.
pub fn sliceOf(limit: u64, fraction_milli: u32) u64 {
    const slice = std.math.mulWide(u64, limit, fraction_milli) / 1000;
    return @max(1, @as(u64, @intCast(@min(slice, limit))));
}

fn needOf(counter: *const store.Counter) u64 {
    return @min(counter.admit_amount, counter.budget.limit);
}

/// What a settlement costs a counter, as script.appendSettled sends it.
fn actualOf(counter: *const store.Counter, actual_tokens: u64) u64 {
    return switch (counter.unit) {
        .tokens => actual_tokens,
        .cost => counter.actual_cost,
        .requests => counter.reserved,
    };
}

/// The end (Redis's clock) of the window a leased counter was admitted in.
fn windowEnd(counter: *const store.Counter) u64 {
    const length = counter.budget.window.lengthMs();
    return counter.admitted_at_ms - counter.admitted_at_ms % length + length;
}

fn hashOf(counter: *const store.Counter) u64 {
    return counter.tableHash(0x6c65617365); // "lease"
}

/// Everything after the script argument of a `lease` (or, `giving_back`, `lease_return`)
/// call: numkeys, the counters' keys and the request's marker, the operation, 0 (the server's
/// clock), then per counter algorithm, window, limit and the ask.
pub fn arguments(allocator: std.mem.Allocator, counters: []const store.Counter, asks: []const Ask, marker: script.MarkerKey, giving_back: bool) ![]u8 {
    std.debug.assert(counters.len == asks.len and counters.len > 0);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, counters.len + 1);
    for (counters) |counter| try tail.arg(allocator, counter.key.slice());
    try tail.arg(allocator, marker.slice());
    try tail.arg(allocator, if (giving_back) "lease_return" else "lease");
    try tail.argInt(allocator, 0);
    for (counters, asks) |counter, ask| {
        std.debug.assert(leasable(&counter));
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try tail.argInt(allocator, counter.budget.window.lengthMs());
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, ask.want);
        try tail.argInt(allocator, ask.need);
        try tail.argInt(allocator, ask.carry);
        try tail.argInt(allocator, ask.carry_end_ms);
    }
    return tail.bytes.toOwnedSlice(allocator);
}

const testing = std.testing;

fn testCounter(key: []const u8, unit: @FieldType(store.Counter, "unit"), limit: u64, amount: u64) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = limit }, .unit = unit, .admit_amount = amount };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

/// A lease reply: admitted (or refused at `refused`), server time, used/limit/reset, grant.
fn reply(refused: i64, server_ms: i64, used: i64, limit: i64, reset_ms: i64, grant: i64) [6]i64 {
    return .{ refused, server_ms, used, limit, reset_ms, grant };
}

test "lease: a grant is admitted against locally until the slice is spent" {
    var table: Table = .{};
    var counters = [_]store.Counter{testCounter("k", .tokens, 1000, 30)};
    try testing.expect(!table.admitLocal(&counters, 1_000)); // nothing leased yet
    try testing.expect(table.canAsk(&counters, 1_000));
    var asks: [1]Ask = undefined;
    table.begin(&counters, 100, 1_000, 500, &asks);
    try testing.expectEqual(Ask{ .want = 100, .need = 30, .carry = 0, .carry_end_ms = 0 }, asks[0]);
    try testing.expect(!table.canAsk(&counters, 1_100)); // one call in flight per key
    const answer = table.readReply(&counters, &reply(0, 60_000 + 5_000, 100, 1000, 55_000, 100), 1_000);
    try testing.expectEqual(@as(?usize, null), answer.decided);
    try testing.expect(counters[0].leased);
    try testing.expectEqual(@as(u64, 30), counters[0].reserved);
    // 70 left: two more requests of 30 fit, the third asks again.
    var next = [_]store.Counter{testCounter("k", .tokens, 1000, 30)};
    try testing.expect(table.admitLocal(&next, 2_000));
    try testing.expectEqual(@as(u64, 30), next[0].reserved);
    try testing.expectEqual(@as(u64, 60), next[0].check.used); // Redis's 100 minus the 40 unspent
    try testing.expectEqual(@as(u64, 54_000), next[0].check.reset_in_ms);
    try testing.expectEqual(@as(u64, 60_000 + 5_000 + 1_000), next[0].admitted_at_ms); // Redis's clock
    try testing.expect(table.admitLocal(&next, 2_000));
    try testing.expect(!table.admitLocal(&next, 2_000));
    table.begin(&next, 100, 2_000, 500, &asks);
    try testing.expectEqual(@as(u64, 10), asks[0].carry); // the remainder goes back with the call
    try testing.expectEqual(@as(u64, 120_000), asks[0].carry_end_ms);
}

test "lease: a refund returns to the slice, an overrun past it settles in Redis" {
    var table: Table = .{};
    var counters = [_]store.Counter{testCounter("k", .tokens, 1000, 30)};
    var asks: [1]Ask = undefined;
    var covered: [1]u64 = undefined;
    table.begin(&counters, 50, 0, 500, &asks);
    _ = table.readReply(&counters, &reply(0, 61_000, 50, 1000, 59_000, 50), 0);
    try testing.expectEqual(Table.Settled.local, table.settle(&counters, 10, 5, &covered)); // 20 back: 40 left
    var next = [_]store.Counter{testCounter("k", .tokens, 1000, 40)};
    try testing.expect(table.admitLocal(&next, 10)); // 0 left
    try testing.expectEqual(Table.Settled.local, table.settle(&next, 40, 10, &covered));
    try testing.expectEqual(Table.Settled.redis_covered, table.settle(&next, 41, 10, &covered));
    try testing.expectEqual(@as(u64, 0), covered[0]); // nothing left to cover the 1 more
    // A refund for a past window changes nothing in this one.
    next[0].admitted_at_ms -= 60_000;
    try testing.expectEqual(Table.Settled.local, table.settle(&next, 0, 20, &covered));
    try testing.expect(!table.admitLocal(&next, 20));
    // Postpaid: admitted while the slice has anything left, charged from it afterwards; an
    // overrun takes the slice's last tokens and Redis gets the rest.
    var postpaid = [_]store.Counter{testCounter("k", .tokens, 1000, 0)};
    try testing.expectEqual(Table.Settled.local, table.settle(&counters, 0, 30, &covered)); // 30 back
    try testing.expect(table.admitLocal(&postpaid, 30));
    try testing.expectEqual(Table.Settled.local, table.settle(&postpaid, 25, 31, &covered)); // 5 left
    try testing.expect(table.admitLocal(&postpaid, 32));
    try testing.expectEqual(Table.Settled.redis_covered, table.settle(&postpaid, 25, 33, &covered));
    try testing.expectEqual(@as(u64, 5), covered[0]);
    try testing.expect(!table.admitLocal(&postpaid, 34)); // the slice is spent: ask again
}

test "lease: a refusal grants nothing; a slice lapses with its window" {
    var table: Table = .{};
    var counters = [_]store.Counter{testCounter("k", .requests, 10, 1)};
    var asks: [1]Ask = undefined;
    table.begin(&counters, 500, 0, 500, &asks);
    try testing.expectEqual(@as(u64, 5), asks[0].want);
    const refused = table.readReply(&counters, &reply(1, 1_000, 10, 10, 59_000, 0), 0);
    try testing.expectEqual(@as(?usize, 0), refused.decided);
    try testing.expect(!counters[0].leased);
    try testing.expect(table.canAsk(&counters, 1)); // the call is back
    table.begin(&counters, 500, 1, 500, &asks);
    _ = table.readReply(&counters, &reply(0, 1_000, 5, 10, 59_000, 5), 1);
    try testing.expect(table.admitLocal(&counters, 58_000));
    try testing.expect(!table.admitLocal(&counters, 59_001)); // the window ended
    table.begin(&counters, 500, 59_001, 500, &asks);
    try testing.expectEqual(@as(u64, 0), asks[0].carry); // nothing to give back to a reset window
}

test "lease: another key's live slice keeps its slot; sliding windows are not leased" {
    var table: Table = .{};
    var counters = [_]store.Counter{testCounter("k", .tokens, 1000, 1)};
    var asks: [1]Ask = undefined;
    table.begin(&counters, 100, 0, 500, &asks);
    _ = table.readReply(&counters, &reply(0, 1_000, 100, 1000, 59_000, 100), 0);
    var sliding = [_]store.Counter{testCounter("s", .tokens, 1000, 1)};
    sliding[0].budget.algorithm = .sliding;
    try testing.expect(!table.canAsk(&sliding, 0));
    try testing.expectEqual(@as(u64, 1), sliceOf(10, 1));
    try testing.expectEqual(@as(u64, std.math.maxInt(u64) / 1000 * 5), sliceOf(std.math.maxInt(u64) / 1000 * 1000, 5));
}

test "lease: arguments name the keys, the marker and seven numbers a counter" {
    const counters = [_]store.Counter{testCounter("k", .tokens, 300, 40)};
    const asks = [_]Ask{.{ .want = 15, .need = 40, .carry = 3, .carry_end_ms = 60_000 }};
    const tail = try arguments(testing.allocator, &counters, &asks, script.MarkerKey.init("k", "id"), false);
    defer testing.allocator.free(tail);
    try testing.expectEqualStrings("$1\r\n2\r\n$1\r\nk\r\n$6\r\nreq:id\r\n$5\r\nlease\r\n$1\r\n0\r\n" ++
        "$1\r\n0\r\n$5\r\n60000\r\n$3\r\n300\r\n$2\r\n15\r\n$2\r\n40\r\n$1\r\n3\r\n$5\r\n60000\r\n", tail);
}
