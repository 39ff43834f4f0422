//! Admission coalescing (group commit, issue 17), the calls. Which admissions wait is
//! admit_queue.zig (pure); this file joins an admission to its rule's group (redis.admit),
//! sends the next call when one answers (budget.lua `admit_many`: the waiting admissions in
//! order, the rule's queued settlements first), and hands every answer to its own request.
//!
//! One reply now answers several requests, so answers go through a small queue of deliveries:
//! redis.zig's reply and tick handlers push them, main.zig hands them out (`nextDelivery`)
//! after the handler returns, so the next call is on its way before any request resumes.
//!
//! Failure is per request, as with one call each: a call that fails or times out fails every
//! admission it carries with that failure (failure_mode applies to each), and each one's own
//! release (its marker) goes to the retry queue, so an admission that did run on Redis is given
//! back once and one that did not will reserve nothing. An admission never sent (its deadline
//! passed while it waited, the circuit opened, the call could not start) fails without a release:
//! Redis never saw it.
const std = @import("std");
const admit_queue = @import("admit_queue.zig");
const batch = @import("batch.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const redis = @import("redis.zig");
const script = @import("script.zig");
const store = @import("store.zig");

const allocator = host.allocator;

var table: admit_queue.Table(redis.Target) = .{};

/// Answers not yet handed to their requests. At most every waiting admission plus the carried
/// admissions of each group's call in flight (failed or expired together on a tick) are pushed
/// between two hand-outs.
const deliveries_max = admit_queue.waiting_max + (admit_queue.groups_max + 1) * admit_queue.admissions_per_call_max + 1;
var deliveries: [deliveries_max]redis.Delivery = undefined;
var delivery_head: usize = 0;
var delivery_tail: usize = 0;

fn push(delivery: redis.Delivery) void {
    if (delivery_head == delivery_tail) { // all handed out: start over
        delivery_head = 0;
        delivery_tail = 0;
    }
    std.debug.assert(delivery_tail < deliveries_max);
    if (delivery_tail >= deliveries_max) { // the bounds above make this unreachable; never write past
        host.log(.err, "redis store: too many answers at once; one request is left to its deadline");
        return;
    }
    deliveries[delivery_tail] = delivery;
    delivery_tail += 1;
}

/// The next answer to hand to a waiting request (main.zig), or null when all were handed out.
pub fn nextDelivery() ?redis.Delivery {
    if (delivery_head == delivery_tail) return null;
    defer delivery_head += 1;
    return deliveries[delivery_head];
}

/// What redis.admit does with an admission: it waits for its rule's call in flight (the queue
/// owns its release now), or it sends its own call, leading group `lead` (0: no group).
pub const Joined = union(enum) { queued, lead: u32 };

pub fn join(target: redis.Target, counters: []const store.Counter, force: bool, marker: script.MarkerKey, release: []u8, http_context_id: u32, now_ms: u64) Joined {
    const tag = script.hashTag(counters[0].key.slice());
    const group = switch (table.join(allocator, target, tag, now_ms)) {
        .alone => return .{ .lead = 0 },
        .lead => |id| return .{ .lead = id },
        .wait => |group| group,
    };
    // Its own deadline: when its own call, sent now, would have timed out.
    const waiting = admit_queue.Waiting.init(allocator, http_context_id, counters, force, marker, release, now_ms +| target.timeout_ms) catch return .{ .lead = 0 };
    table.enqueue(allocator, group, waiting) catch {
        allocator.free(waiting.keys);
        allocator.free(waiting.arguments);
        return .{ .lead = 0 };
    };
    return .queued;
}

/// A call leading group `id` went out with `timeout_ms`.
pub fn sent(id: u32, now_ms: u64, timeout_ms: u64) void {
    if (id != 0) table.sent(id, now_ms, timeout_ms);
}

/// An admit call (any: single, lease, compat, coalesced) or a read finished with `outcome`:
/// its request(s) get their answers, then its group's waiting admissions go out together.
/// Returns the first answer to hand out (the rest: nextDelivery).
pub fn finish(call: *const redis.Pending, outcome: redis.Outcome, now_ms: u64) ?redis.Delivery {
    const group = table.finished(call.group_id);
    if (call.admissions) |carried| {
        answer(carried, outcome, retryTarget(call));
        allocator.free(carried);
    } else push(.{ .http_context_id = call.http_context_id, .outcome = outcome });
    if (group) |waiting| sendWaiting(waiting, now_ms);
    return nextDelivery();
}

/// Where a failed call's releases and settlements are retried: its group's target, with the
/// whole `redis.timeout` (a coalesced call's own timeout may have been cut to a deadline).
pub fn retryTarget(call: *const redis.Pending) redis.Target {
    const group = table.byId(call.group_id) orelse return call.target;
    return group.target;
}

/// Each carried admission's part of the reply (an admit reply each, in order), or the call's
/// failure for each, with its release queued.
fn answer(carried: []admit_queue.Waiting, outcome: redis.Outcome, target: redis.Target) void {
    var expected: usize = 0;
    for (carried) |*each| expected += each.replyLength();
    const failure: store.Failure = switch (outcome) {
        .admitted => |values| if (values.len == expected) {
            var at: usize = 0;
            for (carried) |*each| {
                // One already failed at its deadline (its release is queued) gets nothing more.
                if (each.http_context_id != 0) push(.{ .http_context_id = each.http_context_id, .outcome = .{ .admitted = values[at .. at + each.replyLength()] } });
                at += each.replyLength();
                each.deinit(allocator);
            }
            return;
        } else .bad_reply,
        .failed => |failure| failure,
        .settled, .peeked, .cached => .bad_reply,
    };
    for (carried) |*each| {
        if (each.http_context_id != 0) push(.{ .http_context_id = each.http_context_id, .outcome = .{ .failed = failure } });
        giveBack(each, target);
        each.deinit(allocator);
    }
}

/// A carried admission the call may have run: its release goes to the retry queue, once (it
/// gives back what the admission reserved, or leaves a tombstone so it reserves nothing).
fn giveBack(each: *admit_queue.Waiting, target: redis.Target) void {
    if (each.release_tail.len == 0) return; // queued already
    redis.queueRetry(target, each.release_tail, 0);
    each.release_tail = &.{};
}

/// Sends the group's waiting admissions, a call at a time, until one is in flight or none wait.
fn sendWaiting(group: *admit_queue.Table(redis.Target).Group, now_ms: u64) void {
    while (group.waiting.items.len > 0 and !group.busy(now_ms)) {
        var taken = table.take(group, now_ms, batch.call_arguments_max);
        for (taken.late()) |*each| fail(each, .timeout);
        if (taken.sent().len == 0) continue;
        if (sendTaken(group, &taken, now_ms)) |failure| {
            for (taken.sent()) |*each| fail(each, failure);
        }
    }
}

/// An admission Redis never saw fails; nothing to release.
fn fail(each: *admit_queue.Waiting, failure: store.Failure) void {
    push(.{ .http_context_id = each.http_context_id, .outcome = .{ .failed = failure } });
    each.deinit(allocator);
}

/// One admit_many call for `taken`; null when it went out (the call owns the admissions), else
/// why not (the caller still owns them).
fn sendTaken(group: *admit_queue.Table(redis.Target).Group, taken: *admit_queue.Taken, now_ms: u64) ?store.Failure {
    if (!redis.available(now_ms)) return .circuit_open;
    var keys: std.ArrayList(u8) = .empty;
    defer keys.deinit(allocator);
    var arguments: std.ArrayList(u8) = .empty;
    defer arguments.deinit(allocator);
    const encoded = taken.encode(allocator, &keys, &arguments) catch return .not_sent;
    var size: usize = 0;
    for (taken.sent()) |*each| size += each.size();
    // The call ends at the earliest deadline it carries: no request waits past its own.
    var target = group.target;
    target.timeout_ms = @intCast(@min(@max(taken.deadlineMs() -| now_ms, 1), group.target.timeout_ms));
    const carried = redis.batches.carryMany(allocator, group.target, group.tag[0..group.tag_len], encoded, size) catch null;
    const tail = if (carried) |taken_settlements| taken_settlements.admit_tail else script.admitManyArguments(allocator, .{}, encoded) catch return .not_sent;
    var call = redis.Pending{ .op = .admit, .http_context_id = 0, .tail = tail, .target = target, .sent_as_eval = false, .group_id = group.id };
    if (carried) |taken_settlements| {
        call.carried_tail = taken_settlements.settle_tail;
        call.batch_entries = taken_settlements.entries;
    }
    call.admissions = allocator.dupe(admit_queue.Waiting, taken.sent()) catch null;
    if (call.admissions == null or !sendCall(call)) {
        allocator.free(tail);
        if (call.admissions) |list| allocator.free(list);
        // Its settlements wait for the tick's retry instead.
        if (call.carried_tail) |settle_tail| redis.queueRetry(group.target, settle_tail, call.batch_entries);
        return .not_sent;
    }
    table.sent(group.id, now_ms, target.timeout_ms);
    host.incrementMetric(metrics.redis.admissions_coalesced, @intCast(taken.sent().len));
    if (carried) |taken_settlements| host.incrementMetric(metrics.redis.settles_batched, @intCast(taken_settlements.entries));
    return null;
}

fn sendCall(call: redis.Pending) bool {
    redis.send(call) catch return false;
    return true;
}

/// The tick: admissions whose deadline passed while they waited or while their call was out
/// fail (timeout), a group whose call went stale sends its waiting ones, idle groups are
/// forgotten.
pub fn onTick(now_ms: u64) void {
    // Carried admissions past their deadline fail now, whatever their call does: the Higress
    // build cannot cut a call's timeout (proxy_redis_init sets one per upstream).
    var calls = redis.pending.valueIterator();
    while (calls.next()) |call| {
        for (call.admissions orelse continue) |*each| {
            if (each.http_context_id == 0 or each.deadline_ms > now_ms) continue;
            push(.{ .http_context_id = each.http_context_id, .outcome = .{ .failed = .timeout } });
            each.http_context_id = 0;
            giveBack(each, retryTarget(call));
        }
    }
    var late: [admit_queue.admissions_per_call_max]admit_queue.Waiting = undefined;
    while (true) {
        const count = table.expire(now_ms, &late);
        for (late[0..count]) |*each| fail(each, .timeout);
        if (count < late.len) break;
    }
    while (table.stalled(now_ms)) |group| sendWaiting(group, now_ms);
    table.prune(allocator, now_ms);
}

/// Nothing waits and no group is remembered: the tick has nothing to do here.
pub fn idle() bool {
    return table.groups.items.len == 0;
}
