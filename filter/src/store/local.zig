//! The local budget store: Envoy shared data, one record per counter, shared by every worker
//! thread (each worker runs its own VM; shared data is per VM id, so all of them see it).
//! Each counter is updated with a compare-and-swap loop, so concurrent charges from several
//! workers all land. Admission across several counters is per counter: when a later counter
//! refuses, the amounts already added to earlier ones are taken back.
//!
//! The compare-and-swap logic is generic over where records live (`SharedData`): Envoy shared
//! data in the module, a map in the tests below, so the loop is tested natively.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const host = @import("../abi/host.zig");
const store = @import("store.zig");

/// Bound on compare-and-swap attempts: contention on one key from N workers resolves in at
/// most N rounds; hitting this bound means something else is wrong, and it is reported.
pub const cas_attempts_max = 32;

/// Envoy hands out CAS tokens counting up from 1; this one is reached only after 2^32 - 1
/// writes, and then costs one retry.
const insert_cas: u32 = std.math.maxInt(u32);

pub const Error = error{ StoreUnavailable, Contended };

/// A stored record and its compare-and-swap token (`record` null: unreadable, treated as empty).
pub const Stored = struct { record: ?budget.Record, cas: u32 };

/// Envoy shared data: what the module uses.
const HostSharedData = struct {
    fn read(_: *HostSharedData, key: []const u8) Error!?Stored {
        const shared = (host.getSharedData(key) catch return error.StoreUnavailable) orelse return null;
        var value = shared.value;
        defer value.deinit();
        return .{ .record = budget.Record.decode(value.bytes), .cas = shared.cas };
    }

    fn write(_: *HostSharedData, key: []const u8, record: budget.Record, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        host.setSharedData(key, &record.encode(), cas) catch |err| return switch (err) {
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

/// The local store over `Shared`, which has `read(key) Error!?Stored` and
/// `write(key, record, cas) error{ CasMismatch, StoreUnavailable }!void`.
pub fn Local(comptime Shared: type) type {
    return struct {
        const Self = @This();
        shared: *Shared,

        /// Reads the counter, lets `update` decide, writes with the read's CAS token; retries when
        /// another worker wrote in between. Returns the record as it stands after the operation.
        fn modify(self: Self, key: []const u8, update: Update) Error!budget.Record {
            std.debug.assert(key.len > 0);
            var attempt: usize = 0;
            while (attempt < cas_attempts_max) : (attempt += 1) {
                var record = budget.Record{};
                // A counter not there yet is created with a token no entry holds yet: shared data
                // ignores the token on a true insert, but if another worker created the counter in
                // the meantime the write fails with CAS_MISMATCH and we retry on its record (cas 0
                // would overwrite it, losing that worker's reservation).
                var cas: u32 = insert_cas;
                if (try self.shared.read(key)) |stored| {
                    if (stored.record) |decoded| record = decoded;
                    cas = stored.cas;
                }
                const next = update.apply(update.context, record) orelse return record;
                self.shared.write(key, next, cas) catch |err| switch (err) {
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
                _ = try self.modify(counter.key.slice(), .{ .context = &step, .apply = AdmitStep.apply });
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
                    .requests => counter.reserved, // a request counts once, at admission
                };
                if (actual == counter.reserved) continue;
                var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = actual };
                _ = try self.modify(counter.key.slice(), .{ .context = &step, .apply = SettleStep.apply });
            }
        }

        fn refund(self: Self, counter: *const store.Counter, now_ms: u64, amount: u64) Error!void {
            std.debug.assert(amount <= counter.reserved);
            if (amount == 0) return;
            var step = SettleStep{ .counter = counter, .now_ms = now_ms, .actual = counter.reserved - amount };
            _ = try self.modify(counter.key.slice(), .{ .context = &step, .apply = SettleStep.apply });
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

    const Entry = struct { record: budget.Record, cas: u32 };

    fn deinit(self: *MapSharedData) void {
        self.entries.deinit(testing.allocator);
    }

    fn read(self: *MapSharedData, key: []const u8) Error!?Stored {
        const entry = self.entries.get(key) orelse return null;
        return .{ .record = entry.record, .cas = entry.cas };
    }

    fn write(self: *MapSharedData, key: []const u8, record: budget.Record, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        if (self.interfering_writes > 0) {
            self.interfering_writes -= 1;
            var theirs = if (self.entries.get(key)) |entry| entry.record else budget.Record{ .start_ms = test_now_ms };
            theirs.used += self.interference;
            self.put(key, theirs) catch return error.StoreUnavailable;
        }
        // Envoy ignores the token on a true insert.
        if (self.entries.get(key)) |entry| if (entry.cas != cas) return error.CasMismatch;
        self.put(key, record) catch return error.StoreUnavailable;
    }

    fn put(self: *MapSharedData, key: []const u8, record: budget.Record) !void {
        try self.entries.put(testing.allocator, key, .{ .record = record, .cas = self.next_cas });
        self.next_cas += 1;
    }

    fn used(self: *const MapSharedData, counter: *const store.Counter) u64 {
        return (self.entries.get(counter.key.slice()) orelse return 0).record.used;
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
