//! Near the limit (issue 13): a rule's `when_exhausted`, `pace_above` and `priority`. A spent
//! budget is answered by waiting for room, pacing, lanes or a cheaper model instead of an
//! immediate 429 (docs/config.md, "Near the limit"). The types live here, beside their parser,
//! so the shared config.zig gains one field (`Rule.near_limit`) and nothing else.
//! (Its field parsers are `noinline`: parse.zig says why.)
const std = @import("std");
const bounds = @import("limits");
const json_tree = @import("json_tree.zig");
const parse_items = @import("parse_items.zig");
const reader_zig = @import("reader.zig");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;
const Reader = reader_zig.Reader;
const ParseError = reader_zig.ParseError;

/// What a spent budget gets: today's 429, a wait for room, or a cheaper model.
pub const Action = enum { reject, wait, downgrade };

/// Priority lanes, in the order waiting requests are released.
pub const Lane = enum(u2) {
    high = 0,
    normal = 1,
    low = 2,

    pub fn fromHeader(value: []const u8) Lane {
        const trimmed = std.mem.trim(u8, value, " \t");
        inline for (comptime std.meta.tags(Lane)) |lane| {
            if (std.ascii.eqlIgnoreCase(trimmed, @tagName(lane))) return lane;
        }
        return .normal; // absent or unknown: normal (a client cannot claim a lane that is not one)
    }
};

pub const max_wait_ms_default = 5000;
pub const max_queued_default = 10000;

comptime {
    std.debug.assert(max_wait_ms_default <= bounds.wait_ms_max);
    std.debug.assert(max_queued_default <= bounds.wait_queued_max);
    std.debug.assert(bounds.wait_ms_max <= std.math.maxInt(u32));
    std.debug.assert(bounds.wait_queued_max <= std.math.maxInt(u32));
}

pub const NearLimit = struct {
    action: Action = .reject,
    /// wait (and pace_above): the longest a request is held; past it, today's 429.
    max_wait_ms: u32 = max_wait_ms_default,
    /// wait: requests one worker holds at most; past it, rejected at once.
    max_queued: u32 = max_queued_default,
    /// downgrade: `max_wait_ms` was written, so a downgrade whose budget is spent too waits
    /// (else it is rejected).
    downgrade_waits: bool = false,
    /// downgrade: the model the request is sent with instead.
    model: []const u8 = "",
    /// `pace_above`: thousandths of a budget above which admissions are spaced out (0: off).
    pace_above_milli: u32 = 0,
    /// `priority.header`, lower-cased ("" : no lanes).
    priority_header: []const u8 = "",
    /// `priority.reserved`: thousandths of every budget kept for each lane and those above it
    /// (indexed by Lane; `low` keeps nothing: no lane is below it).
    reserved_milli: [3]u32 = .{ 0, 0, 0 },

    /// Whether a spent budget holds the request (wait, or a downgrade that may wait).
    pub fn waits(self: *const NearLimit) bool {
        return self.action == .wait or (self.action == .downgrade and self.downgrade_waits);
    }

    /// Thousandths of every limit a lane sees: what the lanes above it reserve is held back.
    pub fn laneShareMilli(self: *const NearLimit, lane: Lane) u32 {
        var held: u32 = 0;
        for (self.reserved_milli[0..@backingInt(lane)]) |share| held += share;
        std.debug.assert(held < 1000);
        return 1000 - held;
    }
};

/// The rule-level fields this file reads (parse.zig lists them among the rule's fields).
pub const rule_fields = [_][]const u8{ "when_exhausted", "pace_above", "priority" };

