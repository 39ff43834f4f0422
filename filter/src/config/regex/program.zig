//! The compiled program of a regexp and what parse.zig, compile.zig and vm.zig share: the
//! instruction set, the character sets that `char_set` tests, and UTF-8 decoding as Go does it.
const std = @import("std");
const assert = std.debug.assert;

/// No instruction, node or set: ends chains and marks an absent target.
pub const none: u16 = std.math.maxInt(u16);

pub const Op = enum(u8) {
    /// Consume one character (code point) in `sets[a]`, continue at pc + 1.
    char_set,
    /// Continue at both `a` and `b`.
    split,
    /// Continue at `a`.
    jump,
    /// Continue at pc + 1 only at input offset 0.
    assert_begin,
    /// Continue at pc + 1 only at the end of the input.
    assert_end,
    /// Continue at pc + 1 only between an ASCII word character and a non-word one (`\b`).
    assert_word_boundary,
    /// Continue at pc + 1 only where `\b` would not (`\B`).
    assert_not_word_boundary,
    match,
};

pub const Inst = struct { op: Op, a: u16, b: u16 };

pub const max_code_point: u21 = 0x10FFFF;
/// What Go reads for a byte that does not start a valid UTF-8 sequence (one byte wide).
pub const replacement: u21 = 0xFFFD;

/// A code point range, both ends included.
pub const Range = [2]u21;

/// A set of code points: ASCII as a bitmap, the rest as sorted, disjoint, non-adjacent ranges
/// (all at or above 0x80) stored in the program's shared `ranges`.
pub const CharSet = struct {
    ascii: [16]u8 = @splat(0),
    ranges_start: u16 = 0,
    ranges_len: u16 = 0,

    pub fn contains(set: *const CharSet, ranges: []const Range, c: u21) bool {
        if (c < 0x80) return set.ascii[c >> 3] & (@as(u8, 1) << @as(u3, @truncate(c))) != 0;
        // Binary search: `\p{Latin}` alone has 39 ranges.
        var low: usize = set.ranges_start;
        var high: usize = set.ranges_start + set.ranges_len;
        while (low < high) {
            const middle = low + (high - low) / 2;
            if (c < ranges[middle][0]) {
                high = middle;
            } else if (c > ranges[middle][1]) {
                low = middle + 1;
            } else return true;
        }
        return false;
    }
};

/// ASCII word characters, for `\b` (Go's `\b` is ASCII-only too).
pub fn isWordByte(byte: u8) bool {
    return std.ascii.isAlphanumeric(byte) or byte == '_';
}

pub const Decoded = struct { c: u21, len: u3 };

/// The code point at the start of `bytes` (not empty), as Go's utf8.DecodeRune reads it: an
/// invalid, overlong, surrogate or truncated sequence is U+FFFD, one byte wide.
pub fn decode(bytes: []const u8) Decoded {
    assert(bytes.len > 0);
    const first = bytes[0];
    if (first < 0x80) return .{ .c = first, .len = 1 };
    const invalid: Decoded = .{ .c = replacement, .len = 1 };
    // The length, and the range of the second byte that excludes overlong forms, surrogates
    // and code points above U+10FFFF (the table in Go's unicode/utf8).
    const len: u3, const second_min: u8, const second_max: u8 = switch (first) {
        0xc2...0xdf => .{ 2, 0x80, 0xbf },
        0xe0 => .{ 3, 0xa0, 0xbf },
        0xed => .{ 3, 0x80, 0x9f },
        0xe1...0xec, 0xee...0xef => .{ 3, 0x80, 0xbf },
        0xf0 => .{ 4, 0x90, 0xbf },
        0xf1...0xf3 => .{ 4, 0x80, 0xbf },
        0xf4 => .{ 4, 0x80, 0x8f },
        else => return invalid,
    };
    if (bytes.len < len or bytes[1] < second_min or bytes[1] > second_max) return invalid;
    var c: u21 = first & (@as(u8, 0x7f) >> len);
    for (bytes[1..len], 1..) |byte, i| {
        if (i > 1 and byte & 0xc0 != 0x80) return invalid;
        c = (c << 6) | (byte & 0x3f);
    }
    return .{ .c = c, .len = len };
}

test "program: decoding as Go does" {
    try std.testing.expectEqual(Decoded{ .c = 'a', .len = 1 }, decode("a"));
    try std.testing.expectEqual(Decoded{ .c = 0x4e13, .len = 3 }, decode("\xe4\xb8\x93"));
    try std.testing.expectEqual(Decoded{ .c = replacement, .len = 1 }, decode("\xe4\xb8"));
    try std.testing.expectEqual(Decoded{ .c = replacement, .len = 1 }, decode("\xff"));
    try std.testing.expectEqual(Decoded{ .c = replacement, .len = 1 }, decode("\xc0\xaf")); // overlong
    try std.testing.expectEqual(Decoded{ .c = replacement, .len = 1 }, decode("\xed\xa0\x80")); // surrogate
    try std.testing.expectEqual(Decoded{ .c = 0x10FFFF, .len = 4 }, decode("\xf4\x8f\xbf\xbf"));
}
