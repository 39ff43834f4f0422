//! The store seam: where a request's counters are kept. Two implementations do the same two
//! operations on the same counters, checked against the same vectors (contract/budget.json):
//! the local store (local.zig, Envoy shared data) and the Redis store (redis.zig +
//! contract/budget.lua). A request picks its store once, from its rule (`Store.of`), and
//! settles in the store that admitted it.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const counter = @import("../meter/counter.zig");
const host = @import("../abi/host.zig");
const local = @import("local.zig");
const redis = @import("redis.zig");
const redis_lease = @import("redis_lease.zig");
const script = @import("script.zig");
const higress_compat = @import("higress_compat.zig");

pub const Counter = struct {
    key: counter.CounterKey,
    budget: budget.Budget,
    unit: config.Unit,
    /// What admission asks room for and adds: 1 for request counters, the estimate for token
    /// counters under `reserve`, 0 for token counters under `postpaid`.
    admit_amount: u64 = 0,
    /// Cost counters: what the finished request cost (micro-USD), set before settlement.
    actual_cost: u64 = 0,
    /// What admission added (the amount, capped at the limit); settled against the real cost.
    reserved: u64 = 0,
    admitted_at_ms: u64 = 0,
    /// The rule item the counter was collected for (null: shared by several), so the model's
    /// conditions apply once the model is known (http/model.zig).
    item: ?*const config.RuleItem = null,
    /// The budget as admission left it (for headers and logs).
    check: budget.Check = .{ .limit = 0, .used = 0, .reset_in_ms = 0 },
    /// Under `compat`: Higress's key for this counter (higress_compat.zig), else empty.
    higress_key: higress_compat.Key = .{},
    /// Leases (issue 17, lease.zig): admitted against this worker's slice of the budget, so
    /// it settles against the slice first.
    leased: bool = false,

    /// The counter's key and budget (algorithm, window, limit) as one nonzero hash, for the
    /// per-worker tables that remember counters (refusals.zig, lease.zig): a changed limit is
    /// another entry. `seed` keeps each table's hashes its own.
    pub fn tableHash(self: *const Counter, seed: u64) u64 {
        var hasher = std.hash.Wyhash.init(seed);
        hasher.update(self.key.slice());
        const b = self.budget;
        hasher.update(std.mem.asBytes(&[_]u64{ @backingInt(b.algorithm), @backingInt(b.window), b.limit }));
        return hasher.final() | 1; // never 0, the empty slot
    }
};

/// Why a store gave no answer. The local classes mean host trouble in this process (the
/// request is admitted uncounted); the Redis classes go to the rule's `failure_mode`.
pub const Failure = enum {
    local_unavailable,
    local_contended,
    bridge_unreachable,
    bridge_unauthorized,
    redis_unreachable,
    auth_failed,
    timeout,
    redis_error,
    bad_reply,
    not_sent,
    circuit_open,

    pub fn isLocal(self: Failure) bool {
        return self == .local_unavailable or self == .local_contended;
    }

    pub fn describe(self: Failure) []const u8 {
        return switch (self) {
            // The local store's log lines have always named these as errors.
            .local_unavailable => "StoreUnavailable",
            .local_contended => "Contended",
            .bridge_unreachable => "the tokenlimit bridge is unreachable (is the bridge cluster up?)",
            .bridge_unauthorized => "the bridge refused the filter's token (set TOKENLIMIT_BRIDGE_TOKEN in Envoy's environment to the bridge's token)",
            .redis_unreachable => "Redis is unreachable",
            .auth_failed => "Redis refused the credentials (wrong username or password)",
            .timeout => "Redis did not answer within redis.timeout",
            .redis_error => "Redis answered with an error",
            .bad_reply => "the reply was not what the script returns",
            .not_sent => "the call could not be started (unknown cluster or upstream?)",
            .circuit_open => "not called: repeated failures opened the circuit",
        };
    }
};

/// What admission gets back from a store.
pub const Admission = union(enum) {
    /// Answered now: the index of the refusing counter, or null when every counter had room.
    /// Each counter's `check` and `reserved` are filled in.
    decided: ?usize,
    /// Asked; the answer arrives later (HttpContext.onStoreReply), the request waits paused.
    pending,
    failed: Failure,
};

