//! Tests of the local store (local.zig), natively: the compare-and-swap loop and the bounded
//! slot table run over a map standing in for Envoy's shared data. A sibling file keeps local.zig
//! under the project's ~500 lines; the test root picks up every file under src/.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const local_zig = @import("local.zig");
const store = @import("store.zig");

const Error = local_zig.Error;
const Slot = local_zig.Slot;
const Stored = local_zig.Stored;
const Local = local_zig.Local;
const Table = local_zig.Table;
const digestOf = local_zig.digestOf;
const probe_slots = local_zig.probe_slots;
const cas_attempts_max = local_zig.cas_attempts_max;
const idleAfterMs = local_zig.idleAfterMs;

const testing = std.testing;
const test_now_ms: u64 = 600_000; // a whole minute: fixed windows start here

/// Shared data as Envoy keeps it, in a map. Before each of the next `interfering_writes`
/// writes, "another worker" adds `interference` to the record, so that write loses the race.
const MapSharedData = struct {
    entries: std.StringHashMapUnmanaged(Entry) = .empty,
    next_cas: u32 = 1,
    interfering_writes: usize = 0,
    interference: u64 = 0,

    const Entry = struct { slot: Slot, cas: u32 };

    fn deinit(self: *MapSharedData) void {
        var keys = self.entries.keyIterator();
        while (keys.next()) |key| testing.allocator.free(key.*);
        self.entries.deinit(testing.allocator);
    }

    pub fn read(self: *MapSharedData, key: []const u8) Error!?Stored {
        const entry = self.entries.get(key) orelse return null;
        return .{ .slot = entry.slot, .cas = entry.cas };
    }

    pub fn write(self: *MapSharedData, key: []const u8, slot: Slot, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        if (self.interfering_writes > 0) {
            self.interfering_writes -= 1;
            var theirs = if (self.entries.get(key)) |entry| entry.slot else Slot{ .digest = slot.digest, .idle_after_ms = slot.idle_after_ms, .record = .{ .start_ms = test_now_ms } };
            theirs.record.used += self.interference;
            self.put(key, theirs) catch return error.StoreUnavailable;
        }
        // Envoy ignores the token on a true insert.
        if (self.entries.get(key)) |entry| if (entry.cas != cas) return error.CasMismatch;
        self.put(key, slot) catch return error.StoreUnavailable;
    }

    fn put(self: *MapSharedData, key: []const u8, slot: Slot) !void {
        const entry = try self.entries.getOrPut(testing.allocator, key);
        if (!entry.found_existing) entry.key_ptr.* = try testing.allocator.dupe(u8, key);
        entry.value_ptr.* = .{ .slot = slot, .cas = self.next_cas };
        self.next_cas += 1;
    }

    /// What the counter's own slot holds (0 when it has none).
    fn used(self: *const MapSharedData, counter: *const store.Counter) u64 {
        const digest = digestOf(counter.key.slice());
        var entries = self.entries.valueIterator();
        while (entries.next()) |entry| if (std.mem.eql(u8, &entry.slot.digest, &digest)) return entry.slot.record.used;
        return 0;
    }

    fn overflowEntries(self: *const MapSharedData) usize {
        var count: usize = 0;
        var keys = self.entries.keyIterator();
        while (keys.next()) |key| count += @intFromBool(std.mem.startsWith(u8, key.*, "tokenlimit:overflow:"));
        return count;
    }
};

fn testCounter(name: []const u8, unit: @FieldType(store.Counter, "unit"), limit: u64, amount: u64) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = limit }, .unit = unit, .admit_amount = amount, .admitted_at_ms = test_now_ms };
    @memcpy(counter.key.bytes[0..name.len], name);
    counter.key.len = name.len;
    return counter;
}

test "local store: admits while there is room, then refuses without writing" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var counters = [_]store.Counter{testCounter("r", .requests, 2, 1)};
    try testing.expectEqual(@as(?usize, null), try local.admit(&counters, test_now_ms, false));
    try testing.expectEqual(@as(?usize, null), try local.admit(&counters, test_now_ms, false));
    const writes = shared.next_cas;
    try testing.expectEqual(@as(?usize, 0), try local.admit(&counters, test_now_ms, false));
    try testing.expectEqual(writes, shared.next_cas);
    try testing.expectEqual(@as(u64, 2), shared.used(&counters[0]));
    try testing.expectEqual(@as(u64, 0), counters[0].reserved);
}

