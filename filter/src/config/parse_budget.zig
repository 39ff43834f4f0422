//! The config fields of model-aware budgets (issue 12, docs/design-model-budgets.md §1), for
//! parse.zig: `calendar`, `prices`, dollar amounts, `models` / `per_model`, model names.
//! (Its field parsers are `noinline`: parse.zig says why.)
const std = @import("std");
const calendar = @import("../meter/calendar.zig");
const config = @import("config.zig");
const json_tree = @import("json_tree.zig");
const reader_zig = @import("reader.zig");
const regex = @import("regex/regex.zig");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;
const Reader = reader_zig.Reader;
const ParseError = reader_zig.ParseError;
const KeyMatcher = config.KeyMatcher;
const RuleItem = config.RuleItem;

/// A JSON number as an exact integer of millionths, saturating past u64; null when it is
/// negative or has a digit below a millionth.
fn exactMicros(text: []const u8) ?u64 {
    const e = std.mem.indexOfAny(u8, text, "eE") orelse text.len;
    const exponent: i64 = if (e < text.len) std.fmt.parseInt(i64, text[e + 1 ..], 10) catch return null else 0;
    if (exponent < -40 or exponent > 40) return null;
    const mantissa = text[0..e];
    if (mantissa.len == 0 or mantissa[0] == '-') return null;
    var digits: u128 = 0;
    var scale: i64 = 6 + exponent; // the power of ten the digits are multiplied by
    var seen_dot = false;
    for (mantissa) |c| {
        if (c == '.') {
            if (seen_dot) return null;
            seen_dot = true;
            continue;
        }
        if (c < '0' or c > '9') return null;
        if (digits > std.math.maxInt(u64)) return std.math.maxInt(u64);
        digits = digits * 10 + (c - '0');
        if (seen_dot) scale -= 1;
    }
    while (scale < 0) : (scale += 1) {
        if (digits % 10 != 0) return null;
        digits /= 10;
    }
    while (scale > 0) : (scale -= 1) {
        if (digits > std.math.maxInt(u64)) return std.math.maxInt(u64);
        digits *= 10;
    }
    return if (digits > std.math.maxInt(u64)) std.math.maxInt(u64) else @intCast(digits);
}

test "parse: dollars are read exactly from any JSON spelling" {
    try std.testing.expectEqual(@as(?u64, 1), exactMicros("0.000001"));
    try std.testing.expectEqual(@as(?u64, 1), exactMicros("1e-06"));
    try std.testing.expectEqual(@as(?u64, 150_000_000), exactMicros("1.5E2"));
    try std.testing.expectEqual(@as(?u64, 2_500_000), exactMicros("2.50"));
    try std.testing.expectEqual(@as(?u64, 0), exactMicros("0"));
    try std.testing.expectEqual(@as(?u64, null), exactMicros("2.1234567"));
    try std.testing.expectEqual(@as(?u64, null), exactMicros("1e-7"));
    try std.testing.expectEqual(@as(?u64, null), exactMicros("-1"));
    try std.testing.expectEqual(@as(?u64, std.math.maxInt(u64)), exactMicros("1e40"));
    try std.testing.expectEqual(@as(?u64, 1), exactMicros("0.00000100"));
}

