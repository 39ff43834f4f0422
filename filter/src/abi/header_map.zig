//! The header-map wire format of Proxy-Wasm 0.2.1 (proxy_send_local_response, proxy_http_call),
//! written into a caller's buffer: no allocation, and pinned by a golden byte vector below.
const std = @import("std");

/// Serializes headers in the spec's format into a caller-provided buffer:
/// u32 count, (u32 name_len, u32 value_len) per pair, then each name and value NUL-terminated.
pub fn HeaderMapWriter(comptime pairs_max: usize) type {
    return struct {
        const Self = @This();
        names: [pairs_max][]const u8 = undefined,
        values: [pairs_max][]const u8 = undefined,
        count: usize = 0,

        pub fn add(self: *Self, name: []const u8, value: []const u8) void {
            std.debug.assert(self.count < pairs_max);
            self.names[self.count] = name;
            self.values[self.count] = value;
            self.count += 1;
        }

        pub fn serializedSize(self: *const Self) usize {
            var size: usize = 4 + 8 * self.count;
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                size += name.len + 1 + value.len + 1;
            }
            return size;
        }

        pub fn write(self: *const Self, out: []u8) error{NoSpaceLeft}![]u8 {
            const size = self.serializedSize();
            if (out.len < size) return error.NoSpaceLeft;
            std.mem.writeInt(u32, out[0..4], @intCast(self.count), .little);
            var at: usize = 4;
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                std.mem.writeInt(u32, out[at..][0..4], @intCast(name.len), .little);
                std.mem.writeInt(u32, out[at + 4 ..][0..4], @intCast(value.len), .little);
                at += 8;
            }
            for (self.names[0..self.count], self.values[0..self.count]) |name, value| {
                @memcpy(out[at..][0..name.len], name);
                out[at + name.len] = 0;
                at += name.len + 1;
                @memcpy(out[at..][0..value.len], value);
                out[at + value.len] = 0;
                at += value.len + 1;
            }
            std.debug.assert(at == size);
            return out[0..size];
        }
    };
}

test "header map wire format matches the spec's byte layout" {
    var writer: HeaderMapWriter(2) = .{};
    writer.add("a", "bc");
    writer.add("retry-after", "7");
    var buffer: [64]u8 = undefined;
    const bytes = try writer.write(&buffer);
    const expected = [_]u8{
        2, 0, 0, 0, // two pairs
        1, 0, 0, 0, 2, 0, 0, 0, // "a" → "bc"
        11, 0, 0, 0, 1, 0, 0, 0, // "retry-after" → "7"
    } ++ "a\x00bc\x00retry-after\x007\x00".*;
    try std.testing.expectEqualSlices(u8, &expected, bytes);
}
