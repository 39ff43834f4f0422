//! JSON document → `Config` (docs/config.md): a strict superset of Higress ai-token-ratelimit's
//! config. The document is walked as a `json_tree.Value` tree and checked field by field so that
//! an error names the field path and the reason (reader.zig keeps the path). Everything the
//! config keeps is allocated from the arena that `Config` owns.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const usage = @import("../usage/usage.zig");
const config = @import("config.zig");
const counter = @import("../meter/counter.zig");
const sha256 = @import("../match/sha256.zig");
const ip = @import("ip.zig");
const json_tree = @import("json_tree.zig");
const parse_budget = @import("parse_budget.zig");
const reader_zig = @import("reader.zig");
const compat = @import("compat.zig");
const regex = @import("regex/regex.zig");
const bounds = @import("limits");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;
const Reader = reader_zig.Reader;
const Diagnostic = reader_zig.Diagnostic;
const ParseError = reader_zig.ParseError;
const Config = config.Config;
const KeyMatcher = config.KeyMatcher;
const LimitKey = config.LimitKey;
const LimitType = config.LimitType;
const Limits = config.Limits;
const Redis = config.Redis;
const RouteRule = config.RouteRule;
const Rule = config.Rule;
const RuleItem = config.RuleItem;
const Unit = config.Unit;
const Admission = config.Admission;
const FailureMode = config.FailureMode;

/// `model_rewrite`'s bound. Not in contract/limits.json yet: its twin is MODEL_BYTES_MAX in the
/// control plane's fallback model, which writes this field (users never do).
const model_name_bytes_max = 128;
/// The range `weights` (and the first check of `local_share`) accept, as messages say it.
const weight_range = std.fmt.comptimePrint("from 0 to {d}", .{bounds.weight_max});

/// Parses and checks a config document. On error.InvalidConfig, `diagnostic` says why.
pub fn parse(gpa: std.mem.Allocator, document: []const u8, diagnostic: *Diagnostic) ParseError!*Config {
    var arena = std.heap.ArenaAllocator.init(gpa);
    errdefer arena.deinit();
    var parser = Parser{ .arena = arena.allocator(), .reader = .{ .diagnostic = diagnostic, .arena = arena.allocator() } };
    const parsed = try parser.document(document);
    const result = try gpa.create(Config);
    result.* = .{
        .arena = arena,
        .default_rule = parsed.default_rule,
        .route_rules = parsed.route_rules,
        .model_rewrite = parsed.model_rewrite,
        .ignored_fields = parser.reader.ignored.items,
        .ignored_default = parsed.ignored_default,
    };
    return result;
}

const Parsed = struct {
    default_rule: ?Rule,
    route_rules: []const RouteRule,
    model_rewrite: ?[]const u8 = null,
    ignored_default: ?[]const u8 = null,
};

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

/// A rule name as counter names carry it (config.counter_rule_name_plain_max).
pub fn counterRuleName(arena: std.mem.Allocator, name: []const u8) error{OutOfMemory}![]const u8 {
    var plain = name.len > 0 and name.len <= config.counter_rule_name_plain_max;
    for (name) |c| {
        if (c <= ' ' or c >= 0x7f or c == ':' or c == '{' or c == '}') plain = false;
    }
    if (plain) return name;
    const hex = std.fmt.bytesToHex(sha256.hash(name), .lower);
    return std.mem.concat(arena, u8, &.{ "=", &hex });
}

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

