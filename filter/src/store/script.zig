//! The budget script's protocol (contract/budget.lua): the arguments of `admit` and `settle`
//! as RESP, and the meaning of its replies. Pure, so the wire format is tested here without a
//! host; redis.zig sends what this builds.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const calendar = @import("../meter/calendar.zig");
const counter_key = @import("../meter/counter.zig");
const resp = @import("resp.zig");
const store = @import("store.zig");

/// calendar.lua first: budget.lua calls its calendar_bounds (contract/calendar.lua says why
/// one script, joined). The bridge allows this joined script by its SHA (bridge/guard.py).
pub const source = @embedFile("calendar.lua") ++ @embedFile("budget.lua");
/// EVALSHA name, computed at build time (no SHA-1 code in the module).
pub const sha: [40]u8 = blk: {
    @setEvalBranchQuota(1_000_000);
    var digest: [20]u8 = undefined;
    std.crypto.hash.Sha1.hash(source, &digest, .{});
    break :blk std.fmt.bytesToHex(digest, .lower);
};

/// The longest reply the script returns: a lease reply (an admit reply and a grant a counter,
/// lease.zig) for `reply_counters_max` counters with
/// every integer at its longest (`:-9223372036854775808\r\n`, 23 bytes). The transports read no
/// more than this; a longer reply (a broken or hostile peer) is a bad reply, never copied.
pub const reply_bytes_max = "*99999\r\n".len + (2 + 4 * counter_key.reply_counters_max) * ":-9223372036854775808\r\n".len;

comptime {
    std.debug.assert(reply_bytes_max < 64 * 1024);
}

/// Longest request id kept in a marker key (longer ids are cut: the id only has to be unique).
pub const request_id_bytes_max = 96;

/// A request's marker key: `tokenlimit:{<rule>}:req:<id>`, under the counters' hash tag (so
/// the script runs on one Redis Cluster slot). The script applies each request's admission,
/// settlement and release once by it (contract/budget.lua, "Idempotence").
pub const MarkerKey = struct {
    bytes: [160 + "req:".len + request_id_bytes_max]u8 = undefined,
    len: usize = 0,

    pub fn init(first_counter_key: []const u8, request_id: []const u8) MarkerKey {
        const prefix = hashTag(first_counter_key);
        const id = request_id[0..@min(request_id.len, request_id_bytes_max)];
        var key: MarkerKey = .{};
        const text = std.fmt.bufPrint(&key.bytes, "{s}req:{s}", .{ prefix, id }) catch unreachable; // 160 + 4 + id fits
        key.len = text.len;
        return key;
    }

    pub fn slice(self: *const MarkerKey) []const u8 {
        return self.bytes[0..self.len];
    }
};

/// Everything after the script argument of an admit call: numkeys, keys (the counters', then
/// the request's marker), then `admit 0 force` (0: use the server's clock) and (algorithm,
/// window_ms, limit, amount) per counter.
pub fn admitArguments(allocator: std.mem.Allocator, counters: []const store.Counter, force: bool, marker: MarkerKey) ![]u8 {
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(allocator, &tail, counters, marker);
    try tail.arg(allocator, "admit");
    try tail.argInt(allocator, 0);
    try appendAdmission(allocator, &tail, counters, force);
    return tail.bytes.toOwnedSlice(allocator);
}

/// As admitArguments, with queued settlements (appendBatchEntry's keys and arguments) applied
/// first in the same call: budget.lua `batch_admit` (issue 17: one script call per request).
pub fn batchAdmitArguments(allocator: std.mem.Allocator, keys: []const u8, key_count: usize, arguments: []const u8, entries: usize, counters: []const store.Counter, force: bool, marker: MarkerKey) ![]u8 {
    std.debug.assert(entries > 0 and key_count >= 2 * entries);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, key_count + counters.len + 1);
    try tail.bytes.appendSlice(allocator, keys);
    for (counters) |counter| try tail.arg(allocator, counter.key.slice());
    try tail.arg(allocator, marker.slice());
    try tail.arg(allocator, "batch_admit");
    try tail.argInt(allocator, 0);
    try tail.argInt(allocator, entries);
    try tail.bytes.appendSlice(allocator, arguments);
    try appendAdmission(allocator, &tail, counters, force);
    return tail.bytes.toOwnedSlice(allocator);
}