pub const Fields = struct {
    reader: *Reader,
    arena: std.mem.Allocator,

    noinline fn items(self: Fields) parse_items.Items {
        return .{ .reader = self.reader, .arena = self.arena };
    }

    /// Reads the three fields of a rule's map (all optional).
    pub noinline fn read(self: Fields, map: ObjectMap) ParseError!NearLimit {
        var near: NearLimit = .{};
        if (map.get("when_exhausted")) |value| try self.whenExhausted(value, &near);
        if (map.get("pace_above")) |value| {
            const saved = self.reader.enter("pace_above");
            near.pace_above_milli = try self.items().milli(value);
            if (near.pace_above_milli == 0 or near.pace_above_milli >= 1000) return self.reader.fail("must be a fraction greater than 0 and less than 1, with at most 3 decimals", .{});
            self.reader.leave(saved);
        }
        if (map.get("priority")) |value| try self.priority(value, &near);
        return near;
    }

    noinline fn whenExhausted(self: Fields, value: Value, near: *NearLimit) ParseError!void {
        const saved = self.reader.enter("when_exhausted");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.refuseUnknown(map, &.{ "action", "max_wait_ms", "max_queued", "model" });
        if (map.get("action")) |action| near.action = try self.reader.enumField(Action, "action", action);
        if (map.get("max_wait_ms")) |wait| {
            const saved_field = self.reader.enter("max_wait_ms");
            near.max_wait_ms = @intCast(try self.reader.jsonInteger(wait, 1, bounds.wait_ms_max));
            near.downgrade_waits = true;
            self.reader.leave(saved_field);
        }
        if (map.get("max_queued")) |queued| {
            const saved_field = self.reader.enter("max_queued");
            near.max_queued = @intCast(try self.reader.jsonInteger(queued, 1, bounds.wait_queued_max));
            self.reader.leave(saved_field);
        }
        if (map.get("model")) |model| {
            const saved_field = self.reader.enter("model");
            if (near.action != .downgrade) return self.reader.fail("is the model of action downgrade; action is {s}", .{@tagName(near.action)});
            near.model = try self.reader.string(model, bounds.model_bytes_max);
            if (near.model.len == 0) return self.reader.fail("must not be empty", .{});
            for (near.model) |c| {
                if (c < ' ' or c >= 0x7f or c == '"' or c == '\\') return self.reader.fail("must be printable ASCII without quotes or backslashes", .{});
            }
            self.reader.leave(saved_field);
        } else if (near.action == .downgrade) {
            return self.reader.failField("model", "is required with action downgrade (the model the request is sent with instead)", .{});
        }
    }

    noinline fn priority(self: Fields, value: Value, near: *NearLimit) ParseError!void {
        const saved = self.reader.enter("priority");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.refuseUnknown(map, &.{ "header", "reserved" });
        const header = map.get("header") orelse return self.reader.failField("header", "is required (the request header that names the lane: high, normal or low)", .{});
        {
            const saved_field = self.reader.enter("header");
            const name = try self.reader.string(header, bounds.source_name_bytes_max);
            if (name.len == 0) return self.reader.fail("must not be empty", .{});
            near.priority_header = try std.ascii.allocLowerString(self.arena, name);
            self.reader.leave(saved_field);
        }
        const reserved_value = map.get("reserved") orelse return;
        const saved_reserved = self.reader.enter("reserved");
        const reserved = try self.reader.object(reserved_value);
        try self.reader.refuseUnknown(reserved, &.{ "high", "normal" });
        var total: u32 = 0;
        inline for (.{ Lane.high, Lane.normal }) |lane| {
            if (reserved.get(@tagName(lane))) |share_value| {
                const saved_lane = self.reader.enter(@tagName(lane));
                const share = try self.items().milli(share_value);
                if (share == 0 or share >= 1000) return self.reader.fail("must be a fraction greater than 0 and less than 1, with at most 3 decimals", .{});
                near.reserved_milli[@backingInt(lane)] = share;
                total += share;
                self.reader.leave(saved_lane);
            }
        }
        if (total >= 1000) return self.reader.fail("the reserved shares add up to {d}.{d:0>3}; they must leave the low lane something (less than 1 in all)", .{ total / 1000, total % 1000 });
        self.reader.leave(saved_reserved);
    }
};

const testing = std.testing;

test "near limit: a lane sees its limit less what the lanes above it reserve" {
    const near = NearLimit{ .reserved_milli = .{ 200, 100, 0 } };
    try testing.expectEqual(@as(u32, 1000), near.laneShareMilli(.high));
    try testing.expectEqual(@as(u32, 800), near.laneShareMilli(.normal));
    try testing.expectEqual(@as(u32, 700), near.laneShareMilli(.low));
}

test "near limit: a lane header reads high, normal or low; anything else is normal" {
    try testing.expectEqual(Lane.high, Lane.fromHeader(" HIGH "));
    try testing.expectEqual(Lane.low, Lane.fromHeader("low"));
    try testing.expectEqual(Lane.normal, Lane.fromHeader("urgent"));
    try testing.expectEqual(Lane.normal, Lane.fromHeader(""));
}

test "near limit: downgrade waits only when max_wait_ms is written" {
    try testing.expect(!(NearLimit{ .action = .downgrade, .model = "m" }).waits());
    try testing.expect((NearLimit{ .action = .downgrade, .model = "m", .downgrade_waits = true }).waits());
    try testing.expect((NearLimit{ .action = .wait }).waits());
}
