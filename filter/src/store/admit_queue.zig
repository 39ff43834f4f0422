//! Admission coalescing (group commit, issue 17), the pure part: which admissions wait for
//! which call. A group is one (Redis target, rule hash tag) of this worker: every key of its
//! calls shares the rule's tag, so each call runs on one Redis Cluster slot. While a group's
//! admission call is in flight, further admissions of the group wait here (their requests
//! stay paused, as they do while awaiting any reply); when the call answers or fails, the
//! next call carries up to `admissions_per_call_max` of them at once (coalesce.zig sends it).
//! At low load nothing waits, so nothing is delayed; under load calls per request fall
//! toward 1 / (requests in flight).
//!
//! Each waiting admission keeps its own deadline (the time its own call would have timed out),
//! so waiting never stretches a request past `redis.timeout`: one past its deadline is handed
//! back as expired, never sent. A group whose call never answers (a host that drops the
//! callback) counts as idle again after the call's timeout plus `stale_grace_ms`.
//!
//! Bounded: `waiting_max` admissions across groups, `groups_max` groups; past either, an
//! admission is sent on its own as before coalescing.
const std = @import("std");
const resp = @import("resp.zig");
const script = @import("script.zig");
const store = @import("store.zig");

/// Admissions one admit_many call carries at most: a call's reply and its Lua run stay short,
/// and a burst still makes few calls.
pub const admissions_per_call_max = 32;
/// Admissions waiting per worker, across groups.
pub const waiting_max = 1024;
/// Groups (rules with a call in flight) per worker.
pub const groups_max = 32;
/// How long past its timeout a call may stay unanswered before its group stops waiting for it.
pub const stale_grace_ms: u64 = 1000;
const tag_bytes_max = 160;

/// One admission waiting for its group's next call, encoded when it was queued (its context's
/// counters are not read again). Owns its three buffers.
pub const Waiting = struct {
    http_context_id: u32,
    /// RESP: the counter keys, then the marker key (script.appendAdmissionEntry).
    keys: []u8,
    /// RESP: counter count, force, 4 per counter, zone table or ''.
    arguments: []u8,
    counter_count: usize,
    /// The release to send should the call carrying it fail (script.releaseArguments).
    release_tail: []u8,
    /// When its own call would have timed out.
    deadline_ms: u64,

    /// Encodes `counters`' admission; takes `release_tail` on success.
    pub fn init(allocator: std.mem.Allocator, http_context_id: u32, counters: []const store.Counter, force: bool, marker: script.MarkerKey, release_tail: []u8, deadline_ms: u64) !Waiting {
        var keys: resp.Command = .{};
        errdefer keys.deinit(allocator);
        var arguments: resp.Command = .{};
        errdefer arguments.deinit(allocator);
        try script.appendAdmissionEntry(allocator, &keys, &arguments, counters, force, marker);
        const key_bytes = try keys.bytes.toOwnedSlice(allocator);
        errdefer allocator.free(key_bytes);
        return .{ .http_context_id = http_context_id, .keys = key_bytes, .arguments = try arguments.bytes.toOwnedSlice(allocator), .counter_count = counters.len, .release_tail = release_tail, .deadline_ms = deadline_ms };
    }

    /// Keys plus arguments it adds to a call.
    pub fn size(self: *const Waiting) usize {
        const entry = script.admissionEntrySize(self.counter_count);
        return entry.keys + entry.arguments;
    }

    /// Integers its part of an admit_many reply holds (an admit reply).
    pub fn replyLength(self: *const Waiting) usize {
        return 2 + 3 * self.counter_count;
    }

    pub fn deinit(self: *Waiting, allocator: std.mem.Allocator) void {
        allocator.free(self.keys);
        allocator.free(self.arguments);
        allocator.free(self.release_tail);
        self.* = undefined;
    }
};

