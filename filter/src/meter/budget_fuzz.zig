//! Seeded, bounded fuzzing of the budget math (budget.zig) at and between its bounds: any
//! algorithm, window and limit, records with u64 extremes (a corrupt or hostile store), clocks
//! that jump forward, stand still or run backwards. Never a panic (Debug build), and the
//! invariants a caller relies on hold.
const std = @import("std");
const budget = @import("budget.zig");
const usage_fuzz = @import("../usage/usage_fuzz.zig");

fn extreme(random: std.Random) u64 {
    return switch (random.uintLessThan(u8, 6)) {
        0 => 0,
        1 => std.math.maxInt(u64),
        2 => std.math.maxInt(u64) - random.uintLessThan(u64, 1000),
        3 => budget.limit_max,
        4 => random.uintLessThan(u64, 1000),
        else => random.int(u64),
    };
}

test "fuzz: budget math never overflows and keeps its invariants" {
    var prng = std.Random.DefaultPrng.init(usage_fuzz.seed +% 4);
    const random = prng.random();
    for (0..usage_fuzz.cases * 3) |_| {
        const b = budget.Budget{
            .algorithm = std.meta.tags(budget.Algorithm)[random.uintLessThan(usize, 3)],
            .window = std.meta.tags(budget.Window)[random.uintLessThan(usize, 4)],
            .limit = random.intRangeAtMost(u64, 1, budget.limit_max),
        };
        // Clocks stay below 2^62 ms (the year 146 million): the host's clock, not the network.
        const now_ms = random.uintLessThan(u64, 1 << 62);
        const record = budget.Record{
            .start_ms = if (random.boolean()) now_ms -| random.uintLessThan(u64, 1 << 40) else random.uintLessThan(u64, 1 << 62),
            .used = extreme(random),
            .previous = extreme(random),
        };
        const check = b.check(record, now_ms);
        try std.testing.expect(check.limit == b.limit);
        try std.testing.expect(check.reset_in_ms > 0 or b.algorithm != .token_bucket);
        const amount = extreme(random);
        const admitted = b.admit(record, now_ms, amount, random.boolean());
        try std.testing.expect(admitted.reserved <= b.limit);
        const later_ms = now_ms + random.uintLessThan(u64, 1 << 40);
        const settled = b.settle(admitted.record, later_ms, admitted.reserved, extreme(random), now_ms);
        _ = b.check(settled, later_ms);
        if (b.algorithm == .token_bucket and record.start_ms <= now_ms) {
            // A bucket only refills as time passes.
            try std.testing.expect(b.current(record, later_ms).used <= b.current(record, now_ms).used);
        }
        _ = budget.Record.decode(&record.encode());
    }
}
