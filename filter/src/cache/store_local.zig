//! The local response cache: Envoy shared data, seen by every worker of this Envoy.
//!
//! Shared data has no delete (proxy-wasm 0.2.1 offers get and set only), so a key per entry
//! would grow without bound. The cache is therefore a ring of `page_count` fixed keys
//! (`tokenlimit:cache:page:<n>`, `page_bytes` of entry each) written in order, plus a fixed
//! index (`tokenlimit:cache:index:<n>`, `index_slots` keys) and one cursor:
//!
//! - Generations: the cursor (`tokenlimit:cache:cursor`) counts pages ever written. A writer
//!   claims the next `n` generations with compare-and-swap, then writes page `g mod page_count`
//!   for each generation `g`, stamped with `g`. Total memory is bounded by
//!   `page_count * page_bytes` (contract/limits.json `cache_local_bytes_max`) plus the index.
//! - Oldest evicted: when the ring wraps, a new entry overwrites the oldest pages. A reader
//!   checks every page's stamp: one overwritten by a later generation makes the entry a miss,
//!   and a page being rewritten by another worker is never served half old, half new.
//! - The index is two-way: a digest may sit in either of two slots (from two parts of it), each
//!   naming an entry's first generation and page count. A new entry takes a slot that is free,
//!   already its own, or else the one naming the older entry; so two popular keys that share
//!   one slot do not evict each other on every request.
//!
//! The logic is generic over where values live (`Shared`): Envoy shared data in the module, a
//! map in the tests below.
const std = @import("std");
const message = @import("../abi/message.zig");
const entry_zig = @import("entry.zig");
const host = @import("../abi/host.zig");
const key = @import("key.zig");

pub const page_bytes = 16 * 1024;
pub const page_count: u64 = @import("limits").cache_local_bytes_max / page_bytes;
pub const index_slots = 4096;
/// An entry may take at most a quarter of the ring, so one large answer cannot flush it.
pub const entry_pages_max = page_count / 4;
pub const cas_attempts_max = 32;

const stamp_bytes = 8;
const index_record_bytes = 16 + 8 + 4;

comptime {
    std.debug.assert(page_count >= 16);
    // Every entry the config allows fits in the ring's quarter.
    const largest = entry_zig.header_bytes + entry_zig.content_type_bytes_max + @import("limits").cache_entry_bytes_max;
    std.debug.assert((largest + page_bytes - 1) / page_bytes <= entry_pages_max);
}

pub const Error = error{ StoreUnavailable, Contended, OutOfMemory };

/// One read from `Shared`: the value's length (copied into the caller's buffer) and CAS token.
pub const Read = struct { len: usize, cas: u32 };

