//! JSON document → `Config` (docs/config.md): a strict superset of Higress ai-token-ratelimit's
//! config. The document is walked as a `json_tree.Value` tree and checked field by field so that
//! an error names the field path and the reason (reader.zig keeps the path). Everything the
//! config keeps is allocated from the arena that `Config` owns.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const usage = @import("../usage/usage.zig");
const config = @import("config.zig");
const ip = @import("ip.zig");
const json_tree = @import("json_tree.zig");
const reader_zig = @import("reader.zig");
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
    var parser = Parser{ .arena = arena.allocator(), .reader = .{ .diagnostic = diagnostic } };
    const parsed = try parser.document(document);
    const result = try gpa.create(Config);
    result.* = .{ .arena = arena, .default_rule = parsed.default_rule, .route_rules = parsed.route_rules, .model_rewrite = parsed.model_rewrite };
    return result;
}

const Parsed = struct { default_rule: ?Rule, route_rules: []const RouteRule, model_rewrite: ?[]const u8 = null };

const limit_by_fields = [_]struct { name: []const u8, limit_type: LimitType }{
    .{ .name = "limit_by_header", .limit_type = .header },
    .{ .name = "limit_by_param", .limit_type = .param },
    .{ .name = "limit_by_cookie", .limit_type = .cookie },
    .{ .name = "limit_by_consumer", .limit_type = .consumer },
    .{ .name = "limit_by_per_header", .limit_type = .per_header },
    .{ .name = "limit_by_per_param", .limit_type = .per_param },
    .{ .name = "limit_by_per_cookie", .limit_type = .per_cookie },
    .{ .name = "limit_by_per_consumer", .limit_type = .per_consumer },
    .{ .name = "limit_by_per_ip", .limit_type = .per_ip },
};

