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
const digest_memo = @import("digest_memo.zig");
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

pub const Digest = digest_memo.Digest;

pub fn digestOf(name: []const u8) Digest {
    return digest_memo.worker.digestOf(name);
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

/// Reads each counter's budget into its `check`, writing nothing (the usage endpoint, issue 16):
/// what an admission of nothing would report now. A counter never written reads as unused.
pub fn peek(counters: []store.Counter, now_ms: u64) Error!void {
    return (HostStore{ .shared = &host_shared_data }).peek(counters, now_ms);
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

        /// issue 16: each counter's `check` as its record stands now; nothing is written.
        pub fn peek(self: Self, counters: []store.Counter, now_ms: u64) Error!void {
            for (counters) |*counter| {
                const place = try self.locate(counter.key.slice(), now_ms);
                counter.check = counter.budget.check(place.record, now_ms);
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
