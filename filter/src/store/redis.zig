//! The Redis budget store: one atomic Lua script (contract/budget.lua; its protocol in
//! script.zig) sent as EVALSHA and re-sent as EVAL on NOSCRIPT. Windows use Redis server time,
//! so gateways with skewed clocks agree.
//!
//! Two transports, chosen at build time (build.zig `transport`), everything else shared:
//! transport_http.zig (the tokenlimit bridge) and transport_higress.zig (Higress's Redis ABI).
//!
//! Calls are asynchronous: a request waits (paused) for its admission reply, which Envoy
//! delivers within `redis.timeout` or fails. A circuit breaker per worker (circuit.zig) stops
//! calling Redis after repeated failures and probes again after a back-off; every transition is
//! logged once. Settlements that fail wait in a bounded retry queue for the tick.
//!
//! Off the critical path (issue 17): a request's settlement is queued (batch.zig) and rides
//! with the worker's next admission of the same rule (`batch_admit`: one script call does
//! both), or goes with the rule's other queued settlements in one `settle_batch` call on the
//! root tick; so a request costs one script call (its admission) at steady state. A counter
//! known to be exhausted is refused from this worker's cache until its reset (refusals.zig),
//! with no call at all.
//!
//! Admission coalescing (issue 17, coalesce.zig + admit_queue.zig): while a rule's admission
//! call is in flight, the worker's further admissions of that rule wait and the next call
//! (`admit_many`) carries them all, so one reply can answer several requests (`nextDelivery`).
//! Lease calls: redis_lease.zig.
const std = @import("std");
const build_options = @import("build_options");
const circuit_breaker = @import("circuit.zig");
const config = @import("../config/config.zig");
const counter = @import("../meter/counter.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const resp = @import("resp.zig");
const retry_queue = @import("retry_queue.zig");
const script = @import("script.zig");
const store = @import("store.zig");
const transport_http = @import("transport_http.zig");
const transport_higress = @import("transport_higress.zig");
const higress_compat = @import("higress_compat.zig");
const cache_script = @import("../cache/store_redis.zig");

const batch = @import("batch.zig");
const coalesce = @import("coalesce.zig");
const admit_queue = @import("admit_queue.zig");
const refusals = @import("refusals.zig");
const lease_table = @import("lease.zig");

const allocator = host.allocator;

pub const transport_name = build_options.transport;
/// Comptime-known, so the other transport's host functions are never referenced.
const is_higress = std.mem.eql(u8, transport_name, "higress");
comptime {
    std.debug.assert(is_higress or std.mem.eql(u8, transport_name, "http"));
}
const transport = if (is_higress) transport_higress else transport_http;

/// Bound on calls in flight per worker, and on settlements kept for retry while Redis is away.
pub const pending_max = 4096;
pub const retry_queue_max = 1024;

/// peek: the usage endpoint (issue 16); cache_get / cache_set: the response cache (issue 15,
/// contract/cache.lua).
pub const Op = enum { admit, settle, peek, cache_get, cache_set };

/// The longest reply a transport reads: a budget reply, or a cached answer.
pub const reply_bytes_max = @max(script.reply_bytes_max, cache_script.reply_bytes_max);

/// An admission reply on its way to the HTTP context that waits for it.
pub const Delivery = struct { http_context_id: u32, outcome: Outcome };

/// What a finished call hands back to the HTTP context that waits for it.
pub const Outcome = union(enum) {
    /// admit: the script's reply values (script.readAdmitReply reads them).
    admitted: []const i64,
    /// peek (the usage endpoint, issue 16): the script's reply values (script.readPeekReply).
    peeked: []const i64,
    settled,
    failed: store.Failure,
    /// cache_get: the entry's bytes (valid until the next reply arrives), or null: none.
    cached: ?[]const u8,
};

/// The last reply's integers: its deliveries point into them until the next reply arrives (a
/// lease reply: 4 a counter; an admit_many reply is bounded by batch.call_arguments_max).
var integers: [4 * counter.reply_counters_max + 2]i64 = undefined;

/// The last cache_get reply's entry: delivery is synchronous, the next reply frees it.
var cached_reply: ?[]u8 = null;

pub const Pending = struct {
    op: Op,
    http_context_id: u32,
    /// Everything after the script argument (numkeys, keys, args): kept to re-send as EVAL.
    tail: []u8,
    target: Target,
    sent_as_eval: bool,
    /// admit: the release to send if the answer never comes (a timeout, a lost reply): the
    /// admission may still run on Redis, and must not leave a reservation nobody settles.
    release_tail: ?[]u8 = null,
    /// The script the call runs: budget.lua, or higress_compat.lua under `compat`.
    lua: enum { budget, higress, cache } = .budget,
    /// A settle_batch call (batch.zig): how many settlements it carries (its reply is one
    /// integer each); 0 for a single settle or release. An admit: how many it carries.
    batch_entries: usize = 0,
    /// An admit carrying queued settlements (batch_admit): those settlements as a settle_batch
    /// call, kept for retry should the admit call fail.
    carried_tail: ?[]u8 = null,
    /// Admission coalescing (coalesce.zig): the group (rule) this admit call leads, 0: none;
    /// an admit_many call's admissions, each answered from its part of the reply.
    group_id: u32 = 0,
    admissions: ?[]admit_queue.Waiting = null,
};

/// Where the commands go: the bridge cluster (http) or the Higress Redis upstream.
pub const Target = struct {
    name: [300]u8 = undefined,
    name_len: usize = 0,
    timeout_ms: u32,

    pub fn slice(self: *const Target) []const u8 {
        return self.name[0..self.name_len];
    }

    pub fn fromConfig(redis: config.Redis) Target {
        var target = Target{ .timeout_ms = redis.timeout_ms };
        target.name_len = if (transport.targetName(redis, &target.name)) |written| written.len else |_| 0;
        return target;
    }
};

var circuit: circuit_breaker.Circuit = .{};
pub var pending: std.AutoHashMapUnmanaged(u32, Pending) = .empty;
var retries: retry_queue.RetryQueue(Pending, retry_queue_max) = .{};
pub var batches: batch.Queue(Target) = .{};
pub var refused: refusals.Cache = .{};
pub var leases: lease_table.Table = .{};

/// Once per VM (after metrics are defined): the transport, the tick that flushes queued
/// settlements (batch.flush_period_ms, the bound on the settle delay) and retries.
pub fn start() void {
    transport.start();
    host.setTickPeriod(batch.flush_period_ms) catch {};
}

/// When a config is loaded: registers each rule's Redis upstream (Higress).
pub fn configure(rule: *const config.Rule) void {
    transport.configure(rule);
}

/// Moves the circuit one step and logs / counts what changed. Returns whether a call may go.
fn circuitStep(now_ms: u64, event: circuit_breaker.Event, failure: store.Failure) bool {
    const next = circuit_breaker.step(circuit, now_ms, event);
    circuit = next.circuit;
    switch (next.change) {
        .none => {},
        .probing => host.log(.info, "redis store: probing again after back-off"),
        .recovered => host.log(.info, "redis store recovered: calling Redis again"),
        .opened => {
            host.recordMetric(metrics.redis.circuit_open, 1);
            host.incrementMetric(metrics.redis.circuit_opened, 1);
            host.logf(.warn, "redis store unavailable: {s}; not calling Redis for {d} ms (each rule's failure_mode applies meanwhile)", .{ failure.describe(), circuit.backoff_ms });
        },
    }
    if (event == .succeeded) host.recordMetric(metrics.redis.circuit_open, 0);
    return next.allowed;
}

/// Whether a call to Redis may be made now (the circuit is closed, or this is the probe).
pub fn available(now_ms: u64) bool {
    return circuitStep(now_ms, .ask, .circuit_open);
}

/// Starts the admission script for `counters`; the outcome arrives through `onReply`. The
/// settlements this worker queued for the same rule ride along (budget.lua `batch_admit`):
/// they land before this admission is judged, in the same script call.
pub fn admit(redis: config.Redis, counters: []const store.Counter, force: bool, caller: store.Caller, now_ms: u64) !void {
    std.debug.assert(caller.http_context_id != 0);
    const marker = script.MarkerKey.init(counters[0].key.slice(), caller.request_id);
    const target = Target.fromConfig(redis);
    const release = try script.releaseArguments(allocator, counters, marker, false);
    // Coalescing (coalesce.zig): while the rule's admission call is in flight, this one waits
    // for the next call, which carries all that waited.
    const group_id = switch (coalesce.join(target, counters, force, marker, release, caller.http_context_id, now_ms)) {
        .queued => return,
        .lead => |id| id,
    };
    errdefer allocator.free(release);
    const carried = batches.carry(allocator, target, counters, force, marker) catch null;
    errdefer if (carried) |taken| {
        // The call could not start: its settlements wait for the tick's retry instead.
        allocator.free(taken.admit_tail);
        queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = taken.settle_tail, .target = target, .sent_as_eval = false, .batch_entries = taken.entries });
    };
    const tail = if (carried) |taken| taken.admit_tail else try script.admitArguments(allocator, counters, force, marker);
    errdefer if (carried == null) allocator.free(tail);
    var call = Pending{ .op = .admit, .http_context_id = caller.http_context_id, .tail = tail, .target = target, .sent_as_eval = false, .release_tail = release, .group_id = group_id };
    if (carried) |taken| {
        call.carried_tail = taken.settle_tail;
        call.batch_entries = taken.entries;
    }
    try send(call);
    coalesce.sent(group_id, now_ms, target.timeout_ms);
    if (carried) |taken| host.incrementMetric(metrics.redis.settles_batched, @intCast(taken.entries));
}