/// Keys and arguments an admission of `counter_count` counters adds to a call (a zone table
/// counted in).
pub fn admissionSize(counter_count: usize) usize {
    return (counter_count + 1) + 1 + 4 * counter_count + 1;
}

/// An admission's arguments from the force flag on: (algorithm, window, limit, amount) per
/// counter, then the zone table when a window is a calendar one.
fn appendAdmission(allocator: std.mem.Allocator, tail: *resp.Command, counters: []const store.Counter, force: bool) !void {
    try tail.argInt(allocator, @intFromBool(force));
    for (counters) |counter| {
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try windowArgument(allocator, tail, counter.budget);
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, counter.admit_amount);
    }
    try appendZone(allocator, tail, counters);
}

/// As admitArguments for a settle call: `settle 0`, then (algorithm, window_ms, limit,
/// reserved, actual) per counter, then the admission time.
pub fn settleArguments(allocator: std.mem.Allocator, counters: []const store.Counter, actual_tokens: u64, marker: MarkerKey) ![]u8 {
    return settlement(allocator, "settle", counters, marker, .{ .tokens = actual_tokens, .reserved_as_read = true });
}

/// A release: the request gave up on its admission (no answer in time, or the client left).
/// What the admission reserved goes back if it ran (request counters too, unless the request
/// still counts: `keep_requests`); if it has not run yet, it reserves nothing when it does.
pub fn releaseArguments(allocator: std.mem.Allocator, counters: []const store.Counter, marker: MarkerKey, keep_requests: bool) ![]u8 {
    return settlement(allocator, "release", counters, marker, .{ .tokens = 0, .release_requests = !keep_requests });
}

const Actual = struct {
    tokens: u64,
    release_requests: bool = false,
    /// The reservation as the admit reply said (settle), or as the script makes it when it
    /// applies the admission (release: the reply may never have been read).
    reserved_as_read: bool = false,
};

fn settlement(allocator: std.mem.Allocator, operation: []const u8, counters: []const store.Counter, marker: MarkerKey, actual: Actual) ![]u8 {
    std.debug.assert(counters.len > 0);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try appendKeys(allocator, &tail, counters, marker);
    try tail.arg(allocator, operation);
    try tail.argInt(allocator, 0);
    try appendSettled(allocator, &tail, counters, actual);
    try tail.argInt(allocator, counters[0].admitted_at_ms);
    try appendZone(allocator, &tail, counters);
    return tail.bytes.toOwnedSlice(allocator);
}

/// (algorithm, window, limit, reserved, actual) per counter, as settle and settle_batch read them.
fn appendSettled(allocator: std.mem.Allocator, tail: *resp.Command, counters: []const store.Counter, actual: Actual) !void {
    for (counters) |counter| {
        const reserved = if (actual.reserved_as_read) counter.reserved else @min(counter.admit_amount, counter.budget.limit);
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try windowArgument(allocator, tail, counter.budget);
        try tail.argInt(allocator, counter.budget.limit);
        try tail.argInt(allocator, reserved);
        const cost = switch (counter.unit) {
            .tokens => actual.tokens,
            .cost => if (actual.reserved_as_read) counter.actual_cost else 0, // a release gives it all back
            .requests => if (actual.release_requests) 0 else reserved,
        };
        try tail.argInt(allocator, cost);
    }
}

/// One entry of a settle_batch call (contract/budget.lua): its keys (the counters', then the
/// request's marker) go to `keys`, its arguments (`settle`, counter count, admission time, zone
/// table or '', then 5 per counter) to `arguments`. A settlement is the same numbers as its own
/// settle call would carry, so batching changes when a charge lands, never what it is.
pub fn appendBatchEntry(allocator: std.mem.Allocator, keys: *resp.Command, arguments: *resp.Command, counters: []const store.Counter, actual_tokens: u64, marker: MarkerKey) !void {
    std.debug.assert(counters.len > 0);
    for (counters) |counter| try keys.arg(allocator, counter.key.slice());
    try keys.arg(allocator, marker.slice());
    try arguments.arg(allocator, "settle");
    try arguments.argInt(allocator, counters.len);
    try arguments.argInt(allocator, counters[0].admitted_at_ms);
    var zone: resp.Command = .{};
    defer zone.deinit(allocator);
    try appendZone(allocator, &zone, counters);
    if (zone.bytes.items.len == 0) try arguments.arg(allocator, "") else try arguments.bytes.appendSlice(allocator, zone.bytes.items);
    try appendSettled(allocator, arguments, counters, .{ .tokens = actual_tokens, .reserved_as_read = true });
}

