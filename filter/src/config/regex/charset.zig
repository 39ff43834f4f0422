//! Building a character set while a pattern is parsed: ASCII bits, non-ASCII code point ranges
//! in any order until `normalize` sorts and merges them, then negation and ASCII case folding.
//! Also the named classes the parser knows (`\d \w \s`, POSIX `[:alpha:]`), ASCII as in Go.
const std = @import("std");
const assert = std.debug.assert;
const program = @import("program.zig");
const regex = @import("regex.zig");
const unicode = @import("unicode.zig");

const Range = program.Range;
const max_code_point = program.max_code_point;
const pattern_bytes_max = regex.pattern_bytes_max;

/// Non-ASCII ranges per pattern byte, at most: a literal, a range or `.` adds one range for at
/// least one byte, `\p{Latin}` 39 for 9 bytes, a negation one more (checked below).
pub const ranges_per_byte_max = 5;
/// Bounds the ranges of all sets together, and of one class while it is built.
pub const ranges_max = ranges_per_byte_max * pattern_bytes_max + 1;

comptime {
    // `\p{Name}` (and its negation) stays within `ranges_per_byte_max` ranges per pattern byte.
    for (unicode.scripts) |script| {
        assert(script.ranges.len + 1 <= ranges_per_byte_max * ("\\p{}".len + script.name.len));
    }
}

pub const Builder = struct {
    ascii: [16]u8 = @splat(0),
    len: usize = 0,
    ranges: [ranges_max]Range = undefined,
    spare: [ranges_max]Range = undefined,

    pub fn reset(b: *Builder) void {
        b.ascii = @splat(0);
        b.len = 0;
    }

    pub fn addRange(b: *Builder, first: u21, last: u21) void {
        assert(first <= last and last <= max_code_point);
        if (first < 0x80) {
            for (first..@as(usize, @min(last, 0x7f)) + 1) |c| {
                b.ascii[c >> 3] |= @as(u8, 1) << @as(u3, @truncate(c));
            }
            if (last < 0x80) return;
        }
        // The density bound above makes this hold for any pattern that fits.
        assert(b.len < ranges_max);
        b.ranges[b.len] = .{ @max(first, 0x80), last };
        b.len += 1;
    }

    pub fn addRanges(b: *Builder, ranges: []const Range, negated: bool) void {
        if (!negated) {
            for (ranges) |range| b.addRange(range[0], range[1]);
            return;
        }
        // The complement of sorted ranges, without a second builder.
        var start: u21 = 0;
        for (ranges) |range| {
            if (range[0] > start) b.addRange(start, range[0] - 1);
            start = range[1] + 1;
        }
        if (start <= max_code_point) b.addRange(start, max_code_point);
    }

    pub fn addChar(b: *Builder, c: u21) void {
        b.addRange(c, c);
    }

    /// Sorts and merges the ranges: the form `CharSet.contains` searches.
    pub fn normalize(b: *Builder) void {
        const list = b.ranges[0..b.len];
        std.sort.insertion(Range, list, {}, lessThan); // small code: few ranges per class
        var kept: usize = 0;
        for (list) |range| {
            if (kept > 0 and range[0] <= list[kept - 1][1] +| 1) {
                list[kept - 1][1] = @max(list[kept - 1][1], range[1]);
            } else {
                list[kept] = range;
                kept += 1;
            }
        }
        b.len = kept;
    }

    fn lessThan(_: void, x: Range, y: Range) bool {
        return x[0] < y[0];
    }

    /// The complement within every code point; after `normalize`.
    pub fn invert(b: *Builder) void {
        for (&b.ascii) |*bits| bits.* = ~bits.*;
        var len: usize = 0;
        var start: u21 = 0x80;
        for (b.ranges[0..b.len]) |range| {
            if (range[0] > start) {
                b.spare[len] = .{ start, range[0] - 1 };
                len += 1;
            }
            start = range[1] +| 1;
        }
        if (start <= max_code_point) {
            b.spare[len] = .{ start, max_code_point };
            len += 1;
        }
        @memcpy(b.ranges[0..len], b.spare[0..len]);
        b.len = len;
    }

    /// Closes the ASCII letters under case (Go folds all of Unicode; this matcher folds ASCII
    /// only). Before `invert`, so `(?i)[^a]` excludes `A` too.
    pub fn foldCase(b: *Builder) void {
        for ('a'..'z' + 1) |lower| {
            const upper = lower - ('a' - 'A');
            const lower_bit = @as(u8, 1) << @as(u3, @truncate(lower));
            const upper_bit = @as(u8, 1) << @as(u3, @truncate(upper));
            if (b.ascii[lower >> 3] & lower_bit != 0 or b.ascii[upper >> 3] & upper_bit != 0) {
                b.ascii[lower >> 3] |= lower_bit;
                b.ascii[upper >> 3] |= upper_bit;
            }
        }
    }
};

