//! RESP2, the Redis wire format: commands out (arrays of bulk strings), replies in. One codec for
//! both transports (the bridge forwards these bytes as they are; Higress's proxy_redis_call
//! takes them too). Parsing is bounded and allocation-free: the filter only needs integers,
//! arrays of integers, and errors.
const std = @import("std");

/// Builds one command in a caller-owned list. (Headers are printed into 24-byte buffers, which
/// a usize in decimal plus framing always fits; NoSpaceLeft is still an error, not a panic.)
pub const Command = struct {
    bytes: std.ArrayList(u8) = .empty,

    pub fn deinit(self: *Command, allocator: std.mem.Allocator) void {
        self.bytes.deinit(allocator);
        self.* = undefined;
    }

    /// Starts an array of `count` arguments; then call `arg`/`argInt` exactly `count` times.
    pub fn begin(self: *Command, allocator: std.mem.Allocator, count: usize) !void {
        var header: [24]u8 = undefined;
        try self.bytes.appendSlice(allocator, try std.fmt.bufPrint(&header, "*{d}\r\n", .{count}));
    }

    pub fn arg(self: *Command, allocator: std.mem.Allocator, value: []const u8) !void {
        var header: [24]u8 = undefined;
        try self.bytes.appendSlice(allocator, try std.fmt.bufPrint(&header, "${d}\r\n", .{value.len}));
        try self.bytes.appendSlice(allocator, value);
        try self.bytes.appendSlice(allocator, "\r\n");
    }

    pub fn argInt(self: *Command, allocator: std.mem.Allocator, value: u64) !void {
        var text: [24]u8 = undefined;
        try self.arg(allocator, try std.fmt.bufPrint(&text, "{d}", .{value}));
    }
};

pub const Reply = union(enum) {
    integer: i64,
    /// An array whose elements were all integers; they are in the caller's buffer.
    integers: []const i64,
    /// `-ERR ...`, `-NOSCRIPT ...`, `-WRONGPASS ...`: the text after '-'.
    err: []const u8,
    /// Anything else the filter never asks for (strings, nested arrays, nulls).
    other,
};

pub const ParseError = error{ Incomplete, Malformed };

/// Parses the first reply in `bytes`. Integer arrays longer than `integers_out` are Malformed.
pub fn parseReply(bytes: []const u8, integers_out: []i64) ParseError!Reply {
    var reader = Reader{ .bytes = bytes };
    const kind = try reader.byte();
    switch (kind) {
        ':' => return .{ .integer = try reader.integerLine() },
        '-' => return .{ .err = try reader.line() },
        '+' => {
            _ = try reader.line();
            return .other;
        },
        '$' => return .other,
        '*' => {
            const count = try reader.integerLine();
            if (count < 0) return .other; // null array
            if (count > integers_out.len) return error.Malformed;
            for (integers_out[0..@intCast(count)]) |*out| {
                if (try reader.byte() != ':') return .other;
                out.* = try reader.integerLine();
            }
            return .{ .integers = integers_out[0..@intCast(count)] };
        },
        else => return error.Malformed,
    }
}

const Reader = struct {
    bytes: []const u8,
    at: usize = 0,

    fn byte(self: *Reader) ParseError!u8 {
        if (self.at >= self.bytes.len) return error.Incomplete;
        self.at += 1;
        return self.bytes[self.at - 1];
    }

    fn line(self: *Reader) ParseError![]const u8 {
        const rest = self.bytes[self.at..];
        const end = std.mem.indexOf(u8, rest, "\r\n") orelse return error.Incomplete;
        self.at += end + 2;
        return rest[0..end];
    }

    fn integerLine(self: *Reader) ParseError!i64 {
        return std.fmt.parseInt(i64, try self.line(), 10) catch error.Malformed;
    }
};

test "resp: commands are arrays of bulk strings" {
    var command: Command = .{};
    defer command.deinit(std.testing.allocator);
    try command.begin(std.testing.allocator, 3);
    try command.arg(std.testing.allocator, "EVALSHA");
    try command.arg(std.testing.allocator, "");
    try command.argInt(std.testing.allocator, 42);
    try std.testing.expectEqualStrings("*3\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n$2\r\n42\r\n", command.bytes.items);
}

test "resp: replies the filter reads" {
    var integers: [8]i64 = undefined;
    try std.testing.expectEqual(@as(i64, 7), (try parseReply(":7\r\n", &integers)).integer);
    const array = (try parseReply("*3\r\n:0\r\n:-5\r\n:1700000000000\r\n", &integers)).integers;
    try std.testing.expectEqualSlices(i64, &.{ 0, -5, 1_700_000_000_000 }, array);
    try std.testing.expectEqualStrings("NOSCRIPT No matching script", (try parseReply("-NOSCRIPT No matching script\r\n", &integers)).err);
    try std.testing.expect(try parseReply("+OK\r\n", &integers) == .other);
    try std.testing.expect(try parseReply("*2\r\n$1\r\na\r\n:1\r\n", &integers) == .other);
    try std.testing.expectError(error.Incomplete, parseReply("*2\r\n:1\r\n", &integers));
    try std.testing.expectError(error.Malformed, parseReply("*9\r\n", &integers));
    try std.testing.expectError(error.Malformed, parseReply(":x\r\n", &integers));
    try std.testing.expectError(error.Malformed, parseReply("?", &integers));
    try std.testing.expectError(error.Incomplete, parseReply("", &integers));
}
