//! Leases for hot keys (issue 17), the calls: a worker's slices (lease.zig, pure) are taken
//! from Redis (budget.lua `lease`), admitted against and settled against here. Split from
//! redis.zig, whose pending calls, retry queue and per-worker tables these use.
const std = @import("std");
const batch = @import("batch.zig");
const config = @import("../config/config.zig");
const counter = @import("../meter/counter.zig");
const lease_table = @import("lease.zig");
const redis_store = @import("redis.zig");
const script = @import("script.zig");
const store = @import("store.zig");
const host = @import("../abi/host.zig");

const allocator = host.allocator;
const Target = redis_store.Target;
const leases = &redis_store.leases;
const refused = &redis_store.refused;
const send = redis_store.send;
const queueForRetry = redis_store.queueForRetry;

/// Leases (issue 17, lease.zig): admits `counters` against this worker's slices, no call.
pub fn admitLeased(counters: []store.Counter, now_ms: u64) bool {
    return leases.admitLocal(counters, now_ms);
}

/// Whether a lease call may go for `counters` (else they take the ordinary admit).
pub fn canLease(counters: []const store.Counter, now_ms: u64) bool {
    return leases.canAsk(counters, now_ms);
}

/// Starts a lease call (budget.lua `lease`) for `counters`: this worker's remainders go back
/// and a new slice of each budget comes, `fraction_milli` of the limit. The reply arrives as an
/// admission's does (Store.readAdmitReply). Should the answer never come, `lease_return`
/// under the same marker gives the grant (or, if the lease never ran, the carries) back once.
pub fn lease(redis: config.Redis, counters: []const store.Counter, fraction_milli: u32, caller: store.Caller, now_ms: u64) !void {
    std.debug.assert(caller.http_context_id != 0 and counters.len <= counter.counters_max);
    const marker = script.MarkerKey.init(counters[0].key.slice(), caller.request_id);
    const target = Target.fromConfig(redis);
    var asks_buffer: [counter.counters_max]lease_table.Ask = undefined;
    const asks = asks_buffer[0..counters.len];
    leases.begin(counters, fraction_milli, now_ms, redis.timeout_ms +| batch.flush_period_ms, asks);
    const give_back = try lease_table.arguments(allocator, counters, asks, marker, true);
    const tail = lease_table.arguments(allocator, counters, asks, marker, false) catch |err| {
        queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = give_back, .target = target, .sent_as_eval = false });
        return err;
    };
    send(.{ .op = .admit, .http_context_id = caller.http_context_id, .tail = tail, .target = target, .sent_as_eval = false, .release_tail = give_back }) catch |err| {
        // The carries were taken from the slices: they go back through the retry queue.
        allocator.free(tail);
        queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = give_back, .target = target, .sent_as_eval = false });
        return err;
    };
}

/// Reads a lease reply (lease.zig) and, as readAdmitReply, remembers exhausted counters.
pub fn readLeaseReply(counters: []store.Counter, values: []const i64) store.Admission {
    const asked_ms = if (counters.len > 0) counters[0].admitted_at_ms else 0; // prepare's clock
    const answer = leases.readReply(counters, values, asked_ms);
    if (answer == .decided) refused.learn(counters, asked_ms);
    return answer;
}

/// Settles leased counters (lease.zig): against this worker's slices, or in Redis for what a
/// slice could not cover. False: not leased, the caller settles them as usual.
pub fn settleLeased(redis: config.Redis, counters: []const store.Counter, actual_tokens: u64, now_ms: u64, caller: store.Caller) !bool {
    std.debug.assert(counters.len <= counter.counters_max);
    var covered_buffer: [counter.counters_max]u64 = undefined;
    const covered = covered_buffer[0..counters.len];
    switch (leases.settle(counters, actual_tokens, now_ms, covered)) {
        .local => return true,
        .redis => return false,
        .redis_covered => {
            // What the slice covered counts as reserved: Redis adds only the rest.
            const adjusted = try allocator.dupe(store.Counter, counters);
            defer allocator.free(adjusted);
            for (adjusted, covered) |*each, cover| each.reserved += cover;
            try redis_store.settle(redis, adjusted, actual_tokens, caller);
            return true;
        },
    }
}
