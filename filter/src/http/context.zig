//! The HTTP context: one per request, a small state machine (`Phase`). A request is admitted
//! or rejected once: on its headers (postpaid), or when its body is complete (reserve, which
//! sizes the reservation from the body). Usage is read as the response passes, and the
//! reservation is settled against it when the stream ends. The decisions themselves are pure
//! (admission.zig, settle.zig); this file reads the request, asks the store and carries the
//! verdict out. `main.zig` owns the context table and the ABI exports.
const std = @import("std");
const admission = @import("admission.zig");
const cache_flow = @import("cache.zig");
const config = @import("../config/config.zig");
const higress_tokens = @import("higress_tokens.zig");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const metrics = @import("../abi/metrics.zig");
const model = @import("model.zig");
const redis = @import("../store/redis.zig");
const request = @import("../usage/request.zig");
const response = @import("../respond/response.zig");
const response_phase = @import("response_phase.zig");
const rewrite = @import("rewrite.zig");
const root = @import("root.zig");
const script = @import("../store/script.zig");
const select = @import("select.zig");
const settlement = @import("settle.zig");
const sse_filter = @import("../usage/sse_filter.zig");
const store = @import("../store/store.zig");
const usage = @import("../usage/usage.zig");
const usage_endpoint = @import("usage_endpoint.zig");
const wait = @import("wait.zig"); // near the limit (issue 13)
const downgrade = @import("downgrade.zig");
const Lane = @import("../config/parse_exhausted.zig").Lane;

const allocator = host.allocator;

/// Random per worker VM: with the context id it names requests uniquely across gateways.
var worker_nonce: u64 = 0;

extern "wasi_snapshot_preview1" fn random_get(buffer: [*]u8, length: usize) u16;

/// 64 random bits from the host (WASI random_get), or the clock if it has none to give.
fn randomNonce() u64 {
    var bytes: [8]u8 = undefined;
    if (random_get(&bytes, bytes.len) != 0) return host.nowMs();
    return std.mem.readInt(u64, &bytes, .little);
}

/// Whether Envoy keeps a paused request-headers phase as StopIteration (the body still reaches
/// the filter). By default it makes it StopAllIteration, which keeps the body away too: a request
/// waiting for its body would wait forever. `allow_on_headers_stop_iteration: true` (Envoy 1.35+)
/// keeps it; the config that sets it says so in this VM environment variable (filter.py).
const headers_held_variable = "TOKENLIMIT_HOLD_REQUEST_HEADERS";
var headers_held_known: ?bool = null;

fn headersCanBeHeld() bool {
    if (headers_held_known == null) {
        var value: [8]u8 = undefined;
        const given = host.environmentVariable(headers_held_variable, &value);
        headers_held_known = given != null and std.mem.eql(u8, given.?, "1");
    }
    return headers_held_known.?;
}

pub const Phase = enum {
    /// No rule applies, or the request was rejected or admitted uncounted: nothing more to do.
    idle,
    /// Admission waits for the whole request body.
    awaiting_body,
    /// Admission waits for the Redis store's reply (the request is paused).
    awaiting_store,
    /// Upstream-filter role: the body is held until its `model` is renamed.
    rewriting_model,
    /// Admitted; usage is read from the response and settled at the end.
    admitted,
    /// Settled (or its abandoned admission given back): final.
    settled,
    /// Response cache (issue 15): the lookup waits for Redis's reply (the request is paused).
    awaiting_cache,
    /// Near the limit (issue 13): held, paused, in the wait queue (wait.zig).
    queued,

    /// The transitions a request may take. Any other is a bug in this file, never input.
    pub fn canEnter(from: Phase, to: Phase) bool {
        return switch (to) {
            .idle => from == .idle or from == .awaiting_body or from == .awaiting_store or from == .rewriting_model or from == .awaiting_cache or from == .queued,
            .awaiting_cache => from == .idle or from == .awaiting_body,
            .awaiting_body, .rewriting_model => from == .idle,
            .awaiting_store => from == .idle or from == .awaiting_body or from == .queued,
            .admitted => from == .idle or from == .awaiting_body or from == .awaiting_store or from == .queued,
            .settled => from == .admitted or from == .awaiting_store or from == .queued,
            .queued => from == .idle or from == .awaiting_body or from == .awaiting_store,
        };
    }
};

