//! SHA-256 (FIPS 180-4) written for code size: one function, the 64 rounds and the message
//! schedule in a single loop (std's unrolled rounds cost several KB). The filter hashes short
//! values: credentials for stored and logged keys, counter names for the local store's slots.
//! Written so a size-optimised build stays fast (issue 17): the working variables are locals,
//! not an array shifted every round, and words are loaded whole, not assembled byte by byte
//! (the first version took ~1.9 µs a block in Wasm; the unit tests compare it with std).
const std = @import("std");

const k = [64]u32{
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

fn rotr(x: u32, n: u5) u32 {
    return std.math.rotr(u32, x, n);
}

/// The big-endian word at `bytes[0..4]`, in one (unaligned) load.
fn bigWord(bytes: *const [4]u8) u32 {
    return std.mem.bigToNative(u32, @as(*align(1) const u32, @ptrCast(bytes)).*);
}

pub fn hash(data: []const u8) [32]u8 {
    var state = [8]u32{ 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    // The message, a 0x80 byte, zeros, and the bit length in the last 8 bytes of the last block.
    const blocks = (data.len + 8) / 64 + 1;
    var block: [64]u8 = undefined;
    var w: [64]u32 = undefined;
    for (0..blocks) |b| {
        const from = @min(b * 64, data.len);
        const taken = @min(data.len - from, 64);
        @memcpy(block[0..taken], data[from..][0..taken]);
        @memset(block[taken..], 0);
        if (taken < 64 and b * 64 + taken == data.len) block[taken] = 0x80;
        if (b == blocks - 1) std.mem.writeInt(u64, block[56..64], @as(u64, data.len) * 8, .big);

        var a = state[0];
        var bb = state[1];
        var c = state[2];
        var d = state[3];
        var e = state[4];
        var f = state[5];
        var g = state[6];
        var h = state[7];
        for (0..64) |i| {
            if (i < 16) {
                w[i] = bigWord(block[i * 4 ..][0..4]);
            } else {
                const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
                const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] +% s0 +% w[i - 7] +% s1;
            }
            const t1 = h +% (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) +% ((e & f) ^ (~e & g)) +% k[i] +% w[i];
            const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) +% ((a & bb) ^ (a & c) ^ (bb & c));
            h = g;
            g = f;
            f = e;
            e = d +% t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 +% t2;
        }
        for (&state, [8]u32{ a, bb, c, d, e, f, g, h }) |*s, x| s.* +%= x;
    }
    var digest: [32]u8 = undefined;
    for (state, 0..) |s, i| std.mem.writeInt(u32, digest[i * 4 ..][0..4], s, .big);
    return digest;
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

fn expectHex(expected: []const u8, data: []const u8) !void {
    const digest = hash(data);
    try testing.expectEqualStrings(expected, &std.fmt.bytesToHex(digest, .lower));
}

test "sha256: FIPS 180-2 vectors" {
    try expectHex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "");
    try expectHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
    try expectHex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
    try expectHex("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1", "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu");
    const million = try testing.allocator.alloc(u8, 1_000_000);
    defer testing.allocator.free(million);
    @memset(million, 'a');
    try expectHex("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", million);
}

test "sha256: agrees with std.crypto on every length from 0 to 300 (and some longer)" {
    var prng = std.Random.DefaultPrng.init(0x5_4a25_6000);
    const random = prng.random();
    var data: [5000]u8 = undefined;
    for (0..301 + 50) |round| {
        const len = if (round <= 300) round else random.uintLessThan(usize, data.len + 1);
        for (0..3) |_| {
            random.bytes(data[0..len]);
            var expected: [32]u8 = undefined;
            std.crypto.hash.sha2.Sha256.hash(data[0..len], &expected, .{});
            try testing.expectEqualSlices(u8, &expected, &hash(data[0..len]));
        }
    }
}