/// What `take` hands out: the admissions of the next call, in the order they came, and those
/// found past their deadline (to fail, never send).
pub const Taken = struct {
    admissions: [admissions_per_call_max]Waiting = undefined,
    admission_count: usize = 0,
    expired: [admissions_per_call_max]Waiting = undefined,
    expired_count: usize = 0,

    pub fn sent(self: *Taken) []Waiting {
        return self.admissions[0..self.admission_count];
    }

    pub fn late(self: *Taken) []Waiting {
        return self.expired[0..self.expired_count];
    }

    /// The earliest deadline among the admissions (the call's timeout ends there).
    pub fn deadlineMs(self: *const Taken) u64 {
        var earliest: u64 = std.math.maxInt(u64);
        for (self.admissions[0..self.admission_count]) |each| earliest = @min(earliest, each.deadline_ms);
        return earliest;
    }

    /// The admissions' keys and arguments, concatenated in order, for script.admitManyArguments.
    pub fn encode(self: *const Taken, allocator: std.mem.Allocator, keys: *std.ArrayList(u8), arguments: *std.ArrayList(u8)) !script.Encoded {
        var key_count: usize = 0;
        for (self.admissions[0..self.admission_count]) |each| {
            try keys.appendSlice(allocator, each.keys);
            try arguments.appendSlice(allocator, each.arguments);
            key_count += each.counter_count + 1;
        }
        return .{ .keys = keys.items, .key_count = key_count, .arguments = arguments.items, .entries = self.admission_count };
    }
};