/// `\d \w \s` (ASCII, as in Go): pass the lower-case letter.
pub fn perlClass(letter: u8) []const Range {
    return switch (letter) {
        'd' => &.{.{ '0', '9' }},
        'w' => &.{ .{ '0', '9' }, .{ 'A', 'Z' }, .{ '_', '_' }, .{ 'a', 'z' } },
        's' => &.{ .{ '\t', '\n' }, .{ 0x0c, '\r' }, .{ ' ', ' ' } },
        else => unreachable, // Callers pass only d, w, s.
    };
}

/// POSIX classes as Go (and RE2) define them, ASCII only: `[[:alpha:]]`, `[[:^alpha:]]`.
pub fn posixClass(name: []const u8) ?[]const Range {
    for (posix_classes) |class| {
        if (std.mem.eql(u8, class.name, name)) return class.ranges;
    }
    return null;
}

const posix_classes = [_]struct { name: []const u8, ranges: []const Range }{
    .{ .name = "alnum", .ranges = &.{ .{ '0', '9' }, .{ 'A', 'Z' }, .{ 'a', 'z' } } },
    .{ .name = "alpha", .ranges = &.{ .{ 'A', 'Z' }, .{ 'a', 'z' } } },
    .{ .name = "ascii", .ranges = &.{.{ 0, 0x7f }} },
    .{ .name = "blank", .ranges = &.{ .{ '\t', '\t' }, .{ ' ', ' ' } } },
    .{ .name = "cntrl", .ranges = &.{ .{ 0, 0x1f }, .{ 0x7f, 0x7f } } },
    .{ .name = "digit", .ranges = &.{.{ '0', '9' }} },
    .{ .name = "graph", .ranges = &.{.{ '!', '~' }} },
    .{ .name = "lower", .ranges = &.{.{ 'a', 'z' }} },
    .{ .name = "print", .ranges = &.{.{ ' ', '~' }} },
    .{ .name = "punct", .ranges = &.{ .{ '!', '/' }, .{ ':', '@' }, .{ '[', '`' }, .{ '{', '~' } } },
    .{ .name = "space", .ranges = &.{ .{ '\t', '\r' }, .{ ' ', ' ' } } },
    .{ .name = "upper", .ranges = &.{.{ 'A', 'Z' }} },
    .{ .name = "word", .ranges = &.{ .{ '0', '9' }, .{ 'A', 'Z' }, .{ '_', '_' }, .{ 'a', 'z' } } },
    .{ .name = "xdigit", .ranges = &.{ .{ '0', '9' }, .{ 'A', 'F' }, .{ 'a', 'f' } } },
};

test "charset: negation, merging and folding" {
    var b: Builder = .{};
    b.addChar('a');
    b.addRange(0x4e00, 0x4e10);
    b.addRange(0x4e05, 0x4e20);
    b.addChar(0x4e21);
    b.normalize();
    try std.testing.expectEqual(@as(usize, 1), b.len);
    try std.testing.expectEqual(Range{ 0x4e00, 0x4e21 }, b.ranges[0]);
    b.foldCase();
    b.invert();
    try std.testing.expectEqual(@as(usize, 2), b.len);
    try std.testing.expectEqual(Range{ 0x80, 0x4dff }, b.ranges[0]);
    try std.testing.expectEqual(Range{ 0x4e22, max_code_point }, b.ranges[1]);
    try std.testing.expect(b.ascii['A' >> 3] & (1 << ('A' & 7)) == 0);
    b.reset();
    b.addRanges(perlClass('d'), true); // \D
    b.normalize();
    try std.testing.expectEqual(Range{ 0x80, max_code_point }, b.ranges[0]);
}
