//! The local budget store: Envoy shared data, shared by every worker thread (each worker runs
//! its own VM; shared data is per VM id, so all of them see it). Each counter is updated with a
//! compare-and-swap loop, so concurrent charges from several workers all land. Admission across
//! several counters is per counter: when a later counter refuses, the amounts already added to
//! earlier ones are taken back.
//!
//! Bounded memory. Envoy's shared data has no delete (proxy-wasm ABI 0.2.1 offers get and set
//! only; an empty value still keeps the key), so one entry per counter name grew without bound:
//! an attacker rotating API keys ran Envoy out of memory. Counters therefore live in a fixed
//! table of `slots_max` entries named `tokenlimit:slot:<index>` (contract/limits.json
//! `local_counters_max`), written in place and never more. A counter's slot is found by open
//! addressing: `probe_slots` consecutive slots from a position taken from SHA-256 of its name;
//! each slot holds the first 16 bytes of that digest, so a slot is known to be the counter's.
//!
//! Eviction, chosen so that it cannot be used to reset a victim's budget:
//! - a slot is reused only once it is idle: its window (and, for sliding windows and token
//!   buckets, everything it still carries into later windows) has passed, so its record would
//!   read as empty anyway (`idleAfterMs`);
//! - a live slot is never evicted. When all of a new counter's probe slots are live, the counter
//!   is counted in a shared overflow counter, one per rule, item, unit and window
//!   (`tokenlimit:overflow:<hash of the name without the caller>`): every new caller that finds
//!   no slot shares that one budget. Under a flood of distinct keys new callers are limited
//!   together, not let through, and callers already counted keep their own budgets.
//!
//! The compare-and-swap logic is generic over where records live (`SharedData`): Envoy shared
//! data in the module, a map in the tests below, so the loop is tested natively.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const host = @import("../abi/host.zig");
const sha256 = @import("../match/sha256.zig");
const store = @import("store.zig");

/// Counters one Envoy keeps locally. Each slot costs Envoy about 150 bytes (a short key, a
/// 49-byte value, the hash map's entry; see bench/local_heap.py), so 65,536 slots stay near 10 MiB.
pub const slots_max: usize = @import("limits").local_counters_max;
/// Slots looked at per counter: enough that a table a few percent from full still places new
/// counters, few enough that a lookup is a handful of host calls.
pub const probe_slots = 8; // Table() asserts that a table has at least this many slots

/// Bound on compare-and-swap attempts: contention on one key from N workers resolves in at
/// most N rounds; hitting this bound means something else is wrong, and it is reported.
pub const cas_attempts_max = 32;

/// Envoy hands out CAS tokens counting up from 1; this one is reached only after 2^32 - 1
/// writes, and then costs one retry.
const insert_cas: u32 = std.math.maxInt(u32);

pub const Error = error{ StoreUnavailable, Contended };

/// What one table entry holds: whose counter it is, when it may be reused, the record.
pub const Slot = struct {
    digest: Digest,
    idle_after_ms: u64,
    record: budget.Record,

    pub const encoded_len = @sizeOf(Digest) + 8 + budget.Record.encoded_len;

    pub fn encode(self: Slot) [encoded_len]u8 {
        var bytes: [encoded_len]u8 = undefined;
        @memcpy(bytes[0..16], &self.digest);
        std.mem.writeInt(u64, bytes[16..24], self.idle_after_ms, .little);
        @memcpy(bytes[24..], &self.record.encode());
        return bytes;
    }

    /// Anything else (an older build's record, corruption) reads as null: a free slot.
    pub fn decode(bytes: []const u8) ?Slot {
        if (bytes.len != encoded_len) return null;
        const record = budget.Record.decode(bytes[24..]) orelse return null;
        return .{ .digest = bytes[0..16].*, .idle_after_ms = std.mem.readInt(u64, bytes[16..24], .little), .record = record };
    }
};

pub const Digest = [16]u8;

fn digestOf(name: []const u8) Digest {
    return sha256.hash(name)[0..16].*;
}

