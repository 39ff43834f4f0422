//! Settlements that could not reach Redis, kept for the retry tick so a charge survives an
//! outage up to `capacity` of them. Bounded: past the bound a settlement is refused (the caller
//! counts and logs the dropped charge). The newest is retried first.
const std = @import("std");

pub fn RetryQueue(comptime T: type, comptime capacity: usize) type {
    comptime std.debug.assert(capacity > 0);
    return struct {
        const Self = @This();
        items: std.ArrayList(T) = .empty,

        pub fn len(self: *const Self) usize {
            return self.items.items.len;
        }

        /// Keeps `item`, or returns error.Full (the bound) / error.OutOfMemory; the caller still
        /// owns `item` then.
        pub fn push(self: *Self, allocator: std.mem.Allocator, item: T) error{ Full, OutOfMemory }!void {
            if (self.items.items.len >= capacity) return error.Full;
            try self.items.append(allocator, item);
            std.debug.assert(self.items.items.len <= capacity);
        }

        pub fn pop(self: *Self) ?T {
            return self.items.pop();
        }

        pub fn deinit(self: *Self, allocator: std.mem.Allocator) void {
            self.items.deinit(allocator);
            self.* = undefined;
        }
    };
}

test "retry queue: refuses past its bound and hands back the newest first" {
    var queue: RetryQueue(u32, 2) = .{};
    defer queue.deinit(std.testing.allocator);
    try queue.push(std.testing.allocator, 1);
    try queue.push(std.testing.allocator, 2);
    try std.testing.expectError(error.Full, queue.push(std.testing.allocator, 3));
    try std.testing.expectEqual(@as(?u32, 2), queue.pop());
    try std.testing.expectEqual(@as(?u32, 1), queue.pop());
    try std.testing.expectEqual(@as(?u32, null), queue.pop());
}
