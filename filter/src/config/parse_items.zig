//! Rule items and the limits they carry, for parse.zig: `rule_items[*]` (its `limit_by_*` field
//! in Higress's precedence, its `limit_keys` and their matchers), the `token_per_*` /
//! `request_per_*` / `cost_per_*` limit fields, the counter-name check, and the thousandths
//! (`warn_at`, weights, `local_share`) that both items and rules read. Like parse_budget.zig it
//! shares the parser's Reader (field path, diagnostic) and arena.
//! (Its field parsers are `noinline`: parse.zig says why.)
const std = @import("std");
const message = @import("../abi/message.zig");
const budget = @import("../meter/budget.zig");
const config = @import("config.zig");
const counter = @import("../meter/counter.zig");
const ip = @import("ip.zig");
const json_tree = @import("json_tree.zig");
const parse_budget = @import("parse_budget.zig");
const reader_zig = @import("reader.zig");
const bounds = @import("limits");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;
const Reader = reader_zig.Reader;
const ParseError = reader_zig.ParseError;
const KeyMatcher = config.KeyMatcher;
const LimitKey = config.LimitKey;
const LimitType = config.LimitType;
const Limits = config.Limits;
const RuleItem = config.RuleItem;
const Unit = config.Unit;

/// The range `weights` (and the first check of `local_share`) accept, as messages say it.
const weight_range = std.fmt.comptimePrint("from 0 to {d}", .{bounds.weight_max});

/// The `limit_by_*` fields in Higress's order of precedence: when an item sets several, the
/// last one set wins (Higress reads them in this order, each overriding the one before). A
/// header/param/cookie/ip field counts as set only with a non-empty value; a consumer field
/// counts whatever its value (Higress ignores it: `limit_by_consumer:` with no value).
const limit_by_fields = [_]struct { name: []const u8, limit_type: LimitType, any_value: bool = false }{
    .{ .name = "limit_by_header", .limit_type = .header },
    .{ .name = "limit_by_param", .limit_type = .param },
    .{ .name = "limit_by_cookie", .limit_type = .cookie },
    .{ .name = "limit_by_per_header", .limit_type = .per_header },
    .{ .name = "limit_by_per_param", .limit_type = .per_param },
    .{ .name = "limit_by_per_cookie", .limit_type = .per_cookie },
    .{ .name = "limit_by_consumer", .limit_type = .consumer, .any_value = true },
    .{ .name = "limit_by_per_consumer", .limit_type = .per_consumer, .any_value = true },
    .{ .name = "limit_by_per_ip", .limit_type = .per_ip },
    // Model items (issue 12) read no request field: the value is the request's model.
    .{ .name = "limit_by_model", .limit_type = .model, .any_value = true },
    .{ .name = "limit_by_per_model", .limit_type = .per_model, .any_value = true },
};

/// `token_per_second` … `request_per_day`: the limit fields, in the order they are checked.
const limit_fields = blk: {
    var fields: [3 * Limits.window_count]struct { name: []const u8, unit: Unit, window: budget.Window } = undefined;
    var i: usize = 0;
    for ([_]Unit{ .tokens, .requests, .cost }) |unit| {
        for (std.meta.tags(budget.Window)) |window| {
            const prefix = switch (unit) {
                .tokens => "token_per_",
                .requests => "request_per_",
                .cost => "cost_per_",
            };
            fields[i] = .{ .name = prefix ++ @tagName(window), .unit = unit, .window = window };
            i += 1;
        }
    }
    break :blk fields;
};

const limit_field_names = blk: {
    var names: [limit_fields.len][]const u8 = undefined;
    for (limit_fields, 0..) |field, i| names[i] = field.name;
    break :blk names;
};