/// Keys and arguments (RESP bulk strings) one batch entry of `counters` adds to a call.
pub fn batchEntrySize(counter_count: usize) struct { keys: usize, arguments: usize } {
    return .{ .keys = counter_count + 1, .arguments = 4 + 5 * counter_count };
}

/// The tail (after the script argument) of a settle_batch call of `entries` entries whose keys
/// and arguments were appended by appendBatchEntry.
pub fn batchArguments(allocator: std.mem.Allocator, keys: []const u8, key_count: usize, arguments: []const u8, entries: usize) ![]u8 {
    std.debug.assert(entries > 0 and key_count >= 2 * entries);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, key_count);
    try tail.bytes.appendSlice(allocator, keys);
    try tail.arg(allocator, "settle_batch");
    try tail.argInt(allocator, 0);
    try tail.argInt(allocator, entries);
    try tail.bytes.appendSlice(allocator, arguments);
    return tail.bytes.toOwnedSlice(allocator);
}

/// One admission of an admit_many call (admission coalescing, issue 17; contract/budget.lua):
/// its keys (the counters', then the request's marker) go to `keys`, its arguments (counter
/// count, force flag, (algorithm, window, limit, amount) per counter, zone table or '') to
/// `arguments`. The numbers are the ones its own admit call would carry.
pub fn appendAdmissionEntry(allocator: std.mem.Allocator, keys: *resp.Command, arguments: *resp.Command, counters: []const store.Counter, force: bool, marker: MarkerKey) !void {
    std.debug.assert(counters.len > 0);
    for (counters) |counter| try keys.arg(allocator, counter.key.slice());
    try keys.arg(allocator, marker.slice());
    try arguments.argInt(allocator, counters.len);
    const zone_at = arguments.bytes.items.len;
    try appendAdmission(allocator, arguments, counters, force);
    // appendAdmission ends with the zone table only when a window needs one; here it is always there.
    if (countArguments(arguments.bytes.items[zone_at..]) == 1 + 4 * counters.len) try arguments.arg(allocator, "");
}

/// Keys and arguments (RESP bulk strings) one admit_many admission of `counter_count`
/// counters adds to a call.
pub fn admissionEntrySize(counter_count: usize) struct { keys: usize, arguments: usize } {
    return .{ .keys = counter_count + 1, .arguments = 3 + 4 * counter_count };
}

/// Keys and arguments already encoded (appendBatchEntry's, appendAdmissionEntry's) and how
/// many entries they hold.
pub const Encoded = struct { keys: []const u8 = "", key_count: usize = 0, arguments: []const u8 = "", entries: usize = 0 };

/// The tail (after the script argument) of an admit_many call: the queued `settlements` (none:
/// an empty Encoded), then the `admissions`, in order.
pub fn admitManyArguments(allocator: std.mem.Allocator, settlements: Encoded, admissions: Encoded) ![]u8 {
    std.debug.assert(admissions.entries > 0 and admissions.key_count >= 2 * admissions.entries);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, settlements.key_count + admissions.key_count);
    try tail.bytes.appendSlice(allocator, settlements.keys);
    try tail.bytes.appendSlice(allocator, admissions.keys);
    try tail.arg(allocator, "admit_many");
    try tail.argInt(allocator, 0);
    try tail.argInt(allocator, settlements.entries);
    try tail.bytes.appendSlice(allocator, settlements.arguments);
    try tail.argInt(allocator, admissions.entries);
    try tail.bytes.appendSlice(allocator, admissions.arguments);
    return tail.bytes.toOwnedSlice(allocator);
}

