//! Settlements off the request's critical path (issue 17): a finished request's settlement is
//! queued here instead of sent, and a worker's queued settlements go to Redis together: with
//! the worker's next admission of the same rule (`carry`, budget.lua `batch_admit`), else in
//! one `settle_batch` call per (Redis target, rule hash tag) on the root tick
//! (`flush_period_ms`) or as soon as a call is full. Every key of a call shares its rule's
//! hash tag, so each call runs on one Redis Cluster slot. A group that sent nothing for a
//! whole period sends its next settlement at once (leading edge): sparse traffic settles
//! without delay, busy traffic makes at most about one call per group and period.
//!
//! What it costs: a charge lands at most `flush_period_ms` (plus the call's round trip) after
//! its request ended, so for that long a budget looks emptier than it is (postpaid) or a
//! refund has not freed its room yet (reserve). Each entry carries its request's marker key,
//! so a batch retried after a lost reply charges nothing twice (budget.lua "Idempotence").
//!
//! Bounded: at most `queued_max` settlements and `groups_max` groups wait per worker; past
//! either, the settlement that does not fit is sent on its own, as before batching.
const std = @import("std");
const resp = @import("resp.zig");
const script = @import("script.zig");
const store = @import("store.zig");

/// The root tick: how long a settlement may wait for its batch. The settle delay is bounded by
/// this plus one Redis round trip.
pub const flush_period_ms: u32 = 50;
/// Keys + arguments of one settle_batch call. The bridge takes at most 1024 arguments per
/// command (bridge/resp.py); EVALSHA, the SHA, numkeys, the operation, the clock and the
/// count are six more.
pub const call_arguments_max = 1000;
/// Settlements queued per worker, across groups, before a group is sent early.
pub const queued_max = 4096;
/// Distinct (target, hash tag) pairs queued at once: one per Redis rule in practice.
pub const groups_max = 32;
/// Longest hash tag prefix kept (script.hashTag cuts there too).
const tag_bytes_max = 160;

comptime {
    // The smallest entry (one counter) fits a call many times over.
    const smallest = script.batchEntrySize(1);
    std.debug.assert(call_arguments_max + 6 <= 1024);
    // admit_many (coalesce.zig) has one more: the admission count.
    std.debug.assert(call_arguments_max + 7 <= 1024);
    std.debug.assert(call_arguments_max >= 32 * (smallest.keys + smallest.arguments));
}

