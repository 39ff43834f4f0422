//! Calendar windows in a rule's time zone: which [start, end) window holds `now_ms`.
//!
//! The filter has no tzdata (wasm32-freestanding), so the control plane renders the rule's
//! `time_zone` into a `Table` of UTC offsets (tokenlimit.model.calendar.render_table). The math
//! here is the one definition the control plane (`window_bounds`) and the Redis script
//! (contract/calendar.lua) spell too; contract/calendar.json holds the vectors all three pass.
//!
//! - `second`, `minute`, `hour`: real durations aligned to the local clock, cut where the offset
//!   changes, so an hour never lasts longer than an hour (a repeated hour counts twice).
//! - `day`, `week` (from Monday), `month` (from the 1st): calendar periods. A period starts at
//!   the first instant the local clock reads 00:00 of its first day (a skipped midnight: at the
//!   jump), so DST days last 23 or 25 hours. The period holding `now` is the latest one whose
//!   start the clock has reached at some instant up to `now`, so a fall-back across midnight
//!   does not reopen the day before: periods tile time with no overlap and no gap.
//!
//! Pure functions of their arguments, no allocation, no host calls. Input cannot make them
//! panic: a table is checked once by `Table.init`, and `now_ms` is clamped to
//! [time_ms_min, time_ms_max], which bounds every intermediate value (see `bounds`).
const std = @import("std");

// The same bounds are in contract/calendar.json ("bounds"); a test below compares them.
pub const transitions_max = 64;
pub const offset_s_max: i64 = 18 * 3600;
pub const time_ms_min: u64 = 946_684_800_000; // 2000-01-01T00:00:00Z
pub const time_ms_max: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

const second_ms: i64 = 1000;
const minute_ms: i64 = 60 * second_ms;
const hour_ms: i64 = 60 * minute_ms;
const day_ms: i64 = 24 * hour_ms;

// Every value `bounds` computes lies within a month and the largest offset of a clamped time,
// far inside i64 and u64: the casts at its end cannot fail.
comptime {
    std.debug.assert(time_ms_max + 32 * day_ms + 2 * offset_s_max * second_ms < std.math.maxInt(i64));
    std.debug.assert(time_ms_min > 32 * day_ms + 2 * offset_s_max * second_ms);
}

pub const Window = enum { second, minute, hour, day, week, month };

/// From `from_ms` (UTC) on, the local clock reads UTC + `offset_s`, until the next transition.
pub const Transition = struct {
    from_ms: u64,
    offset_s: i32,
};

pub const Bounds = struct {
    start_ms: u64,
    end_ms: u64,
};

/// A zone's offsets, in increasing `from_ms` order. The first entry's offset also holds before
/// it, the last one's after it.
pub const Table = struct {
    transitions: []const Transition,

    pub const Error = error{ TableEmpty, TableTooLong, TransitionOutOfRange, OffsetOutOfRange, TransitionsOutOfOrder };

    pub const utc: Table = .{ .transitions = &.{.{ .from_ms = time_ms_min, .offset_s = 0 }} };

    /// A checked table; the caller keeps `transitions` alive. The error names what is wrong,
    /// for the config loader's log line.
    pub fn init(transitions: []const Transition) Error!Table {
        if (transitions.len == 0) return error.TableEmpty;
        if (transitions.len > transitions_max) return error.TableTooLong;
        for (transitions, 0..) |transition, index| {
            if (transition.from_ms > time_ms_max) return error.TransitionOutOfRange;
            if (@abs(@as(i64, transition.offset_s)) > offset_s_max) return error.OffsetOutOfRange;
            if (index > 0 and transition.from_ms <= transitions[index - 1].from_ms) return error.TransitionsOutOfOrder;
        }
        return .{ .transitions = transitions };
    }

    /// The entries that decide every window within `margin_ms` of `now_ms`: the one in effect
    /// at now - margin through the last one starting by now + margin. The Redis store sends
    /// only these (a handful of pairs) with each script call; with a margin of a month plus the
    /// clock skew it tolerates, the script computes the same windows as with the whole table.
    pub fn around(self: Table, now_ms: u64, margin_ms: u64) Table {
        const first = self.segment(now_ms -| margin_ms);
        const last = self.segment(now_ms +| margin_ms);
        return .{ .transitions = self.transitions[first .. last + 1] };
    }

    /// The index of the entry in effect at `at_ms` (0 before the first entry).
    fn segment(self: Table, at_ms: u64) usize {
        var index: usize = 0;
        for (self.transitions[1..], 1..) |transition, candidate| {
            if (transition.from_ms > at_ms) break;
            index = candidate;
        }
        return index;
    }

    fn fromMs(self: Table, index: usize) i64 {
        return @intCast(self.transitions[index].from_ms);
    }

    fn offsetMs(self: Table, index: usize) i64 {
        return @as(i64, self.transitions[index].offset_s) * second_ms;
    }
};

