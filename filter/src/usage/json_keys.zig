//! The object keys a JSON scanner handler asks about (json_scan.zig), packed so that a key is
//! matched once, when its closing quote passes, to a one-byte id (issue 17).
const std = @import("std");
const slices = @import("../match/bytes.zig");
const key_bytes_max = @import("json_scan.zig").key_bytes_max;

/// The keys of `Key` (every field but the first, `none`), packed for `find`: their texts end to
/// end, shortest first, and per length the first of them (a few hundred bytes of data; a table
/// of slices per length was ten times that, issue 17 watches the module's size).
pub fn KeyTable(comptime Key: type) type {
    const info = @typeInfo(Key).@"enum";
    const count = info.field_names.len - 1;
    comptime {
        std.debug.assert(std.mem.eql(u8, info.field_names[0], "none"));
        std.debug.assert(count < 256);
        for (info.field_names[1..]) |name| std.debug.assert(name.len > 0 and name.len <= key_bytes_max);
    }
    return struct {
        /// Indexes (into the enum's fields, less one) in order of length.
        const order = sorted: {
            var indexes: [count]u8 = undefined;
            for (&indexes, 0..) |*index, at| index.* = at;
            std.mem.sortUnstable(u8, &indexes, {}, struct {
                fn shorter(_: void, a: u8, b: u8) bool {
                    return info.field_names[a + 1].len < info.field_names[b + 1].len;
                }
            }.shorter);
            break :sorted indexes;
        };
        const texts = joined: {
            var all: []const u8 = "";
            for (order) |index| all = all ++ info.field_names[index + 1];
            break :joined all;
        };
        const keys = ids: {
            var ids: [count]Key = undefined;
            for (order, &ids) |index, *id| id.* = @fromBackingInt(@intCast(info.field_values[index + 1]));
            break :ids ids;
        };
        /// first[n]: the position in `order` of the first key at least n bytes long; the keys
        /// n bytes long are first[n]..first[n + 1], their texts from text_at[n] on.
        const first = starts: {
            var positions: [key_bytes_max + 2]u8 = undefined;
            var at: usize = 0;
            for (&positions, 0..) |*position, len| {
                position.* = at;
                while (at < count and info.field_names[order[at] + 1].len == len) at += 1;
            }
            break :starts positions;
        };
        const text_at = offsets: {
            var offsets: [key_bytes_max + 1]u16 = undefined;
            var offset: usize = 0;
            for (&offsets, 0..) |*at, len| {
                at.* = offset;
                offset += len * (first[len + 1] - first[len]);
            }
            break :offsets offsets;
        };

        /// The id of the key `text` (at most `key_bytes_max` bytes), `.none` when not asked about.
        pub fn find(text: []const u8) Key {
            var offset: usize = text_at[text.len];
            for (first[text.len]..first[text.len + 1]) |at| {
                // The first byte first: most keys of a matching length differ there, and
                // that spares the call.
                if (texts[offset] == text[0] and slices.eql(texts[offset..][0..text.len], text)) return keys[at];
                offset += text.len;
            }
            return .none;
        }
    };
}

test "json keys: every key of the enum is found, by its text only" {
    const Key = enum(u8) { none, a, bb, cc, usage, prompt_tokens, cached_tokens, @"with space" };
    const table = KeyTable(Key);
    inline for (comptime std.meta.fieldNames(Key)[1..]) |name| {
        try std.testing.expectEqual(@field(Key, name), table.find(name));
    }
    const long: [key_bytes_max]u8 = @splat('x');
    for ([_][]const u8{ "", "none", "b", "ba", "usagE", "prompt_tokenz", &long }) |text| {
        try std.testing.expectEqual(Key.none, table.find(text));
    }
}