/// A worker's queue of settlements. `Target` names where a call goes (redis.zig's Target):
/// it needs `slice()` (its name) and is copied into each batch.
pub fn Queue(comptime Target: type) type {
    return struct {
        const Self = @This();

        groups: std.ArrayList(Group) = .empty,
        /// Settlements waiting, across groups.
        queued: usize = 0,

        const Group = struct {
            target: Target,
            tag: [tag_bytes_max]u8 = undefined,
            tag_len: usize = 0,
            keys: resp.Command = .{},
            key_count: usize = 0,
            arguments: resp.Command = .{},
            argument_count: usize = 0,
            entries: usize = 0,
            /// When this group last sent a call (this worker's clock); null: never.
            sent_ms: ?u64 = null,

            fn size(self: *const Group) usize {
                return self.key_count + self.argument_count;
            }
        };

        /// One settle_batch call to make: the tail after the script argument (script.command
        /// turns it into EVALSHA / EVAL). The caller owns `tail`.
        pub const Batch = struct { target: Target, tail: []u8, entries: usize };

        /// Queues one settlement. Returns a batch to send now (its group had no room left, or it
        /// sent nothing for a whole period: then the batch holds just this settlement), or null.
        /// error.Full: no group could take it (the caller sends it on its own).
        pub fn add(self: *Self, allocator: std.mem.Allocator, target: Target, counters: []const store.Counter, actual_tokens: u64, marker: script.MarkerKey, now_ms: u64) !?Batch {
            std.debug.assert(counters.len > 0);
            const tag = script.hashTag(counters[0].key.slice());
            const group = try self.groupFor(allocator, target, tag);
            const entry = script.batchEntrySize(counters.len);
            var ready: ?Batch = null;
            errdefer if (ready) |batch| allocator.free(batch.tail);
            if (group.entries > 0 and (group.size() + entry.keys + entry.arguments > call_arguments_max or self.queued >= queued_max)) {
                ready = try self.take(allocator, group, now_ms);
            }
            const keys_before, const arguments_before = .{ group.keys.bytes.items.len, group.arguments.bytes.items.len };
            script.appendBatchEntry(allocator, &group.keys, &group.arguments, counters, actual_tokens, marker) catch |err| {
                // Nothing half-written stays behind: the group is as it was.
                group.keys.bytes.shrinkRetainingCapacity(keys_before);
                group.arguments.bytes.shrinkRetainingCapacity(arguments_before);
                return err;
            };
            group.key_count += entry.keys;
            group.argument_count += entry.arguments;
            group.entries += 1;
            self.queued += 1;
            if (ready == null and group.entries == 1 and idle(group.sent_ms, now_ms)) ready = try self.take(allocator, group, now_ms);
            return ready;
        }

        fn idle(sent_ms: ?u64, now_ms: u64) bool {
            const sent = sent_ms orelse return true;
            return now_ms -| sent >= flush_period_ms;
        }

        /// What an admission carries (budget.lua `batch_admit`): its request's admit call with
        /// the group's queued settlements applied first, and those settlements as their own
        /// settle_batch call, to retry if the admit call fails. The caller owns both tails.
        pub const Carried = struct { admit_tail: []u8, settle_tail: []u8, entries: usize };

        /// Takes the queued settlements of the admission's group into its call (issue 17: one
        /// script call per request), or null when none wait or they would make the call too
        /// long for the bridge.
        pub fn carry(self: *Self, allocator: std.mem.Allocator, target: Target, counters: []const store.Counter, force: bool, marker: script.MarkerKey) !?Carried {
            std.debug.assert(counters.len > 0);
            const tag = script.hashTag(counters[0].key.slice());
            const group = for (self.groups.items) |*group| {
                if (std.mem.eql(u8, group.tag[0..group.tag_len], tag) and std.mem.eql(u8, group.target.slice(), target.slice())) break group;
            } else return null;
            if (group.entries == 0 or group.size() + script.admissionSize(counters.len) > call_arguments_max) return null;
            const admit_tail = try script.batchAdmitArguments(allocator, group.keys.bytes.items, group.key_count, group.arguments.bytes.items, group.entries, counters, force, marker);
            errdefer allocator.free(admit_tail);
            const taken = try self.take(allocator, group, group.sent_ms orelse 0);
            return .{ .admit_tail = admit_tail, .settle_tail = taken.tail, .entries = taken.entries };
        }

        /// Admission coalescing (issue 17, coalesce.zig): an admit_many call of `admissions`
        /// (encoded) with the group's queued settlements applied first, and those settlements as
        /// their own settle_batch call, to retry if the call fails; null when none wait or they
        /// would make the call longer than `call_arguments_max`. The caller owns both tails.
        pub fn carryMany(self: *Self, allocator: std.mem.Allocator, target: Target, tag: []const u8, admissions: script.Encoded, admissions_size: usize) !?Carried {
            const group = for (self.groups.items) |*group| {
                if (std.mem.eql(u8, group.tag[0..group.tag_len], tag) and std.mem.eql(u8, group.target.slice(), target.slice())) break group;
            } else return null;
            if (group.entries == 0 or group.size() + admissions_size > call_arguments_max) return null;
            const settlements: script.Encoded = .{ .keys = group.keys.bytes.items, .key_count = group.key_count, .arguments = group.arguments.bytes.items, .entries = group.entries };
            const admit_tail = try script.admitManyArguments(allocator, settlements, admissions);
            errdefer allocator.free(admit_tail);
            const taken = try self.take(allocator, group, group.sent_ms orelse 0);
            return .{ .admit_tail = admit_tail, .settle_tail = taken.tail, .entries = taken.entries };
        }

        /// The next non-empty group's batch (the tick sends them all), or null when none waits.
        pub fn next(self: *Self, allocator: std.mem.Allocator, now_ms: u64) !?Batch {
            for (self.groups.items) |*group| {
                if (group.entries > 0) return try self.take(allocator, group, now_ms);
            }
            return null;
        }

        /// Forgets groups that are empty and idle (a rule no longer busy), so the table holds
        /// live ones.
        pub fn prune(self: *Self, allocator: std.mem.Allocator, now_ms: u64) void {
            var index: usize = 0;
            while (index < self.groups.items.len) {
                const group = &self.groups.items[index];
                if (group.entries > 0 or !idle(group.sent_ms, now_ms)) {
                    index += 1;
                    continue;
                }
                group.keys.deinit(allocator);
                group.arguments.deinit(allocator);
                _ = self.groups.swapRemove(index);
            }
        }

        pub fn deinit(self: *Self, allocator: std.mem.Allocator) void {
            for (self.groups.items) |*group| {
                group.keys.deinit(allocator);
                group.arguments.deinit(allocator);
            }
            self.groups.deinit(allocator);
            self.* = undefined;
        }

        fn groupFor(self: *Self, allocator: std.mem.Allocator, target: Target, tag: []const u8) !*Group {
            for (self.groups.items) |*group| {
                if (std.mem.eql(u8, group.tag[0..group.tag_len], tag) and std.mem.eql(u8, group.target.slice(), target.slice())) return group;
            }
            if (self.groups.items.len >= groups_max) return error.Full;
            var group: Group = .{ .target = target, .tag_len = tag.len };
            @memcpy(group.tag[0..tag.len], tag);
            try self.groups.append(allocator, group);
            return &self.groups.items[self.groups.items.len - 1];
        }

        /// Takes a group's settlements out as one call; the group stays, empty.
        fn take(self: *Self, allocator: std.mem.Allocator, group: *Group, now_ms: u64) !Batch {
            std.debug.assert(group.entries > 0 and self.queued >= group.entries);
            const tail = try script.batchArguments(allocator, group.keys.bytes.items, group.key_count, group.arguments.bytes.items, group.entries);
            const batch = Batch{ .target = group.target, .tail = tail, .entries = group.entries };
            self.queued -= group.entries;
            group.keys.bytes.clearRetainingCapacity();
            group.arguments.bytes.clearRetainingCapacity();
            group.key_count, group.argument_count, group.entries = .{ 0, 0, 0 };
            group.sent_ms = now_ms;
            return batch;
        }
    };
}

