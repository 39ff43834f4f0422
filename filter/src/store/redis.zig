//! The Redis budget store: one atomic Lua script (contract/budget.lua, embedded here) whose
//! first argument names the operation (admit, settle), sent as EVALSHA and re-sent as EVAL on
//! NOSCRIPT. Windows use
//! Redis server time, so gateways with skewed clocks agree.
//!
//! Two transports, chosen at build time (build.zig `transport`), everything else shared:
//! - "http":    stock Envoy / Istio: the RESP bytes go by proxy_http_call to the tokenlimit
//!              bridge (controlplane/tokenlimit/bridge.py), which forwards them to Redis.
//! - "higress": Higress's proxy_redis_init / proxy_redis_call; replies in buffer type 9.
//!
//! Calls are asynchronous: a request waits (paused) for its admission reply, which Envoy
//! delivers within `redis.timeout` or fails. A circuit breaker per worker stops calling Redis
//! after repeated failures and probes again after a back-off, so an outage costs requests
//! nothing once it is noticed. Every transition is logged once.
const std = @import("std");
const build_options = @import("build_options");
const config = @import("../config.zig");
const host = @import("../abi/host.zig");
const resp = @import("resp.zig");
const store = @import("store.zig");

const allocator = host.allocator;

pub const budget_script = @embedFile("budget.lua");
pub const transport = build_options.transport;
/// Comptime-known, so the other transport's host functions are never referenced (a stock Envoy
/// refuses a module that imports proxy_redis_*).
const is_higress = std.mem.eql(u8, transport, "higress");
comptime {
    std.debug.assert(is_higress or std.mem.eql(u8, transport, "http"));
}

/// Bound on calls in flight per worker, and on settlements kept for retry while Redis is away.
pub const pending_max = 4096;
pub const retry_queue_max = 1024;
const failures_to_open = 3;
const backoff_initial_ms = 1000;
const backoff_max_ms = 30_000;
/// Env var (Envoy `vm_config.environment_variables`) holding the bridge's bearer token.
pub const bridge_token_variable = "TOKENLIMIT_BRIDGE_TOKEN";

