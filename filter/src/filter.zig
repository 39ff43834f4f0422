//! The plugin's behaviour: a root context per plugin config (configure, metrics) and an HTTP
//! context per request (admit or reject on request headers, read usage as the response passes,
//! charge when the stream ends). `main.zig` owns the context table and the ABI exports.
const std = @import("std");
const config = @import("config.zig");
const host = @import("host.zig");
const ip = @import("ip.zig");
const local_store = @import("local_store.zig");
const match = @import("match.zig");
const response = @import("response.zig");
const usage = @import("usage.zig");
const window = @import("window.zig");

const allocator = host.allocator;

/// Counters one request may touch: every matching item times its windows (bounded by config).
pub const charges_max = config.rule_items_max * 4;

// ---- metrics ---------------------------------------------------------------------------------

pub const Metrics = struct {
    requests_allowed: u32 = 0,
    requests_rejected: u32 = 0,
    tokens_charged: u32 = 0,
    usage_estimated: u32 = 0,
    store_errors: u32 = 0,
    config_rejected: u32 = 0,

    /// Names as Envoy's /stats/prometheus shows them: `tokenlimit_requests_allowed` etc.
    pub fn define() Metrics {
        var defined: Metrics = .{};
        inline for (comptime std.meta.fieldNames(Metrics)) |name| {
            @field(defined, name) = host.defineMetric(.counter, "tokenlimit." ++ name) catch 0;
        }
        return defined;
    }
};

pub var metrics: Metrics = .{};

// ---- root context ----------------------------------------------------------------------------

pub const RootContext = struct {
    id: u32,
    config: ?*config.Config = null,

    pub fn deinit(self: *RootContext) void {
        if (self.config) |current| config.destroy(allocator, current);
        self.* = undefined;
    }

    /// Parses the plugin configuration. A bad one is refused with one log line naming the
    /// field, and the config already in place keeps working.
    pub fn configure(self: *RootContext, size: usize) bool {
        var bytes = (host.getBuffer(.plugin_configuration, 0, size) catch null) orelse host.HostBytes{ .bytes = &.{} };
        defer bytes.deinit();
        var diagnostic: config.Diagnostic = .{};
        const parsed = config.parse(allocator, bytes.bytes, &diagnostic) catch |err| {
            host.incrementMetric(metrics.config_rejected, 1);
            switch (err) {
                error.OutOfMemory => host.log(.err, "invalid config: out of memory while parsing"),
                error.InvalidConfig => if (diagnostic.field().len > 0)
                    host.logf(.err, "invalid config: {s}: {s}", .{ diagnostic.field(), diagnostic.reason() })
                else
                    host.logf(.err, "invalid config: {s}", .{diagnostic.reason()}),
            }
            return false;
        };
        if (self.config) |previous| config.destroy(allocator, previous);
        self.config = parsed;
        const rule_name = if (parsed.default_rule) |rule| rule.name else "(none)";
        const item_count = if (parsed.default_rule) |rule| rule.items.len else 0;
        host.logf(.info, "config loaded: rule {s}, {d} rule items, {d} route rules, local store", .{ rule_name, item_count, parsed.route_rules.len });
        if (parsed.redis) |redis| {
            host.logf(.warn, "redis ({s}:{d}) is configured but this build keeps budgets in the local store (per gateway)", .{ redis.service_name, redis.service_port });
        }
        return true;
    }
};

// ---- HTTP context ----------------------------------------------------------------------------

const Charge = struct {
    key: match.CounterKey,
    window: window.Window,
    limit: u64,
};

const Decision = enum { none, allowed, rejected };