pub const Items = struct {
    reader: *Reader,
    arena: std.mem.Allocator,

    /// The fields of model-aware budgets (parse_budget.zig).
    fn budgetFields(self: Items) parse_budget.Fields {
        return .{ .reader = self.reader, .arena = self.arena };
    }

    /// `warn_at`: a fraction of a budget, greater than 0 and less than 1, as thousandths (1
    /// would warn only when the hard limit already refuses).
    pub fn warnAt(self: Items, value: Value) ParseError!u32 {
        const saved = self.reader.enter("warn_at");
        defer self.reader.leave(saved);
        const fraction = try self.milli(value);
        if (fraction == 0 or fraction >= 1000) return self.reader.fail("must be a fraction greater than 0 and less than 1, with at most 3 decimals", .{});
        return fraction;
    }

    /// A decimal such as 0.5 or 4 as thousandths, from 0 to `weight_max` (so 1000 × as many
    /// thousandths).
    pub fn milli(self: Items, value: Value) ParseError!u32 {
        const text = switch (value) {
            .number_string => |t| t,
            else => return self.reader.fail("must be a number " ++ weight_range ++ ", got {s}", .{Reader.typeName(value)}),
        };
        const dot = std.mem.indexOfScalar(u8, text, '.') orelse text.len;
        // u64 as elsewhere in the module: one parseInt instantiation fewer (issue 17).
        const whole = std.fmt.parseInt(u64, text[0..dot], 10) catch return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        const fraction_text = if (dot < text.len) text[dot + 1 ..] else "";
        if (fraction_text.len > 3 or whole > bounds.weight_max) return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        var fraction: u32 = 0;
        for (0..3) |i| {
            const digit: u32 = if (i < fraction_text.len) fraction_text[i] -% '0' else 0;
            if (digit > 9) return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
            fraction = fraction * 10 + digit;
        }
        const result: u32 = @intCast(whole * 1000 + fraction); // whole <= weight_max
        if (result > bounds.weight_max * 1000) return self.reader.fail("must be a number " ++ weight_range ++ ", got {s}", .{text});
        return result;
    }

    /// Reads token_per_* / request_per_* fields; at least one must be present.
    pub fn limitsOf(self: Items, map: ObjectMap, also: []const []const u8) ParseError!Limits {
        try self.reader.ignoreUnknownIn(map, &.{ &limit_field_names, also });
        var limits: Limits = .{};
        var count: usize = 0;
        for (limit_fields) |field| {
            if (map.get(field.name)) |value| {
                const saved = self.reader.enter(field.name);
                const limit: u64 = if (field.unit == .cost)
                    try self.budgetFields().micros(value, 1, bounds.limit_max)
                else
                    @intCast(try self.reader.integer(value, 1, bounds.limit_max));
                const per_window = switch (field.unit) {
                    .tokens => &limits.tokens,
                    .requests => &limits.requests,
                    .cost => &limits.cost,
                };
                per_window[@backingInt(field.window)] = limit;
                self.reader.leave(saved);
                count += 1;
            }
        }
        if (count == 0) return self.reader.fail("needs at least one of token_per_second/minute/hour/day/week/month, request_per_second/minute/hour/day/week/month or cost_per_second/minute/hour/day/week/month", .{});
        return limits;
    }

    pub noinline fn ruleItem(self: Items, value: Value) ParseError!RuleItem {
        const map = try self.reader.object(value);
        const known = comptime blk: {
            var names: [limit_by_fields.len + 4][]const u8 = undefined;
            for (limit_by_fields, 0..) |field, i| names[i] = field.name;
            names[limit_by_fields.len..].* = .{ "limit_keys", "models", "per_model", "warn_at" };
            break :blk names;
        };
        try self.reader.ignoreUnknown(map, &known);
        const keys_value = map.get("limit_keys") orelse return self.reader.failField("limit_keys", "is required", .{});

        // Higress's precedence (limit_by_fields): each field set overrides the one before; the
        // overridden ones are ignored, as Higress ignores them, and named in the warning.
        var found: ?struct { name: []const u8, limit_type: LimitType, source: []const u8 } = null;
        var model_fields: usize = 0;
        var set_fields: usize = 0;
        for (limit_by_fields) |field| {
            const field_value = map.get(field.name) orelse continue;
            var source: []const u8 = "";
            if (field.limit_type == .model or field.limit_type == .per_model) {
                // The model comes from the request: a value here would read as "only this
                // model" and silently mean every model.
                const saved = self.reader.enter(field.name);
                const written = if (field_value == .string) field_value.string else "";
                if (field_value != .string or written.len != 0) return self.reader.fail("must be \"\" (the model is read from the request; name models in the limit keys)", .{});
                self.reader.leave(saved);
                model_fields += 1;
            } else if (!field.any_value) {
                if (field_value == .null) continue;
                const saved = self.reader.enter(field.name);
                source = try self.reader.scalarString(field_value, config.config_bytes_max);
                self.reader.leave(saved);
                if (source.len == 0) continue; // Higress skips an empty value
            }
            set_fields += 1;
            // Higress's precedence is for Higress's fields; a model field beside another one
            // is ambiguous (a budget per model, or per caller?), so it is refused.
            if (model_fields > 0 and set_fields > 1) return self.reader.fail("sets {s} and {s}: a limit_by_model / limit_by_per_model item takes no other limit_by_* field (use per_model or models on the other item)", .{ found.?.name, field.name });
            if (found) |previous| try self.reader.ignore(previous.name);
            found = .{ .name = field.name, .limit_type = field.limit_type, .source = source };
        }
        const limit_by = found orelse return self.reader.fail("needs a limit_by_* field with a value (limit_by_header, limit_by_per_header, limit_by_param, limit_by_per_param, limit_by_cookie, limit_by_per_cookie, limit_by_consumer, limit_by_per_consumer, limit_by_per_ip, limit_by_model, limit_by_per_model)", .{});

        var item = RuleItem{ .limit_type = limit_by.limit_type, .source = "", .keys = &.{} };
        const saved_source = self.reader.enter(limit_by.name);
        const source = limit_by.source;
        if (source.len > config.source_name_bytes_max) return self.reader.fail("must be at most {d} bytes, got {d}", .{ config.source_name_bytes_max, source.len });
        switch (limit_by.limit_type) {
            .consumer, .per_consumer, .global, .model, .per_model => item.source = "", // Higress ignores the value
            .per_ip => {
                if (std.mem.eql(u8, source, "from-remote-addr")) {
                    item.ip_source = .remote_address;
                } else if (std.mem.startsWith(u8, source, "from-header-") and source.len > "from-header-".len) {
                    item.ip_source = .{ .header = try std.ascii.allocLowerString(self.arena, source["from-header-".len..]) };
                } else {
                    return self.reader.fail("must be from-remote-addr or from-header-<name>, got \"{s}\"", .{source});
                }
                item.source = source;
            },
            .header, .per_header => {
                item.source = try std.ascii.allocLowerString(self.arena, source);
                item.written_source = source;
            },
            .param, .per_param, .cookie, .per_cookie => item.source = source,
        }
        self.reader.leave(saved_source);

        const saved_keys = self.reader.enter("limit_keys");
        const entries = try self.reader.array(keys_value, 1, config.limit_keys_max);
        const keys = try self.arena.alloc(LimitKey, entries.len);
        for (entries, keys, 0..) |entry, *key, index| {
            const saved_index = self.reader.enterIndex(index);
            key.* = try self.limitKey(entry, limit_by.limit_type);
            self.reader.leave(saved_index);
        }
        self.reader.leave(saved_keys);
        item.keys = keys;
        try self.budgetFields().modelConditions(map, &item);
        if (map.get("warn_at")) |warn_at| item.warn_at_milli = try self.warnAt(warn_at);
        return item;
    }

    /// Refuses an item whose counter names would not fit a counter key
    /// (counter.counter_key_bytes_max): the filter could not count it, so it must not load.
    pub noinline fn checkCounterNames(self: Items, rule_name: []const u8, item: *const RuleItem, index: usize, global_count: usize) ParseError!void {
        const identity_longest = "0123456789abcdef0123456789abcdef"; // a hashed value, the longest
        const caller: []const u8 = if (item.limit_type == .global) "global" else identity_longest;
        for (item.keys) |key| {
            for (std.meta.tags(Unit)) |unit| {
                for (std.meta.tags(budget.Window)) |window| {
                    if (key.limits.get(unit, window) == null) continue;
                    _ = counter.counterKey(rule_name, item, unit, window, caller, if (item.per_model) identity_longest else null) catch {
                        var field_buffer: [64]u8 = undefined;
                        const field = if (item.limit_type == .global)
                            "global_threshold"
                        else
                            message.print(&field_buffer, "rule_items[{d}].limit_by_{s}", .{ index - global_count, @tagName(item.limit_type) });
                        return self.reader.failField(field, "makes counter names longer than the {d} bytes a counter name may have (rule name as counted: {d} bytes, this name: {d} bytes); shorten the rule name or this name", .{ counter.counter_key_bytes_max, rule_name.len, item.source.len });
                    };
                }
            }
        }
    }

    noinline fn limitKey(self: Items, value: Value, limit_type: LimitType) ParseError!LimitKey {
        const map = try self.reader.object(value);
        const key_value = map.get("key") orelse return self.reader.failField("key", "is required", .{});
        const saved = self.reader.enter("key");
        // `key: 102234` in Higress's own README: any scalar is read as its text.
        const text = try self.reader.scalarString(key_value, config.key_bytes_max);
        if (text.len == 0) return self.reader.fail("must not be empty", .{});
        const matcher = try self.keyMatcher(text, limit_type);
        self.reader.leave(saved);
        return .{ .text = text, .matcher = matcher, .limits = try self.limitsOf(map, &.{"key"}) };
    }

    noinline fn keyMatcher(self: Items, text: []const u8, limit_type: LimitType) ParseError!KeyMatcher {
        if (limit_type == .model or limit_type == .per_model) return self.budgetFields().modelMatcher(text);
        if (!limit_type.isPer()) return .{ .literal = text };
        if (std.mem.eql(u8, text, "*")) return .any;
        if (limit_type == .per_ip) {
            const range = ip.parseRange(text) catch return self.reader.fail("must be an IP address, a CIDR range or *, got \"{s}\"", .{text});
            return .{ .ip_range = range };
        }
        const prefix = "regexp:";
        if (!std.mem.startsWith(u8, text, prefix)) {
            return self.reader.fail("must be * or regexp:<pattern> for limit_by_per_* items, got \"{s}\"", .{text});
        }
        return .{ .pattern = try self.budgetFields().compileRegexp(text[prefix.len..]) };
    }
};
