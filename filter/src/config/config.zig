//! The filter's config (docs/config.md), a strict superset of Higress ai-token-ratelimit's: the
//! types a parsed config is made of, and its bounds. Everything a config keeps lives in one
//! arena owned by `Config`; replacing a config frees the old arena at once.
//!
//! parse.zig turns the JSON document into a `Config` (field-path diagnostics via reader.zig);
//! `parse`, `Diagnostic` and `ParseError` are re-exported here so callers import one file.
const std = @import("std");
const assert = std.debug.assert;
const budget = @import("../meter/budget.zig");
const calendar_zig = @import("../meter/calendar.zig");
const usage = @import("../usage/usage.zig");
const ip = @import("ip.zig");
const parse_zig = @import("parse.zig");
const reader = @import("reader.zig");
const regex = @import("regex/regex.zig");
const compat = @import("compat.zig");

/// contract/limits.json, handed over by build.zig: the control plane enforces the same bounds
/// on the same fields (tokenlimit.model.limits), so a config it accepts, the filter accepts.
const bounds = @import("limits");

pub const parse = parse_zig.parse;
pub const Diagnostic = reader.Diagnostic;
pub const ParseError = reader.ParseError;
pub const Compat = compat.Compat;
/// Near the limit (issue 13).
pub const NearLimit = @import("parse_exhausted.zig").NearLimit;

pub const config_bytes_max = bounds.config_bytes_max;
pub const rule_name_bytes_max = bounds.rule_name_bytes_max;
pub const rule_items_max = bounds.rule_items_max;
pub const limit_keys_max = bounds.limit_keys_max;
pub const key_bytes_max = bounds.key_bytes_max;
pub const rejected_msg_bytes_max = bounds.rejected_msg_bytes_max;
pub const source_name_bytes_max = bounds.source_name_bytes_max;
pub const route_rules_max = bounds.route_rules_max;
/// A request's model longer than this is refused with 400 (never truncated: that would merge budgets).
pub const model_bytes_max = bounds.model_bytes_max;
/// Rule names up to this long, of printable ASCII without space, `:`, `{` or `}`, appear in
/// counter names as written (every name valid before Higress's wider names were accepted,
/// so their counters keep their names); any other name appears as `=` + the hex SHA-256 of the
/// name: 65 bytes, so never equal to a name that appears as written.
pub const counter_rule_name_plain_max = 64;
pub const counter_rule_name_bytes_max = 1 + 64;

