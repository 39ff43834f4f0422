//! JSON document → `Config` (docs/config.md): a strict superset of Higress ai-token-ratelimit's
//! config. The document is walked as a `json_tree.Value` tree and checked field by field so that
//! an error names the field path and the reason (reader.zig keeps the path). Everything the
//! config keeps is allocated from the arena that `Config` owns.
//!
//! The field parsers here and in parse_*.zig are `noinline` (issue 17): inlined, `rule` was one
//! 18 KB function, and V8 compiles each Wasm function whole with TurboFan in every VM Envoy
//! runs (three for one worker); that one function cost Envoy ~2.4 MiB of RSS (bench/README.md
//! "Envoy's RSS"). Out of line they cost 2.4 KB of module and nothing per request: config is
//! parsed once per configure.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const usage = @import("../usage/usage.zig");
const config = @import("config.zig");
const sha256 = @import("../match/sha256.zig");
const json_tree = @import("json_tree.zig");
const parse_budget = @import("parse_budget.zig");
const parse_cache = @import("parse_cache.zig");
const parse_lease = @import("parse_lease.zig");
const parse_items = @import("parse_items.zig");
const parse_exhausted = @import("parse_exhausted.zig"); // near the limit (issue 13)
const reader_zig = @import("reader.zig");
const compat = @import("compat.zig");
const bounds = @import("limits");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;
const Reader = reader_zig.Reader;
const Diagnostic = reader_zig.Diagnostic;
const ParseError = reader_zig.ParseError;
const Config = config.Config;
const LimitKey = config.LimitKey;
const Redis = config.Redis;
const RouteRule = config.RouteRule;
const Rule = config.Rule;
const RuleItem = config.RuleItem;
const Admission = config.Admission;
const FailureMode = config.FailureMode;

/// `model_rewrite`'s bound. Not in contract/limits.json yet: its twin is MODEL_BYTES_MAX in the
/// control plane's fallback model, which writes this field (users never do).
const model_name_bytes_max = 128;

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