const testing = std.testing;

const TestTarget = struct {
    name: []const u8,
    fn slice(self: *const TestTarget) []const u8 {
        return self.name;
    }
};

fn testCounter(key: []const u8, reserved: u64) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = 1000 }, .unit = .tokens, .reserved = reserved, .admitted_at_ms = 7 };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

test "batch: settlements of one rule go out in one settle_batch call, other rules apart" {
    var queue: Queue(TestTarget) = .{};
    defer queue.deinit(testing.allocator);
    const bridge = TestTarget{ .name = "bridge" };
    const a = [_]store.Counter{testCounter("tokenlimit:{a}:global:tokens:60:x", 40)};
    const b = [_]store.Counter{testCounter("tokenlimit:{b}:global:tokens:60:x", 0)};
    // Each group's first settlement goes at once (nothing was sent for a period) ...
    const leading = (try queue.add(testing.allocator, bridge, &a, 1, script.MarkerKey.init(a[0].key.slice(), "r0"), 1000)).?;
    testing.allocator.free(leading.tail);
    try testing.expectEqual(@as(usize, 1), leading.entries);
    // ... the next ones within the period wait for the tick.
    try testing.expectEqual(@as(?Queue(TestTarget).Batch, null), try queue.add(testing.allocator, bridge, &a, 55, script.MarkerKey.init(a[0].key.slice(), "r1"), 1001));
    _ = try queue.add(testing.allocator, bridge, &a, 10, script.MarkerKey.init(a[0].key.slice(), "r2"), 1002);
    const other = (try queue.add(testing.allocator, bridge, &b, 9, script.MarkerKey.init(b[0].key.slice(), "r3"), 1003)).?;
    testing.allocator.free(other.tail);
    _ = try queue.add(testing.allocator, bridge, &b, 9, script.MarkerKey.init(b[0].key.slice(), "r4"), 1004);
    try testing.expectEqual(@as(usize, 3), queue.queued);

    const first = (try queue.next(testing.allocator, 1040)).?;
    defer testing.allocator.free(first.tail);
    try testing.expectEqual(@as(usize, 2), first.entries);
    try testing.expectEqualStrings("$1\r\n4\r\n" ++ // numkeys: two counters, two markers
        "$33\r\ntokenlimit:{a}:global:tokens:60:x\r\n$21\r\ntokenlimit:{a}:req:r1\r\n" ++
        "$33\r\ntokenlimit:{a}:global:tokens:60:x\r\n$21\r\ntokenlimit:{a}:req:r2\r\n" ++
        "$12\r\nsettle_batch\r\n$1\r\n0\r\n$1\r\n2\r\n" ++
        "$6\r\nsettle\r\n$1\r\n1\r\n$1\r\n7\r\n$0\r\n\r\n$1\r\n0\r\n$5\r\n60000\r\n$4\r\n1000\r\n$2\r\n40\r\n$2\r\n55\r\n" ++
        "$6\r\nsettle\r\n$1\r\n1\r\n$1\r\n7\r\n$0\r\n\r\n$1\r\n0\r\n$5\r\n60000\r\n$4\r\n1000\r\n$2\r\n40\r\n$2\r\n10\r\n", first.tail);
    try testing.expectEqual(@as(usize, 1 + 4 + 3 + 2 * 9), script.countArguments(first.tail));
    const second = (try queue.next(testing.allocator, 1040)).?;
    defer testing.allocator.free(second.tail);
    try testing.expectEqual(@as(usize, 1), second.entries);
    try testing.expectEqual(@as(?Queue(TestTarget).Batch, null), try queue.next(testing.allocator, 1040));
    try testing.expectEqual(@as(usize, 0), queue.queued);
    queue.prune(testing.allocator, 1040 + flush_period_ms - 1);
    try testing.expectEqual(@as(usize, 2), queue.groups.items.len); // busy a moment ago: kept
    queue.prune(testing.allocator, 1040 + flush_period_ms);
    try testing.expectEqual(@as(usize, 0), queue.groups.items.len);
}

