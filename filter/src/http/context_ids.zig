//! Hash-map contexts for tables keyed by Envoy's context ids (issue 17). std's AutoHashMap
//! hashes a u32 with wyhash, whose 64x64->128-bit multiply is a compiler-rt call on wasm32;
//! every callback looks its context up, so a plain request paid for ~7 of them. Context ids are
//! small sequential integers: a Fibonacci multiply spreads them well (one native i64 multiply).
const std = @import("std");

pub const IdContext = struct {
    pub fn hash(_: IdContext, id: u32) u64 {
        return @as(u64, id) *% 0x9E3779B97F4A7C15;
    }

    pub fn eql(_: IdContext, a: u32, b: u32) bool {
        return a == b;
    }
};

/// A map from context id to `V` (the same as std.AutoHashMapUnmanaged(u32, V) but for the hash).
pub fn Map(comptime V: type) type {
    return std.HashMapUnmanaged(u32, V, IdContext, std.hash_map.default_max_load_percentage);
}

test "context ids: sequential ids land in distinct buckets and are found again" {
    var map: Map(u32) = .empty;
    defer map.deinit(std.testing.allocator);
    for (1..2000) |id| try map.put(std.testing.allocator, @intCast(id), @intCast(id * 3));
    for (1..2000) |id| try std.testing.expectEqual(@as(?u32, @intCast(id * 3)), map.get(@intCast(id)));
    try std.testing.expect(map.get(0) == null);
    try std.testing.expect(map.get(5000) == null);
}