/// Starts a read-only `peek` of `counters` for the usage endpoint (issue 16); the reply arrives
/// through `onReply` as `.peeked`, for `caller.http_context_id`.
pub fn peek(redis: config.Redis, counters: []const store.Counter, caller: store.Caller) !void {
    std.debug.assert(caller.http_context_id != 0);
    const tail = try script.peekArguments(allocator, counters);
    errdefer allocator.free(tail);
    try send(.{ .op = .peek, .http_context_id = caller.http_context_id, .tail = tail, .target = Target.fromConfig(redis), .sent_as_eval = false });
}

/// Queues a settlement (actual cost against each reservation) for the worker's next
/// settle_batch call (batch.zig): no call on the request's path while its rule is busy (the
/// first settlement after a quiet period goes at once). Sent on its own when the queue cannot
/// take it. Failures are queued and retried, so a charge survives a
/// Redis outage up to the retry queue's bound.
pub fn settle(redis: config.Redis, counters: []const store.Counter, actual_tokens: u64, caller: store.Caller) !void {
    const marker = script.MarkerKey.init(counters[0].key.slice(), caller.request_id);
    const target = Target.fromConfig(redis);
    if (batches.add(allocator, target, counters, actual_tokens, marker, host.nowMs())) |full| {
        const ready = full orelse return;
        return sendFromRequest(batchCall(ready), caller);
    } else |_| {}
    const tail = try script.settleArguments(allocator, counters, actual_tokens, marker);
    sendFromRequest(.{ .op = .settle, .http_context_id = 0, .tail = tail, .target = target, .sent_as_eval = false }, caller);
}