/// A `peek` (the usage endpoint, issue 16): numkeys and the counters' keys (no marker: a peek
/// writes nothing), `peek 0`, then (algorithm, window_ms, limit) per counter and the zone table
/// when a window needs one. Each counter's `admitted_at_ms` is the time the zone table is for.
pub fn peekArguments(allocator: std.mem.Allocator, counters: []const store.Counter) ![]u8 {
    std.debug.assert(counters.len > 0);
    var tail: resp.Command = .{};
    errdefer tail.deinit(allocator);
    try tail.argInt(allocator, counters.len);
    for (counters) |counter| try tail.arg(allocator, counter.key.slice());
    try tail.arg(allocator, "peek");
    try tail.argInt(allocator, 0);
    for (counters) |counter| {
        try tail.argInt(allocator, @backingInt(counter.budget.algorithm));
        try windowArgument(allocator, &tail, counter.budget);
        try tail.argInt(allocator, counter.budget.limit);
    }
    try appendZone(allocator, &tail, counters);
    return tail.bytes.toOwnedSlice(allocator);
}

/// Reads a peek reply into the counters' `check`: the server's time, then (used, remaining,
/// reset_ms) per counter. False for a reply of the wrong shape (network input: never asserted).
pub fn readPeekReply(counters: []store.Counter, values: []const i64) bool {
    if (values.len != 1 + 3 * counters.len) return false;
    for (counters, 0..) |*counter, index| {
        const used = values[1 + 3 * index];
        const reset_ms = values[3 + 3 * index];
        if (used < 0 or reset_ms < 0) return false;
        counter.check = .{ .limit = counter.budget.limit, .used = @intCast(used), .reset_in_ms = @intCast(reset_ms) };
    }
    return true;
}

/// The `{rule}:` hash tag prefix of a counter key (`tokenlimit:{rule}:`), which every key of a
/// call must share (one Redis Cluster slot); empty for a key without one.
pub fn hashTag(key: []const u8) []const u8 {
    const tag_end = if (std.mem.indexOf(u8, key, "}:")) |end| end + 2 else 0;
    return key[0..@min(tag_end, 160)];
}

/// A counter's window as budget.lua reads it: the length in ms, or for a calendar window
/// its code (-1 hour, -2 day, -3 week, -4 month; the zone table ends the call).
fn windowArgument(allocator: std.mem.Allocator, tail: *resp.Command, b: budget.Budget) !void {
    if (!b.window.isCalendar(b.zone)) return tail.argInt(allocator, b.window.lengthMs());
    const code: u8 = @backingInt(b.window) - 1; // hour 2 -> 1 ... month 5 -> 4
    var text: [4]u8 = undefined;
    try tail.arg(allocator, std.fmt.bufPrint(&text, "-{d}", .{code}) catch unreachable);
}

/// How far around the call's time the zone table is sent: a month either way plus the clock
/// skew tolerated between a gateway and Redis (the script's clock decides the window).
pub const zone_margin_ms: u64 = 40 * std.time.ms_per_day;

/// The last argument when any counter has a calendar window: `from_ms:offset_s,...`, the
/// entries of the rule's table around now (every counter of a call shares the rule's zone).
fn appendZone(allocator: std.mem.Allocator, tail: *resp.Command, counters: []const store.Counter) !void {
    const first = for (counters) |counter| {
        if (counter.budget.window.isCalendar(counter.budget.zone)) break counter;
    } else return;
    const table = (first.budget.zone orelse calendar.Table.utc).around(first.admitted_at_ms, zone_margin_ms);
    var text: std.ArrayList(u8) = .empty;
    defer text.deinit(allocator);
    for (table.transitions, 0..) |transition, index| {
        var entry: [48]u8 = undefined;
        try text.appendSlice(allocator, std.fmt.bufPrint(&entry, "{s}{d}:{d}", .{ if (index > 0) "," else "", transition.from_ms, transition.offset_s }) catch unreachable);
    }
    try tail.arg(allocator, text.items);
}

fn appendKeys(allocator: std.mem.Allocator, tail: *resp.Command, counters: []const store.Counter, marker: MarkerKey) !void {
    try tail.argInt(allocator, counters.len + 1);
    for (counters) |counter| try tail.arg(allocator, counter.key.slice());
    try tail.arg(allocator, marker.slice());
}

