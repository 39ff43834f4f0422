//! What every budget store works on: the counters one request touches. The local store
//! (local_store.zig) and the Redis store (redis_store.zig + contract/budget.lua) implement the
//! same two operations on them, checked against the same vectors.
const budget = @import("../meter/budget.zig");
const config = @import("../config.zig");
const match = @import("../match/match.zig");

pub const Counter = struct {
    key: match.CounterKey,
    budget: budget.Budget,
    unit: config.Unit,
    /// What admission asks room for and adds: 1 for request counters, the estimate for token
    /// counters under `reserve`, 0 for token counters under `postpaid`.
    admit_amount: u64 = 0,
    /// What admission added (the amount, capped at the limit); settled against the real cost.
    reserved: u64 = 0,
    admitted_at_ms: u64 = 0,
    /// The budget as admission left it (for headers and logs).
    check: budget.Check = .{ .limit = 0, .used = 0, .reset_in_ms = 0 },
};