pub const HttpContext = struct {
    id: u32,
    root_id: u32,
    charges: std.ArrayList(Charge) = .empty,
    decision: Decision = .none,
    response_ok: bool = false,
    scanner: usage.Scanner = .{ .json = .{} },
    response_bytes: u64 = 0,
    settled: bool = false,

    pub fn deinit(self: *HttpContext) void {
        self.charges.deinit(allocator);
        self.* = undefined;
    }

    pub fn onRequestHeaders(self: *HttpContext, root: ?*RootContext) host.Action {
        const root_context = root orelse return .@"continue";
        const current = root_context.config orelse return .@"continue";
        const rule = selectRule(current) orelse return .@"continue";
        const now_ms = host.nowMs();
        self.collectCharges(&rule) catch |err| {
            // Without the counters the request cannot be judged; admit it and say why.
            host.logf(.warn, "rule {s}: could not evaluate request ({s}); admitted", .{ rule.name, @errorName(err) });
            self.charges.clearRetainingCapacity();
            return .@"continue";
        };
        if (self.charges.items.len == 0) return .@"continue";

        var refusing: ?struct { charge: *const Charge, budget: window.Check } = null;
        for (self.charges.items) |*charge| {
            const record = local_store.read(charge.key.slice()) catch |err| {
                host.incrementMetric(metrics.store_errors, 1);
                host.logf(.warn, "store read failed for {s}: {s}; treating as unused", .{ charge.key.slice(), @errorName(err) });
                continue;
            };
            if (record == null) local_store.ensure(charge.key.slice(), now_ms, charge.window) catch {};
            const budget = window.check(record, now_ms, charge.window, charge.limit);
            if (!budget.exhausted()) continue;
            // Of several spent budgets, report the one that resets last: retrying earlier fails.
            if (refusing == null or budget.reset_in_ms > refusing.?.budget.reset_in_ms) {
                refusing = .{ .charge = charge, .budget = budget };
            }
        }

        setProperty("tokenlimit_rule", rule.name);
        if (refusing) |refused| {
            self.decision = .rejected;
            host.incrementMetric(metrics.requests_rejected, 1);
            setProperty("tokenlimit_decision", "rejected");
            setProperty("tokenlimit_key", counterIdentity(refused.charge.key.slice()));
            host.logf(.debug, "rejected rule={s} counter={s} used={d} limit={d} reset_ms={d}", .{ rule.name, refused.charge.key.slice(), refused.budget.used, refused.budget.limit, refused.budget.reset_in_ms });
            response.sendRejection(rule.rejected_code, rule.rejected_msg, refused.budget) catch |err| {
                host.logf(.err, "could not send the rejection: {s}", .{@errorName(err)});
                return .@"continue";
            };
            self.charges.clearRetainingCapacity();
            return .pause;
        }
        self.decision = .allowed;
        host.incrementMetric(metrics.requests_allowed, 1);
        setProperty("tokenlimit_decision", "allowed");
        setProperty("tokenlimit_key", counterIdentity(self.charges.items[0].key.slice()));
        host.logf(.debug, "allowed rule={s} counters={d} first={s}", .{ rule.name, self.charges.items.len, self.charges.items[0].key.slice() });
        return .@"continue";
    }

    /// Adds one charge per (matching item, window), merging items that name the same counter.
    fn collectCharges(self: *HttpContext, rule: *const config.Rule) !void {
        for (rule.items) |*item| {
            var raw = try requestValue(item);
            defer if (raw) |*bytes| bytes.deinit();
            const value: []const u8 = if (item.limit_type == .global) "" else narrow(item, (raw orelse continue).bytes) orelse continue;
            const key = if (item.limit_type == .global) &item.keys[0] else match.matchKey(item, value) orelse continue;
            var hashed: match.HashedValue = undefined;
            const caller = match.identity(item.limit_type, value, &hashed);
            for (std.meta.tags(window.Window)) |w| {
                const limit = key.limits[@backingInt(w)] orelse continue;
                const counter = try match.counterKey(rule.name, item, w, caller);
                try self.addCharge(.{ .key = counter, .window = w, .limit = limit });
            }
        }
    }

    fn addCharge(self: *HttpContext, charge: Charge) !void {
        for (self.charges.items) |*existing| {
            if (std.mem.eql(u8, existing.key.slice(), charge.key.slice())) {
                existing.limit = @min(existing.limit, charge.limit); // one counter, strictest limit
                return;
            }
        }
        if (self.charges.items.len == charges_max) return error.TooManyCounters;
        try self.charges.append(allocator, charge);
    }

    pub fn onResponseHeaders(self: *HttpContext) host.Action {
        if (self.decision != .allowed) return .@"continue";
        var status = (host.getHeader(.response_headers, ":status") catch null) orelse return .@"continue";
        defer status.deinit();
        const code = std.fmt.parseInt(u16, status.bytes, 10) catch 0;
        // Upstream refusals and errors consume no tokens; only successful answers are charged.
        self.response_ok = code >= 200 and code < 300;
        if (!self.response_ok) return .@"continue";
        var content_type = (host.getHeader(.response_headers, "content-type") catch null) orelse host.HostBytes{ .bytes = &.{} };
        defer content_type.deinit();
        self.scanner = usage.Scanner.init(content_type.bytes);
        return .@"continue";
    }

    pub fn onResponseBody(self: *HttpContext, size: usize, end_of_stream: bool) host.Action {
        if (self.decision != .allowed or !self.response_ok or self.settled) return .@"continue";
        if (size > 0) {
            // Scan the chunk as it passes; it is forwarded at once (never buffered).
            if (host.getBuffer(.response_body, 0, size) catch null) |chunk| {
                var bytes = chunk;
                defer bytes.deinit();
                self.scanner.feed(bytes.bytes);
                self.response_bytes += bytes.bytes.len;
            }
        }
        if (end_of_stream) self.settle("end of stream");
        return .@"continue";
    }

    pub fn onResponseTrailers(self: *HttpContext) host.Action {
        self.settle("trailers");
        return .@"continue";
    }

    /// Called when the stream is over, however it ended (client abort, upstream reset).
    pub fn onLog(self: *HttpContext) void {
        self.settle("stream closed");
    }

    /// Charges the request's usage to every counter it was admitted under, exactly once.
    fn settle(self: *HttpContext, reason: []const u8) void {
        if (self.settled or self.decision != .allowed) return;
        self.settled = true;
        if (!self.response_ok) return;
        self.scanner.finish();
        const seen = self.scanner.usage();
        const estimated = !seen.seen();
        // No usage reported (upstream without it, aborted stream): estimate ~4 bytes per token
        // of what was seen rather than charge nothing.
        const tokens = if (estimated) std.math.divCeil(u64, self.response_bytes, 4) catch 0 else seen.total();
        if (tokens == 0) return;
        const now_ms = host.nowMs();
        for (self.charges.items) |*charge| {
            _ = local_store.charge(charge.key.slice(), now_ms, charge.window, tokens) catch |err| {
                host.incrementMetric(metrics.store_errors, 1);
                host.logf(.err, "charge of {d} tokens to {s} failed: {s}", .{ tokens, charge.key.slice(), @errorName(err) });
                continue;
            };
        }
        host.incrementMetric(metrics.tokens_charged, @intCast(@min(tokens, std.math.maxInt(i64))));
        if (estimated) host.incrementMetric(metrics.usage_estimated, 1);
        var tokens_text: [24]u8 = undefined;
        setProperty("tokenlimit_tokens", std.fmt.bufPrint(&tokens_text, "{d}", .{tokens}) catch "");
        if (estimated) setProperty("tokenlimit_usage", "estimated") else setProperty("tokenlimit_usage", "reported");
        host.logf(.debug, "charged {d} tokens ({s}, {s}) to {d} counters, first={s}", .{ tokens, if (estimated) "estimated" else "reported", reason, self.charges.items.len, self.charges.items[0].key.slice() });
    }
};

