//! Budget math: pure functions of `now_ms` and a stored record, so tests need no host and the
//! Redis Lua script (contract/budget.lua) can be checked against the same vectors
//! (contract/budget.json).
//!
//! Three algorithms, one record shape:
//! - `fixed`: windows aligned to the Unix epoch (a per-minute budget resets at every whole
//!   minute UTC), so `Retry-After` is predictable and gateways agree on boundaries. Weeks and
//!   months, and every window of a rule with a `time_zone`, are calendar windows instead
//!   (calendar.zig: local midnight, Monday, the 1st; DST days 23 or 25 hours).
//! - `sliding`: the current aligned window plus the previous one weighted by how much of it still
//!   overlaps the last `window` of time (the Cloudflare / nginx approximation).
//! - `token_bucket`: capacity = limit, refilled at limit per window, continuously; `used` is
//!   the bucket's deficit. Refill advances `start_ms` only by the time that refilled whole
//!   tokens, so integer math never drifts.
const std = @import("std");
const calendar = @import("calendar.zig");

pub const Window = enum(u8) {
    second = 0,
    minute = 1,
    hour = 2,
    day = 3,
    week = 4,
    month = 5,

    /// The nominal length: exact up to a day in UTC; a month is 1/12 of a Gregorian year. The
    /// token bucket refills at `limit` per nominal length; counter names carry it.
    pub fn seconds(self: Window) u64 {
        return switch (self) {
            .second => 1,
            .minute => 60,
            .hour => 3600,
            .day => 86400,
            .week => 604_800,
            .month => 2_629_746,
        };
    }

    pub fn lengthMs(self: Window) u64 {
        return self.seconds() * std.time.ms_per_s;
    }

    /// The longest a calendar window of this kind lasts (a DST day: 25 h; a 31-day month
    /// with a fall-back), for how long a record may still matter.
    pub fn longestMs(self: Window) u64 {
        return switch (self) {
            .second, .minute, .hour => self.lengthMs(),
            .day => 25 * std.time.ms_per_hour,
            .week => 7 * std.time.ms_per_day + std.time.ms_per_hour,
            .month => 31 * std.time.ms_per_day + std.time.ms_per_hour,
        };
    }

    /// Whether windows of this kind are calendar windows under `table` (null: no time zone).
    /// Second and minute windows stay epoch-aligned (every real zone offset is whole minutes);
    /// without a zone, so do hours and days (today's windows).
    pub fn isCalendar(self: Window, table: ?calendar.Table) bool {
        return switch (self) {
            .second, .minute => false,
            .hour, .day => table != null,
            .week, .month => true,
        };
    }

    pub fn calendarWindow(self: Window) calendar.Window {
        return @fromBackingInt(@intCast(@backingInt(self)));
    }
};

comptime {
    for (std.meta.tags(Window)) |window| std.debug.assert(std.mem.eql(u8, @tagName(window), @tagName(window.calendarWindow())));
}

pub const Algorithm = enum(u8) { fixed = 0, sliding = 1, token_bucket = 2 };

pub const limit_max: u64 = 1_000_000_000_000_000;

/// Start of the aligned window containing `now_ms`.
pub fn windowStartMs(now_ms: u64, window: Window) u64 {
    return now_ms - now_ms % window.lengthMs();
}

/// One counter as stored. Wire format (golden-tested, shared by every worker of one Envoy):
/// byte 0 = format version, then start_ms, used, previous as u64 little-endian.
pub const Record = struct {
    /// fixed/sliding: start of the window `used` counts; token_bucket: last refill time.
    start_ms: u64 = 0,
    used: u64 = 0,
    /// sliding: usage of the window before `start_ms`.
    previous: u64 = 0,

    pub const encoded_len = 25;
    const format_version: u8 = 2;

    pub fn encode(self: Record) [encoded_len]u8 {
        var bytes: [encoded_len]u8 = undefined;
        bytes[0] = format_version;
        std.mem.writeInt(u64, bytes[1..9], self.start_ms, .little);
        std.mem.writeInt(u64, bytes[9..17], self.used, .little);
        std.mem.writeInt(u64, bytes[17..25], self.previous, .little);
        return bytes;
    }

    /// A record of another length or version (an older build, corruption) reads as empty: a
    /// bad record costs at most one window of budget rather than wedging the key forever.
    pub fn decode(bytes: []const u8) ?Record {
        if (bytes.len != encoded_len or bytes[0] != format_version) return null;
        return .{
            .start_ms = std.mem.readInt(u64, bytes[1..9], .little),
            .used = std.mem.readInt(u64, bytes[9..17], .little),
            .previous = std.mem.readInt(u64, bytes[17..25], .little),
        };
    }
};