test "batch: an admission carries its group's queued settlements, other groups keep theirs" {
    var queue: Queue(TestTarget) = .{};
    defer queue.deinit(testing.allocator);
    const a = [_]store.Counter{testCounter("tokenlimit:{a}:k", 5)};
    const b = [_]store.Counter{testCounter("tokenlimit:{b}:k", 5)};
    for ([_][]const store.Counter{ &a, &a, &a, &b, &b }, 0..) |counters, i| {
        var id: [4]u8 = undefined;
        const marker = script.MarkerKey.init(counters[0].key.slice(), std.fmt.bufPrint(&id, "{d}", .{i}) catch unreachable);
        if (try queue.add(testing.allocator, .{ .name = "t" }, counters, 3, marker, 0)) |leading| testing.allocator.free(leading.tail);
    }
    try testing.expectEqual(@as(usize, 3), queue.queued); // a: 2 waiting, b: 1 waiting
    const carried = (try queue.carry(testing.allocator, .{ .name = "t" }, &a, false, script.MarkerKey.init(a[0].key.slice(), "next"))).?;
    defer testing.allocator.free(carried.admit_tail);
    defer testing.allocator.free(carried.settle_tail);
    try testing.expectEqual(@as(usize, 2), carried.entries);
    try testing.expect(std.mem.startsWith(u8, carried.admit_tail, "$1\r\n6\r\n")); // 2 x (key, marker), key, marker
    try testing.expect(std.mem.indexOf(u8, carried.admit_tail, "$11\r\nbatch_admit\r\n$1\r\n0\r\n$1\r\n2\r\n$6\r\nsettle\r\n") != null);
    try testing.expect(std.mem.endsWith(u8, carried.admit_tail, "$1\r\n0\r\n$1\r\n0\r\n$5\r\n60000\r\n$4\r\n1000\r\n$1\r\n0\r\n")); // force, then the counter
    try testing.expect(std.mem.indexOf(u8, carried.settle_tail, "settle_batch") != null);
    try testing.expectEqual(@as(usize, 1), queue.queued);
    try testing.expectEqual(@as(?Queue(TestTarget).Carried, null), try queue.carry(testing.allocator, .{ .name = "t" }, &a, false, script.MarkerKey.init(a[0].key.slice(), "x")));
    try testing.expectEqual(@as(?Queue(TestTarget).Carried, null), try queue.carry(testing.allocator, .{ .name = "other" }, &b, false, script.MarkerKey.init(b[0].key.slice(), "x")));
    while (try queue.next(testing.allocator, 0)) |batch| testing.allocator.free(batch.tail);
}

