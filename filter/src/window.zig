//! Fixed-window budget math: pure functions of `now_ms` and a stored record, so tests need no host.
//! Windows are aligned to the Unix epoch: a per-minute window resets at every whole minute (UTC),
//! which makes `Retry-After` predictable and lets independent gateways agree on boundaries.
const std = @import("std");

pub const Window = enum(u8) {
    second = 0,
    minute = 1,
    hour = 2,
    day = 3,

    pub fn seconds(self: Window) u64 {
        return switch (self) {
            .second => 1,
            .minute => 60,
            .hour => 3600,
            .day => 86400,
        };
    }

    /// The config field that sets a token limit for this window.
    pub fn tokenField(self: Window) []const u8 {
        return switch (self) {
            .second => "token_per_second",
            .minute => "token_per_minute",
            .hour => "token_per_hour",
            .day => "token_per_day",
        };
    }
};

pub const limit_max: u64 = 1_000_000_000_000_000;

/// Start of the window containing `now_ms`, in milliseconds since the epoch.
pub fn windowStartMs(now_ms: u64, window: Window) u64 {
    const length_ms = window.seconds() * std.time.ms_per_s;
    return now_ms - now_ms % length_ms;
}

/// Milliseconds until the window containing `now_ms` ends (at least 1).
pub fn resetInMs(now_ms: u64, window: Window) u64 {
    const length_ms = window.seconds() * std.time.ms_per_s;
    return length_ms - now_ms % length_ms;
}

/// One budget counter as stored: which window it counts and how much of it is used.
pub const Record = struct {
    window_start_ms: u64,
    used: u64,

    /// Wire format (pinned by a golden test, shared by every worker of one Envoy):
    /// byte 0 = format version, then window_start_ms and used as u64 little-endian.
    pub const encoded_len = 17;
    const format_version: u8 = 1;

    pub fn encode(self: Record) [encoded_len]u8 {
        var bytes: [encoded_len]u8 = undefined;
        bytes[0] = format_version;
        std.mem.writeInt(u64, bytes[1..9], self.window_start_ms, .little);
        std.mem.writeInt(u64, bytes[9..17], self.used, .little);
        return bytes;
    }

    /// A record of another length or version (older build, corruption) reads as empty, so a
    /// bad record costs at most one window of budget rather than wedging the key forever.
    pub fn decode(bytes: []const u8) ?Record {
        if (bytes.len != encoded_len or bytes[0] != format_version) return null;
        return .{
            .window_start_ms = std.mem.readInt(u64, bytes[1..9], .little),
            .used = std.mem.readInt(u64, bytes[9..17], .little),
        };
    }

    /// Usage in the window containing `now_ms`: a record from an earlier window counts as 0.
    pub fn usedAt(self: Record, now_ms: u64, window: Window) u64 {
        if (self.window_start_ms != windowStartMs(now_ms, window)) return 0;
        return self.used;
    }

    /// The record after charging `tokens` at `now_ms` (saturating: a counter never wraps).
    pub fn charged(self: Record, now_ms: u64, window: Window, tokens: u64) Record {
        return .{
            .window_start_ms = windowStartMs(now_ms, window),
            .used = self.usedAt(now_ms, window) +| tokens,
        };
    }
};

/// The outcome of checking one budget.
pub const Check = struct {
    limit: u64,
    used: u64,
    reset_in_ms: u64,

    pub fn exhausted(self: Check) bool {
        return self.used >= self.limit;
    }

    pub fn remaining(self: Check) u64 {
        return self.limit -| self.used;
    }
};

pub fn check(record: ?Record, now_ms: u64, window: Window, limit: u64) Check {
    std.debug.assert(limit > 0);
    const used = if (record) |r| r.usedAt(now_ms, window) else 0;
    return .{ .limit = limit, .used = used, .reset_in_ms = resetInMs(now_ms, window) };
}

test "fixed window: aligned to the epoch" {
    try std.testing.expectEqual(@as(u64, 120_000), windowStartMs(179_999, .minute));
    try std.testing.expectEqual(@as(u64, 180_000), windowStartMs(180_000, .minute));
    try std.testing.expectEqual(@as(u64, 1), resetInMs(179_999, .minute));
    try std.testing.expectEqual(@as(u64, 60_000), resetInMs(180_000, .minute));
    try std.testing.expectEqual(@as(u64, 86_400_000), resetInMs(0, .day));
}

test "fixed window: usage resets at the boundary" {
    const now_ms: u64 = 1_700_000_030_000;
    var record = (Record{ .window_start_ms = 0, .used = 0 }).charged(now_ms, .minute, 40);
    record = record.charged(now_ms + 1000, .minute, 2);
    try std.testing.expectEqual(@as(u64, 42), record.usedAt(now_ms + 1000, .minute));
    const next_window_ms = windowStartMs(now_ms, .minute) + 60_000;
    try std.testing.expectEqual(@as(u64, 0), record.usedAt(next_window_ms, .minute));
    try std.testing.expectEqual(@as(u64, 5), record.charged(next_window_ms, .minute, 5).used);
}

test "fixed window: exhausted when used reaches the limit" {
    const now_ms: u64 = 60_000 * 5 + 10;
    const record = Record{ .window_start_ms = windowStartMs(now_ms, .minute), .used = 100 };
    try std.testing.expect(check(record, now_ms, .minute, 100).exhausted());
    try std.testing.expect(!check(record, now_ms, .minute, 101).exhausted());
    try std.testing.expectEqual(@as(u64, 0), check(record, now_ms, .minute, 50).remaining());
    try std.testing.expect(!check(null, now_ms, .minute, 1).exhausted());
}

test "record: golden wire format" {
    const record = Record{ .window_start_ms = 0x0102030405060708, .used = 300 };
    const expected = [_]u8{ 1, 8, 7, 6, 5, 4, 3, 2, 1, 0x2c, 1, 0, 0, 0, 0, 0, 0 };
    try std.testing.expectEqualSlices(u8, &expected, &record.encode());
    try std.testing.expectEqual(record, Record.decode(&expected).?);
    try std.testing.expectEqual(@as(?Record, null), Record.decode(expected[0..16]));
    try std.testing.expectEqual(@as(?Record, null), Record.decode(&([_]u8{2} ++ expected[1..].*)));
}

test "record: charging saturates instead of wrapping" {
    const record = Record{ .window_start_ms = 0, .used = std.math.maxInt(u64) - 1 };
    try std.testing.expectEqual(std.math.maxInt(u64), record.charged(10, .day, 5).used);
}