/// The highest price per 1M tokens, in USD (docs/design-model-budgets.md §6).
const price_usd_max = 10_000;
pub const Fields = struct {
    reader: *Reader,
    arena: std.mem.Allocator,

    /// `calendar: {"zone": "Europe/Berlin", "transitions": [[from_ms, offset_s], ...]}`, as the
    /// control plane renders a rule's `time_zone` (a hand-written one is checked the same way).
    pub noinline fn calendarField(self: Fields, value: Value) ParseError!calendar.Table {
        const saved = self.reader.enter("calendar");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.refuseUnknown(map, &.{ "zone", "transitions" });
        if (map.get("zone")) |zone| {
            const saved_zone = self.reader.enter("zone");
            _ = try self.reader.string(zone, config.source_name_bytes_max); // for people: logs, usage
            self.reader.leave(saved_zone);
        }
        const list = map.get("transitions") orelse return self.reader.failField("transitions", "is required", .{});
        const saved_list = self.reader.enter("transitions");
        const entries = try self.reader.array(list, 1, calendar.transitions_max);
        const transitions = try self.arena.alloc(calendar.Transition, entries.len);
        for (entries, transitions, 0..) |entry, *transition, index| {
            const saved_index = self.reader.enterIndex(index);
            const pair = try self.reader.array(entry, 2, 2);
            const saved_from = self.reader.enterIndex(0);
            transition.from_ms = @intCast(try self.reader.integer(pair[0], 0, calendar.time_ms_max));
            self.reader.leave(saved_from);
            const saved_offset = self.reader.enterIndex(1);
            transition.offset_s = @intCast(try self.reader.integer(pair[1], -calendar.offset_s_max, calendar.offset_s_max));
            self.reader.leave(saved_offset);
            self.reader.leave(saved_index);
        }
        const table = calendar.Table.init(transitions) catch |err| return self.reader.fail("{s}", .{switch (err) {
            error.TransitionsOutOfOrder => "must be in strictly increasing from_ms order",
            else => @errorName(err), // the bounds above keep the others out
        }});
        self.reader.leave(saved_list);
        return table;
    }

    /// `time_zone`: the filter cannot resolve a zone name, so it checks what it can: the name
    /// looks like an IANA name, and a zone other than UTC comes with the `calendar` rendered for
    /// it (one for another zone would turn months over at the wrong hour). `calendar` is the
    /// already-read table, if any.
    pub noinline fn timeZone(self: Fields, map: ObjectMap, table: ?calendar.Table) ParseError!void {
        var zone: []const u8 = "UTC";
        if (map.get("time_zone")) |value| {
            const saved = self.reader.enter("time_zone");
            zone = try self.reader.string(value, config.source_name_bytes_max);
            if (!looksLikeZoneName(zone)) return self.reader.fail("must be an IANA time zone name such as Europe/Berlin, got \"{s}\"", .{zone});
            if (table == null and !std.mem.eql(u8, zone, "UTC")) return self.reader.fail("needs calendar, the zone's UTC offsets (the filter cannot resolve zone names): render the config from a policy (`tokenlimit render`), which adds it", .{});
            self.reader.leave(saved);
        }
        if (table == null) return;
        const calendar_map = map.get("calendar").?.object; // calendarField read it as an object
        const written = if (calendar_map.get("zone")) |value| value.string else "";
        if (!std.mem.eql(u8, written, zone)) {
            const saved = self.reader.enter("calendar");
            defer self.reader.leave(saved);
            return self.reader.failField("zone", "is the table of \"{s}\", but the rule's time_zone is \"{s}\": render the config again", .{ written, zone });
        }
    }

    /// `prices: {"<model or pattern>": {"input": 2.5, "output": 10, "cached": 1.25,
    /// "cache_write": 3.75}}`: USD per 1M tokens, kept as micro-USD integers, in document order.
    pub noinline fn pricesField(self: Fields, value: Value) ParseError![]const config.PriceEntry {
        const saved = self.reader.enter("prices");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        if (map.count() == 0) return self.reader.fail("must price at least one model (leave it out when no limit is in dollars)", .{});
        if (map.count() > config.limit_keys_max) return self.reader.fail("must have at most {d} entries, got {d}", .{ config.limit_keys_max, map.count() });
        const entries = try self.arena.alloc(config.PriceEntry, map.count());
        var it = map.iterator();
        var index: usize = 0;
        while (it.next()) |member| : (index += 1) {
            const name = member.key_ptr.*;
            const saved_entry = self.reader.enter(name);
            defer self.reader.leave(saved_entry);
            if (name.len == 0 or name.len > config.key_bytes_max) return self.reader.fail("a model name of 1 to {d} bytes", .{config.key_bytes_max});
            const price_map = try self.reader.object(member.value_ptr.*);
            // The project's own field: an unknown price (`reasoning`) would be silently free.
            try self.reader.refuseUnknown(price_map, &.{ "input", "output", "cached", "cache_write" });
            var price = config.Price{};
            inline for (.{ "input", "output", "cached", "cache_write" }) |field| {
                if (price_map.get(field)) |number| {
                    const saved_field = self.reader.enter(field);
                    @field(price, field) = try self.micros(number, 0, price_usd_max * 1_000_000);
                    self.reader.leave(saved_field);
                }
            }
            // Input and output are what every request costs: a missing one is no "free".
            if (price_map.get("input") == null) return self.reader.failField("input", "is required (USD per 1M input tokens)", .{});
            if (price_map.get("output") == null) return self.reader.failField("output", "is required (USD per 1M output tokens)", .{});
            // A cache price left out is the input price (as genai-prices reads a missing one).
            if (price_map.get("cached") == null) price.cached = price.input;
            if (price_map.get("cache_write") == null) price.cache_write = price.input;
            entries[index] = .{ .text = name, .matcher = try self.modelMatcher(name), .price = price };
        }
        return entries;
    }

    /// A decimal number of dollars with at most 6 decimals as an integer of micro-dollars,
    /// from `min` to `max` micro-dollars; read from the number's digits (no float rounding), in
    /// any JSON spelling (`0.000001`, `1e-06`, `1.5E2`).
    pub fn micros(self: Fields, value: Value, min: u64, max: u64) ParseError!u64 {
        const text = switch (value) {
            .number_string => |t| t,
            else => return self.reader.fail("must be a number of US dollars, got {s}", .{Reader.typeName(value)}),
        };
        const shown = text[0..@min(text.len, 32)];
        const result = exactMicros(text) orelse return self.reader.fail("must be a number of US dollars with at most 6 decimals, got {s}", .{shown});
        if (result < min or result > max) return self.reader.fail("must be from {d}.{d:0>6} to {d}.{d:0>6} US dollars, got {s}", .{ min / 1_000_000, min % 1_000_000, max / 1_000_000, max % 1_000_000, shown });
        return result;
    }

    /// `models` and `per_model` on an item (http/model.zig applies them).
    pub noinline fn modelConditions(self: Fields, map: ObjectMap, item: *RuleItem) ParseError!void {
        if (map.get("per_model")) |value| {
            item.per_model = try self.reader.boolField("per_model", value);
            if (item.per_model and (item.limit_type == .model or item.limit_type == .per_model)) {
                return self.reader.failField("per_model", "cannot be set on a limit_by_model or limit_by_per_model item (its budgets are per model already)", .{});
            }
        }
        const value = map.get("models") orelse return;
        const saved = self.reader.enter("models");
        defer self.reader.leave(saved);
        const entries = switch (value) {
            .array => |list| list.items,
            else => return self.reader.fail("must be an array of model names, got {s}", .{Reader.typeName(value)}),
        };
        if (entries.len == 0) return self.reader.fail("must name at least one model (leave it out to apply to every request)", .{});
        if (entries.len > config.limit_keys_max) return self.reader.fail("must have at most {d} entries, got {d}", .{ config.limit_keys_max, entries.len });
        const matchers = try self.arena.alloc(KeyMatcher, entries.len);
        for (entries, matchers, 0..) |entry, *matcher, index| {
            const saved_index = self.reader.enterIndex(index);
            defer self.reader.leave(saved_index);
            if (entry != .string) return self.reader.fail("must be a string, got {s}", .{Reader.typeName(entry)});
            const text = try self.reader.string(entry, config.key_bytes_max);
            if (text.len == 0) return self.reader.fail("must not be empty", .{});
            matcher.* = try self.modelMatcher(text);
        }
        item.models = matchers;
    }

    /// A model name as `models`, `limit_by_*model` keys and `prices` write it: `*`,
    /// `regexp:<pattern>`, or the exact name (no case folding: providers are case-sensitive).
    pub fn modelMatcher(self: Fields, text: []const u8) ParseError!KeyMatcher {
        if (std.mem.eql(u8, text, "*")) return .any;
        if (std.mem.startsWith(u8, text, "regexp:")) return .{ .pattern = try self.compileRegexp(text["regexp:".len..]) };
        return .{ .literal = text };
    }

    pub fn compileRegexp(self: Fields, pattern: []const u8) ParseError!regex.Regex {
        var regex_diagnostic: regex.Diagnostic = .{};
        return regex.Regex.compile(self.arena, pattern, &regex_diagnostic) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            error.PatternTooComplex => return self.reader.fail("regexp is too complex: {s}", .{regex_diagnostic.message}),
            error.InvalidPattern => return self.reader.fail("invalid regexp at offset {d}: {s}", .{ regex_diagnostic.offset, regex_diagnostic.message }),
        };
    }
};

/// An IANA zone name's shape (`Europe/Berlin`, `America/Argentina/Buenos_Aires`, `Etc/GMT+5`,
/// `UTC`): components of letters, digits, `_`, `-`, `+`, none empty, `.` or `..`.
fn looksLikeZoneName(name: []const u8) bool {
    if (name.len == 0) return false;
    var it = std.mem.splitScalar(u8, name, '/');
    while (it.next()) |part| {
        if (part.len == 0 or !std.ascii.isAlphabetic(part[0])) return false;
        for (part) |c| {
            if (!std.ascii.isAlphanumeric(c) and c != '_' and c != '-' and c != '+') return false;
        }
    }
    return true;
}

test looksLikeZoneName {
    try std.testing.expect(looksLikeZoneName("UTC"));
    try std.testing.expect(looksLikeZoneName("America/Argentina/Buenos_Aires"));
    try std.testing.expect(looksLikeZoneName("Etc/GMT+5"));
    try std.testing.expect(!looksLikeZoneName(""));
    try std.testing.expect(!looksLikeZoneName("Europe//Berlin"));
    try std.testing.expect(!looksLikeZoneName("../etc/passwd"));
    try std.testing.expect(!looksLikeZoneName("Europe/Berlin "));
}