/// A worker's groups. `Target` names where a call goes (redis.zig's Target): it needs
/// `slice()`.
pub fn Table(comptime Target: type) type {
    return struct {
        const Self = @This();

        groups: std.ArrayList(Group) = .empty,
        /// Admissions waiting, across groups.
        waiting_count: usize = 0,
        next_id: u32 = 1,

        pub const Group = struct {
            /// Never 0 (0 in a pending call: no group); a pruned group's id is not reused.
            id: u32,
            target: Target,
            tag: [tag_bytes_max]u8 = undefined,
            tag_len: usize = 0,
            /// While a call of the group is in flight: when to stop waiting for it.
            in_flight_until_ms: ?u64 = null,
            waiting: std.ArrayList(Waiting) = .empty,

            pub fn busy(self: *const Group, now_ms: u64) bool {
                const until = self.in_flight_until_ms orelse return false;
                return now_ms < until;
            }
        };

        /// What an admission does: wait for its group's call in flight, lead (send its own
        /// call, and the group waits for it), or go alone (no room for a group).
        pub const Join = union(enum) { wait: *Group, lead: u32, alone };

        pub fn join(self: *Self, allocator: std.mem.Allocator, target: Target, tag: []const u8, now_ms: u64) Join {
            const group = self.groupFor(allocator, target, tag) catch return .alone;
            if (!group.busy(now_ms)) return .{ .lead = group.id };
            if (self.waiting_count >= waiting_max) return .alone;
            return .{ .wait = group };
        }

        /// Queues `waiting` behind the group's call in flight; the group owns it on success.
        pub fn enqueue(self: *Self, allocator: std.mem.Allocator, group: *Group, waiting: Waiting) !void {
            std.debug.assert(group.in_flight_until_ms != null);
            try group.waiting.append(allocator, waiting);
            self.waiting_count += 1;
        }

        /// A call of group `id` went out: the group's admissions wait for it until it answers
        /// or `timeout_ms` (plus the grace) passes.
        pub fn sent(self: *Self, id: u32, now_ms: u64, timeout_ms: u64) void {
            const group = self.byId(id) orelse return;
            group.in_flight_until_ms = now_ms +| timeout_ms +| stale_grace_ms;
        }

        /// Group `id`'s call answered or failed: the group it belonged to (if still there), no
        /// longer busy.
        pub fn finished(self: *Self, id: u32) ?*Group {
            const group = self.byId(id) orelse return null;
            group.in_flight_until_ms = null;
            return group;
        }

        /// The next call's admissions, oldest first: up to admissions_per_call_max whose keys and
        /// arguments fit `room` (always at least one), and those found past their deadline.
        pub fn take(self: *Self, group: *Group, now_ms: u64, room: usize) Taken {
            var taken: Taken = .{};
            var used: usize = 0;
            var consumed: usize = 0;
            for (group.waiting.items) |each| {
                if (each.deadline_ms <= now_ms) {
                    if (taken.expired_count == admissions_per_call_max) break;
                    taken.expired[taken.expired_count] = each;
                    taken.expired_count += 1;
                } else {
                    if (taken.admission_count == admissions_per_call_max) break;
                    if (taken.admission_count > 0 and used + each.size() > room) break;
                    used += each.size();
                    taken.admissions[taken.admission_count] = each;
                    taken.admission_count += 1;
                }
                consumed += 1;
            }
            const rest = group.waiting.items[consumed..];
            std.mem.copyForwards(Waiting, group.waiting.items[0..rest.len], rest);
            group.waiting.shrinkRetainingCapacity(rest.len);
            self.waiting_count -= consumed;
            return taken;
        }

        /// Hands every waiting admission past its deadline to `late` (the tick fails them), at
        /// most `out.len`; returns how many.
        pub fn expire(self: *Self, now_ms: u64, out: []Waiting) usize {
            var count: usize = 0;
            for (self.groups.items) |*group| {
                var kept: usize = 0;
                for (group.waiting.items) |each| {
                    if (each.deadline_ms <= now_ms and count < out.len) {
                        out[count] = each;
                        count += 1;
                    } else {
                        group.waiting.items[kept] = each;
                        kept += 1;
                    }
                }
                group.waiting.shrinkRetainingCapacity(kept);
            }
            self.waiting_count -= count;
            return count;
        }

        /// A group with admissions waiting and no call in flight (its call went stale), or null.
        pub fn stalled(self: *Self, now_ms: u64) ?*Group {
            for (self.groups.items) |*group| {
                if (group.waiting.items.len > 0 and !group.busy(now_ms)) return group;
            }
            return null;
        }

        /// Forgets groups with nothing in flight and nothing waiting, so the table holds live ones.
        pub fn prune(self: *Self, allocator: std.mem.Allocator, now_ms: u64) void {
            var index: usize = 0;
            while (index < self.groups.items.len) {
                const group = &self.groups.items[index];
                if (group.busy(now_ms) or group.waiting.items.len > 0) {
                    index += 1;
                    continue;
                }
                group.waiting.deinit(allocator);
                _ = self.groups.swapRemove(index);
            }
        }

        pub fn deinit(self: *Self, allocator: std.mem.Allocator) void {
            for (self.groups.items) |*group| {
                for (group.waiting.items) |*each| each.deinit(allocator);
                group.waiting.deinit(allocator);
            }
            self.groups.deinit(allocator);
            self.* = undefined;
        }

        pub fn byId(self: *Self, id: u32) ?*Group {
            if (id == 0) return null;
            for (self.groups.items) |*group| if (group.id == id) return group;
            return null;
        }

        fn groupFor(self: *Self, allocator: std.mem.Allocator, target: Target, tag: []const u8) !*Group {
            std.debug.assert(tag.len <= tag_bytes_max);
            for (self.groups.items) |*group| {
                if (std.mem.eql(u8, group.tag[0..group.tag_len], tag) and std.mem.eql(u8, group.target.slice(), target.slice())) return group;
            }
            if (self.groups.items.len >= groups_max) return error.Full;
            var group: Group = .{ .id = self.next_id, .target = target, .tag_len = tag.len };
            self.next_id +%= 1;
            if (self.next_id == 0) self.next_id = 1;
            @memcpy(group.tag[0..tag.len], tag);
            try self.groups.append(allocator, group);
            return &self.groups.items[self.groups.items.len - 1];
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

fn testCounter(key: []const u8) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = 1000 }, .unit = .tokens, .admit_amount = 10 };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

fn testWaiting(id: u32, deadline_ms: u64) !Waiting {
    const counters = [_]store.Counter{testCounter("tokenlimit:{a}:k")};
    var request_id: [8]u8 = undefined;
    const marker = script.MarkerKey.init(counters[0].key.slice(), std.fmt.bufPrint(&request_id, "{d}", .{id}) catch unreachable);
    return Waiting.init(testing.allocator, id, &counters, false, marker, try testing.allocator.dupe(u8, "release"), deadline_ms);
}

test "admit queue: the first admission of a rule leads, the next ones wait for its call, then go together" {
    var table: Table(TestTarget) = .{};
    defer table.deinit(testing.allocator);
    const bridge = TestTarget{ .name = "bridge" };
    // Nothing in flight: the admission sends its own call at once (no added latency).
    const lead = table.join(testing.allocator, bridge, "tokenlimit:{a}:", 1000).lead;
    table.sent(lead, 1000, 500);
    // Its call in flight: the others of the rule wait; another rule leads its own call.
    for (1..41) |i| {
        const group = table.join(testing.allocator, bridge, "tokenlimit:{a}:", 1001).wait;
        try table.enqueue(testing.allocator, group, try testWaiting(@intCast(i), 1001 + 500));
    }
    try testing.expect(table.join(testing.allocator, bridge, "tokenlimit:{b}:", 1001) == .lead);
    try testing.expectEqual(@as(usize, 40), table.waiting_count);
    // The call answers: the next call carries the oldest 32, in order; 8 wait for it.
    const group = table.finished(lead).?;
    var taken = table.take(group, 1002, 1000);
    try testing.expectEqual(@as(usize, admissions_per_call_max), taken.sent().len);
    try testing.expectEqual(@as(u32, 1), taken.sent()[0].http_context_id);
    try testing.expectEqual(@as(u32, 32), taken.sent()[31].http_context_id);
    try testing.expectEqual(@as(u64, 1501), taken.deadlineMs());
    var keys: std.ArrayList(u8) = .empty;
    defer keys.deinit(testing.allocator);
    var arguments: std.ArrayList(u8) = .empty;
    defer arguments.deinit(testing.allocator);
    const encoded = try taken.encode(testing.allocator, &keys, &arguments);
    try testing.expectEqual(@as(usize, 64), encoded.key_count);
    try testing.expectEqual(@as(usize, 64), script.countArguments(encoded.keys));
    try testing.expectEqual(@as(usize, 32 * 7), script.countArguments(encoded.arguments));
    for (taken.sent()) |*each| each.deinit(testing.allocator);
    try testing.expectEqual(@as(usize, 8), table.waiting_count);
    table.sent(group.id, 1002, 499);
    try testing.expect(table.join(testing.allocator, bridge, "tokenlimit:{a}:", 1003) == .wait);
}

test "admit queue: a call holds what fits the bridge's bound, and waiting never outlives a deadline" {
    var table: Table(TestTarget) = .{};
    defer table.deinit(testing.allocator);
    const lead = table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", 0).lead;
    table.sent(lead, 0, 100);
    const group = table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", 0).wait;
    for (0..6) |i| try table.enqueue(testing.allocator, group, try testWaiting(@intCast(i), if (i == 1) 50 else 100));
    // Room for two admissions (9 keys and arguments each); the one past its deadline is handed
    // back to fail, never sent.
    var taken = table.take(group, 60, 2 * 9);
    try testing.expectEqual(@as(usize, 2), taken.sent().len);
    try testing.expectEqual(@as(usize, 1), taken.late().len);
    try testing.expectEqual(@as(u32, 1), taken.late()[0].http_context_id);
    for (taken.sent()) |*each| each.deinit(testing.allocator);
    for (taken.late()) |*each| each.deinit(testing.allocator);
    // One admission bigger than the room still goes (alone), as it would without coalescing.
    var single = table.take(group, 60, 1);
    try testing.expectEqual(@as(usize, 1), single.sent().len);
    for (single.sent()) |*each| each.deinit(testing.allocator);
    // The tick fails the rest at their deadline.
    var late: [admissions_per_call_max]Waiting = undefined;
    try testing.expectEqual(@as(usize, 0), table.expire(99, &late));
    try testing.expectEqual(@as(usize, 2), table.expire(100, &late));
    for (late[0..2]) |*each| each.deinit(testing.allocator);
    try testing.expectEqual(@as(usize, 0), table.waiting_count);
}

test "admit queue: a call that never answers stops holding its group after its timeout" {
    var table: Table(TestTarget) = .{};
    defer table.deinit(testing.allocator);
    const lead = table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", 0).lead;
    table.sent(lead, 0, 100);
    const group = table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", 10).wait;
    try table.enqueue(testing.allocator, group, try testWaiting(1, 110));
    try testing.expectEqual(@as(?*Table(TestTarget).Group, null), table.stalled(100 + stale_grace_ms - 1));
    try testing.expectEqual(group, table.stalled(100 + stale_grace_ms).?);
    try testing.expect(table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{a}:", 100 + stale_grace_ms) == .lead);
    // A late answer of the old call finds its group idle already; nothing breaks.
    try testing.expect(table.finished(lead) != null);
    var late: [1]Waiting = undefined;
    try testing.expectEqual(@as(usize, 1), table.expire(2000, &late));
    late[0].deinit(testing.allocator);
    table.prune(testing.allocator, 2000);
    try testing.expectEqual(@as(usize, 0), table.groups.items.len);
    try testing.expectEqual(@as(?*Table(TestTarget).Group, null), table.finished(lead)); // pruned: ignored
}

test "admit queue: past groups_max rules an admission goes alone" {
    var table: Table(TestTarget) = .{};
    defer table.deinit(testing.allocator);
    for (0..groups_max) |i| {
        var tag: [32]u8 = undefined;
        try testing.expect(table.join(testing.allocator, .{ .name = "t" }, std.fmt.bufPrint(&tag, "tokenlimit:{{r{d}}}:", .{i}) catch unreachable, 0) == .lead);
    }
    try testing.expect(table.join(testing.allocator, .{ .name = "t" }, "tokenlimit:{other}:", 0) == .alone);
}
