//! Near the limit (issue 13), the request side: a request whose budget is spent waits (paused,
//! no thread blocked) for room instead of getting a 429; one admitted above `pace_above` is
//! held for the pacing interval; `priority` lanes see a smaller budget and are released high
//! first. The held requests sit in one per-worker queue (wait_queue.zig); the root context's
//! tick re-checks them against their store -- the local store answers at once, Redis later
//! (the entry keeps its place meanwhile) -- first in, first out per budget. A client that
//! leaves is dropped; at `max_wait_ms` a waiting request gets today's 429, whose Retry-After
//! comes from the last re-check.
const std = @import("std");
const admission = @import("admission.zig");
const context = @import("context.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const pace = @import("pace.zig");
const parse_exhausted = @import("../config/parse_exhausted.zig");
const sha256 = @import("../match/sha256.zig");
const wait_queue = @import("wait_queue.zig");

const allocator = host.allocator;
const HttpContext = context.HttpContext;
const Lane = parse_exhausted.Lane;

/// The tick period while requests are held: the granularity of a wait and of a pacing hold.
pub const tick_ms = 10;
/// The period redis.start() sets (the settle-batch flush and retries), restored once nothing
/// is held: one tick period per root context serves both.
const idle_tick_ms = @import("../store/batch.zig").flush_period_ms;
/// Redis re-checks started per tick, so a long queue of distinct keys cannot flood Redis (or
/// the store's `pending_max` calls in flight); the rest wait for the next tick.
pub const rechecks_per_tick_max = 256;

var queue: wait_queue.Queue = .{};
/// Budgets found spent (or with a re-check in flight) during this tick: later requests of the
/// same budget do not overtake the one in front of them.
var blocked: std.AutoHashMapUnmanaged(u64, void) = .empty;
var ticking_fast = false;

/// How many requests this worker holds (for tests and the gauge).
pub fn held() usize {
    return queue.live;
}

/// On the request's headers: its lane (`priority.header`; absent or unknown: normal).
pub fn readLane(self: *HttpContext) void {
    const near = &self.rule.?.near_limit;
    if (near.priority_header.len == 0) return;
    var value = (host.getHeader(.request_headers, near.priority_header) catch null) orelse return;
    defer value.deinit();
    self.lane = Lane.fromHeader(value.bytes);
}

/// At admission: a lower lane sees every limit less what the lanes above it reserve.
pub fn applyLane(self: *HttpContext) void {
    const share = self.rule.?.near_limit.laneShareMilli(self.lane);
    if (share < 1000) admission.shareLimits(self.counters.items, share);
}

/// A counter refused the request (`index`). Returns `.pause` when the request waits for room
/// (held, or still held after a re-check), or null: the caller rejects it as today (the
/// rule does not wait, the queue is full, or the wait is over).
pub fn onRefused(self: *HttpContext, index: usize) ?host.Action {
    const near = &self.rule.?.near_limit;
    if (!near.waits()) return null;
    const now_ms = host.nowMs();
    if (queue.find(self.id)) |entry| {
        entry.in_flight = false;
        entry.counter_index = @intCast(index);
        if (now_ms >= entry.deadline_ms) {
            recordHeld(entry.enqueued_ms, now_ms);
            _ = queue.remove(self.id);
            host.incrementMetric(metrics.plugin.wait_timeouts, 1);
            host.logf(.debug, "rule {s}: waited max_wait_ms ({d} ms) without room; rejected", .{ self.rule.?.name, near.max_wait_ms });
            return null;
        }
        if (self.phase != .queued) self.enter(.queued);
        return .pause;
    }
    if (queue.live >= near.max_queued) {
        host.incrementMetric(metrics.plugin.wait_overflows, 1);
        host.logf(.debug, "rule {s}: {d} requests already wait (max_queued); rejected at once", .{ self.rule.?.name, queue.live });
        return null;
    }
    const entry: wait_queue.Entry = .{
        .context_id = self.id,
        .root_id = self.root_id,
        .key_hash = keyHash(self, index),
        .enqueued_ms = now_ms,
        .deadline_ms = now_ms +| near.max_wait_ms,
        .lane = self.lane,
        .kind = .waiting,
        .counter_index = @intCast(index),
        .id_base_len = @intCast(self.request_id_len),
    };
    queue.insert(allocator, entry) catch return null;
    self.enter(.queued);
    startTicking();
    return .pause;
}

/// Shadow mode: what the request would have got instead of its 429.
pub fn shadowDecision(self: *const HttpContext) []const u8 {
    return if (self.rule.?.near_limit.waits()) "shadow_waited" else "shadow_rejected";
}

/// Every counter had room. A request that waited is released (null: the caller admits it);
/// one above `pace_above` is held for the pacing interval (`.pause`); others go on (null).
pub fn onAllowed(self: *HttpContext) ?host.Action {
    const rule = self.rule.?;
    // The clock is read only by a request that was held or is paced (not on the plain path).
    if (queue.find(self.id)) |entry| {
        recordHeld(entry.enqueued_ms, host.nowMs());
        _ = queue.remove(self.id);
        host.incrementMetric(metrics.plugin.requests_waited, 1);
        self.countOutcome(.waited);
        context.setProperty("tokenlimit_decision", "waited");
        return null;
    }
    const near = &rule.near_limit;
    if (near.pace_above_milli == 0) return null;
    const hold = pace.delay(self.counters.items, near.pace_above_milli, self.estimate, near.max_wait_ms) orelse return null;
    const now_ms = host.nowMs();
    const key = keyHash(self, hold.index);
    // Spaced after the last paced request of the same budget, within max_wait_ms of now.
    const after = @max(now_ms, queue.lastPacedRelease(key) orelse now_ms);
    const release_ms = @min(after +| hold.ms, now_ms +| near.max_wait_ms);
    if (rule.shadow) {
        recordHeld(now_ms, release_ms);
        host.logf(.info, "shadow: would pace rule={s} for {d} ms", .{ rule.name, release_ms - now_ms });
        return null;
    }
    if (release_ms <= now_ms) return null;
    queue.insert(allocator, .{
        .context_id = self.id,
        .root_id = self.root_id,
        .key_hash = key,
        .enqueued_ms = now_ms,
        .deadline_ms = release_ms,
        .lane = self.lane,
        .kind = .paced,
    }) catch return null;
    self.enter(.queued);
    host.incrementMetric(metrics.plugin.requests_paced, 1);
    context.setProperty("tokenlimit_decision", "waited");
    startTicking();
    return .pause;
}

/// The client left (proxy_on_done) while its request was held. A paced request was counted:
/// what it reserved is given back (its request still counts once).
pub fn abandon(self: *HttpContext) void {
    std.debug.assert(self.phase == .queued);
    const entry = queue.find(self.id) orelse {
        self.enter(.idle);
        return;
    };
    const paced = entry.kind == .paced;
    _ = queue.remove(self.id);
    if (!paced) return self.enter(.idle);
    self.enter(.settled);
    self.store.settle(self.caller(), self.counters.items, host.nowMs(), 0) catch |err| {
        host.logf(.warn, "could not return the reservation of a request that left while paced: {s}", .{@errorName(err)});
    };
}

/// The context is being deleted: it holds no place any more.
pub fn forget(context_id: u32) void {
    if (queue.live > 0 and context_id != 0) _ = queue.remove(context_id);
}

/// The root context's tick: releases paced requests whose time came, re-checks waiting ones
/// (first in, first out per budget, high lanes first) and rejects those past max_wait_ms.
pub fn onTick(root_id: u32, lookup: *const fn (u32) ?*HttpContext) void {
    if (queue.entries.items.len == 0) return;
    const now_ms = host.nowMs();
    blocked.clearRetainingCapacity();
    var rechecks: usize = 0;
    var index: usize = 0;
    // Indexes stay valid: removals only leave tombstones, and nothing is inserted meanwhile.
    while (index < queue.entries.items.len) : (index += 1) {
        const entry = queue.entries.items[index];
        if (entry.context_id == 0 or entry.root_id != root_id) continue;
        const self = lookup(entry.context_id) orelse {
            _ = queue.remove(entry.context_id);
            continue;
        };
        // Decided another way meanwhile (a store failure's failure_mode, say): not held.
        if (self.phase != .queued and !(self.phase == .awaiting_store and entry.in_flight)) {
            _ = queue.remove(entry.context_id);
            continue;
        }
        host.setEffectiveContext(self.id) catch continue;
        switch (entry.kind) {
            .paced => if (now_ms >= entry.deadline_ms) releasePaced(self, entry, now_ms),
            .waiting => {
                if (entry.in_flight or blocked.contains(entry.key_hash) or rechecks >= rechecks_per_tick_max) {
                    if (!entry.in_flight and now_ms >= entry.deadline_ms) proceed(self.refuseHeld(entry.counter_index));
                    block(entry.key_hash);
                    continue;
                }
                rechecks += 1;
                renameAttempt(self, &queue.entries.items[index]);
                proceed(self.readmit());
                if (self.phase == .awaiting_store) queue.entries.items[index].in_flight = true;
                // Postpaid: an admitted request's cost is known only when it ends, so the
                // next of its budget waits for the next tick rather than see the same room.
                if (self.phase != .admitted or self.rule.?.admission == .postpaid) block(entry.key_hash);
            },
        }
    }
    queue.compact();
    host.setEffectiveContext(root_id) catch {};
    if (queue.live == 0) stopTicking();
    reportHeld();
}

/// The gauge is Envoy's, shared by every worker: each worker adds what changed in its own
/// queue, so the gauge shows the requests held by the whole gateway.
var reported_held: i64 = 0;

fn reportHeld() void {
    const live: i64 = @intCast(queue.live);
    if (live == reported_held) return;
    host.incrementMetric(metrics.plugin.wait_queued, live - reported_held);
    reported_held = live;
}

fn releasePaced(self: *HttpContext, entry: wait_queue.Entry, now_ms: u64) void {
    recordHeld(entry.enqueued_ms, now_ms);
    _ = queue.remove(self.id);
    self.enter(.admitted);
    host.incrementMetric(metrics.plugin.requests_allowed, 1);
    proceed(.@"continue");
}

/// Lets a request that was decided on the tick go on (a rejection was sent already).
fn proceed(action: host.Action) void {
    if (action != .@"continue") return;
    host.continueRequest() catch |err| host.logf(.err, "could not resume a held request: {s}", .{@errorName(err)});
}

fn block(key_hash: u64) void {
    blocked.put(allocator, key_hash, {}) catch {};
}

/// Each re-check is a new admission for Redis, under its own marker: the script keeps a
/// marker per admission and ignores an admit whose marker it has seen (a refused one included).
fn renameAttempt(self: *HttpContext, entry: *wait_queue.Entry) void {
    entry.attempts +%= 1;
    const base = entry.id_base_len;
    const suffix = std.fmt.bufPrint(self.request_id[base..], ".w{d}", .{entry.attempts}) catch return;
    self.request_id_len = base + suffix.len;
}

/// The access-log field with the ms a request was held.
fn recordHeld(since_ms: u64, now_ms: u64) void {
    var text: [24]u8 = undefined;
    context.setProperty("tokenlimit_wait_ms", std.fmt.bufPrint(&text, "{d}", .{now_ms -| since_ms}) catch "");
}

/// The budget a request waits for: the refusing counter's name.
fn keyHash(self: *const HttpContext, index: usize) u64 {
    const digest = sha256.hash(self.counters.items[index].key.slice());
    return std.mem.readInt(u64, digest[0..8], .little);
}

fn startTicking() void {
    reportHeld();
    if (ticking_fast) return;
    // Called on the request's context: Envoy applies the period to its root context.
    host.setTickPeriod(tick_ms) catch return;
    ticking_fast = true;
}

fn stopTicking() void {
    if (!ticking_fast) return;
    host.setTickPeriod(idle_tick_ms) catch return;
    ticking_fast = false;
}