/// What one budget looks like at one moment.
pub const Check = struct {
    limit: u64,
    used: u64,
    /// When the budget next has room again (fixed/sliding: the window end; bucket: when the
    /// deficit drops below the limit, or one token's refill when it has room already).
    reset_in_ms: u64,

    pub fn exhausted(self: Check) bool {
        return self.used >= self.limit;
    }

    pub fn remaining(self: Check) u64 {
        return self.limit -| self.used;
    }

    /// Whether `amount` more fits. A reservation larger than the whole budget is let in on an
    /// unused budget (capped later), or no request that large could ever pass.
    pub fn fits(self: Check, amount: u64) bool {
        if (self.exhausted()) return false;
        if (amount > self.limit) return self.used == 0;
        return self.used + amount <= self.limit;
    }
};

pub const Budget = struct {
    algorithm: Algorithm,
    window: Window,
    limit: u64,
    /// The rule's time zone as rendered (`calendar`); null: UTC, epoch-aligned windows.
    zone: ?calendar.Table = null,

    /// The [start, end) window holding `at_ms` (fixed and sliding).
    pub fn bounds(self: Budget, at_ms: u64) calendar.Bounds {
        if (self.window.isCalendar(self.zone)) return calendar.bounds(self.zone orelse calendar.Table.utc, at_ms, self.window.calendarWindow());
        const start_ms = windowStartMs(at_ms, self.window);
        return .{ .start_ms = start_ms, .end_ms = start_ms + self.window.lengthMs() };
    }

    /// The record brought forward to `now_ms`: windows rolled, bucket refilled.
    pub fn current(self: Budget, record: Record, now_ms: u64) Record {
        std.debug.assert(self.limit > 0);
        const length_ms = self.window.lengthMs();
        switch (self.algorithm) {
            .fixed, .sliding => {
                const start_ms = self.bounds(now_ms).start_ms;
                if (record.start_ms == start_ms) return record;
                const previous = if (start_ms > 0 and self.previousStartMs(start_ms) == record.start_ms) record.used else 0;
                return .{ .start_ms = start_ms, .used = 0, .previous = if (self.algorithm == .sliding) previous else 0 };
            },
            .token_bucket => {
                if (record.used == 0 or now_ms <= record.start_ms) {
                    return .{ .start_ms = if (record.used == 0) now_ms else record.start_ms, .used = record.used };
                }
                const elapsed_ms = now_ms - record.start_ms;
                const refilled = mulDiv(elapsed_ms, self.limit, length_ms);
                if (refilled >= record.used) return .{ .start_ms = now_ms, .used = 0 };
                // Advance only by the time that bought whole tokens: the remainder carries over.
                const spent_ms = mulDivCeil(refilled, length_ms, self.limit); // <= elapsed_ms
                return .{ .start_ms = record.start_ms + spent_ms, .used = record.used - refilled };
            },
        }
    }

    /// Start of the window before the one starting at `start_ms` (epoch windows: one length
    /// earlier, and none before the epoch).
    fn previousStartMs(self: Budget, start_ms: u64) ?u64 {
        if (self.window.isCalendar(self.zone)) return self.bounds(start_ms - 1).start_ms;
        if (start_ms < self.window.lengthMs()) return null;
        return start_ms - self.window.lengthMs();
    }

    pub fn check(self: Budget, record: Record, now_ms: u64) Check {
        const state = self.current(record, now_ms);
        const length_ms = self.window.lengthMs();
        switch (self.algorithm) {
            .fixed, .sliding => {
                const window = self.bounds(now_ms);
                const reset_in_ms = window.end_ms - @max(now_ms, window.start_ms);
                if (self.algorithm == .fixed) return .{ .limit = self.limit, .used = state.used, .reset_in_ms = reset_in_ms };
                // The previous window still weighs what is left of this one.
                const weighted_previous = mulDiv(state.previous, reset_in_ms, window.end_ms - window.start_ms);
                return .{ .limit = self.limit, .used = state.used +| weighted_previous, .reset_in_ms = reset_in_ms };
            },
            .token_bucket => {
                // Time until the deficit is below the limit again (at least one token's refill).
                const excess = (state.used -| self.limit) +| 1;
                const wait_ms = mulDivCeil(excess, length_ms, self.limit);
                const since_refill_ms = now_ms -| state.start_ms;
                return .{ .limit = self.limit, .used = state.used, .reset_in_ms = @max(1, wait_ms -| since_refill_ms) };
            },
        }
    }

    /// The record after adding `amount` (saturating) at `now_ms`.
    pub fn add(self: Budget, record: Record, now_ms: u64, amount: u64) Record {
        var state = self.current(record, now_ms);
        state.used +|= amount;
        return state;
    }

    /// Admission against one counter: is there room for `amount` (0 = "is it not spent"),
    /// and if so (or when `force`d, in shadow mode) the record with it added.
    pub fn admit(self: Budget, record: Record, now_ms: u64, amount: u64, force: bool) Admitted {
        const state = self.current(record, now_ms);
        const before = self.check(state, now_ms);
        const refused = !before.fits(amount);
        if (refused and !force) return .{ .record = state, .check = before, .refused = true, .reserved = 0 };
        const reserved = @min(amount, self.limit);
        const next = self.add(state, now_ms, reserved);
        return .{ .record = next, .check = self.check(next, now_ms), .refused = refused, .reserved = reserved };
    }

    /// Replaces a reservation with the real cost: adds what was under-reserved, refunds what
    /// was over-reserved (in the reservation's window only).
    pub fn settle(self: Budget, record: Record, now_ms: u64, reserved: u64, actual: u64, admitted_at_ms: u64) Record {
        if (actual >= reserved) return self.add(record, now_ms, actual - reserved);
        return self.refund(record, now_ms, reserved - actual, admitted_at_ms);
    }

    /// The record after taking back `amount` (a reservation larger than the real usage), but
    /// only if it was made in the window still current: an expired window's reservation is gone.
    pub fn refund(self: Budget, record: Record, now_ms: u64, amount: u64, reserved_at_ms: u64) Record {
        var state = self.current(record, now_ms);
        if (self.algorithm != .token_bucket and self.bounds(reserved_at_ms).start_ms != state.start_ms) return state;
        state.used -|= amount;
        return state;
    }
};