// What the code relies on about the values in contract/limits.json.
comptime {
    // Reader.integer reads every integer field as an i64.
    for (.{
        bounds.limit_max,            bounds.default_output_tokens_max, bounds.port_max,
        bounds.redis_timeout_ms_max, bounds.redis_database_max,        bounds.rejected_code_max,
    }) |bound| {
        assert(bound <= std.math.maxInt(i64));
    }
    // The budget math saturates at limit_max (budget.zig keeps its own copy for now).
    assert(bounds.limit_max == budget.limit_max);
    // The fields the bounds are stored in.
    assert(bounds.port_max <= std.math.maxInt(@FieldType(Redis, "service_port")));
    assert(bounds.redis_timeout_ms_max <= std.math.maxInt(@FieldType(Redis, "timeout_ms")));
    assert(bounds.redis_database_max <= std.math.maxInt(@FieldType(Redis, "database")));
    assert(bounds.rejected_code_max <= std.math.maxInt(@FieldType(Rule, "rejected_code")));
    assert(bounds.weight_max * 1000 <= std.math.maxInt(@FieldType(usage.Weights, "input_milli")));
    // A rejection is an HTTP status with a three-digit code; the defaults are valid configs.
    assert(100 <= bounds.rejected_code_min);
    assert(bounds.rejected_code_min <= bounds.rejected_code_default);
    assert(bounds.rejected_code_default <= bounds.rejected_code_max);
    assert(bounds.rejected_code_max <= 599);
    assert(bounds.rejected_msg_default.len <= bounds.rejected_msg_bytes_max);
    assert((Rule{ .name = "", .items = &.{} }).default_output_tokens <= bounds.default_output_tokens_max);
    assert((Redis{ .service_name = "" }).timeout_ms <= bounds.redis_timeout_ms_max);
    assert((Redis{ .service_name = "" }).service_port <= bounds.port_max);
}

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
    /// `limit_by_model`: one budget per matching key, shared by every model it matches.
    model,
    /// `limit_by_per_model`: one budget per model value (a provider quota, shared by callers).
    per_model,

    pub fn isPer(self: LimitType) bool {
        return switch (self) {
            .per_header, .per_param, .per_cookie, .per_consumer, .per_ip, .per_model => true,
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

pub const KeyMatcher = union(enum) {
    literal: []const u8,
    any,
    pattern: regex.Regex,
    ip_range: ip.Range,
};

/// What a budget counts: tokens, requests, or money (`cost_per_*`: micro-USD, priced by the
/// rule's `prices`).
pub const Unit = enum { tokens, requests, cost };

/// Limits per unit and window (indexed by `budget.Window`); null where the key sets none.
pub const Limits = struct {
    tokens: [window_count]?u64 = @splat(null),
    requests: [window_count]?u64 = @splat(null),
    /// Micro-USD (`cost_per_month: 200` is 200_000_000).
    cost: [window_count]?u64 = @splat(null),

    pub const window_count = std.meta.tags(budget.Window).len;

    pub fn get(self: *const Limits, unit: Unit, window: budget.Window) ?u64 {
        const per_window = switch (unit) {
            .tokens => &self.tokens,
            .requests => &self.requests,
            .cost => &self.cost,
        };
        return per_window[@backingInt(window)];
    }

    pub fn hasCost(self: *const Limits) bool {
        for (self.cost) |limit| if (limit != null) return true;
        return false;
    }
};

/// USD per 1M tokens as integers of micro-USD (`input: 2.5` is 2_500_000): the filter's money
/// is integers only (docs/design-model-budgets.md §6).
pub const Price = struct {
    input: u64 = 0,
    output: u64 = 0,
    /// Cache reads.
    cached: u64 = 0,
    cache_write: u64 = 0,
};

/// One `prices` entry: the model (exact, `*`, `regexp:`) and its price. The first entry (in
/// document order) that matches a request's model prices it.
pub const PriceEntry = struct {
    text: []const u8,
    matcher: KeyMatcher,
    price: Price,
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
    /// Lower-cased header name, parameter or cookie name; "" for global, consumer and model.
    source: []const u8,
    ip_source: IpSource = .remote_address,
    keys: []const LimitKey,
    /// The `limit_by_*` value as written, where `source` changes it (header names are
    /// lower-cased): Higress's Redis keys carry it as written (`compat`).
    written_source: []const u8 = "",
    /// `models`: the item applies only to requests for these models (exact, `*`, `regexp:`);
    /// empty: to every request, with or without a model.
    models: []const KeyMatcher = &.{},
    /// `per_model: true`: one budget per (identity, model) (http/model.zig).
    per_model: bool = false,
    /// `warn_at`: thousandths of a budget past which admitted responses carry a warning
    /// (0: the rule's `warn_at`, if any).
    warn_at_milli: u32 = 0,

    /// Whether the item needs the request's model to be judged (http/model.zig).
    pub fn modelAware(self: *const RuleItem) bool {
        return self.models.len > 0 or self.per_model or self.limit_type == .model or self.limit_type == .per_model;
    }
};

pub const Rule = struct {
    /// The rule's name as counter names carry it: `rule_name` as written, or its hashed form
    /// (`counter_rule_name_plain_max`). Rules sharing a `rule_name` share counters.
    name: []const u8,
    /// `rule_name` as written (Higress reads any scalar: `rule_name: 2024` is "2024"), for logs.
    configured_name: []const u8 = "",
    items: []const RuleItem,
    rejected_code: u32 = bounds.rejected_code_default,
    rejected_msg: []const u8 = bounds.rejected_msg_default,
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
    /// `compat`: whose Redis keys and counting the budgets use (config/compat.zig).
    compat: Compat = .none,
    /// `calendar`: the rule's `time_zone` as the control plane rendered it (meter/calendar.zig);
    /// null: UTC, and second to day windows epoch-aligned as before.
    calendar: ?calendar_zig.Table = null,
    /// `model_header`: lower-cased name of a request header that names the model (Higress's
    /// model router); "" when unset. Read before the path and the body (http/model.zig).
    model_header: []const u8 = "",

    /// `warn_at` for every item that sets none (thousandths; 0: no warnings).
    warn_at_milli: u32 = 0,
    /// `prices`, in document order.
    prices: []const PriceEntry = &.{},

    /// Response cache (issue 15, config/parse_cache.zig): null when the rule caches nothing.
    cache: ?Cache = null,

    /// Whether any item needs the request's model (then the body is read before admission);
    /// cost limits need it too (a request is priced by its model). Set by `derive`.
    model_aware: bool = false,

    // usage endpoint (issue 16): `usage_path`, where the filter answers a caller's own usage
    // (http/usage_endpoint.zig); "" turns it off.
    usage_path: []const u8 = usage_path_default,
    /// `higress_token_metrics`: also count tokens under Higress ai-statistics' metric names
    /// (http/higress_tokens.zig); off by default, as ai-statistics may count them already.
    higress_token_metrics: bool = false,
    /// Near the limit (issue 13): when_exhausted, pace_above, priority (parse_exhausted.zig).
    near_limit: NearLimit = .{},
    /// Leases for hot keys (issue 17, parse_lease.zig, store/lease.zig): null without.
    lease: ?Lease = null,

    pub fn modelAware(self: *const Rule) bool {
        return self.model_aware;
    }

    /// Works out what the rule needs from a request, once, when the config is loaded (a rule
    /// may have thousands of keys: not something to walk per request).
    pub fn derive(self: *Rule) void {
        self.model_aware = false;
        for (self.items) |*item| {
            if (item.modelAware()) self.model_aware = true;
            for (item.keys) |*key| {
                if (key.limits.hasCost()) self.model_aware = true;
            }
        }
    }
};

/// Where a rule answers `GET` with the caller's own usage unless `usage_path` says otherwise.
pub const usage_path_default = "/tokenlimit/v1/usage";
/// A rule's response cache (issue 15, docs/cache.md).
pub const Cache = struct {
    ttl_seconds: u32,
    scope: Scope = .key,
    max_entry_bytes: u32 = bounds.cache_entry_bytes_default,

    /// key: an answer is served only to the caller that asked; rule: to every caller of the rule.
    pub const Scope = enum { key, rule };
};

comptime {
    // Response cache: the default is a valid value, and entries fit the bridge's argument bound
    // (512 KiB, tokenlimit.bridge.resp.MAX_ARG_BYTES) with room for the entry's own header.
    assert(bounds.cache_entry_bytes_default <= bounds.cache_entry_bytes_max);
    assert(bounds.cache_entry_bytes_max + 4096 <= 512 * 1024);
    assert(bounds.cache_ttl_seconds_max <= std.math.maxInt(u32));
}

pub const RouteRule = struct {
    /// `_match_route_`: route names, matched exactly (empty names dropped, as Higress does).
    routes: []const []const u8,
    /// `_match_domain_`: hosts, `*suffix` or `prefix*` as Higress writes them.
    domains: []const []const u8,
    /// `_match_service_`: services (`fqdn` or `fqdn:port`; empty names dropped).
    services: []const []const u8,
    /// `_match_route_prefix_`: route-name prefixes (empty ones dropped). Higress tries a rule's
    /// routes (with its services, when both are set), else its domains, else its services, else
    /// these prefixes: the first field set decides.
    route_prefixes: []const []const u8 = &.{},
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
    /// Paths of fields the config ignores as Higress does (unknown names, overridden
    /// `limit_by_*`), for one warning line when it is loaded.
    ignored_fields: []const []const u8 = &.{},
    /// Why the top-level rule was dropped (`field: reason`), when it was broken beside `_rules_`:
    /// Higress then applies the route rules and no default.
    ignored_default: ?[]const u8 = null,
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

/// Frees a config made by `parse`.
pub fn destroy(gpa: std.mem.Allocator, config: *Config) void {
    config.deinit();
    gpa.destroy(config);
}

/// `lease: {fraction}` (issue 17): each worker takes this share of a budget from Redis at a
/// time (store/lease.zig).
pub const Lease = struct { fraction_milli: u32 };