/// The whole command: EVALSHA (or EVAL with the source, once Redis said NOSCRIPT) + arguments.
pub fn command(allocator: std.mem.Allocator, arguments: []const u8, as_eval: bool) ![]u8 {
    var out: resp.Command = .{};
    errdefer out.deinit(allocator);
    try out.begin(allocator, 2 + countArguments(arguments));
    try out.arg(allocator, if (as_eval) "EVAL" else "EVALSHA");
    try out.arg(allocator, if (as_eval) source else &sha);
    try out.bytes.appendSlice(allocator, arguments);
    return out.bytes.toOwnedSlice(allocator);
}

/// Number of RESP bulk strings in an encoded argument list (each starts with '$' at a line
/// start). The list was built by this file or higress_compat.zig, so its shape is asserted.
pub fn countArguments(tail: []const u8) usize {
    var count: usize = 0;
    var at: usize = 0;
    while (at < tail.len) {
        std.debug.assert(tail[at] == '$');
        const line_end = std.mem.indexOfPos(u8, tail, at, "\r\n") orelse break;
        const length = std.fmt.parseInt(usize, tail[at + 1 .. line_end], 10) catch break;
        at = line_end + 2 + length + 2;
        count += 1;
    }
    return count;
}

/// What an error reply means for the call.
pub const ErrorReply = enum { no_script, auth_failed, other };

pub fn classifyError(text: []const u8) ErrorReply {
    if (std.mem.startsWith(u8, text, "NOSCRIPT")) return .no_script;
    if (std.mem.startsWith(u8, text, "WRONGPASS") or std.mem.startsWith(u8, text, "NOAUTH")) return .auth_failed;
    return .other;
}

/// Reads an admit reply into the counters: refused index (1-based, 0 = none), the server's
/// time, then (used, limit, reset_ms) per counter. Fills each counter's check and reservation
/// (what the script added: every amount when admitted or forced, nothing when refused).
/// Returns the admission, or a failure for a reply of the wrong shape (network input: never
/// asserted).
pub fn readAdmitReply(counters: []store.Counter, values: []const i64, forced: bool) store.Admission {
    if (values.len != 2 + 3 * counters.len) return .{ .failed = .bad_reply };
    // Compared as u64: usize is 32 bits in the module, and an index past it must not wrap.
    const refused_index: u64 = @intCast(@max(values[0], 0));
    const server_now_ms: u64 = @intCast(@max(values[1], 0));
    for (counters, 0..) |*counter, i| {
        counter.admitted_at_ms = server_now_ms;
        counter.check = .{
            .used = @intCast(@max(values[2 + 3 * i], 0)),
            .limit = @intCast(@max(values[3 + 3 * i], 1)),
            .reset_in_ms = @intCast(@max(values[4 + 3 * i], 0)),
        };
        const applied = refused_index == 0 or forced;
        counter.reserved = if (applied) @min(counter.admit_amount, counter.budget.limit) else 0;
    }
    if (refused_index > counters.len) return .{ .failed = .bad_reply };
    return .{ .decided = if (refused_index == 0) null else @intCast(refused_index - 1) };
}

const testing = std.testing;

fn testCounter(key: []const u8, unit: @FieldType(store.Counter, "unit"), limit: u64, amount: u64) store.Counter {
    var counter: store.Counter = .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = limit }, .unit = unit, .admit_amount = amount };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

test "script: admit arguments name every key, then the operation and each counter's budget" {
    const counters = [_]store.Counter{testCounter("k", .tokens, 300, 40)};
    const tail = try admitArguments(testing.allocator, &counters, true, MarkerKey.init("k", "id"));
    defer testing.allocator.free(tail);
    try testing.expectEqualStrings("$1\r\n2\r\n$1\r\nk\r\n$6\r\nreq:id\r\n$5\r\nadmit\r\n$1\r\n0\r\n$1\r\n1\r\n" ++
        "$1\r\n0\r\n$5\r\n60000\r\n$3\r\n300\r\n$2\r\n40\r\n", tail);
    const whole = try command(testing.allocator, tail, false);
    defer testing.allocator.free(whole);
    try testing.expect(std.mem.startsWith(u8, whole, "*12\r\n$7\r\nEVALSHA\r\n$40\r\n"));
}

