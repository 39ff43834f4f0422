//! What Higress's ai-token-ratelimit shows of a refusal, beyond status and body, so that a
//! Higress user who swaps the plugin keeps their dashboards, log queries and client handling
//! (issue 11). Read from Higress's main.go `rejected()` (1.0.0 and 2.0.1 alike):
//!
//! - response code details `ai-token-ratelimit.rejected` on the local reply;
//! - header `X-TokenRateLimit-Reset`: seconds until the refusing counter's window resets;
//! - counter `route.<route>.upstream.<cluster>.model.none.consumer.<consumer>.metric.
//!   token_ratelimit_count` (abi/metrics.zig), +1 per refusal;
//! - `token_ratelimit_status: limited` merged into the `ai_log` filter state, which Higress's
//!   access log prints (wasm-go `WriteUserAttributeToLogWithKey`).
//!
//! Only the Higress build (`tokenlimit-higress.wasm`) does this; the Envoy build keeps its own
//! details (`tokenlimit_rejected`) and no extra header, so nothing changes for Envoy users.
const std = @import("std");
const build_options = @import("build_options");
const host = @import("../abi/host.zig");
const json_tree = @import("../config/json_tree.zig");
const metrics = @import("../abi/metrics.zig");

pub const on_higress = std.mem.eql(u8, build_options.transport, "higress");

/// Response code details of a refusal (Envoy's `%RESPONSE_CODE_DETAILS%`).
pub const rejection_details = if (on_higress) "ai-token-ratelimit.rejected" else "tokenlimit_rejected";

/// Higress's reset header, lower case as Envoy sends header names.
pub const reset_header = "x-tokenratelimit-reset";

/// The filter-state key Higress's AI plugins share for access-log fields.
const ai_log_property = "ai_log";
const status_field = "token_ratelimit_status";

/// Counts the refusal and marks the access log as Higress does; a no-op on the Envoy build.
/// Best effort: neither may fail the refusal itself.
pub fn recordRejection() void {
    if (!on_higress) return;
    countRejection();
    markAiLog();
}

fn countRejection() void {
    var route = host.getProperty("route_name") catch null;
    defer if (route) |*bytes| bytes.deinit();
    var cluster = host.getProperty("cluster_name") catch null;
    defer if (cluster) |*bytes| bytes.deinit();
    var consumer = host.getHeader(.request_headers, "x-mse-consumer") catch null;
    defer if (consumer) |*bytes| bytes.deinit();
    // Higress's util.GetRouteName / GetClusterName / GetConsumer fall back to "-", "-", "none".
    const id = metrics.higressRejections(
        if (route) |bytes| bytes.bytes else "-",
        if (cluster) |bytes| bytes.bytes else "-",
        if (consumer) |bytes| bytes.bytes else "none",
    );
    host.incrementMetric(id, 1);
}

fn markAiLog() void {
    var arena = std.heap.ArenaAllocator.init(host.allocator);
    defer arena.deinit();
    var previous = host.getProperty(ai_log_property) catch return;
    defer if (previous) |*bytes| bytes.deinit();
    const merged = withLimitedStatus(arena.allocator(), if (previous) |bytes| bytes.bytes else "") catch return;
    host.setProperty(ai_log_property, merged orelse return) catch {};
}

/// The `ai_log` value with `token_ratelimit_status: "limited"` set, as wasm-go writes it: the
/// JSON object, members sorted by key (Go marshals a map so), escaped as a JSON string's body
/// (`{\"k\":\"v\"}`). Null when `previous` is not such a value: wasm-go then leaves it alone.
pub fn withLimitedStatus(arena: std.mem.Allocator, previous: []const u8) error{OutOfMemory}!?[]const u8 {
    var members: std.ArrayList(json_tree.Object.Entry) = .empty;
    if (previous.len > 0) {
        const quoted = try std.mem.concat(arena, u8, &.{ "\"", previous, "\"" });
        const text = switch (json_tree.parse(arena, quoted) catch return null) {
            .string => |text| text,
            else => return null,
        };
        switch (json_tree.parse(arena, text) catch return null) {
            .object => |object| for (object.entries) |entry| {
                if (!std.mem.eql(u8, entry.key, status_field)) try members.append(arena, entry);
            },
            .null => {},
            else => return null,
        }
    }
    try members.append(arena, .{ .key = status_field, .value = .{ .string = "limited" } });
    // Keys are unique (json_tree refuses duplicates), so an unstable sort gives Go's order;
    // heap sort is a fraction of std.mem.sort's stable block sort in code (issue 17).
    std.sort.heap(json_tree.Object.Entry, members.items, {}, keyLessThan);
    var object: std.ArrayList(u8) = .empty;
    try writeValue(arena, &object, .{ .object = .{ .entries = members.items } });
    var escaped: std.ArrayList(u8) = .empty;
    try writeStringBody(arena, &escaped, object.items);
    return escaped.items;
}

