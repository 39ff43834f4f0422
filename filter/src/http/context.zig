//! The HTTP context: one per request, a small state machine (`Phase`). A request is admitted
//! or rejected once: on its headers (postpaid), or when its body is complete (reserve, which
//! sizes the reservation from the body). Usage is read as the response passes, and the
//! reservation is settled against it when the stream ends. The decisions themselves are pure
//! (admission.zig, settle.zig). This file holds the state and its transitions; the request
//! side is request_phase.zig, admission verdict.zig, the response side response_phase.zig.
//! `main.zig` owns the context table and the ABI exports.
const std = @import("std");
const admission = @import("admission.zig");
const cache_flow = @import("cache.zig");
const config = @import("../config/config.zig");
const higress_tokens = @import("higress_tokens.zig");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const model = @import("model.zig");
const request_phase = @import("request_phase.zig");
const response_phase = @import("response_phase.zig");
const script = @import("../store/script.zig");
const select = @import("select.zig");
const sse_filter = @import("../usage/sse_filter.zig");
const store = @import("../store/store.zig");
const usage = @import("../usage/usage.zig");
const verdict = @import("verdict.zig");
const wait = @import("wait.zig"); // near the limit (issue 13)
const Lane = @import("../config/parse_exhausted.zig").Lane;

const allocator = host.allocator;

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
    /// Admitted and not yet counted in tokenlimit_requests{outcome="allowed"}: counted when the
    /// context ends, under the model the request turned out to name (labelled metrics).
    allowed_uncounted: bool = false,
    /// The request headers wait with the body and keep their `content-length`: a body rewrite
    /// (`include_usage`, a downgrade's model) declares the new length (rewrite.declareLength).
    /// False when Envoy cannot hold the headers: then the length is dropped up front (issue 17).
    length_kept: bool = false,

    pub fn deinit(self: *HttpContext) void {
        if (self.allowed_uncounted) self.countOutcome(.allowed); // its model is known by now
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

    // ---- labelled metrics (issue 16) ----

    /// The request's model as far as the filter knows it (null: none), for metric labels.
    pub fn modelName(self: *const HttpContext) ?[]const u8 {
        return if (self.requested_model == .name) self.requested_model.name else null;
    }

    /// Counts the request under its rule and model (tokenlimit_requests{outcome}).
    pub fn countOutcome(self: *const HttpContext, outcome: labelled.Outcome) void {
        labelled.countRequest(ruleLabel(self.rule.?), self.modelName(), outcome);
    }

    /// Envoy is done with the stream. A request whose admission is still with Redis keeps its
    /// context until the answer comes (so a reservation made for it can be returned).
    pub fn onDone(self: *HttpContext) bool {
        if (self.phase == .queued) wait.abandon(self); // a client that leaves is dropped
        if (self.phase != .awaiting_store) return true;
        self.abandoned = true;
        return false;
    }

    // The request side (request_phase.zig): headers, body, the model-rewrite role.
    pub const onRequestHeaders = request_phase.onRequestHeaders;
    pub const onRequestBody = request_phase.onRequestBody;
    pub const nameRequest = request_phase.nameRequest;

    // Admission (verdict.zig): the store asked, its answer carried out.
    pub const decide = verdict.decide;
    pub const carryOut = verdict.carryOut;
    pub const storeUnavailable = verdict.storeUnavailable;
    pub const admitted = verdict.admitted;
    pub const readmit = verdict.readmit;
    pub const refuseHeld = verdict.refuseHeld;
    pub const onStoreReply = verdict.onStoreReply;
    pub const releaseAbandoned = verdict.releaseAbandoned;

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