test "script: settle arguments carry the real cost for tokens and the reservation for requests" {
    var counters = [_]store.Counter{ testCounter("t", .tokens, 300, 40), testCounter("r", .requests, 10, 1) };
    counters[0].reserved = 40;
    counters[1].reserved = 1;
    counters[0].admitted_at_ms = 7;
    const marker = MarkerKey.init("tokenlimit:{chat}:global:tokens:60:global", "rid.1");
    try testing.expectEqualStrings("tokenlimit:{chat}:req:rid.1", marker.slice());
    const tail = try settleArguments(testing.allocator, &counters, 55, marker);
    defer testing.allocator.free(tail);
    try testing.expect(std.mem.indexOf(u8, tail, "$2\r\n40\r\n$2\r\n55\r\n") != null);
    try testing.expect(std.mem.indexOf(u8, tail, "$1\r\n1\r\n$1\r\n1\r\n$1\r\n7\r\n") != null);
    try testing.expectEqual(@as(usize, 1 + 3 + 2 + 5 * 2 + 1), countArguments(tail)); // numkeys, keys + marker, op + clock, budgets, time
    const release = try releaseArguments(testing.allocator, &counters, marker, false);
    defer testing.allocator.free(release);
    try testing.expect(std.mem.indexOf(u8, release, "$7\r\nrelease\r\n") != null);
    try testing.expect(std.mem.indexOf(u8, release, "$2\r\n40\r\n$1\r\n0\r\n") != null); // tokens given back
    try testing.expect(std.mem.indexOf(u8, release, "$1\r\n1\r\n$1\r\n0\r\n$1\r\n7\r\n") != null); // and the request
}

test "script: argument counting walks encoded bulk strings" {
    var tail: resp.Command = .{};
    defer tail.deinit(testing.allocator);
    try tail.arg(testing.allocator, "2");
    try tail.arg(testing.allocator, "key:{a}:\r\n$x");
    try tail.argInt(testing.allocator, 60000);
    try testing.expectEqual(@as(usize, 3), countArguments(tail.bytes.items));
}

test "script: an admit reply fills checks; a refusal reserves nothing unless forced" {
    var counters = [_]store.Counter{ testCounter("a", .tokens, 300, 40), testCounter("b", .requests, 10, 1) };
    const refused = [_]i64{ 2, 1_700_000_000_000, 100, 300, 5_000, 10, 10, 7_000 };
    const admission = readAdmitReply(&counters, &refused, false);
    try testing.expectEqual(@as(?usize, 1), admission.decided);
    try testing.expectEqual(@as(u64, 0), counters[0].reserved);
    try testing.expectEqual(@as(u64, 10), counters[1].check.used);
    try testing.expectEqual(@as(u64, 1_700_000_000_000), counters[0].admitted_at_ms);
    try testing.expectEqual(@as(?usize, 1), readAdmitReply(&counters, &refused, true).decided);
    try testing.expectEqual(@as(u64, 40), counters[0].reserved);
    const admitted = [_]i64{ 0, 1, 40, 300, 5_000, 1, 10, 7_000 };
    try testing.expectEqual(@as(?usize, null), readAdmitReply(&counters, &admitted, false).decided);
}

test "script: admit replies of the wrong shape are bad replies, not crashes" {
    var counters = [_]store.Counter{testCounter("a", .tokens, 300, 40)};
    try testing.expectEqual(store.Failure.bad_reply, readAdmitReply(&counters, &.{ 0, 1 }, false).failed);
    try testing.expectEqual(store.Failure.bad_reply, readAdmitReply(&counters, &.{ 2, 1, 0, 1, 0 }, false).failed);
    try testing.expectEqual(store.Failure.bad_reply, readAdmitReply(&counters, &.{ (1 << 32) + 1, 1, 0, 1, 0 }, false).failed);
    // Negative numbers are clamped, never cast as they are.
    try testing.expectEqual(@as(?usize, null), readAdmitReply(&counters, &.{ -1, -1, -5, -5, -5 }, false).decided);
    try testing.expectEqual(@as(u64, 1), counters[0].check.limit);
}