test "batch: a full call is handed back at once, and no call passes the bridge's bound" {
    var queue: Queue(TestTarget) = .{};
    defer queue.deinit(testing.allocator);
    const counters = [_]store.Counter{testCounter("tokenlimit:{a}:k", 1)};
    var sent: usize = 0;
    var calls: usize = 0;
    for (0..500) |i| {
        var id: [8]u8 = undefined;
        const marker = script.MarkerKey.init(counters[0].key.slice(), std.fmt.bufPrint(&id, "{d}", .{i}) catch unreachable);
        if (try queue.add(testing.allocator, .{ .name = "t" }, &counters, 1, marker, 0)) |batch| {
            defer testing.allocator.free(batch.tail);
            try testing.expect(script.countArguments(batch.tail) + 5 <= 1024);
            sent += batch.entries;
            calls += 1;
        }
    }
    try testing.expect(calls >= 6); // the leading one, then each full call
    try testing.expectEqual(@as(usize, 500), sent + queue.queued);
}

test "batch: past groups_max distinct groups a settlement is refused (sent alone by the caller)" {
    var queue: Queue(TestTarget) = .{};
    defer queue.deinit(testing.allocator);
    for (0..groups_max) |i| {
        var key: [32]u8 = undefined;
        const counters = [_]store.Counter{testCounter(std.fmt.bufPrint(&key, "tokenlimit:{{r{d}}}:k", .{i}) catch unreachable, 1)};
        // Two each: the first goes at once (leading edge), the second waits.
        for (0..2) |_| if (try queue.add(testing.allocator, .{ .name = "t" }, &counters, 1, script.MarkerKey.init(counters[0].key.slice(), "x"), 0)) |batch| testing.allocator.free(batch.tail);
    }
    const other = [_]store.Counter{testCounter("tokenlimit:{other}:k", 1)};
    try testing.expectError(error.Full, queue.add(testing.allocator, .{ .name = "t" }, &other, 1, script.MarkerKey.init(other[0].key.slice(), "x"), 0));
    try testing.expectEqual(@as(usize, groups_max), queue.queued);
    while (try queue.next(testing.allocator, 0)) |batch| testing.allocator.free(batch.tail);
}

test "batch: a coalesced admission call carries its group's settlements first, only when they fit" {
    var queue: Queue(TestTarget) = .{};
    defer queue.deinit(testing.allocator);
    const a = [_]store.Counter{testCounter("tokenlimit:{a}:k", 5)};
    for (0..3) |i| {
        var id: [4]u8 = undefined;
        const marker = script.MarkerKey.init(a[0].key.slice(), std.fmt.bufPrint(&id, "{d}", .{i}) catch unreachable);
        if (try queue.add(testing.allocator, .{ .name = "t" }, &a, 3, marker, 0)) |leading| testing.allocator.free(leading.tail);
    }
    try testing.expectEqual(@as(usize, 2), queue.queued);
    var keys: resp.Command = .{};
    defer keys.deinit(testing.allocator);
    var arguments: resp.Command = .{};
    defer arguments.deinit(testing.allocator);
    try script.appendAdmissionEntry(testing.allocator, &keys, &arguments, &a, false, script.MarkerKey.init(a[0].key.slice(), "x"));
    const admissions: script.Encoded = .{ .keys = keys.bytes.items, .key_count = 2, .arguments = arguments.bytes.items, .entries = 1 };
    // Too long for the bridge with the settlements: the caller sends the admissions alone.
    try testing.expectEqual(@as(?Queue(TestTarget).Carried, null), try queue.carryMany(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", admissions, call_arguments_max));
    const carried = (try queue.carryMany(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", admissions, 9)).?;
    defer testing.allocator.free(carried.admit_tail);
    defer testing.allocator.free(carried.settle_tail);
    try testing.expectEqual(@as(usize, 2), carried.entries);
    try testing.expect(std.mem.startsWith(u8, carried.admit_tail, "$1\r\n6\r\n")); // 2 x (key, marker), key, marker
    try testing.expect(std.mem.indexOf(u8, carried.admit_tail, "$10\r\nadmit_many\r\n$1\r\n0\r\n$1\r\n2\r\n$6\r\nsettle\r\n") != null);
    try testing.expect(std.mem.endsWith(u8, carried.admit_tail, "$1\r\n1\r\n$1\r\n1\r\n$1\r\n0\r\n$1\r\n0\r\n$5\r\n60000\r\n$4\r\n1000\r\n$1\r\n0\r\n$0\r\n\r\n"));
    try testing.expectEqual(@as(usize, 0), queue.queued);
}