test "local store: a later counter's refusal gives back what earlier counters took" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var full = [_]store.Counter{testCounter("b", .requests, 1, 1)};
    _ = try local.admit(&full, test_now_ms, false);
    var counters = [_]store.Counter{ testCounter("a", .tokens, 100, 30), full[0] };
    try testing.expectEqual(@as(?usize, 1), try local.admit(&counters, test_now_ms, false));
    try testing.expectEqual(@as(u64, 0), shared.used(&counters[0]));
    try testing.expectEqual(@as(u64, 0), counters[0].reserved);
}

test "local store: shadow mode counts past the limit and names the first refusing counter" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var counters = [_]store.Counter{ testCounter("a", .requests, 5, 1), testCounter("b", .requests, 1, 1) };
    _ = try local.admit(counters[1..], test_now_ms, false);
    try testing.expectEqual(@as(?usize, 1), try local.admit(&counters, test_now_ms, true));
    try testing.expectEqual(@as(u64, 1), shared.used(&counters[0]));
    try testing.expectEqual(@as(u64, 2), shared.used(&counters[1]));
}

test "local store: a write lost to another worker is retried on that worker's record" {
    var shared: MapSharedData = .{ .interfering_writes = 1, .interference = 3 };
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var counters = [_]store.Counter{testCounter("t", .tokens, 100, 10)};
    try testing.expectEqual(@as(?usize, null), try local.admit(&counters, test_now_ms, false));
    try testing.expectEqual(@as(u64, 13), shared.used(&counters[0]));
}

test "local store: contention that never ends is reported after the bound, not looped on" {
    var shared: MapSharedData = .{ .interfering_writes = std.math.maxInt(usize), .interference = 0 };
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var counters = [_]store.Counter{testCounter("t", .tokens, 100, 10)};
    try testing.expectError(error.Contended, local.admit(&counters, test_now_ms, false));
}

test "local store: settling replaces the reservation with the real cost" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var counters = [_]store.Counter{ testCounter("t", .tokens, 100, 40), testCounter("r", .requests, 10, 1) };
    _ = try local.admit(&counters, test_now_ms, false);
    try testing.expectEqual(@as(u64, 40), shared.used(&counters[0]));
    try local.settle(&counters, test_now_ms + 1_000, 55);
    try testing.expectEqual(@as(u64, 55), shared.used(&counters[0]));
    try testing.expectEqual(@as(u64, 1), shared.used(&counters[1])); // a request counts once
}

test "local store: distinct keys past the bound do not grow shared data" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    const bound = @import("limits").local_counters_max;
    var buf: [128]u8 = undefined;
    var name: [32]u8 = undefined;
    for (0..bound + 1000) |i| {
        var counters = [_]store.Counter{try callerCounter(&buf, try std.fmt.bufPrint(&name, "k{d}", .{i}), 5)};
        _ = try local.admit(&counters, test_now_ms, false);
    }
    // The table and a handful of bookkeeping entries (overflow counters), never one per key.
    try testing.expect(shared.entries.count() <= bound + 16);
}

fn callerCounter(buf: []u8, caller: []const u8, limit: u64) !store.Counter {
    return testCounter(try std.fmt.bufPrint(buf, "tokenlimit:{{r}}:per_header:x-key:requests:60:{s}", .{caller}), .requests, limit, 1);
}