/// The outcome of admitting one request against one counter.
pub const Admitted = struct {
    record: Record,
    check: Check,
    refused: bool,
    /// What was added: the amount, capped at the limit (0 when refused and not forced).
    reserved: u64,
};

/// a * b / c, saturating at u64 max: an idle bucket of 10^15 tokens a second refills past
/// 2^64 after ~5 h, and a refill that large means "full", not a wrapped count.
fn mulDiv(a: u64, b: u64, c: u64) u64 {
    std.debug.assert(c > 0);
    return saturate(@as(u128, a) * b / c);
}

/// a * b / c rounded up, saturating (a u64 times a u64 always fits u128).
fn mulDivCeil(a: u64, b: u64, c: u64) u64 {
    std.debug.assert(c > 0);
    const product = @as(u128, a) * b;
    return saturate(product / c + @intFromBool(product % c != 0));
}

fn saturate(value: u128) u64 {
    return if (value > std.math.maxInt(u64)) std.math.maxInt(u64) else @intCast(value);
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

test "fixed window: aligned to the epoch, resets at the boundary" {
    const b = Budget{ .algorithm = .fixed, .window = .minute, .limit = 100 };
    const t0: u64 = 1_700_000_010_000; // 30 s into a minute
    var r = b.add(.{}, t0, 60);
    r = b.add(r, t0 + 1000, 40);
    try testing.expect(b.check(r, t0 + 1000).exhausted());
    try testing.expectEqual(@as(u64, 29_000), b.check(r, t0 + 1000).reset_in_ms);
    try testing.expectEqual(@as(u64, 0), b.check(r, t0 + 30_000).used);
}

test "sliding window: the previous window still weighs in" {
    const b = Budget{ .algorithm = .sliding, .window = .minute, .limit = 100 };
    const start: u64 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000;
    const r = b.add(.{}, start + 50_000, 80);
    // 15 s into the next window, 45/60 of the previous 80 still counts: 60.
    try testing.expectEqual(@as(u64, 60), b.check(r, start + 75_000).used);
    try testing.expectEqual(@as(u64, 0), b.check(r, start + 120_000).used);
}

test "token bucket: refills continuously without drift" {
    const b = Budget{ .algorithm = .token_bucket, .window = .second, .limit = 10 };
    var r = b.add(.{}, 1000, 10);
    try testing.expect(b.check(r, 1000).exhausted());
    try testing.expectEqual(@as(u64, 100), b.check(r, 1000).reset_in_ms);
    // 1 ms at a time: 100 ms refill exactly one token, however it is sliced.
    var t: u64 = 1000;
    while (t < 1100) : (t += 1) r = b.current(r, t + 1);
    try testing.expectEqual(@as(u64, 9), r.used);
    try testing.expectEqual(@as(u64, 0), b.check(r, 2100).used);
}

test "reservations: fit, oversize on a fresh budget, refund only in the same window" {
    const b = Budget{ .algorithm = .fixed, .window = .minute, .limit = 100 };
    try testing.expect(b.check(.{}, 5).fits(100));
    try testing.expect(b.check(.{}, 5).fits(500)); // alone on a fresh budget
    const r = b.add(.{}, 5, 90);
    try testing.expect(!b.check(r, 5).fits(11));
    try testing.expectEqual(@as(u64, 30), b.refund(r, 10, 60, 5).used);
    try testing.expectEqual(@as(u64, 0), b.refund(r, 60_005, 60, 5).used);
}

test "record: golden wire format, foreign records read as empty" {
    const record = Record{ .start_ms = 0x0102030405060708, .used = 300, .previous = 1 };
    const expected = [_]u8{ 2, 8, 7, 6, 5, 4, 3, 2, 1, 0x2c, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 };
    try testing.expectEqualSlices(u8, &expected, &record.encode());
    try testing.expectEqual(record, Record.decode(&expected).?);
    try testing.expectEqual(@as(?Record, null), Record.decode(expected[0..24]));
    try testing.expectEqual(@as(?Record, null), Record.decode(&([_]u8{1} ++ expected[1..].*)));
}

test "adding saturates instead of wrapping" {
    const b = Budget{ .algorithm = .fixed, .window = .day, .limit = 1 };
    const r = b.add(.{ .used = std.math.maxInt(u64) - 1 }, 0, 5);
    try testing.expectEqual(std.math.maxInt(u64), r.used);
}

test "shared vectors: the same steps give the same results as the Redis scripts" {
    // contract/budget.json is also run against filter/contract/budget.lua on a real Redis
    // (tests/test_budget_vectors.py): one set of expectations for both stores.
    const Step = struct {
        op: []const u8,
        at_ms: u64,
        amount: u64 = 0,
        force: bool = false,
        reserved: u64 = 0,
        actual: u64 = 0,
        admitted_at_ms: u64 = 0,
        /// settle_batch (store/batch.zig): several settlements in one script call, each as `settle`.
        settlements: []const struct { reserved: u64, actual: u64, admitted_at_ms: u64 } = &.{},
        expect: ?struct { refused: bool, used: u64, reset_ms: u64, granted: ?u64 = null } = null,
        /// lease (store/lease.zig, issue 17): the slice asked for, and what the worker brings back.
        want: u64 = 0,
        carry: i64 = 0,
        carry_end_ms: u64 = 0,
    };
    // Calendar scenarios name their `window` (week, month) and may carry a zone table.
    const Scenario = struct {
        name: []const u8,
        algorithm: []const u8,
        window_ms: u64 = 0,
        window: ?[]const u8 = null,
        calendar: ?[]const [2]i64 = null,
        limit: u64,
        steps: []const Step,
    };
    const parsed = try std.json.parseFromSlice([]const Scenario, testing.allocator, @embedFile("budget.json"), .{});
    defer parsed.deinit();
    try testing.expect(parsed.value.len > 0);
    for (parsed.value) |scenario| {
        const window: Window = if (scenario.window) |name| std.meta.stringToEnum(Window, name).? else switch (scenario.window_ms) {
            1000 => .second,
            60_000 => .minute,
            3_600_000 => .hour,
            else => .day,
        };
        var transitions: [calendar.transitions_max]calendar.Transition = undefined;
        const zone: ?calendar.Table = if (scenario.calendar) |pairs| zone: {
            for (pairs, transitions[0..pairs.len]) |pair, *transition| transition.* = .{ .from_ms = @intCast(pair[0]), .offset_s = @intCast(pair[1]) };
            break :zone try calendar.Table.init(transitions[0..pairs.len]);
        } else null;
        const b = Budget{ .algorithm = std.meta.stringToEnum(Algorithm, scenario.algorithm).?, .window = window, .limit = scenario.limit, .zone = zone };
        var record = Record{};
        for (scenario.steps, 0..) |step, index| {
            if (std.mem.eql(u8, step.op, "settle")) {
                record = b.settle(record, step.at_ms, step.reserved, step.actual, step.admitted_at_ms);
                continue;
            }
            // settle_batch and batch_admit (store/batch.zig): settlements in one call, each as `settle`.
            for (step.settlements) |entry| record = b.settle(record, step.at_ms, entry.reserved, entry.actual, entry.admitted_at_ms);
            if (std.mem.eql(u8, step.op, "settle_batch")) continue;
            if (std.mem.eql(u8, step.op, "lease")) { // issue 17: carries, then a slice or nothing
                if (step.carry < 0) record = b.settle(record, step.at_ms, 0, @abs(step.carry), step.at_ms);
                if (step.carry > 0) record = b.settle(record, step.at_ms, @intCast(step.carry), 0, step.carry_end_ms - 1);
                const asked = b.admit(record, step.at_ms, step.amount, false);
                const used = b.check(record, step.at_ms).used;
                const granted = if (asked.refused) 0 else @min(@max(step.want, step.amount), b.limit - used);
                if (!asked.refused) record = b.add(record, step.at_ms, granted);
                const after = b.check(record, step.at_ms);
                try testing.expectEqual(step.expect.?.refused, asked.refused);
                try testing.expectEqual(step.expect.?.used, after.used);
                try testing.expectEqual(step.expect.?.reset_ms, after.reset_in_ms);
                try testing.expectEqual(step.expect.?.granted.?, granted);
                continue;
            }
            const outcome = b.admit(record, step.at_ms, step.amount, step.force);
            // The store writes nothing on a refusal it does not force.
            if (!outcome.refused or step.force) record = outcome.record;
            const expect = step.expect.?;
            errdefer std.debug.print("scenario \"{s}\" step {d}: refused={} used={d} reset_ms={d}\n", .{ scenario.name, index, outcome.refused, outcome.check.used, outcome.check.reset_in_ms });
            try testing.expectEqual(expect.refused, outcome.refused);
            try testing.expectEqual(expect.used, outcome.check.used);
            try testing.expectEqual(expect.reset_ms, outcome.check.reset_in_ms);
        }
    }
}

test "token bucket: u64-max usage never overflows the refill or the wait" {
    const max = std.math.maxInt(u64);
    const b = Budget{ .algorithm = .token_bucket, .window = .second, .limit = limit_max };
    const r = b.add(.{}, 1000, max);
    const c = b.check(r, 1000);
    try testing.expect(c.exhausted());
    try testing.expect(c.reset_in_ms > 0);
    // 1000 s refill 10^18 tokens: `refilled * length_ms` (10^21) is past u64.
    try testing.expectEqual(max - 1_000_000_000_000_000_000, b.current(r, 1000 + 1_000_000).used);
    try testing.expect(b.admit(r, 1000, 5, false).refused);
}

test "token bucket: 10^15 a second left idle 5 h saturates the refill instead of overflowing" {
    const b = Budget{ .algorithm = .token_bucket, .window = .second, .limit = limit_max };
    const r = b.add(.{}, 1000, 7);
    const later_ms = 1000 + 5 * 3600 * 1000; // 1.8e7 ms x 1e15 / 1000 = 1.8e19 > 2^64
    try testing.expectEqual(@as(u64, 0), b.check(r, later_ms).used);
    try testing.expect(!b.admit(r, later_ms, limit_max, false).refused);
}

test "budget math at the bounds: sliding and fixed with u64-max records" {
    const max = std.math.maxInt(u64);
    for ([_]Algorithm{ .fixed, .sliding }) |algorithm| {
        const b = Budget{ .algorithm = algorithm, .window = .day, .limit = limit_max };
        const start = windowStartMs(1_700_000_000_000, .day);
        const r = Record{ .start_ms = start, .used = max, .previous = max };
        try testing.expect(b.check(r, start + 1).exhausted());
        try testing.expectEqual(max, b.settle(r, start + 2, 0, max, start).used);
        try testing.expectEqual(@as(u64, 0), b.settle(r, start + 2, max, 0, start).used);
    }
}