pub fn Ring(comptime Shared: type) type {
    return struct {
        shared: *Shared,

        const Self = @This();

        /// The entry stored under `digest` (in `allocator`'s memory), or null.
        pub fn get(self: Self, allocator: std.mem.Allocator, digest: key.Digest) Error!?[]u8 {
            var name: [48]u8 = undefined;
            var record: [index_record_bytes]u8 = undefined;
            const found = for (0..2) |way| {
                const read = try self.shared.read(indexName(&name, digest, way), &record) orelse continue;
                if (read.len == record.len and std.mem.eql(u8, record[0..16], digest[0..16])) break true;
            } else false;
            if (!found) return null;
            const first = std.mem.readInt(u64, record[16..24], .little);
            const pages = std.mem.readInt(u32, record[24..28], .little);
            if (pages == 0 or pages > entry_pages_max) return null;
            var out: std.ArrayList(u8) = .empty;
            errdefer out.deinit(allocator);
            try out.ensureTotalCapacity(allocator, pages * page_bytes);
            var page: [stamp_bytes + page_bytes]u8 = undefined;
            for (0..pages) |offset| {
                const generation = first + offset;
                const got = try self.shared.read(pageName(&name, generation), &page) orelse {
                    out.deinit(allocator);
                    return null;
                };
                // Overwritten (the ring wrapped past it) or being rewritten: a miss.
                if (got.len < stamp_bytes or std.mem.readInt(u64, page[0..8], .little) != generation) {
                    out.deinit(allocator);
                    return null;
                }
                out.appendSliceAssumeCapacity(page[stamp_bytes..got.len]);
            }
            return try out.toOwnedSlice(allocator);
        }

        /// Stores `bytes` (an encoded entry) under `digest`, evicting the oldest pages.
        pub fn put(self: Self, digest: key.Digest, bytes: []const u8) Error!void {
            const pages = std.math.divCeil(usize, bytes.len, page_bytes) catch unreachable;
            std.debug.assert(pages > 0 and pages <= entry_pages_max);
            const first = try self.claim(pages);
            var name: [48]u8 = undefined;
            var page: [stamp_bytes + page_bytes]u8 = undefined;
            for (0..pages) |offset| {
                const chunk = bytes[offset * page_bytes .. @min(bytes.len, (offset + 1) * page_bytes)];
                std.mem.writeInt(u64, page[0..8], first + offset, .little);
                @memcpy(page[stamp_bytes..][0..chunk.len], chunk);
                try unconditional(self.shared.write(pageName(&name, first + offset), page[0 .. stamp_bytes + chunk.len], 0));
            }
            var record: [index_record_bytes]u8 = undefined;
            @memcpy(record[0..16], digest[0..16]);
            std.mem.writeInt(u64, record[16..24], first, .little);
            std.mem.writeInt(u32, record[24..28], @intCast(pages), .little);
            const way = try self.wayFor(digest);
            try unconditional(self.shared.write(indexName(&name, digest, way), &record, 0));
        }

        /// The index slot a new entry takes: its own, a free one, else the older entry's.
        fn wayFor(self: Self, digest: key.Digest) Error!usize {
            var name: [48]u8 = undefined;
            var oldest: struct { way: usize, first: u64 } = .{ .way = 0, .first = std.math.maxInt(u64) };
            for (0..2) |way| {
                var record: [index_record_bytes]u8 = undefined;
                const read = try self.shared.read(indexName(&name, digest, way), &record) orelse return way;
                if (read.len != record.len or std.mem.eql(u8, record[0..16], digest[0..16])) return way;
                const first = std.mem.readInt(u64, record[16..24], .little);
                if (first < oldest.first) oldest = .{ .way = way, .first = first };
            }
            return oldest.way;
        }

        /// Takes the next `pages` generations from the cursor (compare-and-swap, bounded).
        fn claim(self: Self, pages: usize) Error!u64 {
            for (0..cas_attempts_max) |_| {
                var value: [8]u8 = undefined;
                const read = try self.shared.read(cursor_name, &value);
                const first: u64 = if (read != null and read.?.len == 8) std.mem.readInt(u64, &value, .little) else 0;
                var next: [8]u8 = undefined;
                std.mem.writeInt(u64, &next, first + pages, .little);
                // An absent cursor is inserted with a token no existing key has (local.zig).
                const cas = if (read) |r| r.cas else std.math.maxInt(u32);
                self.shared.write(cursor_name, &next, cas) catch |err| switch (err) {
                    error.CasMismatch => continue,
                    else => return error.StoreUnavailable,
                };
                return first;
            }
            return error.Contended;
        }
    };
}

const cursor_name = "tokenlimit:cache:cursor";

/// A write with CAS 0 cannot meet a mismatch; any failure is the host's.
fn unconditional(result: error{ CasMismatch, StoreUnavailable }!void) Error!void {
    result catch return error.StoreUnavailable;
}

fn pageName(buffer: *[48]u8, generation: u64) []const u8 {
    return message.print(buffer, "tokenlimit:cache:page:{d}", .{generation % page_count});
}

fn indexName(buffer: *[48]u8, digest: key.Digest, way: usize) []const u8 {
    const part = if (way == 0) digest[0..4] else digest[4..8];
    const slot = std.mem.readInt(u32, part, .little) % index_slots;
    return message.print(buffer, "tokenlimit:cache:index:{d}", .{slot});
}

/// Envoy shared data: what the module uses.
const HostShared = struct {
    fn read(_: *HostShared, name: []const u8, out: []u8) Error!?Read {
        const shared = (host.getSharedData(name) catch return error.StoreUnavailable) orelse return null;
        var value = shared.value;
        defer value.deinit();
        // A value longer than what this build writes there is not ours: read as absent.
        if (value.bytes.len > out.len) return .{ .len = 0, .cas = shared.cas };
        @memcpy(out[0..value.bytes.len], value.bytes);
        return .{ .len = value.bytes.len, .cas = shared.cas };
    }

    fn write(_: *HostShared, name: []const u8, bytes: []const u8, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        host.setSharedData(name, bytes, cas) catch |err| return switch (err) {
            error.CasMismatch => error.CasMismatch,
            else => error.StoreUnavailable,
        };
    }
};

var host_shared: HostShared = .{};

pub fn get(allocator: std.mem.Allocator, digest: key.Digest) Error!?[]u8 {
    return (Ring(HostShared){ .shared = &host_shared }).get(allocator, digest);
}

