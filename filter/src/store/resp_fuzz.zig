//! Seeded, bounded fuzzing of the RESP reader (resp.zig) and the admit-reply reader
//! (script.zig) on mutated and random replies: never a panic, never an index past the
//! caller's buffer (Debug build, `zig build test`).
const std = @import("std");
const resp = @import("resp.zig");
const script = @import("script.zig");
const store = @import("store.zig");
const usage_fuzz = @import("../usage/usage_fuzz.zig");

const reply_seeds = [_][]const u8{
    ":7\r\n",
    "*5\r\n:0\r\n:1700000000000\r\n:40\r\n:300\r\n:5000\r\n",
    "*5\r\n:2\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n:0\r\n",
    "-NOSCRIPT No matching script\r\n",
    "*-1\r\n",
    "*2\r\n$1\r\na\r\n:1\r\n",
};

test "fuzz: replies of any shape are read without a crash" {
    var prng = std.Random.DefaultPrng.init(usage_fuzz.seed +% 3);
    const random = prng.random();
    var buffer: [256]u8 = undefined;
    var integers: [8]i64 = undefined;
    for (0..usage_fuzz.cases) |case| {
        const bytes = if (case % 5 == 4) random_bytes: {
            const len = random.uintLessThan(usize, buffer.len);
            random.bytes(buffer[0..len]);
            break :random_bytes buffer[0..len];
        } else usage_fuzz.mutate(random, reply_seeds[case % reply_seeds.len], &buffer);
        const reply = resp.parseReply(bytes, &integers) catch continue;
        switch (reply) {
            .integers => |values| {
                try std.testing.expect(values.len <= integers.len);
                var counters = [_]store.Counter{.{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = 300 }, .unit = .tokens, .admit_amount = random.int(u64) }};
                const admission = script.readAdmitReply(&counters, values, random.boolean());
                if (admission == .decided) {
                    if (admission.decided) |index| try std.testing.expect(index < counters.len);
                }
                try std.testing.expect(counters[0].reserved <= counters[0].budget.limit);
            },
            else => {},
        }
    }
}