/// The rule for this request: the first `_rules_` entry that matches, else the default.
fn selectRule(current: *const config.Config) ?config.Rule {
    for (current.route_rules) |*route_rule| {
        if (routeRuleMatches(route_rule)) return route_rule.rule;
    }
    return current.default_rule;
}

fn routeRuleMatches(route_rule: *const config.RouteRule) bool {
    if (route_rule.routes.len > 0) {
        var name = (host.getProperty("route_name") catch null) orelse return false;
        defer name.deinit();
        for (route_rule.routes) |route| if (std.mem.eql(u8, route, name.bytes)) return true;
    }
    if (route_rule.domains.len > 0) {
        if (host.getHeader(.request_headers, ":authority") catch null) |authority| {
            var bytes = authority;
            defer bytes.deinit();
            for (route_rule.domains) |domain| if (match.domainMatches(domain, bytes.bytes)) return true;
        }
    }
    if (route_rule.services.len > 0) {
        if (host.getProperty("cluster_name") catch null) |cluster| {
            var bytes = cluster;
            defer bytes.deinit();
            for (route_rule.services) |service| if (match.serviceMatches(service, bytes.bytes)) return true;
        }
    }
    return false;
}

/// The raw request value an item keys on (header, `:path` for params, `cookie`, address).
fn requestValue(item: *const config.RuleItem) host.Error!?host.HostBytes {
    return switch (item.limit_type) {
        .global => null,
        .header, .per_header => host.getHeader(.request_headers, item.source),
        .param, .per_param => host.getHeader(.request_headers, ":path"),
        .cookie, .per_cookie => host.getHeader(.request_headers, "cookie"),
        .consumer, .per_consumer => host.getHeader(.request_headers, "x-mse-consumer"),
        .per_ip => switch (item.ip_source) {
            .remote_address => host.getProperty("source\x00address"),
            .header => |name| host.getHeader(.request_headers, name),
        },
    };
}

/// Narrows a raw value to what the item matches: the parameter, the cookie, the address.
fn narrow(item: *const config.RuleItem, raw: []const u8) ?[]const u8 {
    return switch (item.limit_type) {
        .param, .per_param => match.queryParam(raw, item.source),
        .cookie, .per_cookie => match.cookieValue(raw, item.source),
        .per_ip => switch (item.ip_source) {
            .remote_address => ip.stripPort(raw),
            .header => match.firstListValue(raw),
        },
        else => raw,
    };
}

fn setProperty(name: []const u8, value: []const u8) void {
    host.setProperty(name, value) catch {}; // access-log fields are best effort
}

/// "per_header:x-api-key:<hash>" out of a counter key, for the access log: no rule, no window.
fn counterIdentity(key: []const u8) []const u8 {
    var parts = std.mem.splitScalar(u8, key, ':');
    _ = parts.next(); // prefix
    _ = parts.next(); // rule
    const rest_start = parts.index orelse return key;
    return key[rest_start..];
}