/// The window of kind `window` holding `now_ms` (clamped to [time_ms_min, time_ms_max]).
/// `end_ms - now_ms` is what Retry-After and the reset headers count down.
pub fn bounds(table: Table, now_ms: u64, window: Window) Bounds {
    std.debug.assert(table.transitions.len > 0);
    const now: i64 = @intCast(std.math.clamp(now_ms, time_ms_min, time_ms_max));
    const index = table.segment(@intCast(now));
    const start: i64, const end: i64 = switch (window) {
        .second, .minute, .hour => fixed: {
            const length: i64 = switch (window) {
                .second => second_ms,
                .minute => minute_ms,
                else => hour_ms,
            };
            const offset = table.offsetMs(index);
            const local = now + offset;
            var start = local - @mod(local, length) - offset;
            var end = start + length;
            // The local clock jumps where the offset changes; so does the window.
            if (index > 0) start = @max(start, table.fromMs(index));
            if (index + 1 < table.transitions.len) end = @min(end, table.fromMs(index + 1));
            break :fixed .{ start, end };
        },
        .day, .week, .month => period: {
            const first = periodStartLocal(localReached(table, now, index), window);
            const next = nextPeriodLocal(first, window);
            break :period .{ firstReaching(table, first), firstReaching(table, next) };
        },
    };
    std.debug.assert(start <= now and now < end);
    return .{ .start_ms = @intCast(@max(start, 0)), .end_ms = @intCast(@max(end, 0)) };
}

/// The latest local time the clock has shown at any instant up to `now`: after a fall-back it
/// is the time just before the jump until the clock catches up.
fn localReached(table: Table, now: i64, index: usize) i64 {
    var reached = now + table.offsetMs(index);
    for (1..index + 1) |past| reached = @max(reached, table.fromMs(past) - 1 + table.offsetMs(past - 1));
    return reached;
}

/// The first instant at which the local clock reads `local` or later: a time skipped by a jump
/// forward is reached at the jump; a time shown twice is reached the first time.
fn firstReaching(table: Table, local: i64) i64 {
    for (0..table.transitions.len) |index| {
        var candidate = local - table.offsetMs(index);
        if (index > 0) candidate = @max(candidate, table.fromMs(index));
        if (index + 1 == table.transitions.len or candidate < table.fromMs(index + 1)) return candidate;
    }
    unreachable; // the last entry always answers
}

fn periodStartLocal(local: i64, window: Window) i64 {
    var days = @divFloor(local, day_ms);
    switch (window) {
        .day => {},
        // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
        .week => days -= @mod(days + 3, 7),
        .month => {
            const date = civilFromDays(days);
            days = daysFromCivil(date.year, date.month, 1);
        },
        .second, .minute, .hour => unreachable,
    }
    return days * day_ms;
}

