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