const Parser = struct {
    arena: std.mem.Allocator,
    reader: Reader,

    /// The fields of model-aware budgets (parse_budget.zig).
    fn budgetFields(self: *Parser) parse_budget.Fields {
        return .{ .reader = &self.reader, .arena = self.arena };
    }

    // ---- document ------------------------------------------------------------------------

    const rule_fields = [_][]const u8{
        "rule_name",    "global_threshold", "rule_items", "rejected_code",      "rejected_msg",          "redis",
        "admission",    "algorithm",        "shadow",     "show_limit_headers", "default_output_tokens", "weights",
        "failure_mode", "local_share",      "compat",
    } ++ model_rule_fields;
    /// Rule-level fields of model-aware budgets (issue 12).
    const model_rule_fields = [_][]const u8{ "model_header", "time_zone", "calendar", "prices", "warn_at" };
    const top_fields = rule_fields ++ [_][]const u8{ "_rules_", "model_rewrite" };
    const route_fields = rule_fields ++ [_][]const u8{ "_match_route_", "_match_domain_", "_match_service_", "_match_route_prefix_" };

    fn document(self: *Parser, bytes: []const u8) ParseError!Parsed {
        if (bytes.len > config.config_bytes_max) return self.reader.fail("config is {d} bytes, more than the {d} allowed", .{ bytes.len, config.config_bytes_max });
        // Numbers stay text (limits are integers); duplicate keys are refused.
        const root = json_tree.parse(self.arena, bytes) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            else => return self.reader.fail("not valid JSON ({s})", .{@errorName(err)}),
        };
        const map = try self.reader.object(root);
        if (map.get("model_rewrite")) |value| return .{ .default_rule = null, .route_rules = &.{}, .model_rewrite = try self.modelRewrite(map, value) };
        try self.reader.ignoreUnknown(map, &top_fields);
        const rules_value = map.get("_rules_");
        var default_rule: ?Rule = null;
        var ignored_default: ?[]const u8 = null;
        if (rules_value == null or hasLimits(map)) {
            if (self.rule(map)) |parsed| {
                default_rule = parsed;
            } else |err| {
                // Higress drops a top-level config it cannot parse when `_rules_` has entries:
                // the route rules apply, no default. Without route rules the config is refused.
                if (err != error.InvalidConfig or !hasEntries(rules_value)) return err;
                const d = self.reader.diagnostic;
                ignored_default = try std.fmt.allocPrint(self.arena, "{s}{s}{s}", .{ d.field(), if (d.field().len > 0) ": " else "", d.reason() });
                self.reader.leave(0);
            }
        }
        var route_rules: []RouteRule = &.{};
        if (map.get("_rules_")) |value| {
            const saved = self.reader.enter("_rules_");
            const entries = try self.reader.array(value, 0, config.route_rules_max);
            route_rules = try self.arena.alloc(RouteRule, entries.len);
            for (entries, route_rules, 0..) |entry, *route_rule, index| {
                const saved_index = self.reader.enterIndex(index);
                route_rule.* = try self.routeRule(entry);
                self.reader.leave(saved_index);
            }
            self.reader.leave(saved);
        }
        return .{ .default_rule = default_rule, .route_rules = route_rules, .ignored_default = ignored_default };
    }

    fn hasEntries(value: ?Value) bool {
        return switch (value orelse return false) {
            .array => |list| list.items.len > 0,
            else => false,
        };
    }

    /// The upstream-filter role (fallback routes): rewrite the request's `model`, limit nothing
    /// (the listener-level instance already counted the request).
    fn modelRewrite(self: *Parser, map: ObjectMap, value: Value) ParseError![]const u8 {
        if (map.count() != 1) {
            return self.reader.fail("model_rewrite configures the upstream filter that renames the model for one upstream; it cannot be combined with other fields", .{});
        }
        const saved = self.reader.enter("model_rewrite");
        defer self.reader.leave(saved);
        const model = try self.reader.string(value, model_name_bytes_max);
        if (model.len == 0) return self.reader.fail("must not be empty", .{});
        for (model) |c| {
            if (c < ' ' or c >= 0x7f or c == '"' or c == '\\') return self.reader.fail("must be printable ASCII without quotes or backslashes, got \"{s}\"", .{model});
        }
        return model;
    }

    fn hasLimits(map: ObjectMap) bool {
        for (rule_fields) |name| if (map.get(name) != null) return true;
        return false;
    }

    fn routeRule(self: *Parser, value: Value) ParseError!RouteRule {
        const map = try self.reader.object(value);
        try self.reader.ignoreUnknown(map, &route_fields);
        // Higress drops empty route, service and prefix names (an empty domain stays).
        const routes = try self.stringList(map, "_match_route_", true);
        const domains = try self.stringList(map, "_match_domain_", false);
        const services = try self.stringList(map, "_match_service_", true);
        const prefixes = try self.stringList(map, "_match_route_prefix_", true);
        if (routes.len + domains.len + services.len + prefixes.len == 0) {
            return self.reader.fail("needs at least one of _match_route_, _match_domain_, _match_service_, _match_route_prefix_ with a non-empty name", .{});
        }
        return .{ .routes = routes, .domains = domains, .services = services, .route_prefixes = prefixes, .rule = try self.rule(map) };
    }

    /// A list of names, as Higress reads one: an array of scalars, or one scalar alone.
    fn stringList(self: *Parser, map: ObjectMap, name: []const u8, drop_empty: bool) ParseError![]const []const u8 {
        const value = map.get(name) orelse return &.{};
        const saved = self.reader.enter(name);
        defer self.reader.leave(saved);
        const entries: []const Value = switch (value) {
            .array => |list| list.items,
            .null => &.{},
            .string, .number_string, .bool => (&value)[0..1],
            .object => return self.reader.fail("must be an array of strings, got an object", .{}),
        };
        var list: std.ArrayList([]const u8) = .empty;
        for (entries, 0..) |entry, index| {
            const saved_index = self.reader.enterIndex(index);
            defer self.reader.leave(saved_index);
            if (entry == .array or entry == .object or entry == .null) return self.reader.fail("must be a string, got {s}", .{Reader.typeName(entry)});
            const text = try self.reader.scalarString(entry, config.config_bytes_max);
            if (drop_empty and text.len == 0) continue;
            try list.append(self.arena, text);
        }
        return list.items;
    }

    fn rule(self: *Parser, map: ObjectMap) ParseError!Rule {
        const global = map.get("global_threshold");
        const items = map.get("rule_items");
        if (global == null and items == null) {
            return self.reader.fail("needs global_threshold, rule_items or both (Higress 2.0.1 applies both)", .{});
        }
        const name_value = map.get("rule_name") orelse return self.reader.failField("rule_name", "is required", .{});
        const saved_name = self.reader.enter("rule_name");
        // Higress reads any scalar (`rule_name: 2024`), and null as "".
        const name = if (name_value == .null) "" else try self.reader.scalarString(name_value, config.rule_name_bytes_max);
        self.reader.leave(saved_name);
        const counter_name = try counterRuleName(self.arena, name);

        // 2.0.1: a global threshold and rule items together are a route-wide budget plus
        // per-key budgets, all applied; the global one counts as one of the items.
        const global_count: usize = if (global != null) 1 else 0;
        var rule_items: []RuleItem = try self.arena.alloc(RuleItem, global_count);
        if (global) |value| {
            const saved = self.reader.enter("global_threshold");
            const global_map = try self.reader.object(value);
            const limits = try self.limitsOf(global_map, &.{"warn_at"});
            const keys = try self.arena.alloc(LimitKey, 1);
            keys[0] = .{ .text = "global", .matcher = .any, .limits = limits };
            rule_items[0] = .{ .limit_type = .global, .source = "", .keys = keys };
            if (global_map.get("warn_at")) |warn_at| rule_items[0].warn_at_milli = try self.warnAt(warn_at);
            self.reader.leave(saved);
        }
        if (items) |value| {
            const saved = self.reader.enter("rule_items");
            const entries = try self.reader.array(value, 1, @as(usize, config.rule_items_max) - global_count);
            rule_items = try self.arena.realloc(rule_items, global_count + entries.len);
            for (entries, rule_items[global_count..], 0..) |entry, *item, index| {
                const saved_index = self.reader.enterIndex(index);
                item.* = try self.ruleItem(entry);
                self.reader.leave(saved_index);
            }
            self.reader.leave(saved);
        }
        for (rule_items, 0..) |*item, index| try self.checkCounterNames(counter_name, item, index, global_count);

        var rejected_code: u32 = bounds.rejected_code_default;
        if (map.get("rejected_code")) |value| {
            const saved = self.reader.enter("rejected_code");
            rejected_code = @intCast(try self.reader.integer(value, bounds.rejected_code_min, bounds.rejected_code_max));
            self.reader.leave(saved);
        }
        var rejected_msg: []const u8 = bounds.rejected_msg_default;
        if (map.get("rejected_msg")) |value| {
            const saved = self.reader.enter("rejected_msg");
            rejected_msg = try self.reader.scalarString(value, config.rejected_msg_bytes_max);
            self.reader.leave(saved);
        }
        var parsed = Rule{ .name = counter_name, .configured_name = name, .items = rule_items, .rejected_code = rejected_code, .rejected_msg = rejected_msg };
        if (map.get("admission")) |value| parsed.admission = try self.reader.enumField(Admission, "admission", value);
        if (map.get("algorithm")) |value| parsed.algorithm = try self.reader.enumField(budget.Algorithm, "algorithm", value);
        if (map.get("shadow")) |value| parsed.shadow = try self.reader.boolField("shadow", value);
        if (map.get("show_limit_headers")) |value| parsed.show_limit_headers = try self.reader.boolField("show_limit_headers", value);
        if (map.get("default_output_tokens")) |value| {
            const saved = self.reader.enter("default_output_tokens");
            parsed.default_output_tokens = @intCast(try self.reader.integer(value, 0, bounds.default_output_tokens_max));
            self.reader.leave(saved);
        }
        if (map.get("weights")) |value| parsed.weights = try self.weightsField(value);
        if (map.get("failure_mode")) |value| parsed.failure_mode = try self.reader.enumField(FailureMode, "failure_mode", value);
        if (map.get("local_share")) |value| {
            const saved = self.reader.enter("local_share");
            parsed.local_share_milli = try self.milli(value);
            if (parsed.local_share_milli == 0 or parsed.local_share_milli > 1000) {
                return self.reader.fail("must be a number greater than 0 and at most 1, with at most 3 decimals", .{});
            }
            self.reader.leave(saved);
        }
        parsed.redis = try self.redisField(map);
        if (map.get("compat")) |value| {
            const saved = self.reader.enter("compat");
            const spelled = try self.reader.scalarString(value, 32);
            parsed.compat = compat.Compat.fromText(spelled) orelse return self.reader.fail("must be " ++ compat.expected ++ ", got \"{s}\"", .{spelled});
            if (compat.refusal(&parsed)) |reason| return self.reader.fail("{s}", .{reason});
            self.reader.leave(saved);
        }
        parsed.derive();
        if (map.get("calendar")) |value| parsed.calendar = try self.budgetFields().calendarField(value);
        try self.budgetFields().timeZone(map, parsed.calendar);
        if (map.get("prices")) |value| parsed.prices = try self.budgetFields().pricesField(value);
        if (map.get("warn_at")) |value| parsed.warn_at_milli = try self.warnAt(value);
        if (map.get("model_header")) |value| {
            const saved = self.reader.enter("model_header");
            const header = try self.reader.string(value, config.source_name_bytes_max);
            if (header.len == 0) return self.reader.fail("must not be empty (leave it out to read the model from the path or body)", .{});
            parsed.model_header = try std.ascii.allocLowerString(self.arena, header);
            self.reader.leave(saved);
        }
        return parsed;
    }

    /// `warn_at`: a fraction of a budget, greater than 0 and less than 1, as thousandths (1
    /// would warn only when the hard limit already refuses).
    fn warnAt(self: *Parser, value: Value) ParseError!u32 {
        const saved = self.reader.enter("warn_at");
        defer self.reader.leave(saved);
        const fraction = try self.milli(value);
        if (fraction == 0 or fraction >= 1000) return self.reader.fail("must be a fraction greater than 0 and less than 1, with at most 3 decimals", .{});
        return fraction;
    }

    fn weightsField(self: *Parser, value: Value) ParseError!usage.Weights {
        const saved = self.reader.enter("weights");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.ignoreUnknown(map, &.{ "input", "output", "cached" });
        var weights = usage.Weights{};
        inline for (.{ .{ "input", "input_milli" }, .{ "output", "output_milli" }, .{ "cached", "cached_milli" } }) |pair| {
            if (map.get(pair[0])) |weight| {
                const saved_field = self.reader.enter(pair[0]);
                @field(weights, pair[1]) = try self.milli(weight);
                self.reader.leave(saved_field);
            }
        }
        return weights;
    }

    /// A decimal such as 0.5 or 4 as thousandths, from 0 to `weight_max` (so 1000 × as many
    /// thousandths).
    fn milli(self: *Parser, value: Value) ParseError!u32 {
        const text = switch (value) {
            .number_string => |t| t,
            else => return self.reader.fail("must be a number " ++ weight_range ++ ", got {s}", .{Reader.typeName(value)}),
        };
        const dot = std.mem.indexOfScalar(u8, text, '.') orelse text.len;
        const whole = std.fmt.parseInt(u32, text[0..dot], 10) catch return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        const fraction_text = if (dot < text.len) text[dot + 1 ..] else "";
        if (fraction_text.len > 3 or whole > bounds.weight_max) return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        var fraction: u32 = 0;
        for (0..3) |i| {
            const digit: u32 = if (i < fraction_text.len) fraction_text[i] -% '0' else 0;
            if (digit > 9) return self.reader.fail("must be a number " ++ weight_range ++ " with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
            fraction = fraction * 10 + digit;
        }
        const result = whole * 1000 + fraction;
        if (result > bounds.weight_max * 1000) return self.reader.fail("must be a number " ++ weight_range ++ ", got {s}", .{text});
        return result;
    }

    /// Reads token_per_* / request_per_* fields; at least one must be present.
    fn limitsOf(self: *Parser, map: ObjectMap, comptime also: []const []const u8) ParseError!Limits {
        try self.reader.ignoreUnknown(map, &(limit_field_names ++ also[0..also.len].*));
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

    fn ruleItem(self: *Parser, value: Value) ParseError!RuleItem {
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
    fn checkCounterNames(self: *Parser, rule_name: []const u8, item: *const RuleItem, index: usize, global_count: usize) ParseError!void {
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
                            std.fmt.bufPrint(&field_buffer, "rule_items[{d}].limit_by_{s}", .{ index - global_count, @tagName(item.limit_type) }) catch unreachable;
                        return self.reader.failField(field, "makes counter names longer than the {d} bytes a counter name may have (rule name as counted: {d} bytes, this name: {d} bytes); shorten the rule name or this name", .{ counter.counter_key_bytes_max, rule_name.len, item.source.len });
                    };
                }
            }
        }
    }

    fn limitKey(self: *Parser, value: Value, limit_type: LimitType) ParseError!LimitKey {
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

    fn keyMatcher(self: *Parser, text: []const u8, limit_type: LimitType) ParseError!KeyMatcher {
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

    fn redisField(self: *Parser, map: ObjectMap) ParseError!?Redis {
        const value = map.get("redis") orelse return null;
        const saved = self.reader.enter("redis");
        defer self.reader.leave(saved);
        const redis_map = try self.reader.object(value);
        try self.reader.ignoreUnknown(redis_map, &.{ "service_name", "service_port", "username", "password", "timeout", "database" });
        const name_value = redis_map.get("service_name") orelse return self.reader.failField("service_name", "is required", .{});
        var redis = Redis{ .service_name = undefined };
        {
            const saved_field = self.reader.enter("service_name");
            redis.service_name = try self.reader.scalarString(name_value, bounds.redis_service_name_bytes_max);
            if (redis.service_name.len == 0) return self.reader.fail("must not be empty", .{});
            self.reader.leave(saved_field);
        }
        if (std.mem.endsWith(u8, redis.service_name, ".static")) redis.service_port = 80;
        // Higress reads 0 as "the default" for the port and the timeout.
        if (redis_map.get("service_port")) |port| {
            const saved_field = self.reader.enter("service_port");
            const number: u16 = @intCast(try self.reader.integer(port, 0, bounds.port_max));
            if (number != 0) redis.service_port = number;
            self.reader.leave(saved_field);
        }
        inline for (.{ "username", "password" }) |name| {
            if (redis_map.get(name)) |credential| {
                const saved_field = self.reader.enter(name);
                @field(redis, name) = try self.reader.scalarString(credential, bounds.redis_credential_bytes_max);
                self.reader.leave(saved_field);
            }
        }
        if (redis_map.get("timeout")) |timeout| {
            const saved_field = self.reader.enter("timeout");
            const number: u32 = @intCast(try self.reader.integer(timeout, 0, bounds.redis_timeout_ms_max));
            if (number != 0) redis.timeout_ms = number;
            self.reader.leave(saved_field);
        }
        if (redis_map.get("database")) |database| {
            const saved_field = self.reader.enter("database");
            redis.database = @intCast(try self.reader.integer(database, 0, bounds.redis_database_max));
            self.reader.leave(saved_field);
        }
        return redis;
    }
};