fn batchCall(ready: batch.Queue(Target).Batch) Pending {
    return .{ .op = .settle, .http_context_id = 0, .tail = ready.tail, .target = ready.target, .sent_as_eval = false, .batch_entries = ready.entries };
}

/// Sends a settlement call while a request's callback runs (kept for retry if it cannot go).
fn sendFromRequest(call: Pending, caller: store.Caller) void {
    // Settlements belong to the root context: they outlive the request that caused them. The
    // request's own host calls after this one (its access-log fields) act on it again.
    host.setEffectiveContext(caller.root_context_id) catch {};
    defer host.setEffectiveContext(caller.http_context_id) catch {};
    sendSettlement(call);
}

fn sendSettlement(call: Pending) void {
    std.debug.assert(call.op == .settle);
    if (call.batch_entries > 0) {
        host.incrementMetric(metrics.redis.settle_batches, 1);
        host.incrementMetric(metrics.redis.settles_batched, @intCast(call.batch_entries));
    }
    if (!available(host.nowMs())) return queueForRetry(call);
    send(call) catch queueForRetry(call);
}

/// The index of a counter this worker knows to be exhausted (refusals.zig), its check filled
/// for the rejection: the request is refused without calling Redis.
pub fn knownRefused(counters: []store.Counter, now_ms: u64) ?usize {
    const index = refused.refusing(counters, now_ms) orelse return null;
    host.incrementMetric(metrics.redis.refused_locally, 1);
    return index;
}

/// Reads an admit reply (script.readAdmitReply) and remembers the counters it shows exhausted.
/// `forced` (shadow mode) replies teach nothing: shadow admissions always reach Redis.
pub fn readAdmitReply(counters: []store.Counter, values: []const i64, forced: bool) store.Admission {
    const asked_ms = if (counters.len > 0) counters[0].admitted_at_ms else 0; // prepare's clock, until the reply sets the server's
    const answer = script.readAdmitReply(counters, values, forced);
    if (answer == .decided and !forced) refused.learn(counters, asked_ms);
    return answer;
}

/// A call of higress_compat.lua (`compat`): a check (it reserves nothing, so there is no
/// release) or a charge, kept for retry as settlements are. On success redis.zig owns `tail`.
pub fn callHigress(op: Op, redis: config.Redis, tail: []u8, caller: store.Caller) !void {
    const call = Pending{ .op = op, .http_context_id = if (op == .admit) caller.http_context_id else 0, .tail = tail, .target = Target.fromConfig(redis), .sent_as_eval = false, .lua = .higress };
    if (op == .admit) return send(call);
    host.setEffectiveContext(caller.root_context_id) catch {};
    defer host.setEffectiveContext(caller.http_context_id) catch {};
    if (!available(host.nowMs())) return queueForRetry(call);
    send(call) catch queueForRetry(call);
}

