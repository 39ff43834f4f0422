//! The requests one worker holds near the limit (issue 13), pure: no host calls, so its order
//! and bounds are tested natively. Requests are held in release order: by lane (high first),
//! then first in, first out. `wait.zig` walks it on the root context's tick.
//!
//! Memory: one `Entry` (`entry_bytes`) per held request, in one array that grows by doubling, so
//! at most 2 x `entry_bytes` x max_queued; removals leave a tombstone that the next tick's
//! `compact` drops, so no removal moves the array while it is walked.
const std = @import("std");
const Lane = @import("../config/parse_exhausted.zig").Lane;

pub const Kind = enum(u1) {
    /// Its budget was spent: admitted once a re-check finds room, or rejected at the deadline.
    waiting,
    /// Admitted (counted) above `pace_above`: released at `release_ms`.
    paced,
};

pub const Entry = struct {
    /// 0: a tombstone (the request was released or left).
    context_id: u32,
    root_id: u32,
    /// Identifies the budget it waits for (the refusing counter's name): one key is served first
    /// in, first out, so a later request of the same key never overtakes an earlier one.
    key_hash: u64,
    enqueued_ms: u64,
    /// waiting: rejected from then on; paced: released then.
    deadline_ms: u64,
    lane: Lane,
    kind: Kind,
    /// waiting: a re-check is with Redis; the entry keeps its place until the answer.
    in_flight: bool = false,
    /// waiting: the counter that refused last (its check gives Retry-After at the deadline).
    counter_index: u8 = 0,
    /// Re-checks so far: each one gets its own Redis marker (wait.zig).
    attempts: u16 = 0,
    /// The request id's length before the first re-check's suffix.
    id_base_len: u8 = 0,
};

pub const entry_bytes = @sizeOf(Entry);

comptime {
    // What docs/config.md promises per held request (the array's share of it).
    std.debug.assert(entry_bytes <= 48);
}

pub const Queue = struct {
    entries: std.ArrayList(Entry) = .empty,
    /// Entries that are not tombstones.
    live: usize = 0,

    pub fn deinit(self: *Queue, gpa: std.mem.Allocator) void {
        self.entries.deinit(gpa);
        self.* = undefined;
    }

    /// Adds `entry` behind every entry of its lane and the lanes above it.
    pub fn insert(self: *Queue, gpa: std.mem.Allocator, entry: Entry) error{OutOfMemory}!void {
        std.debug.assert(entry.context_id != 0);
        std.debug.assert(self.find(entry.context_id) == null);
        var at = self.entries.items.len;
        while (at > 0 and @backingInt(self.entries.items[at - 1].lane) > @backingInt(entry.lane)) at -= 1;
        try self.entries.insert(gpa, at, entry);
        self.live += 1;
    }

    pub fn find(self: *Queue, context_id: u32) ?*Entry {
        std.debug.assert(context_id != 0);
        for (self.entries.items) |*entry| {
            if (entry.context_id == context_id) return entry;
        }
        return null;
    }

    /// Leaves a tombstone; true when the request was held.
    pub fn remove(self: *Queue, context_id: u32) bool {
        const entry = self.find(context_id) orelse return false;
        entry.context_id = 0;
        self.live -= 1;
        return true;
    }

    /// Drops tombstones (between walks only).
    pub fn compact(self: *Queue) void {
        var kept: usize = 0;
        for (self.entries.items) |entry| {
            if (entry.context_id == 0) continue;
            self.entries.items[kept] = entry;
            kept += 1;
        }
        self.entries.shrinkRetainingCapacity(kept);
        std.debug.assert(kept == self.live);
    }

    /// The latest release of a paced request of `key_hash`: the next one is spaced after it.
    pub fn lastPacedRelease(self: *const Queue, key_hash: u64) ?u64 {
        var last: ?u64 = null;
        for (self.entries.items) |entry| {
            if (entry.context_id == 0 or entry.kind != .paced or entry.key_hash != key_hash) continue;
            last = @max(last orelse 0, entry.deadline_ms);
        }
        return last;
    }
};

const testing = std.testing;

fn testEntry(id: u32, lane: Lane) Entry {
    return .{ .context_id = id, .root_id = 1, .key_hash = 7, .enqueued_ms = id, .deadline_ms = 100, .lane = lane, .kind = .waiting };
}

test "wait queue: high lane first, first in first out within a lane" {
    var queue: Queue = .{};
    defer queue.deinit(testing.allocator);
    try queue.insert(testing.allocator, testEntry(2, .normal));
    try queue.insert(testing.allocator, testEntry(3, .low));
    try queue.insert(testing.allocator, testEntry(4, .normal));
    try queue.insert(testing.allocator, testEntry(5, .high));
    try queue.insert(testing.allocator, testEntry(6, .high));
    var order: [5]u32 = undefined;
    for (queue.entries.items, &order) |entry, *id| id.* = entry.context_id;
    try testing.expectEqualSlices(u32, &.{ 5, 6, 2, 4, 3 }, &order);
}

test "wait queue: removal leaves a tombstone until compact" {
    var queue: Queue = .{};
    defer queue.deinit(testing.allocator);
    for (2..6) |id| try queue.insert(testing.allocator, testEntry(@intCast(id), .normal));
    try testing.expect(queue.remove(3));
    try testing.expect(!queue.remove(3));
    try testing.expectEqual(@as(usize, 4), queue.entries.items.len);
    try testing.expectEqual(@as(usize, 3), queue.live);
    queue.compact();
    try testing.expectEqual(@as(usize, 3), queue.entries.items.len);
    try testing.expect(queue.find(3) == null);
    try testing.expectEqual(@as(u32, 4), queue.find(4).?.context_id);
}

test "wait queue: paced requests of a key are spaced after the last one" {
    var queue: Queue = .{};
    defer queue.deinit(testing.allocator);
    try testing.expectEqual(@as(?u64, null), queue.lastPacedRelease(7));
    var paced = testEntry(2, .normal);
    paced.kind = .paced;
    paced.deadline_ms = 250;
    try queue.insert(testing.allocator, paced);
    paced.context_id = 3;
    paced.deadline_ms = 400;
    try queue.insert(testing.allocator, paced);
    try queue.insert(testing.allocator, testEntry(4, .normal));
    try testing.expectEqual(@as(?u64, 400), queue.lastPacedRelease(7));
    try testing.expectEqual(@as(?u64, null), queue.lastPacedRelease(8));
}
