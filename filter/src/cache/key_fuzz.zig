//! Seeded, bounded fuzzing of the cache key's canonicaliser (key.zig), which reads request
//! bodies from the network: mutated and random bodies never crash it, its output is never
//! longer than its input, canonical JSON is its own canonical form, and reordering an
//! object's members never changes the key. Runs in `zig build test` (Debug: overflow and bad
//! indexes panic); memory is checked by the testing allocator (no leak on any error path).
const std = @import("std");
const key = @import("key.zig");
const usage_fuzz = @import("../usage/usage_fuzz.zig");

pub const seed: u64 = 0x7031_6b65_6e15_cace;
pub const cases = 3000;

const seeds = [_][]const u8{
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"there\\\"\"}],\"temperature\":0.7}",
    "{\"b\":[1,2,{\"z\":null,\"a\":true}],\"a\":{\"y\":-1.5e3,\"x\":\"\\u00e9\"},\"a\":false}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "  {\n\t\"tools\" : [ ] , \"stream\" : true }  ",
};

fn canonical(allocator: std.mem.Allocator, input: []const u8) !?[]u8 {
    var out: std.ArrayList(u8) = .empty;
    errdefer out.deinit(allocator);
    key.canonicalize(allocator, input, &out) catch |err| switch (err) {
        error.OutOfMemory => return err,
        error.NotJson, error.TooDeep => {
            out.deinit(allocator);
            return null;
        },
    };
    return try out.toOwnedSlice(allocator);
}

test "cache key fuzz: hostile bodies never crash, output is bounded, canonical is a fixed point" {
    const a = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    var buffer: [1024]u8 = undefined;
    for (0..cases) |case| {
        const input = if (case % 4 == 3) blk: {
            const len = random.uintLessThan(usize, buffer.len);
            for (buffer[0..len]) |*b| b.* = "{}[]\":, \n0123456789.eE-+tfnalrsu\\x"[random.uintLessThan(usize, 35)];
            break :blk buffer[0..len];
        } else usage_fuzz.mutate(random, seeds[case % seeds.len], &buffer);
        const once = try canonical(a, input) orelse continue;
        defer a.free(once);
        try std.testing.expect(once.len <= input.len);
        const twice = (try canonical(a, once)).?;
        defer a.free(twice);
        try std.testing.expectEqualStrings(once, twice);
    }
}

test "cache key fuzz: members in any order give one key" {
    const a = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed ^ 1);
    const random = prng.random();
    const members = [_][]const u8{ "\"model\":\"m\"", "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]", "\"max_tokens\":5", "\"tools\":[]", "\"temperature\":0" };
    const parts: key.Parts = .{ .method = "POST", .authority = "h", .path = "/", .model = "", .scope = "" };
    var order: [members.len]usize = .{ 0, 1, 2, 3, 4 };
    var first: ?key.Digest = null;
    for (0..200) |_| {
        random.shuffle(usize, &order);
        var body: std.ArrayList(u8) = .empty;
        defer body.deinit(a);
        try body.append(a, '{');
        for (order, 0..) |index, at| {
            if (at > 0) try body.appendSlice(a, if (random.boolean()) "," else " ,\n ");
            try body.appendSlice(a, members[index]);
        }
        try body.append(a, '}');
        const digest = try key.digest(a, parts, body.items);
        if (first) |expected| try std.testing.expectEqual(expected, digest) else first = digest;
    }
}