test "local store: a full table never evicts a live counter; new callers share the overflow budget" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Table(MapSharedData, probe_slots){ .shared = &shared };
    var buf: [128]u8 = undefined;
    // The victim spends its whole budget, then an attacker fills every other slot.
    var victim = [_]store.Counter{try callerCounter(&buf, "victim", 2)};
    _ = try local.admit(&victim, test_now_ms, false);
    _ = try local.admit(&victim, test_now_ms, false);
    var name: [16]u8 = undefined;
    for (0..1000) |i| {
        var attacker = [_]store.Counter{try callerCounter(&buf, try std.fmt.bufPrint(&name, "a{d}", .{i}), 2)};
        _ = try local.admit(&attacker, test_now_ms, false);
    }
    try testing.expectEqual(@as(?usize, 0), try local.admit(&victim, test_now_ms, false));
    try testing.expectEqual(@as(u64, 2), shared.used(&victim[0]));
    // Past the table, new callers were counted together: 2 of the 1000 - 7 got through.
    try testing.expectEqual(@as(usize, 1), shared.overflowEntries());
    var newcomer = [_]store.Counter{try callerCounter(&buf, "newcomer", 2)};
    try testing.expectEqual(@as(?usize, 0), try local.admit(&newcomer, test_now_ms, false));
    try testing.expectEqual(@as(usize, probe_slots + 1), shared.entries.count());
}

test "local store: per_model callers past the table share one overflow counter, whatever the model" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Table(MapSharedData, probe_slots){ .shared = &shared };
    var buf: [160]u8 = undefined;
    for (0..1000) |i| {
        const key = try std.fmt.bufPrint(&buf, "tokenlimit:{{r}}:per_header:x-key:requests:60:a{d}:m=model{d}", .{ i, i % 7 });
        var counters = [_]store.Counter{testCounter(key, .requests, 2, 1)};
        _ = try local.admit(&counters, test_now_ms, false);
    }
    try testing.expectEqual(@as(usize, 1), shared.overflowEntries());
}

test "local store: idle slots are reclaimed, live ones are kept" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Table(MapSharedData, probe_slots){ .shared = &shared };
    var buf: [128]u8 = undefined;
    var name: [16]u8 = undefined;
    for (0..probe_slots) |i| {
        var old = [_]store.Counter{try callerCounter(&buf, try std.fmt.bufPrint(&name, "old{d}", .{i}), 2)};
        _ = try local.admit(&old, test_now_ms, false);
    }
    // One window later the old counters may still weigh on a sliding window: not idle yet.
    var early = [_]store.Counter{try callerCounter(&buf, "early", 1)};
    _ = try local.admit(&early, test_now_ms + 60_000, false);
    try testing.expectEqual(@as(usize, 1), shared.overflowEntries());
    // Two windows later they read as empty: a new caller takes a slot and a budget of its own.
    const later_ms = test_now_ms + 120_000;
    var fresh = [_]store.Counter{try callerCounter(&buf, "fresh", 1)};
    try testing.expectEqual(@as(?usize, null), try local.admit(&fresh, later_ms, false));
    try testing.expectEqual(@as(?usize, 0), try local.admit(&fresh, later_ms, false));
    try testing.expectEqual(@as(u64, 1), shared.used(&fresh[0]));
    try testing.expectEqual(@as(usize, probe_slots + 1), shared.entries.count());
}

test "local store: a slot round-trips and anything else reads as free" {
    const slot = Slot{ .digest = digestOf("k"), .idle_after_ms = 7, .record = .{ .start_ms = 1, .used = 2, .previous = 3 } };
    try testing.expectEqual(slot, Slot.decode(&slot.encode()).?);
    try testing.expectEqual(@as(?Slot, null), Slot.decode(&budget.Record.encode(.{})));
}

test "local store: a peek reads each budget and writes nothing, not even for a new caller" {
    var shared: MapSharedData = .{};
    defer shared.deinit();
    const local = Local(MapSharedData){ .shared = &shared };
    var spent = [_]store.Counter{testCounter("t", .tokens, 100, 30)};
    try testing.expectEqual(@as(?usize, null), try local.admit(&spent, test_now_ms, false));
    const writes = shared.next_cas;
    var asked = [_]store.Counter{ testCounter("t", .tokens, 100, 0), testCounter("new", .tokens, 100, 0) };
    try local.peek(&asked, test_now_ms + 10_000);
    try testing.expectEqual(budget.Check{ .limit = 100, .used = 30, .reset_in_ms = 50_000 }, asked[0].check);
    try testing.expectEqual(@as(u64, 0), asked[1].check.used);
    try testing.expectEqual(writes, shared.next_cas);
    try testing.expectEqual(@as(usize, 1), shared.entries.count());
}