/// Response cache (issue 15): asks Redis for the entry under `digest`; the outcome (`cached`)
/// arrives through `onReply` like an admission's.
pub fn cacheGet(redis: config.Redis, digest: [32]u8, caller: store.Caller) !void {
    std.debug.assert(caller.http_context_id != 0);
    const tail = try cache_script.getArguments(allocator, digest);
    errdefer allocator.free(tail);
    try send(.{ .op = .cache_get, .http_context_id = caller.http_context_id, .tail = tail, .target = Target.fromConfig(redis), .sent_as_eval = false, .lua = .cache });
}

/// Response cache: stores an entry with its TTL. Best effort: a failure loses one entry (it is
/// counted), never retried (the answer will be asked for again).
pub fn cacheSet(redis: config.Redis, digest: [32]u8, bytes: []const u8, ttl_ms: u64, caller: store.Caller) !void {
    const tail = try cache_script.setArguments(allocator, digest, bytes, ttl_ms);
    errdefer allocator.free(tail);
    host.setEffectiveContext(caller.root_context_id) catch {};
    defer host.setEffectiveContext(caller.http_context_id) catch {};
    if (!available(host.nowMs())) return error.CircuitOpen;
    try send(.{ .op = .cache_set, .http_context_id = 0, .tail = tail, .target = Target.fromConfig(redis), .sent_as_eval = false, .lua = .cache });
}

/// Sends `call` as EVALSHA (or EVAL once Redis said NOSCRIPT). On success the pending table
/// owns `call.tail`; on failure the caller still does.
pub fn send(call: Pending) !void {
    if (pending.count() >= pending_max) return error.TooManyCallsInFlight;
    const command = try switch (call.lua) {
        .budget => script.command(allocator, call.tail, call.sent_as_eval),
        .higress => higress_compat.command(allocator, call.tail, call.sent_as_eval),
        .cache => cache_script.command(allocator, call.tail, call.sent_as_eval),
    };
    defer allocator.free(command);
    const call_id = try transport.send(call.target.slice(), call.target.timeout_ms, command);
    host.incrementMetric(metrics.redis.calls, 1);
    // The host hands out each call id once; a second call under one id is a host bug that
    // would strand the first request.
    std.debug.assert(!pending.contains(call_id));
    try pending.put(allocator, call_id, call);
}

/// proxy_on_http_call_response (stock Envoy build).
pub fn onHttpCallResponse(call_id: u32, header_count: u32, body_size: u32) ?Delivery {
    var reply = transport_http.readReply(header_count, body_size);
    defer if (reply.body) |*bytes| bytes.deinit();
    return onReply(call_id, if (reply.body) |bytes| bytes.bytes else null, reply.failure);
}

/// proxy_on_redis_call_response (Higress build).
pub fn onRedisCallResponse(call_id: u32, status: u32, response_size: u32) ?Delivery {
    var reply = transport_higress.readReply(status, response_size);
    defer if (reply.body) |*bytes| bytes.deinit();
    return onReply(call_id, if (reply.body) |bytes| bytes.bytes else null, reply.failure);
}