pub fn put(digest: key.Digest, bytes: []const u8) Error!void {
    return (Ring(HostShared){ .shared = &host_shared }).put(digest, bytes);
}

/// Shared data in a map, with Envoy's compare-and-swap rules, for the tests.
const MapShared = struct {
    values: std.StringHashMapUnmanaged(struct { bytes: []u8, cas: u32 }) = .empty,
    allocator: std.mem.Allocator,

    fn deinit(self: *MapShared) void {
        var it = self.values.iterator();
        while (it.next()) |e| {
            self.allocator.free(e.key_ptr.*);
            self.allocator.free(e.value_ptr.bytes);
        }
        self.values.deinit(self.allocator);
    }

    fn read(self: *MapShared, name: []const u8, out: []u8) Error!?Read {
        const value = self.values.get(name) orelse return null;
        if (value.bytes.len > out.len) return .{ .len = 0, .cas = value.cas };
        @memcpy(out[0..value.bytes.len], value.bytes);
        return .{ .len = value.bytes.len, .cas = value.cas };
    }

    fn write(self: *MapShared, name: []const u8, bytes: []const u8, cas: u32) error{ CasMismatch, StoreUnavailable }!void {
        const a = self.allocator;
        if (self.values.getPtr(name)) |value| {
            if (cas != 0 and cas != value.cas) return error.CasMismatch;
            a.free(value.bytes);
            value.bytes = a.dupe(u8, bytes) catch return error.StoreUnavailable;
            value.cas += 1;
            return;
        }
        const owned = a.dupe(u8, name) catch return error.StoreUnavailable;
        self.values.put(a, owned, .{ .bytes = a.dupe(u8, bytes) catch return error.StoreUnavailable, .cas = 1 }) catch return error.StoreUnavailable;
    }
};

fn digestOf(n: u32) key.Digest {
    var digest: key.Digest = @splat(0);
    std.mem.writeInt(u32, digest[0..4], n, .little);
    std.mem.writeInt(u32, digest[4..8], n +% 1, .little);
    digest[31] = @truncate(n);
    return digest;
}

test "local cache: two keys sharing an index slot both stay (two-way index)" {
    const a = std.testing.allocator;
    var shared: MapShared = .{ .allocator = a };
    defer shared.deinit();
    const ring = Ring(MapShared){ .shared = &shared };
    const first = digestOf(5);
    var second = digestOf(5 + index_slots); // same first slot, another second one
    second[31] = 0xee;
    try ring.put(first, "one");
    try ring.put(second, "two");
    for ([_]key.Digest{ first, second }, [_][]const u8{ "one", "two" }) |digest, expected| {
        const read = (try ring.get(a, digest)).?;
        defer a.free(read);
        try std.testing.expectEqualStrings(expected, read);
    }
    var third = second; // a third key on both of those slots evicts the older entry only
    third[10] = 0x33;
    try ring.put(third, "three");
    try std.testing.expect(try ring.get(a, first) == null);
    const kept = (try ring.get(a, second)).?;
    a.free(kept);
}

test "local cache: an entry spanning pages comes back whole; another digest is a miss" {
    const a = std.testing.allocator;
    var shared: MapShared = .{ .allocator = a };
    defer shared.deinit();
    const ring = Ring(MapShared){ .shared = &shared };
    const bytes = try a.alloc(u8, page_bytes * 2 + 5);
    defer a.free(bytes);
    for (bytes, 0..) |*b, i| b.* = @truncate(i);
    try ring.put(digestOf(1), bytes);
    const read = (try ring.get(a, digestOf(1))).?;
    defer a.free(read);
    try std.testing.expectEqualSlices(u8, bytes, read);
    try std.testing.expect(try ring.get(a, digestOf(2)) == null);
}

test "local cache: memory is bounded; the oldest entries are evicted, the newest kept" {
    const a = std.testing.allocator;
    var shared: MapShared = .{ .allocator = a };
    defer shared.deinit();
    const ring = Ring(MapShared){ .shared = &shared };
    const bytes: [page_bytes]u8 = @splat('x');
    const written: u32 = @intCast(page_count + 10);
    for (0..written) |n| try ring.put(digestOf(@intCast(n)), &bytes);
    // Never more keys than the ring, the index and the cursor.
    try std.testing.expect(shared.values.count() <= page_count + index_slots + 1);
    try std.testing.expect(try ring.get(a, digestOf(0)) == null);
    try std.testing.expect(try ring.get(a, digestOf(9)) == null);
    const newest = (try ring.get(a, digestOf(written - 1))).?;
    a.free(newest);
    const oldest_kept = (try ring.get(a, digestOf(10))).?;
    a.free(oldest_kept);
}