pub const Failure = enum {
    bridge_unreachable,
    bridge_unauthorized,
    redis_unreachable,
    auth_failed,
    timeout,
    redis_error,
    bad_reply,
    not_sent,
    circuit_open,

    pub fn describe(self: Failure) []const u8 {
        return switch (self) {
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

pub const Op = enum { admit, settle };

/// An admission reply on its way to the HTTP context that waits for it.
pub const Delivery = struct { http_context_id: u32, outcome: Outcome };

/// What a finished call hands back to the HTTP context that waits for it.
pub const Outcome = union(enum) {
    /// admit: refused index (0 = admitted), server time, then (used, limit, reset_ms) per counter.
    admitted: []const i64,
    settled,
    failed: Failure,
};

const Pending = struct {
    op: Op,
    http_context_id: u32,
    /// Everything after the script argument (numkeys, keys, args): kept to re-send as EVAL.
    tail: []u8,
    target: Target,
    sent_as_eval: bool,
};

/// Where the commands go: the bridge cluster (http) or the Higress Redis upstream.
pub const Target = struct {
    name: [300]u8 = undefined,
    name_len: usize = 0,
    timeout_ms: u32,

    pub fn slice(self: *const Target) []const u8 {
        return self.name[0..self.name_len];
    }

    /// Higress names a Redis service `outbound|<port>||<fqdn>`, plus `?db=N` for a database.
    pub fn fromConfig(redis: config.Redis) Target {
        var target = Target{ .timeout_ms = redis.timeout_ms };
        const name = if (is_higress)
            (if (redis.database > 0)
                std.fmt.bufPrint(&target.name, "outbound|{d}||{s}?db={d}", .{ redis.service_port, redis.service_name, redis.database })
            else
                std.fmt.bufPrint(&target.name, "outbound|{d}||{s}", .{ redis.service_port, redis.service_name }))
        else
            std.fmt.bufPrint(&target.name, "{s}", .{redis.service_name});
        target.name_len = if (name) |written| written.len else |_| 0;
        return target;
    }
};

// ---- circuit breaker -------------------------------------------------------------------------

const Circuit = struct {
    state: enum { closed, open, half_open } = .closed,
    consecutive_failures: u32 = 0,
    open_until_ms: u64 = 0,
    backoff_ms: u64 = backoff_initial_ms,
    probe_in_flight: bool = false,
    last_failure: Failure = .timeout,

    /// Whether a call may go to Redis now (half-open lets exactly one probe through).
    fn allows(self: *Circuit, now_ms: u64) bool {
        switch (self.state) {
            .closed => return true,
            .open => {
                if (now_ms < self.open_until_ms) return false;
                self.state = .half_open;
                self.probe_in_flight = true;
                host.log(.info, "redis store: probing again after back-off");
                return true;
            },
            .half_open => {
                if (self.probe_in_flight) return false;
                self.probe_in_flight = true;
                return true;
            },
        }
    }

    fn succeeded(self: *Circuit) void {
        if (self.state != .closed) host.log(.info, "redis store recovered: calling Redis again");
        self.* = .{};
        host.recordMetric(metrics.circuit_open, 0);
    }

    fn failed(self: *Circuit, failure: Failure, now_ms: u64) void {
        self.consecutive_failures += 1;
        self.last_failure = failure;
        self.probe_in_flight = false;
        const opening = switch (self.state) {
            .closed => self.consecutive_failures >= failures_to_open,
            .half_open => true,
            .open => false,
        };
        if (!opening) return;
        if (self.state == .half_open) self.backoff_ms = @min(self.backoff_ms * 2, backoff_max_ms);
        self.state = .open;
        self.open_until_ms = now_ms + self.backoff_ms;
        host.recordMetric(metrics.circuit_open, 1);
        host.incrementMetric(metrics.circuit_opened, 1);
        host.logf(.warn, "redis store unavailable: {s}; not calling Redis for {d} ms (each rule's failure_mode applies meanwhile)", .{ failure.describe(), self.backoff_ms });
    }
};

pub const Metrics = struct {
    calls: u32 = 0,
    failures: u32 = 0,
    circuit_open: u32 = 0,
    circuit_opened: u32 = 0,
    settle_retries_queued: u32 = 0,
    settles_dropped: u32 = 0,

    pub fn define() Metrics {
        return host.defineMetrics(Metrics, "tokenlimit.redis_", &.{"circuit_open"});
    }
};

pub var metrics: Metrics = .{};
var circuit: Circuit = .{};
var pending: std.AutoHashMapUnmanaged(u32, Pending) = .empty;
var retry_queue: std.ArrayList(Pending) = .empty;
/// EVALSHA names, computed at build time (no SHA-1 code in the module).
const script_sha = scriptSha(budget_script);

fn scriptSha(comptime script: []const u8) [40]u8 {
    @setEvalBranchQuota(1_000_000);
    comptime {
        var digest: [20]u8 = undefined;
        std.crypto.hash.Sha1.hash(script, &digest, .{});
        return std.fmt.bytesToHex(digest, .lower);
    }
}
var bridge_token: [256]u8 = undefined;
var bridge_token_len: usize = 0;

/// Once per VM: the bridge token, metrics, the retry tick.
pub fn start() void {
    metrics = Metrics.define();
    if (!is_higress) {
        if (host.environmentVariable(bridge_token_variable, &bridge_token)) |token| bridge_token_len = token.len;
    }
    host.setTickPeriod(1000) catch {};
}

/// Higress: registers each rule's Redis upstream (proxy_redis_init) when a config is loaded.
pub fn configure(rule: *const config.Rule) void {
    if (is_higress) {
        const redis = rule.redis orelse return;
        const target = Target.fromConfig(redis);
        host.higress.redisInit(target.slice(), redis.username, redis.password, redis.timeout_ms) catch |err| {
            host.logf(.err, "rule {s}: proxy_redis_init({s}) failed: {s}; check redis.service_name / service_port (Higress resolves `name.dns`, `name.static` on port 80, or `svc.ns.svc.cluster.local`)", .{ rule.name, target.slice(), @errorName(err) });
        };
    }
}

/// Whether a call to Redis may be made now (the circuit is closed, or this is the probe).
pub fn available(now_ms: u64) bool {
    return circuit.allows(now_ms);
}

/// Starts the admission script for `counters`; the outcome arrives through `onReply`.
pub fn admit(redis: config.Redis, counters: []const store.Counter, force: bool, http_context_id: u32) !void {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(&tail, counters);
    try tail.arg(allocator, "admit");
    try tail.argInt(allocator, 0); // now: the server's clock
    try tail.argInt(allocator, @intFromBool(force));
    for (counters) |counter| {
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try tail.argInt(allocator, counter.budget.window.lengthMs());
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, counter.admit_amount);
    }
    const call = Pending{ .op = .admit, .http_context_id = http_context_id, .tail = try tail.bytes.toOwnedSlice(allocator), .target = Target.fromConfig(redis), .sent_as_eval = false };
    send(call) catch |err| {
        allocator.free(call.tail);
        return err;
    };
}

/// Starts the settlement script (actual cost against each reservation). Failures are queued
/// and retried, so a charge survives a Redis outage up to the queue's bound.
pub fn settle(redis: config.Redis, counters: []const store.Counter, actual_tokens: u64, root_context_id: u32) !void {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(&tail, counters);
    try tail.arg(allocator, "settle");
    try tail.argInt(allocator, 0);
    for (counters) |counter| {
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try tail.argInt(allocator, counter.budget.window.lengthMs());
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, counter.reserved);
        try tail.argInt(allocator, if (counter.unit == .requests) counter.reserved else actual_tokens);
    }
    try tail.argInt(allocator, counters[0].admitted_at_ms);
    // Settlements belong to the root context: they outlive the request that caused them.
    host.setEffectiveContext(root_context_id) catch {};
    const call = Pending{ .op = .settle, .http_context_id = 0, .tail = try tail.bytes.toOwnedSlice(allocator), .target = Target.fromConfig(redis), .sent_as_eval = false };
    if (!circuit.allows(host.nowMs())) {
        _ = queueForRetry(call);
        return;
    }
    send(call) catch {
        _ = queueForRetry(call);
    };
}

fn appendKeys(tail: *resp.Command, counters: []const store.Counter) !void {
    try tail.argInt(allocator, counters.len);
    for (counters) |counter| try tail.arg(allocator, counter.key.slice());
}

/// Sends `call` as EVALSHA (or EVAL once Redis said NOSCRIPT). On success the pending table
/// owns `call.tail`; on failure the caller still does.
fn send(call: Pending) !void {
    if (pending.count() >= pending_max) return error.TooManyCallsInFlight;
    var command: resp.Command = .{};
    defer command.deinit(allocator);
    try command.begin(allocator, 2 + countArguments(call.tail));
    if (call.sent_as_eval) {
        try command.arg(allocator, "EVAL");
        try command.arg(allocator, budget_script);
    } else {
        try command.arg(allocator, "EVALSHA");
        try command.arg(allocator, &script_sha);
    }
    try command.bytes.appendSlice(allocator, call.tail);
    const call_id = try transmit(call.target, command.bytes.items);
    host.incrementMetric(metrics.calls, 1);
    try pending.put(allocator, call_id, call);
}

/// Number of RESP bulk strings in an encoded argument list (each starts with '$' at a line start).
fn countArguments(tail: []const u8) usize {
    var count: usize = 0;
    var at: usize = 0;
    while (at < tail.len) {
        std.debug.assert(tail[at] == '$');
        const line_end = std.mem.indexOfPos(u8, tail, at, "\r\n") orelse break;
        const length = std.fmt.parseInt(usize, tail[at + 1 .. line_end], 10) catch break;
        at = line_end + 2 + length + 2;
        count += 1;
    }
    return count;
}

fn transmit(target: Target, command: []const u8) !u32 {
    if (is_higress) return host.higress.redisCall(target.slice(), command);
    var timeout_text: [16]u8 = undefined;
    var authorization: [7 + 256]u8 = undefined;
    var headers: host.HeaderMapWriter(6) = .{};
    headers.add(":method", "POST");
    headers.add(":path", "/v1/resp");
    headers.add(":authority", "tokenlimit-bridge");
    headers.add("content-type", "application/x-redis-resp");
    headers.add("x-tokenlimit-timeout-ms", std.fmt.bufPrint(&timeout_text, "{d}", .{target.timeout_ms}) catch "1000");
    if (bridge_token_len > 0) {
        headers.add("authorization", std.fmt.bufPrint(&authorization, "Bearer {s}", .{bridge_token[0..bridge_token_len]}) catch "");
    }
    var serialized: [1024]u8 = undefined;
    const header_bytes = headers.write(&serialized) catch return error.HeadersTooLarge;
    return host.httpCall(target.slice(), header_bytes, command, target.timeout_ms);
}

/// A reply arrived (or the call failed). Returns the waiting HTTP context and its outcome for
/// admissions; settlements are finished here. `reply` is null when the transport failed.
pub fn onReply(call_id: u32, reply: ?[]const u8, transport_failure: Failure) ?Delivery {
    const entry = pending.fetchRemove(call_id) orelse return null;
    var call = entry.value;
    var integers: [3 * 256 + 2]i64 = undefined;
    const now_ms = host.nowMs();
    const outcome: Outcome = blk: {
        const bytes = reply orelse break :blk .{ .failed = transport_failure };
        const parsed = resp.parseReply(bytes, &integers) catch break :blk .{ .failed = .bad_reply };
        switch (parsed) {
            .integers => |values| break :blk if (call.op == .admit) .{ .admitted = values } else .{ .failed = .bad_reply },
            .integer => break :blk if (call.op == .settle) .settled else .{ .failed = .bad_reply },
            .err => |text| {
                if (std.mem.startsWith(u8, text, "NOSCRIPT") and !call.sent_as_eval) {
                    call.sent_as_eval = true; // first use on this Redis: send the script itself
                    send(call) catch break :blk .{ .failed = .not_sent };
                    return null;
                }
                const auth = std.mem.startsWith(u8, text, "WRONGPASS") or std.mem.startsWith(u8, text, "NOAUTH");
                host.logf(.debug, "redis error reply: {s}", .{text[0..@min(text.len, 200)]});
                break :blk .{ .failed = if (auth) .auth_failed else .redis_error };
            },
            .other => break :blk .{ .failed = .bad_reply },
        }
    };
    switch (outcome) {
        .failed => |failure| {
            host.incrementMetric(metrics.failures, 1);
            circuit.failed(failure, now_ms);
        },
        else => circuit.succeeded(),
    }
    if (call.op == .settle) {
        if (outcome == .failed) return queueForRetry(call);
        allocator.free(call.tail);
        return null;
    }
    allocator.free(call.tail);
    return .{ .http_context_id = call.http_context_id, .outcome = outcome };
}

/// Keeps a failed settlement for the retry tick; drops (and counts) it past the bound.
fn queueForRetry(call: Pending) ?Delivery {
    if (retry_queue.items.len >= retry_queue_max) {
        host.incrementMetric(metrics.settles_dropped, 1);
        host.log(.err, "redis store: settlement retry queue full; a charge was dropped");
        allocator.free(call.tail);
        return null;
    }
    retry_queue.append(allocator, call) catch {
        allocator.free(call.tail);
        return null;
    };
    host.incrementMetric(metrics.settle_retries_queued, 1);
    return null;
}

/// Each tick: re-send queued settlements while the circuit lets calls through.
pub fn onTick(root_context_id: u32) void {
    if (retry_queue.items.len == 0) return;
    host.setEffectiveContext(root_context_id) catch return;
    while (retry_queue.items.len > 0 and circuit.allows(host.nowMs())) {
        const call = retry_queue.pop() orelse break;
        send(call) catch {
            host.incrementMetric(metrics.settles_dropped, 1);
            allocator.free(call.tail);
            break;
        };
    }
}

/// Classifies a finished http_call to the bridge: the RESP body, or why there is none.
pub fn bridgeReply(status: ?u16, bridge_error: []const u8) Failure {
    const code = status orelse return .bridge_unreachable;
    if (code == 200) return .bad_reply; // caller checks the body first
    if (std.mem.eql(u8, bridge_error, "redis-unreachable")) return .redis_unreachable;
    if (std.mem.eql(u8, bridge_error, "redis-auth-failed")) return .auth_failed;
    if (std.mem.eql(u8, bridge_error, "redis-timeout")) return .timeout;
    if (std.mem.eql(u8, bridge_error, "unauthorized")) return .bridge_unauthorized;
    if (bridge_error.len > 0) return .redis_error;
    if (code == 504) return .timeout;
    return .bridge_unreachable; // Envoy's own 503: no healthy bridge to talk to
}

test "redis store: argument counting walks encoded bulk strings" {
    var tail: resp.Command = .{};
    defer tail.deinit(std.testing.allocator);
    try tail.arg(std.testing.allocator, "2");
    try tail.arg(std.testing.allocator, "key:{a}:\r\n$x");
    try tail.argInt(std.testing.allocator, 60000);
    try std.testing.expectEqual(@as(usize, 3), countArguments(tail.bytes.items));
}