fn nextPeriodLocal(start_local: i64, window: Window) i64 {
    return switch (window) {
        .day => start_local + day_ms,
        .week => start_local + 7 * day_ms,
        .month => month: {
            const date = civilFromDays(@divFloor(start_local, day_ms));
            const days = if (date.month == 12) daysFromCivil(date.year + 1, 1, 1) else daysFromCivil(date.year, date.month + 1, 1);
            break :month days * day_ms;
        },
        .second, .minute, .hour => unreachable,
    };
}

const Date = struct { year: i64, month: i64, day: i64 };

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm, spelled the
/// same way in calendar.py and calendar.lua).
fn daysFromCivil(year_in: i64, month: i64, day: i64) i64 {
    const year = if (month <= 2) year_in - 1 else year_in;
    const era = @divFloor(year, 400);
    const year_of_era = year - era * 400;
    const day_of_year = @divFloor(153 * (if (month > 2) month - 3 else month + 9) + 2, 5) + day - 1;
    const day_of_era = year_of_era * 365 + @divFloor(year_of_era, 4) - @divFloor(year_of_era, 100) + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

fn civilFromDays(days_in: i64) Date {
    const days = days_in + 719468;
    const era = @divFloor(days, 146097);
    const day_of_era = days - era * 146097;
    const year_of_era = @divFloor(day_of_era - @divFloor(day_of_era, 1460) + @divFloor(day_of_era, 36524) - @divFloor(day_of_era, 146096), 365);
    const day_of_year = day_of_era - (365 * year_of_era + @divFloor(year_of_era, 4) - @divFloor(year_of_era, 100));
    const shifted_month = @divFloor(5 * day_of_year + 2, 153);
    const month = if (shifted_month < 10) shifted_month + 3 else shifted_month - 9;
    return .{
        .year = year_of_era + era * 400 + @intFromBool(month <= 2),
        .month = month,
        .day = day_of_year - @divFloor(153 * shifted_month + 2, 5) + 1,
    };
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

const Vectors = struct {
    _comment: []const u8,
    bounds: struct { transitions_max: u64, offset_s_max: i64, time_ms_min: u64, time_ms_max: u64 },
    zones: std.json.ArrayHashMap(struct {
        rendered_from: ?[]const u8,
        rendered_to: ?[]const u8,
        transitions: []const [2]i64,
    }),
    vectors: []const struct {
        name: []const u8,
        zone: []const u8,
        window: []const u8,
        now: ?[]const u8,
        now_ms: u64,
        start: ?[]const u8,
        start_ms: u64,
        end: ?[]const u8,
        end_ms: u64,
    },
};

/// The zone's table from the vectors, into `buffer`.
fn vectorTable(vectors: Vectors, zone: []const u8, buffer: *[transitions_max]Transition) !Table {
    const entries = (vectors.zones.map.get(zone) orelse return error.UnknownZone).transitions;
    if (entries.len > buffer.len) return error.TableTooLong;
    for (entries, buffer[0..entries.len]) |entry, *transition| {
        transition.* = .{ .from_ms = @intCast(entry[0]), .offset_s = @intCast(entry[1]) };
    }
    return Table.init(buffer[0..entries.len]);
}

test "shared vectors: the same windows as the control plane and the Redis script" {
    // contract/calendar.json is also run against tokenlimit.model.calendar
    // (tests/model/test_calendar.py) and contract/calendar.lua on a real Redis
    // (tests/filter/test_calendar_vectors.py).
    const parsed = try std.json.parseFromSlice(Vectors, testing.allocator, @embedFile("calendar.json"), .{});
    defer parsed.deinit();
    const vectors = parsed.value;
    try testing.expectEqual(@as(u64, transitions_max), vectors.bounds.transitions_max);
    try testing.expectEqual(offset_s_max, vectors.bounds.offset_s_max);
    try testing.expectEqual(time_ms_min, vectors.bounds.time_ms_min);
    try testing.expectEqual(time_ms_max, vectors.bounds.time_ms_max);
    try testing.expect(vectors.vectors.len > 0);
    var buffer: [transitions_max]Transition = undefined;
    for (vectors.vectors) |vector| {
        const table = try vectorTable(vectors, vector.zone, &buffer);
        const window = std.meta.stringToEnum(Window, vector.window) orelse return error.UnknownWindow;
        const got = bounds(table, vector.now_ms, window);
        errdefer std.debug.print("vector \"{s}\": start_ms={d} end_ms={d}\n", .{ vector.name, got.start_ms, got.end_ms });
        try testing.expectEqual(Bounds{ .start_ms = vector.start_ms, .end_ms = vector.end_ms }, got);
        // What the Redis store sends (a slice around now) decides the same windows.
        const slice = table.around(vector.now_ms, 40 * std.time.ms_per_day);
        try testing.expect(slice.transitions.len <= 4);
        try testing.expectEqual(got, bounds(slice, vector.now_ms, window));
    }
}

test "Table.init: a malformed table is refused, not trusted" {
    try testing.expectError(error.TableEmpty, Table.init(&.{}));
    const too_many: [transitions_max + 1]Transition = @splat(.{ .from_ms = 0, .offset_s = 0 });
    try testing.expectError(error.TableTooLong, Table.init(&too_many));
    try testing.expectError(error.TransitionOutOfRange, Table.init(&.{.{ .from_ms = time_ms_max + 1, .offset_s = 0 }}));
    try testing.expectError(error.OffsetOutOfRange, Table.init(&.{.{ .from_ms = 0, .offset_s = 18 * 3600 + 1 }}));
    try testing.expectError(error.OffsetOutOfRange, Table.init(&.{.{ .from_ms = 0, .offset_s = std.math.minInt(i32) }}));
    try testing.expectError(error.TransitionsOutOfOrder, Table.init(&.{ .{ .from_ms = 5, .offset_s = 0 }, .{ .from_ms = 5, .offset_s = 3600 } }));
}

test "bounds: any clock and any valid table give a window around the clamped now" {
    var prng = std.Random.DefaultPrng.init(0x12);
    const random = prng.random();
    var buffer: [transitions_max]Transition = undefined;
    for (0..2000) |_| {
        const count = random.intRangeAtMost(usize, 1, transitions_max);
        var from: u64 = random.intRangeAtMost(u64, 0, time_ms_max / 2);
        for (buffer[0..count]) |*transition| {
            transition.* = .{ .from_ms = from, .offset_s = random.intRangeAtMost(i32, -18 * 3600, 18 * 3600) };
            from += random.intRangeAtMost(u64, 1, 400 * std.time.ms_per_day);
        }
        const table = try Table.init(buffer[0..count]);
        const now_ms = switch (random.uintLessThan(u8, 4)) {
            0 => random.int(u64),
            1 => buffer[random.uintLessThan(usize, count)].from_ms +% random.intRangeAtMost(u64, 0, 3 * std.time.ms_per_day) -% std.time.ms_per_day,
            else => random.intRangeAtMost(u64, time_ms_min, time_ms_max),
        };
        const now = std.math.clamp(now_ms, time_ms_min, time_ms_max);
        const window = random.enumValue(Window);
        const got = bounds(table, now_ms, window);
        try testing.expect(got.start_ms <= now and now < got.end_ms);
        // Windows tile time: the next one starts where this one ends.
        if (got.end_ms <= time_ms_max) try testing.expectEqual(got.end_ms, bounds(table, got.end_ms, window).start_ms);
    }
}

test "civil dates: days and dates round-trip over four centuries" {
    var days: i64 = daysFromCivil(1970, 1, 1) - 146097;
    try testing.expectEqual(@as(i64, 0), daysFromCivil(1970, 1, 1));
    try testing.expectEqual(@as(i64, 11016), daysFromCivil(2000, 2, 29));
    while (days < 146097) : (days += 1) {
        const date = civilFromDays(days);
        try testing.expectEqual(days, daysFromCivil(date.year, date.month, date.day));
    }
}