const Parser = struct {
    arena: std.mem.Allocator,
    reader: Reader,

    /// The fields of model-aware budgets (parse_budget.zig).
    noinline fn budgetFields(self: *Parser) parse_budget.Fields {
        return .{ .reader = &self.reader, .arena = self.arena };
    }

    /// Rule items, their limits and limit keys, and the fractions (parse_items.zig).
    fn itemFields(self: *Parser) parse_items.Items {
        return .{ .reader = &self.reader, .arena = self.arena };
    }

    // ---- document ------------------------------------------------------------------------

    const rule_fields = [_][]const u8{
        "rule_name",    "global_threshold", "rule_items", "rejected_code",      "rejected_msg",          "redis",
        "admission",    "algorithm",        "shadow",     "show_limit_headers", "default_output_tokens", "weights",
        "failure_mode", "local_share",      "compat",
    } ++ model_rule_fields ++ cache_rule_fields ++ parse_exhausted.rule_fields ++ parse_lease.rule_fields;
    /// The response cache (issue 15, parse_cache.zig).
    const cache_rule_fields = [_][]const u8{"cache"};
    /// Rule-level fields of model-aware budgets (issue 12).
    const model_rule_fields = [_][]const u8{ "model_header", "time_zone", "calendar", "prices", "warn_at" } ++ usage_rule_fields;
    /// The usage endpoint (issue 16).
    const usage_rule_fields = [_][]const u8{ "usage_path", "higress_token_metrics" };
    const top_fields = rule_fields ++ [_][]const u8{ "_rules_", "model_rewrite" };
    const route_fields = rule_fields ++ [_][]const u8{ "_match_route_", "_match_domain_", "_match_service_", "_match_route_prefix_" };

    noinline fn document(self: *Parser, bytes: []const u8) ParseError!Parsed {
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
                ignored_default = try std.mem.concat(self.arena, u8, &.{ d.field(), if (d.field().len > 0) ": " else "", d.reason() });
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
    noinline fn modelRewrite(self: *Parser, map: ObjectMap, value: Value) ParseError![]const u8 {
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

    noinline fn routeRule(self: *Parser, value: Value) ParseError!RouteRule {
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
            const limits = try self.itemFields().limitsOf(global_map, &.{"warn_at"});
            const keys = try self.arena.alloc(LimitKey, 1);
            keys[0] = .{ .text = "global", .matcher = .any, .limits = limits };
            rule_items[0] = .{ .limit_type = .global, .source = "", .keys = keys };
            if (global_map.get("warn_at")) |warn_at| rule_items[0].warn_at_milli = try self.itemFields().warnAt(warn_at);
            self.reader.leave(saved);
        }
        if (items) |value| {
            const saved = self.reader.enter("rule_items");
            const entries = try self.reader.array(value, 1, @as(usize, config.rule_items_max) - global_count);
            rule_items = try self.arena.realloc(rule_items, global_count + entries.len);
            for (entries, rule_items[global_count..], 0..) |entry, *item, index| {
                const saved_index = self.reader.enterIndex(index);
                item.* = try self.itemFields().ruleItem(entry);
                self.reader.leave(saved_index);
            }
            self.reader.leave(saved);
        }
        for (rule_items, 0..) |*item, index| try self.itemFields().checkCounterNames(counter_name, item, index, global_count);

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
            parsed.local_share_milli = try self.itemFields().milli(value);
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
        if (map.get("warn_at")) |value| parsed.warn_at_milli = try self.itemFields().warnAt(value);
        if (map.get("model_header")) |value| {
            const saved = self.reader.enter("model_header");
            const header = try self.reader.string(value, config.source_name_bytes_max);
            if (header.len == 0) return self.reader.fail("must not be empty (leave it out to read the model from the path or body)", .{});
            parsed.model_header = try std.ascii.allocLowerString(self.arena, header);
            self.reader.leave(saved);
        }
        if (map.get("usage_path")) |value| parsed.usage_path = try self.usagePath(value); // issue 16
        if (map.get("higress_token_metrics")) |value| parsed.higress_token_metrics = try self.reader.boolField("higress_token_metrics", value);
        // Response cache (issue 15).
        if (map.get("cache")) |value| parsed.cache = try parse_cache.field(&self.reader, value);
        // Near the limit (issue 13).
        parsed.near_limit = try (parse_exhausted.Fields{ .reader = &self.reader, .arena = self.arena }).read(map);
        if (map.get("lease")) |value| parsed.lease = try parse_lease.field(&self.reader, self.itemFields(), &parsed, value); // issue 17
        return parsed;
    }

    /// `usage_path` (issue 16): "" (off), or a path: `/` then printable ASCII without a space,
    /// `?` or `#` (the query string is not part of what is matched).
    noinline fn usagePath(self: *Parser, value: Value) ParseError![]const u8 {
        const saved = self.reader.enter("usage_path");
        defer self.reader.leave(saved);
        const path = try self.reader.string(value, config.source_name_bytes_max);
        if (path.len == 0) return path;
        if (path[0] != '/') return self.reader.fail("must start with /, got \"{s}\" (\"\" turns the usage endpoint off)", .{path});
        for (path) |c| {
            if (c <= ' ' or c >= 0x7f or c == '?' or c == '#') return self.reader.fail("must be printable ASCII without spaces, ? or #, got \"{s}\"", .{path});
        }
        return path;
    }

    noinline fn weightsField(self: *Parser, value: Value) ParseError!usage.Weights {
        const saved = self.reader.enter("weights");
        defer self.reader.leave(saved);
        const map = try self.reader.object(value);
        try self.reader.ignoreUnknown(map, &.{ "input", "output", "cached" });
        var weights = usage.Weights{};
        inline for (.{ .{ "input", "input_milli" }, .{ "output", "output_milli" }, .{ "cached", "cached_milli" } }) |pair| {
            if (map.get(pair[0])) |weight| {
                const saved_field = self.reader.enter(pair[0]);
                @field(weights, pair[1]) = try self.itemFields().milli(weight);
                self.reader.leave(saved_field);
            }
        }
        return weights;
    }

    noinline fn redisField(self: *Parser, map: ObjectMap) ParseError!?Redis {
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