pub const HttpContext = struct {
    id: u32,
    root_id: u32,
    phase: Phase = .idle,
    /// The config the request was admitted under (retained; released in deinit).
    config: ?*config.Config = null,
    rule: ?*const config.Rule = null,
    counters: std.ArrayList(store.Counter) = .empty,
    /// Where admission counts the request, chosen once from the rule (or the local store under
    /// `failure_mode: local`); settlement goes to the same store.
    store: store.Store = .local,
    /// Whether the body should gain `stream_options.include_usage` (OpenAI-style path, JSON).
    include_usage_candidate: bool = false,
    response_ok: bool = false,
    /// The answer carries a content-encoding: not scanned, its cost is estimated.
    response_encoded: bool = false,
    /// Response headers came back (whatever their status).
    response_seen: bool = false,
    /// Request body bytes that went upstream (the prompt estimate when usage is missing).
    request_bytes: u64 = 0,
    /// The whole request went upstream: from then on the upstream may bill it.
    request_sent: bool = false,
    scanner: usage.Scanner = .{ .json = .{} },
    response_bytes: u64 = 0,
    /// The gateway asked for usage the client had not asked for: the usage-only event is
    /// hidden from the client (sse_filter.zig), once the response turns out to be a stream.
    hide_usage_event: bool = false,
    event_filter: ?sse_filter.UsageEventFilter = null,
    /// The stream ended while admission waited for Redis (see onDone).
    abandoned: bool = false,
    /// `<x-request-id>.<worker nonce>.<context id>`: unique even when a client reuses an
    /// x-request-id (store.Caller.request_id).
    request_id: [script.request_id_bytes_max]u8 = undefined,
    request_id_len: usize = 0,
    /// The request's model (model.zig), for rules whose items depend on it; its bytes live in
    /// `model_buffer`.
    requested_model: model.Requested = .none,
    model_buffer: model.Buffer = undefined,
    /// The price of the request's model, when the rule has cost limits (micro-USD per 1M).
    price: ?config.Price = null,
    /// The rule's items depend on the model and only the body can name it: the counters are
    /// resolved (model.resolve) once the body is complete.
    model_pending: bool = false,
    /// usage endpoint (issue 16): this request asks for its caller's usage; a Redis store's
    /// `peek` is on its way (usage_endpoint.zig), never an admission.
    usage_request: bool = false,
    /// `higress_token_metrics` (issue 16): the request's consumer, for the answer's counters.
    higress_consumer: higress_tokens.Consumer = .{},

    // Response cache (issue 15, cache.zig).
    cache: cache_flow.State = .{},

    // Near the limit (issue 13, wait.zig): the priority lane, and the estimate pacing sizes by.
    lane: Lane = .normal,
    estimate: admission.Estimate = .{ .tokens = 0 },
    /// Judged with its whole body held (so a downgrade can rewrite its model), and downgraded.
    body_held: bool = false,
    downgraded: bool = false,

    pub fn deinit(self: *HttpContext) void {
        self.cache.deinit();
        wait.forget(self.id);
        self.counters.deinit(allocator);
        if (self.event_filter) |*filter| filter.deinit(allocator);
        if (self.config) |held| config.release(allocator, held);
        self.* = undefined;
    }

    pub fn enter(self: *HttpContext, next: Phase) void {
        std.debug.assert(self.phase.canEnter(next));
        self.phase = next;
    }

    pub fn caller(self: *const HttpContext) store.Caller {
        return .{ .rule_name = self.rule.?.name, .request_id = self.request_id[0..self.request_id_len], .http_context_id = self.id, .root_context_id = self.root_id };
    }

    fn nameRequest(self: *HttpContext) void {
        if (worker_nonce == 0) worker_nonce = randomNonce() | 1;
        var header = (host.getHeader(.request_headers, "x-request-id") catch null) orelse host.HostBytes{ .bytes = &.{} };
        defer header.deinit();
        const given = header.bytes[0..@min(header.bytes.len, 48)];
        const text = std.fmt.bufPrint(&self.request_id, "{s}.{x}.{d}", .{ given, worker_nonce, self.id }) catch "";
        self.request_id_len = text.len;
    }

    pub fn onRequestHeaders(self: *HttpContext, root_context: ?*root.RootContext, end_of_stream: bool) host.Action {
        const current = (root_context orelse return .@"continue").config orelse return .@"continue";
        if (current.model_rewrite != null) return self.prepareModelRewrite(current, end_of_stream);
        const rule = select.rule(current) orelse return .@"continue";
        self.collectCounters(rule);
        if (usage_endpoint.isUsageRequest(rule)) return usage_endpoint.answer(self, current, rule); // issue 16
        if (rule.modelAware()) {
            self.requested_model = model.fromRequestHeaders(rule, &self.model_buffer);
            if (self.requested_model == .refused) return model.refuse(rule, self.requested_model.refused);
            // Only the body can still name the model: judge the request once it is complete
            // (a body past the bound, or one without a `model`, reads as no model).
            const length = if (end_of_stream) null else select.contentLength();
            self.model_pending = self.requested_model == .none and !end_of_stream and (length orelse 0) <= rewrite.request_body_bytes_max;
            if (!self.model_pending and !self.resolveModel(rule)) return model.refuseUnpriced(rule, self.requested_model);
        } else {
            // labelled metrics (issue 16): the model as the headers name it, for the `model`
            // label only (the rule's budgets do not depend on it; a refusal reads as none).
            self.requested_model = model.fromRequestHeaders(rule, &self.model_buffer);
            if (self.requested_model == .refused) self.requested_model = .none;
        }
        if (self.counters.items.len == 0 and !self.model_pending) return .@"continue";
        self.config = current.retain();
        self.rule = rule;
        wait.readLane(self);
        self.nameRequest();
        if (rule.higress_token_metrics) self.higress_consumer = higress_tokens.Consumer.read(); // issue 16
        setProperty("tokenlimit_rule", rule.name);
        // Usage can only be read from an answer the upstream did not compress: ask for identity
        // (Envoy's compressor filter can still compress towards the client, docs/config.md).
        host.replaceHeader(.request_headers, "accept-encoding", "identity") catch |err| {
            host.logf(.warn, "rule {s}: could not ask the upstream for identity encoding: {s}", .{ rule.name, @errorName(err) });
        };

        self.request_sent = end_of_stream;
        const body_length = if (end_of_stream) 0 else select.contentLength();
        const body_readable = !end_of_stream and body_length != null and body_length.? <= rewrite.request_body_bytes_max and select.isJson();
        self.include_usage_candidate = body_readable and select.isOpenAiCompletionsPath();
        // The body may grow by the include_usage member (or a downgrade's model): its length is
        // no longer known here.
        const downgrades = rule.near_limit.action == .downgrade; // downgrade rewrites the body
        if (self.include_usage_candidate or (downgrades and body_readable)) host.removeHeader(.request_headers, "content-length") catch {};

        // Response cache (issue 15): its key may need the whole body.
        const cache_needs_body = cache_flow.onRequestHeaders(self, rule, end_of_stream, body_readable);
        if (self.model_pending or ((rule.admission == .reserve or downgrades) and body_readable) or cache_needs_body) {
            self.enter(.awaiting_body);
            // The headers wait with the body (Envoy buffers it, at most request_body_bytes_max)
            // so the upstream sees nothing of a request the budget refuses.
            return if (headersCanBeHeld()) .pause else .@"continue";
        }
        if (cache_flow.lookup(self, .{}, body_length orelse 0)) |action| return action;
        return self.decide(.{}, body_length orelse 0);
    }

    /// Upstream-filter role: hold the JSON body so its `model` can be renamed for this upstream.
    fn prepareModelRewrite(self: *HttpContext, current: *config.Config, end_of_stream: bool) host.Action {
        // A body of unknown length (chunked, or one an earlier tokenlimit instance grew by
        // include_usage) is held too; one larger than the bound is passed on unread.
        if (end_of_stream or !select.isJson()) return .@"continue";
        if (select.contentLength()) |length| {
            if (length > rewrite.request_body_bytes_max) return .@"continue";
        }
        host.removeHeader(.request_headers, "content-length") catch {};
        self.config = current.retain();
        self.enter(.rewriting_model);
        return .@"continue";
    }

    pub fn onRequestBody(self: *HttpContext, size: usize, end_of_stream: bool) host.Action {
        if (self.phase == .rewriting_model) {
            if (!end_of_stream) return .pause;
            if (size <= rewrite.request_body_bytes_max) rewrite.rewriteModel(self.config.?.model_rewrite.?, size);
            self.enter(.idle);
            return .@"continue";
        }
        if (self.phase == .awaiting_store or self.phase == .queued) {
            // Decided on the headers, Redis not yet answered: the body waits with the headers,
            // under flow control rather than a buffer limit (any size may arrive meanwhile).
            self.request_bytes = size; // all of it so far, buffered
            self.request_sent = end_of_stream;
            return .hold_body;
        }
        if (self.phase != .awaiting_body and !(self.phase == .admitted and self.include_usage_candidate)) {
            // Passing through: each call brings the next chunk.
            self.request_bytes +|= size;
            self.request_sent = end_of_stream;
            return .@"continue";
        }
        if (!end_of_stream) return .pause; // Envoy buffers until the body is complete
        // The whole body, buffered; it goes upstream once admitted (admission may still refuse).
        self.request_bytes = size;
        self.request_sent = true;
        var info: request.RequestInfo = .{};
        if (size <= rewrite.request_body_bytes_max) {
            if (host.getBuffer(.request_body, 0, size) catch null) |body| {
                var bytes = body;
                defer bytes.deinit();
                info = request.scan(bytes.bytes);
                // labelled metrics (issue 16): the body's model, for the label only, where the
                // rule's budgets do not read it (model-aware rules read it below).
                if (self.requested_model == .none and self.rule != null and !self.rule.?.modelAware()) {
                    const named = model.Requested.of(request.decodeModel(bytes.bytes, info, &self.model_buffer));
                    if (named == .name) self.requested_model = named;
                }
                cache_flow.keyFromBody(self, bytes.bytes); // before include_usage changes it
                if (self.include_usage_candidate and rewrite.addIncludeUsage(bytes.bytes, info)) {
                    self.hide_usage_event = !info.usage_asked;
                }
            }
        }
        self.include_usage_candidate = false;
        if (self.phase != .awaiting_body) return .@"continue";
        if (self.model_pending) {
            const rule = self.rule.?;
            self.requested_model = model.fromRequestBody(size, &self.model_buffer);
            if (self.requested_model == .refused) {
                self.enter(.idle);
                return model.refuse(rule, self.requested_model.refused);
            }
            if (!self.resolveModel(rule)) {
                self.enter(.idle);
                return model.refuseUnpriced(rule, self.requested_model);
            }
            if (self.counters.items.len == 0) {
                self.enter(.idle);
                return .@"continue";
            }
        }
        self.body_held = true;
        if (cache_flow.lookup(self, info, size)) |action| return action;
        return self.decide(info, size);
    }

    /// The counters of every item of `rule` that applies to this request (none: not counted).
    pub fn collectCounters(self: *HttpContext, rule: *const config.Rule) void {
        select.collectCounters(&self.counters, rule) catch |err| {
            // Without its counters the request cannot be judged; admit it and say why.
            host.logf(.warn, "rule {s}: could not evaluate request ({s}); admitted", .{ rule.name, @errorName(err) });
            self.counters.clearRetainingCapacity();
        };
        for (self.counters.items) |*counter| counter.budget.zone = rule.calendar;
    }

    /// Applies the request's model to its counters (model.zig), once it is known, and prices
    /// it. False: the rule has cost limits and the model no price (the request is refused).
    pub fn resolveModel(self: *HttpContext, rule: *const config.Rule) bool {
        self.model_pending = false;
        if (self.requested_model == .name) setProperty("tokenlimit_model", self.requested_model.name);
        model.resolve(&self.counters, rule, self.requested_model) catch |err| {
            host.logf(.warn, "rule {s}: could not evaluate request ({s}); admitted", .{ rule.name, @errorName(err) });
            self.counters.clearRetainingCapacity();
        };
        for (self.counters.items) |*counter| counter.budget.zone = rule.calendar;
        var costed = false;
        for (self.counters.items) |counter| costed = costed or counter.unit == .cost;
        if (!costed) return true;
        self.price = model.priceOf(rule, self.requested_model);
        return self.price != null;
    }

    /// Admits or rejects the request against every counter, reserving its estimate (tokens,
    /// and their cost at its model's price) under `reserve` admission. With a Redis store the
    /// answer comes later (`onStoreReply`).
    pub fn decide(self: *HttpContext, info: request.RequestInfo, body_bytes: u64) host.Action {
        const rule = self.rule.?;
        std.debug.assert(self.counters.items.len > 0);
        const now_ms = host.nowMs();
        const tokens = request.estimateTokens(info, body_bytes, rule.default_output_tokens);
        const cost = if (self.price) |price| settlement.estimateCost(price, body_bytes, tokens) else 0;
        admission.prepare(self.counters.items, rule.admission, .{ .tokens = tokens, .cost = cost }, now_ms);
        self.estimate = .{ .tokens = tokens, .cost = cost };
        wait.applyLane(self);
        self.store = store.Store.of(rule);
        return self.carryOut(self.store.admit(self.caller(), self.counters.items, now_ms, rule.shadow));
    }

    /// Carries a store's answer out: properties, metrics, logs, and the reply if any.
    fn carryOut(self: *HttpContext, answer: store.Admission) host.Action {
        const rule = self.rule.?;
        switch (admission.judge(rule.shadow, rule.failure_mode, answer)) {
            .wait => {
                std.debug.assert(self.store == .redis);
                self.enter(.awaiting_store);
                return .pause;
            },
            .allowed => {
                const first = &self.counters.items[0];
                setProperty("tokenlimit_key", admission.counterIdentity(first.key.slice()));
                setProperty("tokenlimit_decision", if (self.downgraded) "downgraded" else "allowed");
                if (wait.onAllowed(self)) |action| return action;
                host.logf(.debug, "allowed rule={s} counters={d} first={s} reserved={d}", .{ rule.name, self.counters.items.len, first.key.slice(), first.reserved });
                return self.admitted();
            },
            .shadow_rejected => |index| {
                const counter = &self.counters.items[index];
                setProperty("tokenlimit_key", admission.counterIdentity(counter.key.slice()));
                host.incrementMetric(metrics.plugin.requests_shadow_rejected, 1);
                self.countOutcome(.shadow_rejected);
                setProperty("tokenlimit_decision", downgrade.shadowDecision(rule) orelse wait.shadowDecision(self));
                host.logf(.info, "shadow: would reject rule={s} counter={s} used={d} limit={d}", .{ rule.name, counter.key.slice(), counter.check.used, counter.check.limit });
                return self.admitted();
            },
            .rejected => |index| {
                if (downgrade.onRefused(self)) |action| return action;
                const counter = &self.counters.items[index];
                setProperty("tokenlimit_key", admission.counterIdentity(counter.key.slice()));
                if (wait.onRefused(self, index)) |action| return action;
                self.enter(.idle);
                host.incrementMetric(metrics.plugin.requests_rejected, 1);
                self.countOutcome(.rejected);
                setProperty("tokenlimit_decision", "rejected");
                host.logf(.debug, "rejected rule={s} counter={s} used={d} limit={d} reset_ms={d}", .{ rule.name, counter.key.slice(), counter.check.used, counter.check.limit, counter.check.reset_in_ms });
                response.sendRejection(rule.rejected_code, rule.rejected_msg, counter.unit, counter.check) catch |err| {
                    host.logf(.err, "could not send the rejection: {s}", .{@errorName(err)});
                    return .@"continue";
                };
                return .pause;
            },
            .uncounted => |failure| {
                host.incrementMetric(metrics.plugin.store_errors, 1);
                self.countOutcome(.store_unavailable);
                host.logf(.err, "rule {s}: budget store failed ({s}); request admitted uncounted", .{ rule.name, failure.describe() });
                self.enter(.idle);
                return .@"continue";
            },
            .fail_open, .fail_closed, .fail_local => |failure| {
                host.incrementMetric(metrics.plugin.store_fallbacks, 1);
                self.countOutcome(.store_unavailable);
                host.logf(.debug, "rule {s}: redis store unavailable ({s}); failure_mode {s}", .{ rule.name, failure.describe(), @tagName(rule.failure_mode) });
                return self.storeUnavailable();
            },
        }
    }

    /// The Redis store could not be asked: the rule's failure_mode decides.
    fn storeUnavailable(self: *HttpContext) host.Action {
        const rule = self.rule.?;
        std.debug.assert(self.store == .redis);
        switch (rule.failure_mode) {
            .open => {
                setProperty("tokenlimit_decision", "allowed_store_unavailable");
                self.enter(.idle); // admitted uncounted, as Higress does
                host.incrementMetric(metrics.plugin.requests_allowed, 1);
                self.countOutcome(.allowed);
                return .@"continue";
            },
            .closed => {
                self.enter(.idle);
                host.incrementMetric(metrics.plugin.requests_rejected, 1);
                self.countOutcome(.rejected);
                setProperty("tokenlimit_decision", "rejected_store_unavailable");
                response.sendStoreUnavailable() catch return .@"continue";
                return .pause;
            },
            .local => {
                admission.shareLimits(self.counters.items, rule.local_share_milli);
                self.store = .local;
                return self.carryOut(self.store.admit(self.caller(), self.counters.items, host.nowMs(), rule.shadow));
            },
        }
    }

    fn admitted(self: *HttpContext) host.Action {
        self.enter(.admitted);
        host.incrementMetric(metrics.plugin.requests_allowed, 1);
        self.countOutcome(.allowed);
        return .@"continue";
    }

    // ---- labelled metrics (issue 16) ----

    /// The request's model as far as the filter knows it (null: none), for metric labels.
    pub fn modelName(self: *const HttpContext) ?[]const u8 {
        return if (self.requested_model == .name) self.requested_model.name else null;
    }

    /// Counts the request under its rule and model (tokenlimit_requests{outcome}).
    pub fn countOutcome(self: *const HttpContext, outcome: labelled.Outcome) void {
        labelled.countRequest(ruleLabel(self.rule.?), self.modelName(), outcome);
    }

    /// A held request's budgets are asked again (wait.zig, on the tick).
    pub fn readmit(self: *HttpContext) host.Action {
        const now_ms = host.nowMs();
        for (self.counters.items) |*counter| counter.admitted_at_ms = now_ms;
        return self.carryOut(self.store.admit(self.caller(), self.counters.items, now_ms, self.rule.?.shadow));
    }

    /// A held request past max_wait_ms: refused by the counter that refused it last.
    pub fn refuseHeld(self: *HttpContext, index: usize) host.Action {
        return self.carryOut(.{ .decided = index });
    }

    /// The Redis store answered (or failed) for this paused request: finish admission and let
    /// the request go on, or reject it.
    pub fn onStoreReply(self: *HttpContext, outcome: redis.Outcome) void {
        if (self.phase == .awaiting_cache) return cache_flow.onLookupReply(self, outcome);
        if (self.phase != .awaiting_store) return;
        if (self.usage_request) return usage_endpoint.onPeekReply(self, outcome); // issue 16
        if (self.abandoned) return self.releaseAbandoned(outcome);
        const answer: store.Admission = switch (outcome) {
            .admitted => |values| self.store.readAdmitReply(self.counters.items, values, self.rule.?.shadow),
            .settled, .peeked, .cached => .{ .failed = .bad_reply },
            .failed => |failure| .{ .failed = failure },
        };
        std.debug.assert(answer != .pending);
        const action = cache_flow.afterAdmission(self, self.carryOut(answer));
        if (action == .@"continue") host.continueRequest() catch |err| {
            host.logf(.err, "could not resume the request: {s}", .{@errorName(err)});
        };
    }

    /// The client left while its admission was with Redis: give back what Redis reserved for
    /// it (its request still counts once), then let Envoy delete the context (proxy_done).
    fn releaseAbandoned(self: *HttpContext, outcome: redis.Outcome) void {
        std.debug.assert(self.store == .redis);
        self.enter(.settled);
        if (outcome == .admitted) {
            if (self.store.readAdmitReply(self.counters.items, outcome.admitted, self.rule.?.shadow) != .failed) { // a lease reply too (issue 17)
                self.store.settle(self.caller(), self.counters.items, host.nowMs(), 0) catch |err| {
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
        if (self.phase == .queued) wait.abandon(self); // a client that leaves is dropped
        if (self.phase != .awaiting_store) return true;
        self.abandoned = true;
        return false;
    }

    // The response phase (response_phase.zig): usage is read as the answer passes, and the
    // reservation is settled against it when the stream ends.
    pub const onResponseHeaders = response_phase.onResponseHeaders;
    pub const onResponseBody = response_phase.onResponseBody;
    pub const onResponseTrailers = response_phase.onResponseTrailers;
    pub const onLog = response_phase.onLog;
};

/// The name a rule's metrics carry: its `rule_name` as configured (its counter form if empty).
pub fn ruleLabel(rule: *const config.Rule) []const u8 {
    return if (rule.configured_name.len > 0) rule.configured_name else rule.name;
}

/// Sets an access-log property (also for response_phase.zig).
pub fn setProperty(name: []const u8, value: []const u8) void {
    host.setProperty(name, value) catch {}; // access-log fields are best effort (failures are counted)
}

test "phase: a request moves forward only, and settled is final" {
    try std.testing.expect(Phase.idle.canEnter(.awaiting_body));
    try std.testing.expect(Phase.awaiting_body.canEnter(.awaiting_store));
    try std.testing.expect(Phase.awaiting_store.canEnter(.admitted));
    try std.testing.expect(Phase.awaiting_store.canEnter(.settled));
    try std.testing.expect(Phase.admitted.canEnter(.settled));
    try std.testing.expect(!Phase.admitted.canEnter(.idle));
    try std.testing.expect(!Phase.admitted.canEnter(.awaiting_store));
    try std.testing.expect(!Phase.rewriting_model.canEnter(.admitted));
    for (std.meta.tags(Phase)) |next| try std.testing.expect(!Phase.settled.canEnter(next));
}
