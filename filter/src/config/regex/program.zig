//! The compiled program of a regexp and what parse.zig, compile.zig and vm.zig share: the
//! instruction set and the byte sets that the `byte_set` instruction tests.
const std = @import("std");
const assert = std.debug.assert;

/// No instruction, node or set: ends chains and marks an absent target.
pub const none: u16 = std.math.maxInt(u16);

pub const Op = enum(u8) {
    /// Consume one byte in `sets[a]`, continue at pc + 1.
    byte_set,
    /// Continue at both `a` and `b`.
    split,
    /// Continue at `a`.
    jump,
    /// Continue at pc + 1 only at input offset 0.
    assert_begin,
    /// Continue at pc + 1 only at the end of the input.
    assert_end,
    match,
};

pub const Inst = struct { op: Op, a: u16, b: u16 };

pub const ByteSet = struct {
    bits: [32]u8 = @splat(0),

    pub fn single(byte: u8) ByteSet {
        var set: ByteSet = .{};
        set.add(byte);
        return set;
    }

    pub fn eql(set: ByteSet, other: ByteSet) bool {
        for (set.bits, other.bits) |bits, other_bits| {
            if (bits != other_bits) return false;
        }
        return true;
    }

    pub fn contains(set: ByteSet, byte: u8) bool {
        return set.bits[byte >> 3] & (@as(u8, 1) << @as(u3, @truncate(byte))) != 0;
    }

    pub fn add(set: *ByteSet, byte: u8) void {
        set.bits[byte >> 3] |= @as(u8, 1) << @as(u3, @truncate(byte));
    }

    pub fn addRange(set: *ByteSet, first: u8, last: u8) void {
        assert(first <= last);
        for (first..@as(usize, last) + 1) |byte| set.add(@intCast(byte));
    }

    pub fn invert(set: *ByteSet) void {
        for (&set.bits) |*bits| bits.* = ~bits.*;
    }

    pub fn merge(set: *ByteSet, other: ByteSet) void {
        for (&set.bits, other.bits) |*bits, other_bits| bits.* |= other_bits;
    }

    /// Closes the set under ASCII case; must run before `invert` so `(?i)[^a]` excludes `A`.
    pub fn foldCase(set: *ByteSet) void {
        for ('a'..'z' + 1) |lower| {
            const upper = lower - ('a' - 'A');
            if (set.contains(@intCast(lower)) or set.contains(@intCast(upper))) {
                set.add(@intCast(lower));
                set.add(@intCast(upper));
            }
        }
    }

    /// `\d \w \s`, and with an upper-case letter their negations.
    pub fn perlClass(letter: u8) ByteSet {
        var set: ByteSet = .{};
        switch (std.ascii.toLower(letter)) {
            'd' => set.addRange('0', '9'),
            'w' => {
                set.addRange('0', '9');
                set.addRange('A', 'Z');
                set.addRange('a', 'z');
                set.add('_');
            },
            's' => for ("\t\n\x0c\r ") |byte| set.add(byte),
            else => unreachable, // Callers pass only d, w, s in either case.
        }
        if (std.ascii.isUpper(letter)) set.invert();
        return set;
    }
};
