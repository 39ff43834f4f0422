//! The filter's JSON config (docs/config.md): a strict superset of Higress ai-token-ratelimit's.
//! The document is walked as a `json_tree.Value` tree and checked by hand so that an error names
//! the field path (`rule_items[0].limit_keys[1].key`) and the reason. Everything the filter
//! keeps lives in one arena owned by `Config`; replacing a config frees the old arena at once.
const std = @import("std");
const ip = @import("ip.zig");
const message = @import("../message.zig");
const regex = @import("regex/regex.zig");
const budget = @import("../budget.zig");
const usage = @import("../usage.zig");

const json_tree = @import("json_tree.zig");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;

pub const config_bytes_max = 256 * 1024;
pub const rule_name_bytes_max = 64;
pub const rule_items_max = 32;
pub const limit_keys_max = 64;
pub const key_bytes_max = 256;
pub const rejected_msg_bytes_max = 1024;
pub const source_name_bytes_max = 128;
pub const route_rules_max = 256;

pub const LimitType = enum {
    global,
    header,
    param,
    cookie,
    consumer,
    per_header,
    per_param,
    per_cookie,
    per_consumer,
    per_ip,

    pub fn isPer(self: LimitType) bool {
        return switch (self) {
            .per_header, .per_param, .per_cookie, .per_consumer, .per_ip => true,
            else => false,
        };
    }

    /// Values that may be credentials (API keys in headers, session cookies) are hashed
    /// before they reach a store key or a log line; consumer names and addresses are not secret.
    pub fn hashesValue(self: LimitType) bool {
        return switch (self) {
            .header, .param, .cookie, .per_header, .per_param, .per_cookie => true,
            else => false,
        };
    }
};

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

pub const KeyMatcher = union(enum) {
    literal: []const u8,
    any,
    pattern: regex.Regex,
    ip_range: ip.Range,
};

pub const Unit = enum { tokens, requests };