/// When a record left alone reads as empty: fixed and sliding windows after the window after
/// its own (sliding still weighs the previous window), a token bucket once its deficit has
/// refilled (one window per `limit` of deficit) -- plus one window, so a request admitted at a
/// window's end and settled later still finds its record.
pub fn idleAfterMs(b: budget.Budget, record: budget.Record) u64 {
    const windows = 2 + record.used / @max(b.limit, 1);
    // A calendar window may last longer than its nominal length (a 31-day month, a DST day).
    const calendar = b.algorithm != .token_bucket and b.window.isCalendar(b.zone);
    const length_ms = if (calendar) b.window.longestMs() else b.window.lengthMs();
    return record.start_ms +| (length_ms *| windows);
}

/// A stored slot and its compare-and-swap token (`slot` null: unreadable, treated as free).
pub const Stored = struct { slot: ?Slot, cas: u32 };

/// Envoy shared data: what the module uses.
const HostSharedData = struct {
    fn read(_: *HostSharedData, key: []const u8) Error!?Stored {
        const shared = (host.getSharedData(key) catch return error.StoreUnavailable) orelse return null;
        var value = shared.value;
        defer value.deinit();
        return .{ .slot = Slot.decode(value.bytes), .cas = shared.cas };
    }

    fn write(_: *HostSharedData, key: []const u8, slot: Slot, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        host.setSharedData(key, &slot.encode(), cas) catch |err| return switch (err) {
            error.CasMismatch => error.CasMismatch,
            else => error.StoreUnavailable,
        };
    }
};

var host_shared_data: HostSharedData = .{};
const HostStore = Local(HostSharedData);

/// Admits a request against all its counters: each must have room for its `admit_amount`
/// (postpaid token counters ask for 0: room means "not spent"). Fills `check` on every counter
/// looked at and returns the index of the refusing counter, or null when admitted. With
/// `force` (shadow mode) amounts are added even where a counter refuses.
pub fn admit(counters: []store.Counter, now_ms: u64, force: bool) Error!?usize {
    return (HostStore{ .shared = &host_shared_data }).admit(counters, now_ms, force);
}

/// Replaces each counter's reservation with the request's real cost `actual_tokens`.
pub fn settle(counters: []const store.Counter, now_ms: u64, actual_tokens: u64) Error!void {
    return (HostStore{ .shared = &host_shared_data }).settle(counters, now_ms, actual_tokens);
}

/// What one compare-and-swap round decides: the record to write, or null to write nothing.
const Update = struct {
    context: *const anyopaque,
    apply: *const fn (context: *const anyopaque, record: budget.Record) ?budget.Record,
};

/// The shared-data entry a counter is read from and written to this round.
const Place = struct {
    name_buf: [64]u8 = undefined,
    name_len: usize = 0,
    digest: Digest,
    /// The counter's record when the entry is already its own; empty for a slot being claimed.
    record: budget.Record = .{},
    cas: u32 = insert_cas,

    fn name(self: *const Place) []const u8 {
        return self.name_buf[0..self.name_len];
    }

    fn named(digest: Digest, comptime format: []const u8, args: anytype) Place {
        var place: Place = .{ .digest = digest };
        place.name_len = (std.fmt.bufPrint(&place.name_buf, format, args) catch unreachable).len;
        return place;
    }

    /// The place as read: the counter's own record when `stored` is its own, else a claim.
    fn from(self: Place, stored: ?Stored) Place {
        var place = self;
        const found = stored orelse return place;
        place.cas = found.cas;
        if (found.slot) |slot| if (std.mem.eql(u8, &slot.digest, &place.digest)) {
            place.record = slot.record;
        };
        return place;
    }
};

/// The local store over `Shared`, which has `read(key) Error!?Stored` and
/// `write(key, slot, cas) error{ CasMismatch, StoreUnavailable }!void`.
pub fn Local(comptime Shared: type) type {
    return Table(Shared, slots_max);
}

