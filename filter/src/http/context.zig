//! The plugin's behaviour: a root context per plugin config (configure, metrics) and an HTTP
//! context per request. A request is admitted or rejected once: on its headers (postpaid), or
//! when its body is complete (reserve, which sizes the reservation from the body). Usage is
//! read as the response passes, and the reservation is settled against it when the stream ends.
//! `main.zig` owns the context table and the ABI exports.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config.zig");
const host = @import("../abi/host.zig");
const ip = @import("../ip.zig");
const local_store = @import("../store/local.zig");
const match = @import("../match/match.zig");
const redis_store = @import("../store/redis.zig");
const request = @import("../usage/request.zig");
const response = @import("../respond/response.zig");
const store = @import("../store/store.zig");
const usage = @import("../usage/usage.zig");

const allocator = host.allocator;

/// Counters one request may touch: every matching item times its windows and units.
pub const counters_max = config.rule_items_max * 8;
/// Request bodies up to this size are read (for reservations and `include_usage`); larger
/// ones pass unread and are estimated from their length. Envoy's default buffer limit is 1 MiB.
pub const request_body_bytes_max = 1024 * 1024;
/// Bytes that `"stream_options":{"include_usage":true},` adds at most.
const include_usage_bytes_max = 64;

// ---- metrics ---------------------------------------------------------------------------------

pub const Metrics = struct {
    requests_allowed: u32 = 0,
    requests_rejected: u32 = 0,
    requests_shadow_rejected: u32 = 0,
    tokens_charged: u32 = 0,
    usage_estimated: u32 = 0,
    include_usage_added: u32 = 0,
    models_rewritten: u32 = 0,
    store_errors: u32 = 0,
    store_fallbacks: u32 = 0,
    config_rejected: u32 = 0,

    /// Names as Envoy's /stats/prometheus shows them: `tokenlimit_requests_allowed` etc.
    pub fn define() Metrics {
        return host.defineMetrics(Metrics, "tokenlimit.", &.{});
    }
};

pub var metrics: Metrics = .{};

// ---- root context ----------------------------------------------------------------------------

pub const RootContext = struct {
    id: u32,
    config: ?*config.Config = null,

    pub fn deinit(self: *RootContext) void {
        if (self.config) |current| config.release(allocator, current);
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
        if (self.config) |previous| config.release(allocator, previous);
        self.config = parsed;
        if (parsed.model_rewrite) |model| host.logf(.info, "config loaded: upstream filter, model rewritten to {s}", .{model});
        if (parsed.default_rule) |*rule| logRule(rule, "default");
        for (parsed.route_rules) |*route_rule| {
            if (route_rule.rule) |*rule| logRule(rule, "route");
        }
        return true;
    }
};

fn logRule(rule: *const config.Rule, scope: []const u8) void {
    redis_store.configure(rule);
    const store_name = if (rule.redis) |redis| redis.service_name else "local store";
    host.logf(.info, "config loaded: {s} rule {s} ({d} rule items, {s}, {s}{s}), budgets in {s}{s}{s}", .{
        scope,                    rule.name,                                         rule.items.len,
        @tagName(rule.admission), @tagName(rule.algorithm),                          if (rule.shadow) ", shadow" else "",
        store_name,               if (rule.redis != null) ", failure_mode " else "", if (rule.redis != null) @tagName(rule.failure_mode) else "",
    });
}

// ---- HTTP context ----------------------------------------------------------------------------

const Phase = enum {
    /// No rule applies, or the request was rejected: nothing more to do.
    idle,
    /// Admission waits for the whole request body.
    awaiting_body,
    /// Admission waits for the Redis store's reply (the request is paused).
    awaiting_store,
    /// Upstream-filter role: the body is held until its `model` is renamed.
    rewriting_model,
    /// Admitted; usage is read from the response and settled at the end.
    admitted,
    settled,
};

