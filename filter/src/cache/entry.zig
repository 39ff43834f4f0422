//! One cached answer as both stores keep it (the local ring and Redis hold the same bytes):
//! a fixed header, then the content type and the body. The header carries the key's digest,
//! so an entry read from a slot or key that now belongs to another request is never served,
//! and its own expiry, so a local entry past its TTL is a miss (Redis also drops it itself).
//!
//!   "TLC1" | digest[32] | stored_at_ms u64 | expires_at_ms u64 | tokens u64 | status u16 |
//!   content_type_len u16 | body_len u32 | content_type | body          (integers little-endian)
const std = @import("std");
const key = @import("key.zig");

pub const magic = "TLC1";
pub const header_bytes = magic.len + 32 + 8 + 8 + 8 + 2 + 2 + 4;
/// Longer content types are not stored (answers carry short ones: `application/json`, ...).
pub const content_type_bytes_max = 256;

pub const Entry = struct {
    digest: key.Digest,
    stored_at_ms: u64,
    expires_at_ms: u64,
    /// What the answer cost when it was fetched: the tokens a hit saves.
    tokens: u64,
    status: u16,
    content_type: []const u8,
    body: []const u8,

    pub fn encodedLen(self: *const Entry) usize {
        return header_bytes + self.content_type.len + self.body.len;
    }

    /// The entry's bytes, in `allocator`'s memory (the caller frees them).
    pub fn encode(self: *const Entry, allocator: std.mem.Allocator) error{OutOfMemory}![]u8 {
        std.debug.assert(self.content_type.len <= content_type_bytes_max);
        std.debug.assert(self.body.len <= std.math.maxInt(u32));
        const bytes = try allocator.alloc(u8, self.encodedLen());
        var at: usize = 0;
        put(bytes, &at, magic);
        put(bytes, &at, &self.digest);
        inline for (.{ self.stored_at_ms, self.expires_at_ms, self.tokens }) |value| putInt(u64, bytes, &at, value);
        putInt(u16, bytes, &at, self.status);
        putInt(u16, bytes, &at, @intCast(self.content_type.len));
        putInt(u32, bytes, &at, @intCast(self.body.len));
        put(bytes, &at, self.content_type);
        put(bytes, &at, self.body);
        std.debug.assert(at == bytes.len);
        return bytes;
    }

    /// The entry in `bytes` (its slices point into them) when it is whole, is `digest`'s and
    /// has not expired at `now_ms`; null otherwise (a miss).
    pub fn decode(bytes: []const u8, digest: key.Digest, now_ms: u64) ?Entry {
        if (bytes.len < header_bytes or !std.mem.eql(u8, bytes[0..magic.len], magic)) return null;
        if (!std.mem.eql(u8, bytes[4..36], &digest)) return null;
        const content_type_len = std.mem.readInt(u16, bytes[62..64], .little);
        const body_len = std.mem.readInt(u32, bytes[64..68], .little);
        if (content_type_len > content_type_bytes_max) return null;
        if (bytes.len != header_bytes + @as(usize, content_type_len) + body_len) return null;
        const entry: Entry = .{
            .digest = digest,
            .stored_at_ms = std.mem.readInt(u64, bytes[36..44], .little),
            .expires_at_ms = std.mem.readInt(u64, bytes[44..52], .little),
            .tokens = std.mem.readInt(u64, bytes[52..60], .little),
            .status = std.mem.readInt(u16, bytes[60..62], .little),
            .content_type = bytes[header_bytes..][0..content_type_len],
            .body = bytes[header_bytes + content_type_len ..],
        };
        if (now_ms >= entry.expires_at_ms) return null;
        return entry;
    }

    /// Whole seconds since the answer was stored (the `Age` header).
    pub fn ageSeconds(self: *const Entry, now_ms: u64) u64 {
        return (now_ms -| self.stored_at_ms) / std.time.ms_per_s;
    }
};

fn put(bytes: []u8, at: *usize, data: []const u8) void {
    @memcpy(bytes[at.*..][0..data.len], data);
    at.* += data.len;
}

fn putInt(comptime T: type, bytes: []u8, at: *usize, value: T) void {
    std.mem.writeInt(T, bytes[at.*..][0..@sizeOf(T)], value, .little);
    at.* += @sizeOf(T);
}

comptime {
    std.debug.assert(header_bytes == 68);
}

test "cache entry: round trip, and a wrong digest, expiry or truncation is a miss" {
    const a = std.testing.allocator;
    const digest: key.Digest = @splat(7);
    const entry: Entry = .{ .digest = digest, .stored_at_ms = 1000, .expires_at_ms = 61_000, .tokens = 42, .status = 200, .content_type = "text/event-stream", .body = "data: {}\n\ndata: [DONE]\n\n" };
    const bytes = try entry.encode(a);
    defer a.free(bytes);
    const read = Entry.decode(bytes, digest, 30_500).?;
    try std.testing.expectEqualStrings(entry.body, read.body);
    try std.testing.expectEqualStrings(entry.content_type, read.content_type);
    try std.testing.expectEqual(@as(u64, 42), read.tokens);
    try std.testing.expectEqual(@as(u16, 200), read.status);
    try std.testing.expectEqual(@as(u64, 29), read.ageSeconds(30_500));
    try std.testing.expect(Entry.decode(bytes, @splat(8), 30_500) == null);
    try std.testing.expect(Entry.decode(bytes, digest, 61_000) == null);
    try std.testing.expect(Entry.decode(bytes[0 .. bytes.len - 1], digest, 30_500) == null);
    try std.testing.expect(Entry.decode("", digest, 0) == null);
}