/// The local store with a table of `slot_count` slots (tests use small ones).
pub fn Table(comptime Shared: type, comptime slot_count: usize) type {
    comptime std.debug.assert(slot_count >= probe_slots);
    return struct {
        const Self = @This();
        shared: *Shared,

        /// Where `key` is counted now: its own slot, else the first free or idle slot among its
        /// probe slots, else its overflow counter. A never-written slot ends the search: slots
        /// are never emptied, so the key cannot sit further along.
        fn locate(self: Self, key: []const u8, now_ms: u64) Error!Place {
            const digest = digestOf(key);
            const start = std.mem.readInt(u64, digest[0..8], .little) % slot_count;
            var claim: ?Place = null;
            for (0..probe_slots) |offset| {
                const index = (start + offset) % slot_count;
                const place = Place.named(digest, "tokenlimit:slot:{d}", .{index});
                const stored = try self.shared.read(place.name()) orelse {
                    return claim orelse place;
                };
                const slot = stored.slot orelse {
                    if (claim == null) claim = place.from(stored);
                    continue;
                };
                if (std.mem.eql(u8, &slot.digest, &digest)) return place.from(stored);
                if (claim == null and slot.idle_after_ms <= now_ms) claim = place.from(stored);
            }
            return claim orelse self.overflow(key);
        }

        fn overflow(self: Self, key: []const u8) Error!Place {
            // Without the caller, and without a per_model item's `:m=<model>` after it (neither
            // holds a ':'), so new callers of every model share one overflow counter too.
            const unmodelled = key[0 .. std.mem.lastIndexOf(u8, key, ":m=") orelse key.len];
            const cut = std.mem.lastIndexOfScalar(u8, unmodelled, ':') orelse 0;
            const group = std.fmt.bytesToHex(digestOf(key[0..cut]), .lower);
            var place = Place.named(undefined, "tokenlimit:overflow:{s}", .{&group});
            place.digest = digestOf(place.name());
            return place.from(try self.shared.read(place.name()));
        }

        /// Reads the counter, lets `update` decide, writes with the read's CAS token; retries when
        /// another worker wrote in between. Returns the record as it stands after the operation.
        fn modify(self: Self, counter: *const store.Counter, now_ms: u64, update: Update) Error!budget.Record {
            const key = counter.key.slice();
            std.debug.assert(key.len > 0);
            var attempt: usize = 0;
            while (attempt < cas_attempts_max) : (attempt += 1) {
                // A slot not written yet is claimed with a token no entry holds yet: shared data
                // ignores the token on a true insert, but if another worker wrote it in the
                // meantime the write fails with CAS_MISMATCH and the search is redone (cas 0
                // would overwrite it, losing that worker's counter).
                const place = try self.locate(key, now_ms);
                const next = update.apply(update.context, place.record) orelse return place.record;
                const slot = Slot{ .digest = place.digest, .idle_after_ms = idleAfterMs(counter.budget, next), .record = next };
                self.shared.write(place.name(), slot, place.cas) catch |err| switch (err) {
                    error.CasMismatch => continue,
                    error.StoreUnavailable => return error.StoreUnavailable,
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

        pub fn admit(self: Self, counters: []store.Counter, now_ms: u64, force: bool) Error!?usize {
            var first_refused: ?usize = null;
            for (counters, 0..) |*counter, index| {
                var refused = false;
                var step = AdmitStep{ .counter = counter, .now_ms = now_ms, .force = force, .refused = &refused };
                _ = try self.modify(counter, now_ms, .{ .context = &step, .apply = AdmitStep.apply });
                std.debug.assert(counter.reserved <= counter.admit_amount);
                if (!refused) continue;
                if (force) {
                    if (first_refused == null) first_refused = index;
                    continue;
                }
                for (counters[0..index]) |*earlier| try self.refund(earlier, now_ms, earlier.reserved);
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

        pub fn settle(self: Self, counters: []const store.Counter, now_ms: u64, actual_tokens: u64) Error!void {
            for (counters) |*counter| {
                const actual = switch (counter.unit) {
                    .tokens => actual_tokens,
                    .cost => counter.actual_cost,
                    .requests => counter.reserved, // a request counts once, at admission
                };
                if (actual == counter.reserved) continue;
                var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = actual };
                _ = try self.modify(counter, now_ms, .{ .context = &step, .apply = SettleStep.apply });
            }
        }

        fn refund(self: Self, counter: *const store.Counter, now_ms: u64, amount: u64) Error!void {
            std.debug.assert(amount <= counter.reserved);
            if (amount == 0) return;
            var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = counter.reserved - amount };
            _ = try self.modify(counter, now_ms, .{ .context = &step, .apply = SettleStep.apply });
        }
    };
}

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

    fn read(self: *MapSharedData, key: []const u8) Error!?Stored {
        const entry = self.entries.get(key) orelse return null;
        return .{ .slot = entry.slot, .cas = entry.cas };
    }

    fn write(self: *MapSharedData, key: []const u8, slot: Slot, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
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