test "script: error replies that change what happens next" {
    try testing.expectEqual(ErrorReply.no_script, classifyError("NOSCRIPT No matching script"));
    try testing.expectEqual(ErrorReply.auth_failed, classifyError("WRONGPASS invalid username-password pair"));
    try testing.expectEqual(ErrorReply.auth_failed, classifyError("NOAUTH Authentication required."));
    try testing.expectEqual(ErrorReply.other, classifyError("ERR budget.lua: bad argument"));
}

test "script: a peek names only the counters (no marker) and reads used and reset back" {
    var counters = [_]store.Counter{ testCounter("t", .tokens, 300, 0), testCounter("r", .requests, 10, 0) };
    const tail = try peekArguments(testing.allocator, &counters);
    defer testing.allocator.free(tail);
    try testing.expectEqualStrings("$1\r\n2\r\n$1\r\nt\r\n$1\r\nr\r\n$4\r\npeek\r\n$1\r\n0\r\n" ++
        "$1\r\n0\r\n$5\r\n60000\r\n$3\r\n300\r\n$1\r\n0\r\n$5\r\n60000\r\n$2\r\n10\r\n", tail);
    try testing.expect(readPeekReply(&counters, &.{ 1_700_000_000_000, 120, 180, 30_000, 10, 0, 5_000 }));
    try testing.expectEqual(budget.Check{ .limit = 300, .used = 120, .reset_in_ms = 30_000 }, counters[0].check);
    try testing.expectEqual(@as(u64, 0), counters[1].check.remaining());
    // Network input of the wrong shape is refused, never trusted.
    try testing.expect(!readPeekReply(&counters, &.{ 1, 2, 3 }));
    try testing.expect(!readPeekReply(&counters, &.{ 1, -1, 0, 0, 0, 0, 0 }));
}

test "script: an admit_many call names each admission's keys after the settlements', one admission after another" {
    const a = [_]store.Counter{testCounter("tokenlimit:{r}:a", .tokens, 300, 40)};
    const b = [_]store.Counter{ testCounter("tokenlimit:{r}:a", .tokens, 300, 7), testCounter("tokenlimit:{r}:n", .requests, 10, 1) };
    var keys: resp.Command = .{};
    defer keys.deinit(testing.allocator);
    var arguments: resp.Command = .{};
    defer arguments.deinit(testing.allocator);
    try appendAdmissionEntry(testing.allocator, &keys, &arguments, &a, false, MarkerKey.init(a[0].key.slice(), "1"));
    try appendAdmissionEntry(testing.allocator, &keys, &arguments, &b, true, MarkerKey.init(b[0].key.slice(), "2"));
    const sizes = .{ admissionEntrySize(1), admissionEntrySize(2) };
    try testing.expectEqual(sizes[0].arguments + sizes[1].arguments, countArguments(arguments.bytes.items));
    try testing.expectEqual(sizes[0].keys + sizes[1].keys, countArguments(keys.bytes.items));
    const tail = try admitManyArguments(testing.allocator, .{}, .{ .keys = keys.bytes.items, .key_count = 5, .arguments = arguments.bytes.items, .entries = 2 });
    defer testing.allocator.free(tail);
    try testing.expectEqualStrings("$1\r\n5\r\n" ++
        "$16\r\ntokenlimit:{r}:a\r\n$20\r\ntokenlimit:{r}:req:1\r\n" ++
        "$16\r\ntokenlimit:{r}:a\r\n$16\r\ntokenlimit:{r}:n\r\n$20\r\ntokenlimit:{r}:req:2\r\n" ++
        "$10\r\nadmit_many\r\n$1\r\n0\r\n$1\r\n0\r\n$1\r\n2\r\n" ++
        "$1\r\n1\r\n$1\r\n0\r\n$1\r\n0\r\n$5\r\n60000\r\n$3\r\n300\r\n$2\r\n40\r\n$0\r\n\r\n" ++
        "$1\r\n2\r\n$1\r\n1\r\n$1\r\n0\r\n$5\r\n60000\r\n$3\r\n300\r\n$1\r\n7\r\n$1\r\n0\r\n$5\r\n60000\r\n$2\r\n10\r\n$1\r\n1\r\n$0\r\n\r\n", tail);
}