/// `token_per_second` … `request_per_day`: the limit fields, in the order they are checked.
const limit_fields = blk: {
    var fields: [8]struct { name: []const u8, unit: Unit, window: budget.Window } = undefined;
    var i: usize = 0;
    for ([_]Unit{ .tokens, .requests }) |unit| {
        for (std.meta.tags(budget.Window)) |window| {
            const prefix = if (unit == .tokens) "token_per_" else "request_per_";
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

    // ---- document ------------------------------------------------------------------------

    const rule_fields = [_][]const u8{
        "rule_name",    "global_threshold", "rule_items", "rejected_code",      "rejected_msg",          "redis",
        "admission",    "algorithm",        "shadow",     "show_limit_headers", "default_output_tokens", "weights",
        "failure_mode", "local_share",
    };
    const top_fields = rule_fields ++ [_][]const u8{ "_rules_", "model_rewrite" };
    const route_fields = rule_fields ++ [_][]const u8{ "_match_route_", "_match_domain_", "_match_service_" };

    fn document(self: *Parser, bytes: []const u8) ParseError!Parsed {
        if (bytes.len > config.config_bytes_max) return self.reader.fail("config is {d} bytes, more than the {d} allowed", .{ bytes.len, config.config_bytes_max });
        // Numbers stay text (limits are integers); duplicate keys are refused.
        const root = json_tree.parse(self.arena, bytes) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            else => return self.reader.fail("not valid JSON ({s})", .{@errorName(err)}),
        };
        const map = try self.reader.object(root);
        try self.reader.rejectUnknown(map, &top_fields);
        if (map.get("model_rewrite")) |value| return .{ .default_rule = null, .route_rules = &.{}, .model_rewrite = try self.modelRewrite(map, value) };
        const has_route_rules = map.get("_rules_") != null;
        const default_rule = if (has_route_rules and !hasLimits(map)) null else try self.rule(map);
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
        return .{ .default_rule = default_rule, .route_rules = route_rules };
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
        try self.reader.rejectUnknown(map, &route_fields);
        const routes = try self.stringList(map, "_match_route_");
        const domains = try self.stringList(map, "_match_domain_");
        const services = try self.stringList(map, "_match_service_");
        if (routes.len + domains.len + services.len == 0) {
            return self.reader.fail("needs at least one of _match_route_, _match_domain_, _match_service_", .{});
        }
        return .{ .routes = routes, .domains = domains, .services = services, .rule = try self.rule(map) };
    }

    fn stringList(self: *Parser, map: ObjectMap, name: []const u8) ParseError![]const []const u8 {
        const value = map.get(name) orelse return &.{};
        const saved = self.reader.enter(name);
        defer self.reader.leave(saved);
        const entries = switch (value) {
            .array => |list| list.items,
            else => return self.reader.fail("must be an array of strings, got {s}", .{Reader.typeName(value)}),
        };
        const list = try self.arena.alloc([]const u8, entries.len);
        for (entries, list) |entry, *out| {
            out.* = switch (entry) {
                .string => |s| s,
                else => return self.reader.fail("must be an array of strings, got an entry that is {s}", .{Reader.typeName(entry)}),
            };
        }
        return list;
    }

    fn rule(self: *Parser, map: ObjectMap) ParseError!Rule {
        const global = map.get("global_threshold");
        const items = map.get("rule_items");
        if ((global == null) == (items == null)) {
            return self.reader.fail("needs exactly one of global_threshold, rule_items", .{});
        }
        const name_value = map.get("rule_name") orelse return self.reader.failField("rule_name", "is required", .{});
        const saved_name = self.reader.enter("rule_name");
        const name = try self.reader.string(name_value, config.rule_name_bytes_max);
        if (name.len == 0) return self.reader.fail("must not be empty", .{});
        for (name) |c| {
            if (c <= ' ' or c >= 0x7f or c == ':' or c == '{' or c == '}') {
                return self.reader.fail("must be printable ASCII without spaces, ':', '{{' or '}}', got \"{s}\"", .{name});
            }
        }
        self.reader.leave(saved_name);

        var rule_items: []RuleItem = undefined;
        if (global) |value| {
            const saved = self.reader.enter("global_threshold");
            const limits = try self.limitsOf(try self.reader.object(value), false);
            self.reader.leave(saved);
            const keys = try self.arena.alloc(LimitKey, 1);
            keys[0] = .{ .text = "global", .matcher = .any, .limits = limits };
            rule_items = try self.arena.alloc(RuleItem, 1);
            rule_items[0] = .{ .limit_type = .global, .source = "", .keys = keys };
        } else {
            const saved = self.reader.enter("rule_items");
            const entries = try self.reader.array(items.?, 1, config.rule_items_max);
            rule_items = try self.arena.alloc(RuleItem, entries.len);
            for (entries, rule_items, 0..) |entry, *item, index| {
                const saved_index = self.reader.enterIndex(index);
                item.* = try self.ruleItem(entry);
                self.reader.leave(saved_index);
            }
            self.reader.leave(saved);
        }

        var rejected_code: u32 = bounds.rejected_code_default;
        if (map.get("rejected_code")) |value| {
            const saved = self.reader.enter("rejected_code");
            rejected_code = @intCast(try self.reader.integer(value, bounds.rejected_code_min, bounds.rejected_code_max));
            self.reader.leave(saved);
        }
        var rejected_msg: []const u8 = bounds.rejected_msg_default;
        if (map.get("rejected_msg")) |value| {
            const saved = self.reader.enter("rejected_msg");
            rejected_msg = try self.reader.string(value, config.rejected_msg_bytes_max);
            self.reader.leave(saved);
        }
        var parsed = Rule{ .name = name, .items = rule_items, .rejected_code = rejected_code, .rejected_msg = rejected_msg };
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
        return parsed;
    }

    fn weightsField(self: *Parser, value: Value) ParseError!usage.Weights {
        const saved = self.reader.enter("weights");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.rejectUnknown(map, &.{ "input", "output", "cached" });
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
    fn limitsOf(self: *Parser, map: ObjectMap, comptime with_key: bool) ParseError!Limits {
        try self.reader.rejectUnknown(map, &(limit_field_names ++ if (with_key) [_][]const u8{"key"} else [_][]const u8{}));
        var limits: Limits = .{};
        var count: usize = 0;
        for (limit_fields) |field| {
            if (map.get(field.name)) |value| {
                const saved = self.reader.enter(field.name);
                const limit: u64 = @intCast(try self.reader.integer(value, 1, bounds.limit_max));
                const per_window = switch (field.unit) {
                    .tokens => &limits.tokens,
                    .requests => &limits.requests,
                };
                per_window[@backingInt(field.window)] = limit;
                self.reader.leave(saved);
                count += 1;
            }
        }
        if (count == 0) return self.reader.fail("needs at least one of token_per_second/minute/hour/day or request_per_second/minute/hour/day", .{});
        return limits;
    }

    fn ruleItem(self: *Parser, value: Value) ParseError!RuleItem {
        const map = try self.reader.object(value);
        const known = comptime blk: {
            var names: [limit_by_fields.len + 1][]const u8 = undefined;
            for (limit_by_fields, 0..) |field, i| names[i] = field.name;
            names[limit_by_fields.len] = "limit_keys";
            break :blk names;
        };
        try self.reader.rejectUnknown(map, &known);

        var found: ?struct { name: []const u8, limit_type: LimitType, value: Value } = null;
        for (limit_by_fields) |field| {
            if (map.get(field.name)) |field_value| {
                if (found != null) return self.reader.fail("needs exactly one limit_by_* field, got {s} and {s}", .{ found.?.name, field.name });
                found = .{ .name = field.name, .limit_type = field.limit_type, .value = field_value };
            }
        }
        const limit_by = found orelse return self.reader.fail("needs exactly one limit_by_* field (limit_by_header, limit_by_per_header, limit_by_param, limit_by_per_param, limit_by_cookie, limit_by_per_cookie, limit_by_consumer, limit_by_per_consumer, limit_by_per_ip)", .{});

        var item = RuleItem{ .limit_type = limit_by.limit_type, .source = "", .keys = &.{} };
        const saved_source = self.reader.enter(limit_by.name);
        const source = try self.reader.string(limit_by.value, config.source_name_bytes_max);
        switch (limit_by.limit_type) {
            .consumer, .per_consumer, .global => item.source = "", // Higress ignores the value
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
                if (source.len == 0) return self.reader.fail("must name a header", .{});
                item.source = try std.ascii.allocLowerString(self.arena, source);
            },
            .param, .per_param, .cookie, .per_cookie => {
                if (source.len == 0) return self.reader.fail("must not be empty", .{});
                item.source = source;
            },
        }
        self.reader.leave(saved_source);

        const keys_value = map.get("limit_keys") orelse return self.reader.failField("limit_keys", "is required", .{});
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
        return item;
    }

    fn limitKey(self: *Parser, value: Value, limit_type: LimitType) ParseError!LimitKey {
        const map = try self.reader.object(value);
        const key_value = map.get("key") orelse {
            try self.reader.rejectUnknown(map, &(limit_field_names ++ [_][]const u8{"key"}));
            return self.reader.failField("key", "is required", .{});
        };
        const saved = self.reader.enter("key");
        const text = try self.reader.string(key_value, config.key_bytes_max);
        if (text.len == 0) return self.reader.fail("must not be empty", .{});
        const matcher = try self.keyMatcher(text, limit_type);
        self.reader.leave(saved);
        return .{ .text = text, .matcher = matcher, .limits = try self.limitsOf(map, true) };
    }

    fn keyMatcher(self: *Parser, text: []const u8, limit_type: LimitType) ParseError!KeyMatcher {
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
        var regex_diagnostic: regex.Diagnostic = .{};
        const compiled = regex.Regex.compile(self.arena, text[prefix.len..], &regex_diagnostic) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            error.PatternTooComplex => return self.reader.fail("regexp is too complex: {s}", .{regex_diagnostic.message}),
            error.InvalidPattern => return self.reader.fail("invalid regexp at offset {d}: {s}", .{ regex_diagnostic.offset, regex_diagnostic.message }),
        };
        return .{ .pattern = compiled };
    }

    fn redisField(self: *Parser, map: ObjectMap) ParseError!?Redis {
        const value = map.get("redis") orelse return null;
        const saved = self.reader.enter("redis");
        defer self.reader.leave(saved);
        const redis_map = try self.reader.object(value);
        try self.reader.rejectUnknown(redis_map, &.{ "service_name", "service_port", "username", "password", "timeout", "database" });
        const name_value = redis_map.get("service_name") orelse return self.reader.failField("service_name", "is required", .{});
        var redis = Redis{ .service_name = undefined };
        {
            const saved_field = self.reader.enter("service_name");
            redis.service_name = try self.reader.string(name_value, bounds.redis_service_name_bytes_max);
            if (redis.service_name.len == 0) return self.reader.fail("must not be empty", .{});
            self.reader.leave(saved_field);
        }
        if (std.mem.endsWith(u8, redis.service_name, ".static")) redis.service_port = 80;
        if (redis_map.get("service_port")) |port| {
            const saved_field = self.reader.enter("service_port");
            redis.service_port = @intCast(try self.reader.integer(port, 1, bounds.port_max));
            self.reader.leave(saved_field);
        }
        inline for (.{ "username", "password" }) |name| {
            if (redis_map.get(name)) |credential| {
                const saved_field = self.reader.enter(name);
                @field(redis, name) = try self.reader.string(credential, bounds.redis_credential_bytes_max);
                self.reader.leave(saved_field);
            }
        }
        if (redis_map.get("timeout")) |timeout| {
            const saved_field = self.reader.enter("timeout");
            redis.timeout_ms = @intCast(try self.reader.integer(timeout, 1, bounds.redis_timeout_ms_max));
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

// ---- tests -----------------------------------------------------------------------------------

fn expectInvalid(document: []const u8, field: []const u8, reason_part: []const u8) !void {
    var diagnostic: Diagnostic = .{};
    try std.testing.expectError(error.InvalidConfig, parse(std.testing.allocator, document, &diagnostic));
    try std.testing.expectEqualStrings(field, diagnostic.field());
    if (std.mem.indexOf(u8, diagnostic.reason(), reason_part) == null) {
        std.debug.print("reason was: {s}\n", .{diagnostic.reason()});
        return error.TestUnexpectedResult;
    }
}

test "config: Higress example parses into items, keys and windows" {
    const document =
        \\{"rule_name":"default_rule","rule_items":[
        \\  {"limit_by_per_param":"apikey","limit_keys":[{"key":"regexp:^a.*","token_per_minute":100},{"key":"*","token_per_day":5}]},
        \\  {"limit_by_header":"X-Api-Key","limit_keys":[{"key":"k1","token_per_minute":10,"token_per_hour":50}]}],
        \\ "redis":{"service_name":"redis.static"}}
    ;
    var diagnostic: Diagnostic = .{};
    const parsed = try parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    const rule = parsed.default_rule.?;
    try std.testing.expectEqualStrings("default_rule", rule.name);
    try std.testing.expectEqual(@as(u32, 429), rule.rejected_code);
    try std.testing.expectEqual(@as(usize, 2), rule.items.len);
    try std.testing.expectEqual(LimitType.per_param, rule.items[0].limit_type);
    try std.testing.expect(rule.items[0].keys[0].matcher == .pattern);
    try std.testing.expect(rule.items[0].keys[1].matcher == .any);
    try std.testing.expectEqual(@as(?u64, 5), rule.items[0].keys[1].limits.get(.tokens, .day));
    try std.testing.expectEqualStrings("x-api-key", rule.items[1].source);
    try std.testing.expectEqual(@as(?u64, 50), rule.items[1].keys[0].limits.get(.tokens, .hour));
    try std.testing.expectEqual(@as(u16, 80), rule.redis.?.service_port);
}

test "config: errors name the field and the reason" {
    try expectInvalid("{\"rule_name\":\"r\",\"rule_items\":[{\"limit_by_header\":\"a\",\"limit_keys\":[{\"key\":\"k\",\"token_per_minute\":-5}]}]}", "rule_items[0].limit_keys[0].token_per_minute", "got -5");
    try expectInvalid("{\"rule_name\":\"r\"}", "", "exactly one of global_threshold, rule_items");
    try expectInvalid("{\"rule_name\":\"r\",\"rule_itmes\":[]}", "rule_itmes", "unknown field");
    try expectInvalid("{\"rule_name\":\"r\",\"rule_items\":[{\"limit_by_per_header\":\"x\",\"limit_keys\":[{\"key\":\"regexp:(a\",\"token_per_minute\":1}]}]}", "rule_items[0].limit_keys[0].key", "invalid regexp");
    try expectInvalid("{not json", "", "not valid JSON");
    try expectInvalid("{\"_rules_\":[{\"rule_name\":\"x\",\"global_threshold\":{\"token_per_minute\":1}}]}", "_rules_[0]", "_match_route_");
}

test "config: a failed parse leaks nothing" {
    // std.testing.allocator reports leaks; exercise every early-return path once.
    const documents = [_][]const u8{ "[]", "{}", "{\"rule_name\":5,\"global_threshold\":{\"token_per_minute\":1}}", "{\"rule_name\":\"r\",\"global_threshold\":{}}" };
    for (documents) |document| {
        var diagnostic: Diagnostic = .{};
        try std.testing.expectError(error.InvalidConfig, parse(std.testing.allocator, document, &diagnostic));
    }
}