/// A reply arrived (or the call failed). Returns the waiting HTTP context and its outcome for
/// admissions; settlements are finished here. `reply` is null when the transport failed.
fn onReply(call_id: u32, reply: ?[]const u8, transport_failure: store.Failure) ?Delivery {
    const entry = pending.fetchRemove(call_id) orelse return null;
    var call = entry.value;
    const now_ms = host.nowMs();
    if (cached_reply) |previous| allocator.free(previous);
    cached_reply = null;
    const outcome: Outcome = blk: {
        const bytes = reply orelse break :blk .{ .failed = transport_failure };
        if (call.op == .cache_get) switch (cache_script.readGet(bytes)) {
            .none => break :blk .{ .cached = null },
            .found => |found| {
                cached_reply = allocator.dupe(u8, found) catch break :blk .{ .failed = .bad_reply };
                break :blk .{ .cached = cached_reply };
            },
            .other => {}, // an error reply (NOSCRIPT ...) is read below
        };
        const parsed = resp.parseReply(bytes, &integers) catch break :blk .{ .failed = .bad_reply };
        switch (parsed) {
            .integers => |values| break :blk switch (call.op) {
                .admit => .{ .admitted = values },
                .peek => .{ .peeked = values },
                // settle_batch (batch.zig): one integer per settlement it carries.
                .settle => if (call.batch_entries > 0 and values.len == call.batch_entries) .settled else .{ .failed = .bad_reply },
                .cache_get, .cache_set => .{ .failed = .bad_reply },
            },
            .integer => break :blk if ((call.op == .settle and call.batch_entries == 0) or call.op == .cache_set) .settled else .{ .failed = .bad_reply },
            .err => |text| switch (script.classifyError(text)) {
                .no_script => if (!call.sent_as_eval) {
                    call.sent_as_eval = true; // first use on this Redis: send the script itself
                    send(call) catch break :blk .{ .failed = .not_sent };
                    return null;
                } else {
                    host.logf(.debug, "redis error reply: {s}", .{text[0..@min(text.len, 200)]});
                    break :blk .{ .failed = .redis_error };
                },
                .auth_failed, .other => |class| {
                    host.logf(.debug, "redis error reply: {s}", .{text[0..@min(text.len, 200)]});
                    break :blk .{ .failed = if (class == .auth_failed) .auth_failed else .redis_error };
                },
            },
            .other => break :blk .{ .failed = .bad_reply },
        }
    };
    switch (outcome) {
        .failed => |failure| {
            host.incrementMetric(metrics.redis.failures, 1);
            _ = circuitStep(now_ms, .failed, failure);
        },
        else => _ = circuitStep(now_ms, .succeeded, .circuit_open),
    }
    if (call.op == .cache_set) {
        if (outcome == .failed) host.incrementMetric(metrics.plugin.cache_store_errors, 1);
        allocator.free(call.tail);
        return null;
    }
    if (call.op == .settle) {
        if (outcome == .failed) {
            queueForRetry(call);
        } else {
            allocator.free(call.tail);
        }
        return null;
    }
    allocator.free(call.tail);
    if (call.carried_tail) |carried| {
        // A failed admit call may or may not have applied its settlements: retried, they apply
        // once (their markers).
        if (outcome == .failed) {
            queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = carried, .target = coalesce.retryTarget(&call), .sent_as_eval = false, .batch_entries = call.batch_entries });
        } else allocator.free(carried);
    }
    if (call.release_tail) |release| {
        if (outcome == .failed) {
            // The admission may still run (or may have run) on Redis: it is given back, once,
            // by the next tick (a release that arrives first makes the admission reserve nothing).
            queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = release, .target = call.target, .sent_as_eval = false });
        } else allocator.free(release);
    }
    return coalesce.finish(&call, outcome, now_ms);
}

/// The next answer to hand to a waiting request after a reply or tick handler returned one
/// (a coalesced call answers several: main.zig hands them out in turn).
pub fn nextDelivery() ?Delivery {
    return coalesce.nextDelivery();
}

/// Keeps a release or settlement (`batch_entries` > 0: a settle_batch) for the retry tick
/// (coalesce.zig: a failed coalesced call's releases and carried settlements).
pub fn queueRetry(target: Target, tail: []u8, batch_entries: usize) void {
    queueForRetry(.{ .op = .settle, .http_context_id = 0, .tail = tail, .target = target, .sent_as_eval = false, .batch_entries = batch_entries });
}

/// Keeps a failed settlement for the retry tick; drops (and counts) it past the bound.
pub fn queueForRetry(call: Pending) void {
    std.debug.assert(call.op == .settle);
    retries.push(allocator, call) catch |err| {
        if (err == error.Full) {
            host.incrementMetric(metrics.redis.settles_dropped, 1);
            host.log(.err, "redis store: settlement retry queue full; a charge was dropped");
        }
        allocator.free(call.tail);
        return;
    };
    host.incrementMetric(metrics.redis.settle_retries_queued, 1);
}

/// Each tick: sends the queued settlements (one settle_batch call per rule), then re-sends
/// failed ones while the circuit lets calls through.
pub fn onTick(root_context_id: u32) ?Delivery {
    if (batches.queued == 0 and retries.len() == 0 and coalesce.idle()) return null;
    host.setEffectiveContext(root_context_id) catch return null;
    const now_ms = host.nowMs();
    coalesce.onTick(now_ms); // admissions past their deadline, stale calls
    while (batches.next(allocator, now_ms) catch null) |ready| sendSettlement(batchCall(ready));
    batches.prune(allocator, now_ms);
    while (retries.len() > 0 and available(host.nowMs())) {
        const call = retries.pop() orelse break;
        send(call) catch {
            host.incrementMetric(metrics.redis.settles_dropped, 1);
            allocator.free(call.tail);
            break;
        };
    }
    return coalesce.nextDelivery();
}