pub const HttpContext = struct {
    id: u32,
    root_id: u32,
    phase: Phase = .idle,
    /// The config the request was admitted under (retained; released in deinit).
    config: ?*config.Config = null,
    rule: ?*const config.Rule = null,
    counters: std.ArrayList(store.Counter) = .empty,
    /// Whether the body should gain `stream_options.include_usage` (OpenAI-style path, JSON).
    include_usage_candidate: bool = false,
    response_ok: bool = false,
    scanner: usage.Scanner = .{ .json = .{} },
    response_bytes: u64 = 0,
    /// The stream ended while admission waited for Redis (see onDone).
    abandoned: bool = false,
    /// Where admission counted the request, so settlement goes to the same store.
    counted_in: enum { local, redis } = .local,

    pub fn deinit(self: *HttpContext) void {
        self.counters.deinit(allocator);
        if (self.config) |held| config.release(allocator, held);
        self.* = undefined;
    }

    pub fn onRequestHeaders(self: *HttpContext, root: ?*RootContext, end_of_stream: bool) host.Action {
        const current = (root orelse return .@"continue").config orelse return .@"continue";
        if (current.model_rewrite != null) return self.prepareModelRewrite(current, end_of_stream);
        const rule = selectRule(current) orelse return .@"continue";
        self.collectCounters(rule) catch |err| {
            // Without its counters the request cannot be judged; admit it and say why.
            host.logf(.warn, "rule {s}: could not evaluate request ({s}); admitted", .{ rule.name, @errorName(err) });
            self.counters.clearRetainingCapacity();
        };
        if (self.counters.items.len == 0) return .@"continue";
        self.config = current.retain();
        self.rule = rule;
        setProperty("tokenlimit_rule", rule.name);

        const body_length = if (end_of_stream) 0 else contentLength();
        const body_readable = !end_of_stream and body_length != null and body_length.? <= request_body_bytes_max and isJson();
        self.include_usage_candidate = body_readable and isOpenAiCompletionsPath();
        // The body may grow by the include_usage member: its length is no longer known here.
        if (self.include_usage_candidate) host.removeHeader(.request_headers, "content-length") catch {};

        if (rule.admission == .reserve and body_readable) {
            self.phase = .awaiting_body;
            return .@"continue"; // headers go on; the body is held until it is complete
        }
        const estimate = request.estimateTokens(.{}, body_length orelse 0, rule.default_output_tokens);
        return self.decide(estimate);
    }

    /// Upstream-filter role: hold the JSON body so its `model` can be renamed for this upstream.
    fn prepareModelRewrite(self: *HttpContext, current: *config.Config, end_of_stream: bool) host.Action {
        // A body of unknown length (chunked, or one an earlier tokenlimit instance grew by
        // include_usage) is held too; one larger than the bound is passed on unread.
        if (end_of_stream or !isJson()) return .@"continue";
        if (contentLength()) |length| {
            if (length > request_body_bytes_max) return .@"continue";
        }
        host.removeHeader(.request_headers, "content-length") catch {};
        self.config = current.retain();
        self.phase = .rewriting_model;
        return .@"continue";
    }

    fn rewriteModel(self: *HttpContext, size: usize) void {
        const model = self.config.?.model_rewrite.?;
        var body = (host.getBuffer(.request_body, 0, size) catch null) orelse return;
        defer body.deinit();
        const out = allocator.alloc(u8, body.bytes.len + model.len) catch return;
        defer allocator.free(out);
        const rewritten = request.withModel(body.bytes, request.scan(body.bytes), model, out) orelse return;
        host.setBuffer(.request_body, 0, body.bytes.len, rewritten) catch |err| {
            host.logf(.warn, "could not rewrite the model: {s}", .{@errorName(err)});
            return;
        };
        host.incrementMetric(metrics.models_rewritten, 1);
    }

    pub fn onRequestBody(self: *HttpContext, size: usize, end_of_stream: bool) host.Action {
        if (self.phase == .rewriting_model) {
            if (!end_of_stream) return .pause;
            if (size <= request_body_bytes_max) self.rewriteModel(size);
            self.phase = .idle;
            return .@"continue";
        }
        if (self.phase != .awaiting_body and !(self.phase == .admitted and self.include_usage_candidate)) return .@"continue";
        if (!end_of_stream) return .pause; // Envoy buffers until the body is complete
        var info: request.RequestInfo = .{};
        if (size <= request_body_bytes_max) {
            if (host.getBuffer(.request_body, 0, size) catch null) |body| {
                var bytes = body;
                defer bytes.deinit();
                info = request.scan(bytes.bytes);
                if (self.include_usage_candidate) self.addIncludeUsage(bytes.bytes, info);
            }
        }
        self.include_usage_candidate = false;
        if (self.phase != .awaiting_body) return .@"continue";
        return self.decide(request.estimateTokens(info, size, self.rule.?.default_output_tokens));
    }

    fn addIncludeUsage(self: *HttpContext, body: []const u8, info: request.RequestInfo) void {
        _ = self;
        if (!request.needsIncludeUsage(info)) return;
        const out = allocator.alloc(u8, body.len + include_usage_bytes_max) catch return;
        defer allocator.free(out);
        const rewritten = request.withIncludeUsage(body, info, out) orelse return;
        host.setBuffer(.request_body, 0, body.len, rewritten) catch |err| {
            host.logf(.warn, "could not add stream_options.include_usage: {s}", .{@errorName(err)});
            return;
        };
        host.incrementMetric(metrics.include_usage_added, 1);
    }

    /// Admits or rejects the request against every counter, reserving `estimate` tokens under
    /// `reserve` admission. With a Redis store the answer comes later (`onStoreReply`).
    fn decide(self: *HttpContext, estimate: u64) host.Action {
        const rule = self.rule.?;
        const now_ms = host.nowMs();
        for (self.counters.items) |*counter| {
            counter.admitted_at_ms = now_ms;
            counter.admit_amount = switch (counter.unit) {
                .requests => 1,
                .tokens => if (rule.admission == .reserve) estimate else 0,
            };
        }
        if (rule.redis) |redis| {
            if (!redis_store.available(now_ms)) return self.storeUnavailable(.circuit_open, false);
            redis_store.admit(redis, self.counters.items, rule.shadow, self.id) catch |err| {
                host.logf(.warn, "rule {s}: could not call the redis store ({s})", .{ rule.name, @errorName(err) });
                return self.storeUnavailable(.not_sent, false);
            };
            self.phase = .awaiting_store;
            self.counted_in = .redis;
            return .pause;
        }
        return self.decideLocally(now_ms);
    }

    fn decideLocally(self: *HttpContext, now_ms: u64) host.Action {
        const rule = self.rule.?;
        self.counted_in = .local;
        const refused = local_store.admit(self.counters.items, now_ms, rule.shadow) catch |err| {
            // The store is in this process; failing means memory or host trouble. Admit: a
            // gateway that stops serving over its own bookkeeping helps no one.
            host.incrementMetric(metrics.store_errors, 1);
            host.logf(.err, "rule {s}: budget store failed ({s}); request admitted uncounted", .{ rule.name, @errorName(err) });
            self.phase = .idle;
            return .@"continue";
        };
        return self.conclude(refused);
    }

    /// The Redis store answered (or failed) for this paused request: finish admission and let
    /// the request go on, or reject it.
    pub fn onStoreReply(self: *HttpContext, outcome: redis_store.Outcome) void {
        if (self.phase != .awaiting_store) return;
        if (self.abandoned) return self.releaseAbandoned(outcome);
        const action = switch (outcome) {
            .admitted => |values| self.applyStoreReply(values),
            .settled => self.storeUnavailable(.bad_reply, true),
            .failed => |failure| self.storeUnavailable(failure, true),
        };
        if (action == .@"continue") host.continueRequest() catch |err| {
            host.logf(.err, "could not resume the request: {s}", .{@errorName(err)});
        };
    }

    /// budget.lua's admit reply: refused index (1-based, 0 = none), server time, then per counter
    /// (used, limit, reset_ms).
    fn applyStoreReply(self: *HttpContext, values: []const i64) host.Action {
        const refused_index = self.recordStoreReply(values) orelse return self.storeUnavailable(.bad_reply, true);
        return self.conclude(if (refused_index == 0) null else refused_index - 1);
    }

    /// Fills each counter's check and reservation from an admit reply; returns the refused
    /// index (0 = admitted), or null for a reply of the wrong shape.
    fn recordStoreReply(self: *HttpContext, values: []const i64) ?usize {
        const counters = self.counters.items;
        if (values.len != 2 + 3 * counters.len) return null;
        const refused_index: usize = @intCast(@max(values[0], 0));
        const server_now_ms: u64 = @intCast(@max(values[1], 0));
        const forced = self.rule.?.shadow;
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
        if (refused_index > counters.len) return null;
        return refused_index;
    }

    /// The client left while its admission was with Redis: give back what Redis reserved for
    /// it (its request still counts once), then let Envoy delete the context (proxy_done).
    fn releaseAbandoned(self: *HttpContext, outcome: redis_store.Outcome) void {
        self.phase = .settled;
        if (outcome == .admitted) {
            if (self.recordStoreReply(outcome.admitted) != null) {
                redis_store.settle(self.rule.?.redis.?, self.counters.items, 0, self.root_id) catch |err| {
                    host.logf(.warn, "could not return the reservation of an abandoned request: {s}", .{@errorName(err)});
                };
            }
        }
        host.setEffectiveContext(self.id) catch {};
        host.done() catch |err| host.logf(.warn, "proxy_done failed: {s}", .{@errorName(err)});
    }

    /// Envoy is done with the stream. A request whose admission is still with Redis keeps its
    /// context until the answer comes (so a reservation made for it can be returned).
    pub fn onDone(self: *HttpContext) bool {
        if (self.phase != .awaiting_store) return true;
        self.abandoned = true;
        return false;
    }

    /// Redis could not be asked: the rule's failure_mode decides. `resumed`: the request is
    /// paused and waits for this answer.
    fn storeUnavailable(self: *HttpContext, failure: redis_store.Failure, resumed: bool) host.Action {
        const rule = self.rule.?;
        host.incrementMetric(metrics.store_fallbacks, 1);
        host.logf(.debug, "rule {s}: redis store unavailable ({s}); failure_mode {s}", .{ rule.name, failure.describe(), @tagName(rule.failure_mode) });
        switch (rule.failure_mode) {
            .open => {
                setProperty("tokenlimit_decision", "allowed_store_unavailable");
                self.phase = .idle; // admitted uncounted, as Higress does
                host.incrementMetric(metrics.requests_allowed, 1);
                return .@"continue";
            },
            .closed => {
                self.phase = .idle;
                host.incrementMetric(metrics.requests_rejected, 1);
                setProperty("tokenlimit_decision", "rejected_store_unavailable");
                var headers: host.HeaderMapWriter(2) = .{};
                headers.add("content-type", "text/plain; charset=utf-8");
                headers.add("retry-after", "1");
                var buffer: [128]u8 = undefined;
                const serialized = headers.write(&buffer) catch return .@"continue";
                host.sendLocalResponse(503, "tokenlimit_store_unavailable", "Token budget store unavailable", serialized) catch return .@"continue";
                return .pause;
            },
            .local => {
                // Each gateway enforces its configured share of every limit on its own.
                for (self.counters.items) |*counter| {
                    const shared = @as(u128, counter.budget.limit) * rule.local_share_milli / 1000;
                    counter.budget.limit = @max(1, @as(u64, @intCast(shared)));
                }
                const action = self.decideLocally(host.nowMs());
                if (resumed and action == .pause) return .pause;
                return action;
            },
        }
    }

    fn conclude(self: *HttpContext, refused: ?usize) host.Action {
        const rule = self.rule.?;
        if (refused) |index| {
            const counter = &self.counters.items[index];
            setProperty("tokenlimit_key", counterIdentity(counter.key.slice()));
            if (rule.shadow) {
                host.incrementMetric(metrics.requests_shadow_rejected, 1);
                setProperty("tokenlimit_decision", "shadow_rejected");
                host.logf(.info, "shadow: would reject rule={s} counter={s} used={d} limit={d}", .{ rule.name, counter.key.slice(), counter.check.used, counter.check.limit });
                return self.admitted();
            }
            self.phase = .idle;
            host.incrementMetric(metrics.requests_rejected, 1);
            setProperty("tokenlimit_decision", "rejected");
            host.logf(.debug, "rejected rule={s} counter={s} used={d} limit={d} reset_ms={d}", .{ rule.name, counter.key.slice(), counter.check.used, counter.check.limit, counter.check.reset_in_ms });
            response.sendRejection(rule.rejected_code, rule.rejected_msg, counter.unit == .requests, counter.check) catch |err| {
                host.logf(.err, "could not send the rejection: {s}", .{@errorName(err)});
                return .@"continue";
            };
            return .pause;
        }
        setProperty("tokenlimit_key", counterIdentity(self.counters.items[0].key.slice()));
        setProperty("tokenlimit_decision", "allowed");
        host.logf(.debug, "allowed rule={s} counters={d} first={s} reserved={d}", .{ rule.name, self.counters.items.len, self.counters.items[0].key.slice(), self.counters.items[0].reserved });
        return self.admitted();
    }

    fn admitted(self: *HttpContext) host.Action {
        self.phase = .admitted;
        host.incrementMetric(metrics.requests_allowed, 1);
        return .@"continue";
    }

    /// Adds one counter per (matching item, unit, window), merging items that name the same one.
    fn collectCounters(self: *HttpContext, rule: *const config.Rule) !void {
        for (rule.items) |*item| {
            var raw = try requestValue(item);
            defer if (raw) |*bytes| bytes.deinit();
            const value: []const u8 = if (item.limit_type == .global) "" else narrow(item, (raw orelse continue).bytes) orelse continue;
            const key = if (item.limit_type == .global) &item.keys[0] else match.matchKey(item, value) orelse continue;
            var hashed: match.HashedValue = undefined;
            const caller = match.identity(item.limit_type, value, &hashed);
            for ([_]config.Unit{ .requests, .tokens }) |unit| {
                for (std.meta.tags(budget.Window)) |window| {
                    const limit = key.limits.get(unit, window) orelse continue;
                    try self.addCounter(.{
                        .key = try match.counterKey(rule.name, item, unit, window, caller),
                        .budget = .{ .algorithm = rule.algorithm, .window = window, .limit = limit },
                        .unit = unit,
                    });
                }
            }
        }
    }

    fn addCounter(self: *HttpContext, counter: store.Counter) !void {
        for (self.counters.items) |*existing| {
            if (std.mem.eql(u8, existing.key.slice(), counter.key.slice())) {
                existing.budget.limit = @min(existing.budget.limit, counter.budget.limit); // strictest
                return;
            }
        }
        if (self.counters.items.len == counters_max) return error.TooManyCounters;
        try self.counters.append(allocator, counter);
    }

    pub fn onResponseHeaders(self: *HttpContext) host.Action {
        if (self.phase != .admitted) return .@"continue";
        if (self.rule.?.show_limit_headers) addLimitHeaders(self.counters.items);
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
        if (self.phase != .admitted or !self.response_ok) return .@"continue";
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

    /// Replaces the reservation with the request's real cost, exactly once.
    fn settle(self: *HttpContext, reason: []const u8) void {
        if (self.phase != .admitted) return;
        self.phase = .settled;
        const rule = self.rule.?;
        var cost: u64 = 0;
        var estimated = false;
        if (self.response_ok) {
            self.scanner.finish();
            const seen = self.scanner.usage();
            estimated = !seen.seen();
            // No usage reported (upstream without it, aborted stream): ~4 bytes a token of
            // what was seen, rather than nothing.
            cost = if (estimated) std.math.divCeil(u64, self.response_bytes, 4) catch 0 else seen.weighted(rule.weights);
        }
        switch (self.counted_in) {
            .local => local_store.settle(self.counters.items, host.nowMs(), cost) catch |err| {
                host.incrementMetric(metrics.store_errors, 1);
                host.logf(.err, "rule {s}: settling {d} tokens failed: {s}", .{ rule.name, cost, @errorName(err) });
            },
            .redis => redis_store.settle(rule.redis.?, self.counters.items, cost, self.root_id) catch |err| {
                host.incrementMetric(metrics.store_errors, 1);
                host.logf(.err, "rule {s}: settling {d} tokens in redis failed: {s}", .{ rule.name, cost, @errorName(err) });
            },
        }
        if (cost > 0) host.incrementMetric(metrics.tokens_charged, @intCast(@min(cost, std.math.maxInt(i64))));
        if (estimated and cost > 0) host.incrementMetric(metrics.usage_estimated, 1);
        var cost_text: [24]u8 = undefined;
        setProperty("tokenlimit_tokens", std.fmt.bufPrint(&cost_text, "{d}", .{cost}) catch "");
        setProperty("tokenlimit_usage", if (!self.response_ok) "none" else if (estimated) "estimated" else "reported");
        host.logf(.debug, "charged {d} tokens ({s}, {s}) rule={s} counters={d}", .{ cost, if (estimated) "estimated" else "reported", reason, rule.name, self.counters.items.len });
    }
};

/// OpenAI-style headers on an admitted response: the token budget with the least room, and the
/// request budget with the least room, as admission left them.
fn addLimitHeaders(counters: []const store.Counter) void {
    for ([_]config.Unit{ .tokens, .requests }) |unit| {
        var tightest: ?budget.Check = null;
        for (counters) |counter| {
            if (counter.unit != unit) continue;
            if (tightest == null or counter.check.remaining() < tightest.?.remaining()) tightest = counter.check;
        }
        if (tightest) |check| response.addLimitHeaders(unit == .requests, check);
    }
}

/// The rule for this request: the first `_rules_` entry that matches, else the default.
fn selectRule(current: *const config.Config) ?*const config.Rule {
    for (current.route_rules) |*route_rule| {
        if (routeRuleMatches(route_rule)) return if (route_rule.rule) |*rule| rule else null;
    }
    return if (current.default_rule) |*rule| rule else null;
}

fn routeRuleMatches(route_rule: *const config.RouteRule) bool {
    if (route_rule.routes.len > 0) {
        if (host.getProperty("route_name") catch null) |name| {
            var bytes = name;
            defer bytes.deinit();
            for (route_rule.routes) |route| if (std.mem.eql(u8, route, bytes.bytes)) return true;
        }
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

fn contentLength() ?u64 {
    var value = (host.getHeader(.request_headers, "content-length") catch null) orelse return null;
    defer value.deinit();
    return std.fmt.parseInt(u64, value.bytes, 10) catch null;
}

fn isJson() bool {
    var value = (host.getHeader(.request_headers, "content-type") catch null) orelse return false;
    defer value.deinit();
    return std.ascii.findIgnoreCase(value.bytes, "json") != null;
}

fn isOpenAiCompletionsPath() bool {
    var path = (host.getHeader(.request_headers, ":path") catch null) orelse return false;
    defer path.deinit();
    return request.isCompletionsPath(path.bytes);
}

fn setProperty(name: []const u8, value: []const u8) void {
    host.setProperty(name, value) catch {}; // access-log fields are best effort
}

/// "per_header:x-api-key:tokens:60:<hash>" out of a counter key, for the access log.
fn counterIdentity(key: []const u8) []const u8 {
    const tag_end = std.mem.indexOf(u8, key, "}:") orelse return key;
    return key[tag_end + 2 ..];
}
