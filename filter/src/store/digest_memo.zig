//! The digests of the counter names this worker used last (issue 17). The local store finds a
//! counter's slot by SHA-256 of its name: at admission, again at settlement, and for a busy
//! caller on every request. A name is ~90 bytes, two SHA-256 blocks, ~2 µs in Wasm (the largest
//! single cost of a plain request in bench/README.md's profile). Direct-mapped by a cheap hash;
//! a hit compares the whole name, so it is exact. Only counter names are kept, in which a
//! credential is already hashed (meter/counter.zig `identity`).
const std = @import("std");
const bytes = @import("../match/bytes.zig");
const sha256 = @import("../match/sha256.zig");

pub const Digest = [16]u8;

/// Names longer than this are hashed every time (counter names are bounded by
/// meter/counter.zig `counter_key_bytes_max`; this is the same bound).
pub const name_bytes_max = 256;
pub const entries = 64;

pub const Memo = struct {
    names: [entries][name_bytes_max]u8 = undefined,
    /// 0: the entry is empty (a counter name is never empty).
    lens: [entries]u16 = @splat(0),
    digests: [entries]Digest = undefined,

    pub fn digestOf(self: *Memo, name: []const u8) Digest {
        if (name.len == 0 or name.len > name_bytes_max) return hash(name);
        // Murmur3's 32-bit multiplies are native on wasm32 (wyhash's 128-bit one is a call).
        const at: usize = std.hash.Murmur3_32.hash(name) % entries;
        if (self.lens[at] == name.len and bytes.eql(self.names[at][0..name.len], name)) return self.digests[at];
        const digest = hash(name);
        @memcpy(self.names[at][0..name.len], name);
        self.lens[at] = @intCast(name.len);
        self.digests[at] = digest;
        return digest;
    }
};

fn hash(name: []const u8) Digest {
    return sha256.hash(name)[0..16].*;
}

/// The worker's memo (each worker is its own VM: no sharing, no locking).
pub var worker: Memo = .{};

test "a memoised digest is the name's SHA-256 prefix, hit or miss, and never another name's" {
    var memo: Memo = .{};
    var buffers: [3 * entries][32]u8 = undefined;
    var names: [3 * entries][]const u8 = undefined;
    for (&names, &buffers, 0..) |*name, *buffer, i| name.* = try std.fmt.bufPrint(buffer, "tokenlimit:{{r}}:k:{d:0>8}", .{i});
    // Three rounds over three times as many names as entries: misses, evictions, hits.
    for (0..3) |_| for (names) |name| {
        try std.testing.expectEqual(hash(name), memo.digestOf(name));
    };
    // The same name twice in a row is a hit and still right.
    try std.testing.expectEqual(hash(names[5]), memo.digestOf(names[5]));
    try std.testing.expectEqual(hash(names[5]), memo.digestOf(names[5]));
    // A name past the bound is hashed, not stored.
    const long: [name_bytes_max + 1]u8 = @splat('x');
    try std.testing.expectEqual(hash(&long), memo.digestOf(&long));
}