/// Limits per unit and window (indexed by `budget.Window`); null where the key sets none.
pub const Limits = struct {
    tokens: [4]?u64 = .{ null, null, null, null },
    requests: [4]?u64 = .{ null, null, null, null },

    pub fn get(self: *const Limits, unit: Unit, window: budget.Window) ?u64 {
        const per_window = switch (unit) {
            .tokens => &self.tokens,
            .requests => &self.requests,
        };
        return per_window[@backingInt(window)];
    }
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

pub const Admission = enum { postpaid, reserve };

/// What to do when the Redis store cannot answer: admit (Higress's behaviour), reject, or
/// enforce from the local store meanwhile.
pub const FailureMode = enum { open, closed, local };

pub const LimitKey = struct {
    /// The key as configured (`*`, `regexp:...`, an address), for logs.
    text: []const u8,
    matcher: KeyMatcher,
    limits: Limits,
};

pub const IpSource = union(enum) { remote_address, header: []const u8 };

pub const RuleItem = struct {
    limit_type: LimitType,
    /// Lower-cased header name, parameter or cookie name; "" for global and consumer.
    source: []const u8,
    ip_source: IpSource = .remote_address,
    keys: []const LimitKey,
};

pub const Rule = struct {
    name: []const u8,
    items: []const RuleItem,
    rejected_code: u32 = 429,
    rejected_msg: []const u8 = "Too many requests",
    admission: Admission = .postpaid,
    algorithm: budget.Algorithm = .fixed,
    /// Decide and report, never reject.
    shadow: bool = false,
    show_limit_headers: bool = false,
    /// Output tokens reserved for a request that declares no max_tokens.
    default_output_tokens: u64 = 1024,
    weights: usage.Weights = .{},
    failure_mode: FailureMode = .open,
    /// failure_mode local: thousandths of each limit this gateway enforces alone (1000 = all).
    local_share_milli: u32 = 1000,
    /// Budgets live in Redis when set (Higress semantics), else in the local store.
    redis: ?Redis = null,
};

pub const RouteRule = struct {
    routes: []const []const u8,
    domains: []const []const u8,
    services: []const []const u8,
    rule: ?Rule,
};

pub const Redis = struct {
    /// Higress: the Redis service (`name.dns`, `name.static`, `svc.ns.svc.cluster.local`);
    /// Envoy build: the Envoy cluster of the tokenlimit bridge.
    service_name: []const u8,
    service_port: u16 = 6379,
    username: []const u8 = "",
    password: []const u8 = "",
    timeout_ms: u32 = 1000,
    database: u32 = 0,
};

pub const Config = struct {
    arena: std.heap.ArenaAllocator,
    default_rule: ?Rule,
    route_rules: []const RouteRule,
    /// Set for the upstream-filter role: the model name this upstream expects.
    model_rewrite: ?[]const u8 = null,
    /// Holders of this config: the root context, and each request admitted under it, so a
    /// config replaced mid-request lives until that request ends (the VM is single-threaded).
    references: u32 = 1,

    pub fn deinit(self: *Config) void {
        var arena = self.arena;
        self.* = undefined;
        arena.deinit();
    }

    pub fn retain(self: *Config) *Config {
        self.references += 1;
        return self;
    }
};

/// Drops one reference; the last one frees the config.
pub fn release(gpa: std.mem.Allocator, config: *Config) void {
    std.debug.assert(config.references > 0);
    config.references -= 1;
    if (config.references == 0) destroy(gpa, config);
}

/// Where a config error is and what it is: `field` is the path in the config's own names.
pub const Diagnostic = struct {
    field_buffer: [256]u8 = undefined,
    field_len: usize = 0,
    reason_buffer: [256]u8 = undefined,
    reason_len: usize = 0,

    pub fn field(self: *const Diagnostic) []const u8 {
        return self.field_buffer[0..self.field_len];
    }

    pub fn reason(self: *const Diagnostic) []const u8 {
        return self.reason_buffer[0..self.reason_len];
    }
};

pub const ParseError = error{ InvalidConfig, OutOfMemory };

/// Parses and checks a config document. On error.InvalidConfig, `diagnostic` says why.
pub fn parse(gpa: std.mem.Allocator, document: []const u8, diagnostic: *Diagnostic) ParseError!*Config {
    var arena = std.heap.ArenaAllocator.init(gpa);
    errdefer arena.deinit();
    var parser = Parser{ .arena = arena.allocator(), .diagnostic = diagnostic };
    const parsed = try parser.document(document);
    const config = try gpa.create(Config);
    config.* = .{ .arena = arena, .default_rule = parsed.default_rule, .route_rules = parsed.route_rules, .model_rewrite = parsed.model_rewrite };
    return config;
}

/// Frees a config made by `parse`.
pub fn destroy(gpa: std.mem.Allocator, config: *Config) void {
    config.deinit();
    gpa.destroy(config);
}

const Parsed = struct { default_rule: ?Rule, route_rules: []const RouteRule, model_rewrite: ?[]const u8 = null };

const Parser = struct {
    arena: std.mem.Allocator,
    diagnostic: *Diagnostic,
    path_buffer: [256]u8 = undefined,
    path_len: usize = 0,

    // ---- field path ----------------------------------------------------------------------

    fn enter(self: *Parser, name: []const u8) usize {
        const saved = self.path_len;
        const dot: []const u8 = if (self.path_len > 0) "." else "";
        self.append(dot);
        self.append(name);
        return saved;
    }

    fn enterIndex(self: *Parser, index: usize) usize {
        const saved = self.path_len;
        var buffer: [24]u8 = undefined;
        self.append(std.fmt.bufPrint(&buffer, "[{d}]", .{index}) catch "[?]");
        return saved;
    }

    fn leave(self: *Parser, saved: usize) void {
        self.path_len = saved;
    }

    fn append(self: *Parser, text: []const u8) void {
        const room = self.path_buffer.len - self.path_len;
        const n = @min(room, text.len);
        @memcpy(self.path_buffer[self.path_len..][0..n], text[0..n]);
        self.path_len += n;
    }

    /// Records the error at the current path (message.zig formats it without per-message code).
    fn fail(self: *Parser, comptime format: []const u8, args: anytype) ParseError {
        const d = self.diagnostic;
        @memcpy(d.field_buffer[0..self.path_len], self.path_buffer[0..self.path_len]);
        d.field_len = self.path_len;
        d.reason_len = message.print(&d.reason_buffer, format, args).len;
        return error.InvalidConfig;
    }

    fn failField(self: *Parser, name: []const u8, comptime format: []const u8, args: anytype) ParseError {
        _ = self.enter(name);
        return self.fail(format, args);
    }

    // ---- value helpers -------------------------------------------------------------------

    fn typeName(value: Value) []const u8 {
        return switch (value) {
            .null => "null",
            .bool => "a boolean",
            .number_string => "a number",
            .string => "a string",
            .array => "an array",
            .object => "an object",
        };
    }

    fn object(self: *Parser, value: Value) ParseError!ObjectMap {
        return switch (value) {
            .object => |map| map,
            else => self.fail("must be an object, got {s}", .{typeName(value)}),
        };
    }

    fn array(self: *Parser, value: Value, min: usize, max: usize) ParseError![]const Value {
        const items = switch (value) {
            .array => |list| list.items,
            else => return self.fail("must be an array, got {s}", .{typeName(value)}),
        };
        if (items.len < min) return self.fail("must have at least {d} entr{s}", .{ min, if (min == 1) "y" else "ies" });
        if (items.len > max) return self.fail("must have at most {d} entries, got {d}", .{ max, items.len });
        return items;
    }

    fn string(self: *Parser, value: Value, max_len: usize) ParseError![]const u8 {
        const text = switch (value) {
            .string => |s| s,
            else => return self.fail("must be a string, got {s}", .{typeName(value)}),
        };
        if (text.len > max_len) return self.fail("must be at most {d} bytes, got {d}", .{ max_len, text.len });
        return text;
    }

    fn integer(self: *Parser, value: Value, min: i64, max: i64) ParseError!i64 {
        const number: i64 = switch (value) {
            .number_string => |text| std.fmt.parseInt(i64, text, 10) catch
                return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, text[0..@min(text.len, 32)] }),
            else => return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, typeName(value) }),
        };
        if (number < min or number > max) return self.fail("must be an integer from {d} to {d}, got {d}", .{ min, max, number });
        return number;
    }

    fn rejectUnknown(self: *Parser, map: ObjectMap, known: []const []const u8) ParseError!void {
        var it = map.iterator();
        next_field: while (it.next()) |entry| {
            for (known) |name| {
                if (std.mem.eql(u8, entry.key_ptr.*, name)) continue :next_field;
            }
            const name = entry.key_ptr.*;
            return self.failField(name[0..@min(name.len, 64)], "unknown field", .{});
        }
    }

    // ---- document ------------------------------------------------------------------------

    const rule_fields = [_][]const u8{
        "rule_name",    "global_threshold", "rule_items", "rejected_code",      "rejected_msg",          "redis",
        "admission",    "algorithm",        "shadow",     "show_limit_headers", "default_output_tokens", "weights",
        "failure_mode", "local_share",
    };
    const top_fields = rule_fields ++ [_][]const u8{ "_rules_", "model_rewrite" };
    const route_fields = rule_fields ++ [_][]const u8{ "_match_route_", "_match_domain_", "_match_service_" };

    fn document(self: *Parser, bytes: []const u8) ParseError!Parsed {
        if (bytes.len > config_bytes_max) return self.fail("config is {d} bytes, more than the {d} allowed", .{ bytes.len, config_bytes_max });
        // Numbers stay text (limits are integers); duplicate keys are refused.
        const root = json_tree.parse(self.arena, bytes) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            else => return self.fail("not valid JSON ({s})", .{@errorName(err)}),
        };
        const map = try self.object(root);
        try self.rejectUnknown(map, &top_fields);
        if (map.get("model_rewrite")) |value| return .{ .default_rule = null, .route_rules = &.{}, .model_rewrite = try self.modelRewrite(map, value) };
        const has_route_rules = map.get("_rules_") != null;
        const default_rule = if (has_route_rules and !hasLimits(map)) null else try self.rule(map);
        var route_rules: []RouteRule = &.{};
        if (map.get("_rules_")) |value| {
            const saved = self.enter("_rules_");
            const entries = try self.array(value, 0, route_rules_max);
            route_rules = try self.arena.alloc(RouteRule, entries.len);
            for (entries, route_rules, 0..) |entry, *route_rule, index| {
                const saved_index = self.enterIndex(index);
                route_rule.* = try self.routeRule(entry);
                self.leave(saved_index);
            }
            self.leave(saved);
        }
        return .{ .default_rule = default_rule, .route_rules = route_rules };
    }

    /// The upstream-filter role (fallback routes): rewrite the request's `model`, limit nothing
    /// (the listener-level instance already counted the request).
    fn modelRewrite(self: *Parser, map: ObjectMap, value: Value) ParseError![]const u8 {
        if (map.count() != 1) {
            return self.fail("model_rewrite configures the upstream filter that renames the model for one upstream; it cannot be combined with other fields", .{});
        }
        const saved = self.enter("model_rewrite");
        defer self.leave(saved);
        const model = try self.string(value, 128);
        if (model.len == 0) return self.fail("must not be empty", .{});
        for (model) |c| {
            if (c < ' ' or c >= 0x7f or c == '"' or c == '\\') return self.fail("must be printable ASCII without quotes or backslashes, got \"{s}\"", .{model});
        }
        return model;
    }

    fn hasLimits(map: ObjectMap) bool {
        for (rule_fields) |name| if (map.get(name) != null) return true;
        return false;
    }

    fn routeRule(self: *Parser, value: Value) ParseError!RouteRule {
        const map = try self.object(value);
        try self.rejectUnknown(map, &route_fields);
        const routes = try self.stringList(map, "_match_route_");
        const domains = try self.stringList(map, "_match_domain_");
        const services = try self.stringList(map, "_match_service_");
        if (routes.len + domains.len + services.len == 0) {
            return self.fail("needs at least one of _match_route_, _match_domain_, _match_service_", .{});
        }
        return .{ .routes = routes, .domains = domains, .services = services, .rule = try self.rule(map) };
    }

    fn stringList(self: *Parser, map: ObjectMap, name: []const u8) ParseError![]const []const u8 {
        const value = map.get(name) orelse return &.{};
        const saved = self.enter(name);
        defer self.leave(saved);
        const entries = switch (value) {
            .array => |list| list.items,
            else => return self.fail("must be an array of strings, got {s}", .{typeName(value)}),
        };
        const list = try self.arena.alloc([]const u8, entries.len);
        for (entries, list) |entry, *out| {
            out.* = switch (entry) {
                .string => |s| s,
                else => return self.fail("must be an array of strings, got an entry that is {s}", .{typeName(entry)}),
            };
        }
        return list;
    }

    fn rule(self: *Parser, map: ObjectMap) ParseError!Rule {
        const global = map.get("global_threshold");
        const items = map.get("rule_items");
        if ((global == null) == (items == null)) {
            return self.fail("needs exactly one of global_threshold, rule_items", .{});
        }
        const name_value = map.get("rule_name") orelse return self.failField("rule_name", "is required", .{});
        const saved_name = self.enter("rule_name");
        const name = try self.string(name_value, rule_name_bytes_max);
        if (name.len == 0) return self.fail("must not be empty", .{});
        for (name) |c| {
            if (c <= ' ' or c >= 0x7f or c == ':' or c == '{' or c == '}') {
                return self.fail("must be printable ASCII without spaces, ':', '{{' or '}}', got \"{s}\"", .{name});
            }
        }
        self.leave(saved_name);

        var rule_items: []RuleItem = undefined;
        if (global) |value| {
            const saved = self.enter("global_threshold");
            const limits = try self.limitsOf(try self.object(value), false);
            self.leave(saved);
            const keys = try self.arena.alloc(LimitKey, 1);
            keys[0] = .{ .text = "global", .matcher = .any, .limits = limits };
            rule_items = try self.arena.alloc(RuleItem, 1);
            rule_items[0] = .{ .limit_type = .global, .source = "", .keys = keys };
        } else {
            const saved = self.enter("rule_items");
            const entries = try self.array(items.?, 1, rule_items_max);
            rule_items = try self.arena.alloc(RuleItem, entries.len);
            for (entries, rule_items, 0..) |entry, *item, index| {
                const saved_index = self.enterIndex(index);
                item.* = try self.ruleItem(entry);
                self.leave(saved_index);
            }
            self.leave(saved);
        }

        var rejected_code: u32 = 429;
        if (map.get("rejected_code")) |value| {
            const saved = self.enter("rejected_code");
            rejected_code = @intCast(try self.integer(value, 100, 599));
            self.leave(saved);
        }
        var rejected_msg: []const u8 = "Too many requests";
        if (map.get("rejected_msg")) |value| {
            const saved = self.enter("rejected_msg");
            rejected_msg = try self.string(value, rejected_msg_bytes_max);
            self.leave(saved);
        }
        var parsed = Rule{ .name = name, .items = rule_items, .rejected_code = rejected_code, .rejected_msg = rejected_msg };
        if (map.get("admission")) |value| parsed.admission = try self.enumField(Admission, "admission", value);
        if (map.get("algorithm")) |value| parsed.algorithm = try self.enumField(budget.Algorithm, "algorithm", value);
        if (map.get("shadow")) |value| parsed.shadow = try self.boolField("shadow", value);
        if (map.get("show_limit_headers")) |value| parsed.show_limit_headers = try self.boolField("show_limit_headers", value);
        if (map.get("default_output_tokens")) |value| {
            const saved = self.enter("default_output_tokens");
            parsed.default_output_tokens = @intCast(try self.integer(value, 0, 10_000_000));
            self.leave(saved);
        }
        if (map.get("weights")) |value| parsed.weights = try self.weightsField(value);
        if (map.get("failure_mode")) |value| parsed.failure_mode = try self.enumField(FailureMode, "failure_mode", value);
        if (map.get("local_share")) |value| {
            const saved = self.enter("local_share");
            parsed.local_share_milli = try self.milli(value);
            if (parsed.local_share_milli == 0 or parsed.local_share_milli > 1000) {
                return self.fail("must be a number greater than 0 and at most 1, with at most 3 decimals", .{});
            }
            self.leave(saved);
        }
        parsed.redis = try self.redisField(map);
        return parsed;
    }

    fn enumField(self: *Parser, comptime E: type, name: []const u8, value: Value) ParseError!E {
        const saved = self.enter(name);
        defer self.leave(saved);
        const text = try self.string(value, 32);
        inline for (comptime std.meta.fieldNames(E)) |option| {
            if (std.mem.eql(u8, text, option)) return @field(E, option);
        }
        const options = comptime blk: {
            var joined: []const u8 = "";
            for (std.meta.fieldNames(E), 0..) |option, i| joined = joined ++ (if (i > 0) ", " else "") ++ option;
            break :blk joined;
        };
        return self.fail("must be one of " ++ options ++ ", got \"{s}\"", .{text});
    }

    fn boolField(self: *Parser, name: []const u8, value: Value) ParseError!bool {
        return switch (value) {
            .bool => |b| b,
            else => self.failField(name, "must be true or false, got {s}", .{typeName(value)}),
        };
    }

    /// `weights: {input, output, cached}`: non-negative decimals with up to three places.
    fn weightsField(self: *Parser, value: Value) ParseError!usage.Weights {
        const saved = self.enter("weights");
        defer self.leave(saved);
        const map = try self.object(value);
        try self.rejectUnknown(map, &.{ "input", "output", "cached" });
        var weights = usage.Weights{};
        inline for (.{ .{ "input", "input_milli" }, .{ "output", "output_milli" }, .{ "cached", "cached_milli" } }) |pair| {
            if (map.get(pair[0])) |weight| {
                const saved_field = self.enter(pair[0]);
                @field(weights, pair[1]) = try self.milli(weight);
                self.leave(saved_field);
            }
        }
        return weights;
    }

    /// A decimal such as 0.5 or 4 as thousandths, from 0 to 1000 (so 1000000 thousandths).
    fn milli(self: *Parser, value: Value) ParseError!u32 {
        const text = switch (value) {
            .number_string => |t| t,
            else => return self.fail("must be a number from 0 to 1000, got {s}", .{typeName(value)}),
        };
        const dot = std.mem.indexOfScalar(u8, text, '.') orelse text.len;
        const whole = std.fmt.parseInt(u32, text[0..dot], 10) catch return self.fail("must be a number from 0 to 1000 with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        const fraction_text = if (dot < text.len) text[dot + 1 ..] else "";
        if (fraction_text.len > 3 or whole > 1000) return self.fail("must be a number from 0 to 1000 with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
        var fraction: u32 = 0;
        for (0..3) |i| {
            const digit: u32 = if (i < fraction_text.len) fraction_text[i] -% '0' else 0;
            if (digit > 9) return self.fail("must be a number from 0 to 1000 with at most 3 decimals, got {s}", .{text[0..@min(text.len, 32)]});
            fraction = fraction * 10 + digit;
        }
        const result = whole * 1000 + fraction;
        if (result > 1_000_000) return self.fail("must be a number from 0 to 1000, got {s}", .{text});
        return result;
    }

    /// Reads token_per_* / request_per_* fields; at least one must be present.
    fn limitsOf(self: *Parser, map: ObjectMap, comptime with_key: bool) ParseError!Limits {
        try self.rejectUnknown(map, &(limit_field_names ++ if (with_key) [_][]const u8{"key"} else [_][]const u8{}));
        var limits: Limits = .{};
        var count: usize = 0;
        for (limit_fields) |field| {
            if (map.get(field.name)) |value| {
                const saved = self.enter(field.name);
                const limit: u64 = @intCast(try self.integer(value, 1, budget.limit_max));
                const per_window = switch (field.unit) {
                    .tokens => &limits.tokens,
                    .requests => &limits.requests,
                };
                per_window[@backingInt(field.window)] = limit;
                self.leave(saved);
                count += 1;
            }
        }
        if (count == 0) return self.fail("needs at least one of token_per_second/minute/hour/day or request_per_second/minute/hour/day", .{});
        return limits;
    }

    fn ruleItem(self: *Parser, value: Value) ParseError!RuleItem {
        const map = try self.object(value);
        const known = comptime blk: {
            var names: [limit_by_fields.len + 1][]const u8 = undefined;
            for (limit_by_fields, 0..) |field, i| names[i] = field.name;
            names[limit_by_fields.len] = "limit_keys";
            break :blk names;
        };
        try self.rejectUnknown(map, &known);

        var found: ?struct { name: []const u8, limit_type: LimitType, value: Value } = null;
        for (limit_by_fields) |field| {
            if (map.get(field.name)) |field_value| {
                if (found != null) return self.fail("needs exactly one limit_by_* field, got {s} and {s}", .{ found.?.name, field.name });
                found = .{ .name = field.name, .limit_type = field.limit_type, .value = field_value };
            }
        }
        const limit_by = found orelse return self.fail("needs exactly one limit_by_* field (limit_by_header, limit_by_per_header, limit_by_param, limit_by_per_param, limit_by_cookie, limit_by_per_cookie, limit_by_consumer, limit_by_per_consumer, limit_by_per_ip)", .{});

        var item = RuleItem{ .limit_type = limit_by.limit_type, .source = "", .keys = &.{} };
        const saved_source = self.enter(limit_by.name);
        const source = try self.string(limit_by.value, source_name_bytes_max);
        switch (limit_by.limit_type) {
            .consumer, .per_consumer, .global => item.source = "", // Higress ignores the value
            .per_ip => {
                if (std.mem.eql(u8, source, "from-remote-addr")) {
                    item.ip_source = .remote_address;
                } else if (std.mem.startsWith(u8, source, "from-header-") and source.len > "from-header-".len) {
                    item.ip_source = .{ .header = try std.ascii.allocLowerString(self.arena, source["from-header-".len..]) };
                } else {
                    return self.fail("must be from-remote-addr or from-header-<name>, got \"{s}\"", .{source});
                }
                item.source = source;
            },
            .header, .per_header => {
                if (source.len == 0) return self.fail("must name a header", .{});
                item.source = try std.ascii.allocLowerString(self.arena, source);
            },
            .param, .per_param, .cookie, .per_cookie => {
                if (source.len == 0) return self.fail("must not be empty", .{});
                item.source = source;
            },
        }
        self.leave(saved_source);

        const keys_value = map.get("limit_keys") orelse return self.failField("limit_keys", "is required", .{});
        const saved_keys = self.enter("limit_keys");
        const entries = try self.array(keys_value, 1, limit_keys_max);
        const keys = try self.arena.alloc(LimitKey, entries.len);
        for (entries, keys, 0..) |entry, *key, index| {
            const saved_index = self.enterIndex(index);
            key.* = try self.limitKey(entry, limit_by.limit_type);
            self.leave(saved_index);
        }
        self.leave(saved_keys);
        item.keys = keys;
        return item;
    }

    fn limitKey(self: *Parser, value: Value, limit_type: LimitType) ParseError!LimitKey {
        const map = try self.object(value);
        const key_value = map.get("key") orelse {
            try self.rejectUnknown(map, &(limit_field_names ++ [_][]const u8{"key"}));
            return self.failField("key", "is required", .{});
        };
        const saved = self.enter("key");
        const text = try self.string(key_value, key_bytes_max);
        if (text.len == 0) return self.fail("must not be empty", .{});
        const matcher = try self.keyMatcher(text, limit_type);
        self.leave(saved);
        return .{ .text = text, .matcher = matcher, .limits = try self.limitsOf(map, true) };
    }

    fn keyMatcher(self: *Parser, text: []const u8, limit_type: LimitType) ParseError!KeyMatcher {
        if (!limit_type.isPer()) return .{ .literal = text };
        if (std.mem.eql(u8, text, "*")) return .any;
        if (limit_type == .per_ip) {
            const range = ip.parseRange(text) catch return self.fail("must be an IP address, a CIDR range or *, got \"{s}\"", .{text});
            return .{ .ip_range = range };
        }
        const prefix = "regexp:";
        if (!std.mem.startsWith(u8, text, prefix)) {
            return self.fail("must be * or regexp:<pattern> for limit_by_per_* items, got \"{s}\"", .{text});
        }
        var regex_diagnostic: regex.Diagnostic = .{};
        const compiled = regex.Regex.compile(self.arena, text[prefix.len..], &regex_diagnostic) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            error.PatternTooComplex => return self.fail("regexp is too complex: {s}", .{regex_diagnostic.message}),
            error.InvalidPattern => return self.fail("invalid regexp at offset {d}: {s}", .{ regex_diagnostic.offset, regex_diagnostic.message }),
        };
        return .{ .pattern = compiled };
    }

    fn redisField(self: *Parser, map: ObjectMap) ParseError!?Redis {
        const value = map.get("redis") orelse return null;
        const saved = self.enter("redis");
        defer self.leave(saved);
        const redis_map = try self.object(value);
        try self.rejectUnknown(redis_map, &.{ "service_name", "service_port", "username", "password", "timeout", "database" });
        const name_value = redis_map.get("service_name") orelse return self.failField("service_name", "is required", .{});
        var redis = Redis{ .service_name = undefined };
        {
            const saved_field = self.enter("service_name");
            redis.service_name = try self.string(name_value, 253);
            if (redis.service_name.len == 0) return self.fail("must not be empty", .{});
            self.leave(saved_field);
        }
        if (std.mem.endsWith(u8, redis.service_name, ".static")) redis.service_port = 80;
        if (redis_map.get("service_port")) |port| {
            const saved_field = self.enter("service_port");
            redis.service_port = @intCast(try self.integer(port, 1, 65535));
            self.leave(saved_field);
        }
        inline for (.{ "username", "password" }) |name| {
            if (redis_map.get(name)) |credential| {
                const saved_field = self.enter(name);
                @field(redis, name) = try self.string(credential, 1024);
                self.leave(saved_field);
            }
        }
        if (redis_map.get("timeout")) |timeout| {
            const saved_field = self.enter("timeout");
            redis.timeout_ms = @intCast(try self.integer(timeout, 1, 60_000));
            self.leave(saved_field);
        }
        if (redis_map.get("database")) |database| {
            const saved_field = self.enter("database");
            redis.database = @intCast(try self.integer(database, 0, 1_000_000));
            self.leave(saved_field);
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
    const config = try parse(std.testing.allocator, document, &diagnostic);
    defer destroy(std.testing.allocator, config);
    const rule = config.default_rule.?;
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
