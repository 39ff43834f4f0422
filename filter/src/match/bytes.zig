//! Byte-slice equality for the hot path (issue 17). `std.mem.eql` loads short slices as
//! overlapping words through `@bitCast` of byte arrays, which a size-optimised Wasm build
//! assembles byte by byte through the stack (~1,000 instructions a call on 4-16 bytes). Here:
//! whole unaligned words, the last one overlapping (four-byte words below eight bytes).
const std = @import("std");

pub fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    const len = a.len;
    // Whole words, then one word (or half-word) ending at the last byte, overlapping what was
    // compared already: a short key costs two loads a side, not a loop over its tail bytes.
    if (len >= 8) {
        var at: usize = 0;
        while (at + 8 < len) : (at += 8) {
            if (word(a[at..]) != word(b[at..])) return false;
        }
        return word(a[len - 8 ..]) == word(b[len - 8 ..]);
    }
    if (len >= 4) return half(a) == half(b) and half(a[len - 4 ..]) == half(b[len - 4 ..]);
    for (a, b) |x, y| {
        if (x != y) return false;
    }
    return true;
}

/// The four bytes at the start of `bytes` (at least four), in one unaligned load.
fn half(bytes: []const u8) u32 {
    std.debug.assert(bytes.len >= 4);
    return @as(*align(1) const u32, @ptrCast(bytes.ptr)).*;
}

/// The eight bytes at the start of `bytes` (at least eight), in one unaligned load.
pub fn word(bytes: []const u8) u64 {
    std.debug.assert(bytes.len >= 8);
    return @as(*align(1) const u64, @ptrCast(bytes.ptr)).*;
}

/// How many leading bytes of `bytes` are neither `a` nor `b` (a string's body up to its quote
/// or backslash, an SSE line up to its end), eight bytes at a time, two words a turn so the
/// loop's own work is paid once per sixteen bytes.
pub fn countNeither(bytes: []const u8, comptime a: u8, comptime b: u8) usize {
    var at: usize = 0;
    while (at + 16 <= bytes.len) : (at += 16) {
        const low = eitherBytes(word(bytes[at..]), a, b);
        const high = eitherBytes(word(bytes[at + 8 ..]), a, b);
        if (low != 0) return at + @ctz(low) / 8;
        if (high != 0) return at + 8 + @ctz(high) / 8;
    }
    if (at + 8 <= bytes.len) {
        const hits = eitherBytes(word(bytes[at..]), a, b);
        if (hits != 0) return at + @ctz(hits) / 8;
        at += 8;
    }
    while (at < bytes.len and bytes[at] != a and bytes[at] != b) at += 1;
    return at;
}

/// The high bit of each byte of `chunk` (little-endian: byte 0 is the low byte) that is `a`
/// or `b`, exact up to the lowest one set (a borrow can flag bytes above a match).
inline fn eitherBytes(chunk: u64, comptime a: u8, comptime b: u8) u64 {
    const ones: u64 = 0x0101010101010101;
    const highs: u64 = 0x8080808080808080;
    const x = chunk ^ (ones * a);
    const y = chunk ^ (ones * b);
    // A byte of `x` is zero exactly where (x - 1) borrows into its high bit while x's own high
    // bit is clear: the usual has-zero-byte test, for both needles.
    return (((x -% ones) & ~x) | ((y -% ones) & ~y)) & highs;
}

test "bytes: eql agrees with std.mem.eql on every length and every differing position" {
    var a: [40]u8 = undefined;
    for (&a, 0..) |*c, i| c.* = @intCast('a' + i % 26);
    for (0..a.len + 1) |len| {
        var b = a;
        try std.testing.expect(eql(a[0..len], b[0..len]));
        for (0..len) |at| {
            b[at] ^= 1;
            try std.testing.expectEqual(std.mem.eql(u8, a[0..len], b[0..len]), eql(a[0..len], b[0..len]));
            try std.testing.expect(!eql(a[0..len], b[0..len]));
            b[at] ^= 1;
        }
        if (len > 0) try std.testing.expect(!eql(a[0..len], a[0 .. len - 1]));
    }
}

test "bytes: countNeither finds the first of either byte at every offset and alignment" {
    var text: [48]u8 = undefined;
    for (0..text.len + 1) |len| {
        for (0..len + 1) |first| {
            @memset(&text, 'x');
            // A near miss ('"' + 1, 0x80 | '"') everywhere else, and both needles after `first`.
            for (text[0..len], 0..) |*c, at| c.* = if (at % 3 == 0) '"' + 1 else if (at % 3 == 1) 0x80 | '"' else 'x';
            if (first < len) text[first] = if (first % 2 == 0) '"' else '\\';
            if (first + 1 < len) text[first + 1] = '"';
            try std.testing.expectEqual(first, countNeither(text[0..len], '"', '\\'));
            try std.testing.expectEqual(first, countNeither(text[0..len], '\\', '"'));
        }
    }
    try std.testing.expectEqual(@as(usize, 3), countNeither("abc\r\n", '\r', '\n'));
    try std.testing.expectEqual(@as(usize, 0), countNeither("", '\r', '\n'));
}
