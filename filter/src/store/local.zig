//! The local budget store: Envoy shared data, one record per counter, shared by every worker
//! thread (each worker runs its own VM; shared data is per VM id, so all of them see it).
//! Each counter is updated with a compare-and-swap loop, so concurrent charges from several
//! workers all land. Admission across several counters is per counter: when a later counter
//! refuses, the amounts already added to earlier ones are taken back.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const host = @import("../abi/host.zig");
const store = @import("store.zig");

/// Bound on compare-and-swap attempts: contention on one key from N workers resolves in at
/// most N rounds; hitting this bound means something else is wrong, and it is reported.
pub const cas_attempts_max = 32;

/// Envoy hands out CAS tokens counting up from 1; this one is reached only after 2^32 - 1
/// writes, and then costs one retry.
const insert_cas: u32 = std.math.maxInt(u32);

pub const Error = error{ StoreUnavailable, Contended };

/// What one compare-and-swap round decides: the record to write, or null to write nothing.
const Update = struct {
    context: *const anyopaque,
    apply: *const fn (context: *const anyopaque, record: budget.Record) ?budget.Record,
};

/// Reads the counter, lets `update` decide, writes with the read's CAS token; retries when
/// another worker wrote in between. Returns the record as it stands after the operation.
fn modify(key: []const u8, update: Update) Error!budget.Record {
    std.debug.assert(key.len > 0);
    var attempt: usize = 0;
    while (attempt < cas_attempts_max) : (attempt += 1) {
        var record = budget.Record{};
        // A counter not there yet is created with a token no entry holds yet: shared data
        // ignores the token on a true insert, but if another worker created the counter in
        // the meantime the write fails with CAS_MISMATCH and we retry on its record (cas 0
        // would overwrite it, losing that worker's reservation).
        var cas: u32 = insert_cas;
        if (host.getSharedData(key) catch return error.StoreUnavailable) |shared| {
            var value = shared.value;
            defer value.deinit();
            if (budget.Record.decode(value.bytes)) |decoded| record = decoded;
            cas = shared.cas;
        }
        const next = update.apply(update.context, record) orelse return record;
        host.setSharedData(key, &next.encode(), cas) catch |err| switch (err) {
            error.CasMismatch => continue,
            else => return error.StoreUnavailable,
        };
        return next;
    }
    std.debug.assert(attempt == cas_attempts_max);
    return error.Contended;
}

const AdmitStep = struct {
    counter: *store.Counter,
    now_ms: u64,
    force: bool,
    refused: *bool,

    fn apply(context: *const anyopaque, record: budget.Record) ?budget.Record {
        const self: *const AdmitStep = @ptrCast(@alignCast(context));
        const outcome = self.counter.budget.admit(record, self.now_ms, self.counter.admit_amount, self.force);
        self.counter.check = outcome.check;
        self.counter.reserved = outcome.reserved;
        self.refused.* = outcome.refused;
        std.debug.assert(outcome.reserved <= self.counter.admit_amount);
        if (outcome.refused and !self.force) return null; // a refusal changes nothing
        return if (std.meta.eql(outcome.record, record)) null else outcome.record; // no change: no write
    }
};

/// Admits a request against all its counters: each must have room for its `admit_amount`
/// (postpaid token counters ask for 0: room means "not spent"). Fills `check` on every counter
/// looked at and returns the index of the refusing counter, or null when admitted. With
/// `force` (shadow mode) amounts are added even where a counter refuses.
pub fn admit(counters: []store.Counter, now_ms: u64, force: bool) Error!?usize {
    var first_refused: ?usize = null;
    for (counters, 0..) |*counter, index| {
        var refused = false;
        var step = AdmitStep{ .counter = counter, .now_ms = now_ms, .force = force, .refused = &refused };
        _ = try modify(counter.key.slice(), .{ .context = &step, .apply = AdmitStep.apply });
        std.debug.assert(counter.reserved <= counter.admit_amount);
        if (!refused) continue;
        if (force) {
            if (first_refused == null) first_refused = index;
            continue;
        }
        for (counters[0..index]) |*earlier| try refund(earlier, now_ms, earlier.reserved);
        for (counters[0..index]) |*earlier| earlier.reserved = 0;
        return index;
    }
    std.debug.assert(first_refused == null or first_refused.? < counters.len);
    return first_refused;
}

const SettleStep = struct {
    counter: *const store.Counter,
    now_ms: u64,
    actual: u64,

    fn apply(context: *const anyopaque, record: budget.Record) ?budget.Record {
        const self: *const SettleStep = @ptrCast(@alignCast(context));
        const counter = self.counter;
        return counter.budget.settle(record, self.now_ms, counter.reserved, self.actual, counter.admitted_at_ms);
    }
};

/// Replaces each counter's reservation with the request's real cost `actual`.
pub fn settle(counters: []const store.Counter, now_ms: u64, actual_tokens: u64) Error!void {
    for (counters) |*counter| {
        const actual = switch (counter.unit) {
            .tokens => actual_tokens,
            .requests => counter.reserved, // a request counts once, at admission
        };
        if (actual == counter.reserved) continue;
        var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = actual };
        _ = try modify(counter.key.slice(), .{ .context = &step, .apply = SettleStep.apply });
    }
}

fn refund(counter: *const store.Counter, now_ms: u64, amount: u64) Error!void {
    std.debug.assert(amount <= counter.reserved);
    if (amount == 0) return;
    var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = counter.reserved - amount };
    _ = try modify(counter.key.slice(), .{ .context = &step, .apply = SettleStep.apply });
}