/// Who is asking: for log lines and for routing a later answer back.
pub const Caller = struct {
    rule_name: []const u8,
    /// Unique per request (context.zig): the Redis script applies each request's admission,
    /// settlement and release once by it.
    request_id: []const u8 = "",
    http_context_id: u32,
    root_context_id: u32,
};

pub const Store = union(enum) {
    local,
    redis: Remote,

    /// Redis, on tokenlimit's keys (budget.lua) or, under `compat`, Higress's (higress_compat).
    /// `lease_milli`: the rule's `lease.fraction` in thousandths, 0 without leases (lease.zig).
    pub const Remote = struct { settings: *const config.Redis, compat: config.Compat = .none, lease_milli: u32 = 0 };

    /// The store a rule's counters live in.
    pub fn of(rule: *const config.Rule) Store {
        const lease_milli: u32 = if (rule.lease) |lease| lease.fraction_milli else 0;
        return if (rule.redis) |*settings| .{ .redis = .{ .settings = settings, .compat = rule.compat, .lease_milli = lease_milli } } else .local;
    }

    /// Admits a request against all its counters (each must have room for its
    /// `admit_amount`). With `force` (shadow mode) amounts are added even where a counter
    /// refuses.
    pub fn admit(self: Store, caller: Caller, counters: []Counter, now_ms: u64, force: bool) Admission {
        std.debug.assert(counters.len > 0);
        switch (self) {
            .local => {
                const refused = local.admit(counters, now_ms, force) catch |err| return .{ .failed = switch (err) {
                    error.StoreUnavailable => .local_unavailable,
                    error.Contended => .local_contended,
                } };
                return .{ .decided = refused };
            },
            .redis => |remote| {
                // Leases (issue 17): this worker's slice of each budget covers the request.
                const leasing = remote.lease_milli > 0 and remote.compat == .none and !force;
                if (leasing and redis_lease.admitLeased(counters, now_ms)) return .{ .decided = null };
                // A counter this worker knows is exhausted refuses without a call (issue 17).
                if (remote.compat == .none and !force) if (redis.knownRefused(counters, now_ms)) |index| return .{ .decided = index };
                if (!redis.available(now_ms)) return .{ .failed = .circuit_open };
                const started = if (leasing and redis_lease.canLease(counters, now_ms))
                    redis_lease.lease(remote.settings.*, counters, remote.lease_milli, caller, now_ms)
                else if (remote.compat == .none) redis.admit(remote.settings.*, counters, force, caller, now_ms) else higress_compat.admit(remote.settings.*, counters, caller);
                started catch |err| {
                    host.logf(.warn, "rule {s}: could not call the redis store ({s})", .{ caller.rule_name, @errorName(err) });
                    return .{ .failed = .not_sent };
                };
                return .pending;
            },
        }
    }

    /// Reads the Redis store's admit reply into `counters`; budget.lua replies also teach the
    /// worker's cache of exhausted counters (redis.readAdmitReply).
    pub fn readAdmitReply(self: Store, counters: []Counter, values: []const i64, forced: bool) Admission {
        const remote = switch (self) {
            .redis => |remote| remote,
            .local => unreachable, // the local store answers at once
        };
        if (remote.compat != .none) return script.readAdmitReply(counters, values, forced);
        // A lease call's reply carries one grant per counter after the admit reply.
        if (remote.lease_milli > 0 and !forced and values.len == 2 + 4 * counters.len) return redis_lease.readLeaseReply(counters, values);
        return redis.readAdmitReply(counters, values, forced);
    }

    /// Replaces each counter's reservation with the real cost. The Redis store queues what it
    /// cannot send now and retries it; an error here means the charge is lost.
    pub fn settle(self: Store, caller: Caller, counters: []const Counter, now_ms: u64, actual_tokens: u64) !void {
        std.debug.assert(counters.len > 0);
        switch (self) {
            .local => try local.settle(counters, now_ms, actual_tokens),
            .redis => |remote| {
                // Leases (issue 17): refunds go back to this worker's slice, no call.
                if (remote.lease_milli > 0 and try redis_lease.settleLeased(remote.settings.*, counters, actual_tokens, now_ms, caller)) return;
                try if (remote.compat == .none) redis.settle(remote.settings.*, counters, actual_tokens, caller) else higress_compat.settle(remote.settings.*, counters, actual_tokens, caller);
            },
        }
    }
};