fn keyLessThan(_: void, a: json_tree.Object.Entry, b: json_tree.Object.Entry) bool {
    return std.mem.lessThan(u8, a.key, b.key);
}

/// JSON text of `value` as Go's encoding/json writes it (numbers as written).
fn writeValue(gpa: std.mem.Allocator, out: *std.ArrayList(u8), value: json_tree.Value) error{OutOfMemory}!void {
    switch (value) {
        .null => try out.appendSlice(gpa, "null"),
        .bool => |b| try out.appendSlice(gpa, if (b) "true" else "false"),
        .number_string => |number| try out.appendSlice(gpa, number),
        .string => |text| {
            try out.append(gpa, '"');
            try writeStringBody(gpa, out, text);
            try out.append(gpa, '"');
        },
        .array => |array| {
            try out.append(gpa, '[');
            for (array.items, 0..) |item, i| {
                if (i > 0) try out.append(gpa, ',');
                try writeValue(gpa, out, item);
            }
            try out.append(gpa, ']');
        },
        .object => |object| {
            try out.append(gpa, '{');
            for (object.entries, 0..) |entry, i| {
                if (i > 0) try out.append(gpa, ',');
                try writeValue(gpa, out, .{ .string = entry.key });
                try out.append(gpa, ':');
                try writeValue(gpa, out, entry.value);
            }
            try out.append(gpa, '}');
        },
    }
}

/// `text` escaped as the inside of a JSON string, as Go's encoding/json escapes it (`<`, `>`,
/// `&`, U+2028 and U+2029 included).
fn writeStringBody(gpa: std.mem.Allocator, out: *std.ArrayList(u8), text: []const u8) error{OutOfMemory}!void {
    var i: usize = 0;
    while (i < text.len) : (i += 1) {
        const c = text[i];
        switch (c) {
            '"' => try out.appendSlice(gpa, "\\\""),
            '\\' => try out.appendSlice(gpa, "\\\\"),
            '\n' => try out.appendSlice(gpa, "\\n"),
            '\r' => try out.appendSlice(gpa, "\\r"),
            '\t' => try out.appendSlice(gpa, "\\t"),
            // Written by hand, not out.print: a format is its own code (issue 17, module size).
            0...0x08, 0x0b, 0x0c, 0x0e...0x1f, '<', '>', '&' => try out.appendSlice(gpa, &.{ '\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 0xf] }),
            0xe2 => if (i + 2 < text.len and text[i + 1] == 0x80 and (text[i + 2] == 0xa8 or text[i + 2] == 0xa9)) {
                try out.appendSlice(gpa, if (text[i + 2] == 0xa8) "\\u2028" else "\\u2029");
                i += 2;
            } else try out.append(gpa, c),
            else => try out.append(gpa, c),
        }
    }
}

test "higress: ai_log gains token_ratelimit_status, as wasm-go writes it" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    try std.testing.expectEqualStrings(
        \\{\"token_ratelimit_status\":\"limited\"}
    , (try withLimitedStatus(a, "")).?);
    // Earlier fields kept, members sorted, an earlier status replaced, `<` escaped as Go does.
    const earlier =
        \\{\"x\":{\"b\":\"<\\n\"},\"token_ratelimit_status\":\"no\",\"model\":\"qwen\",\"n\":[1,true,null]}
    ;
    try std.testing.expectEqualStrings(
        \\{\"model\":\"qwen\",\"n\":[1,true,null],\"token_ratelimit_status\":\"limited\",\"x\":{\"b\":\"\\u003c\\n\"}}
    , (try withLimitedStatus(a, earlier)).?);
    // Not a JSON object in a string body: left alone.
    try std.testing.expectEqual(@as(?[]const u8, null), try withLimitedStatus(a, "[1]"));
    try std.testing.expectEqual(@as(?[]const u8, null), try withLimitedStatus(a, "{\"broken"));
}

test "higress: the Envoy build keeps its own details" {
    try std.testing.expect(!on_higress); // unit tests build the Envoy flavour
    try std.testing.expectEqualStrings("tokenlimit_rejected", rejection_details);
}
