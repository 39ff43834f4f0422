//! Admission of one HTTP context: the estimate is sized and sent to the store (`decide`), and
//! the store's answer -- now (local) or later (Redis, `onStoreReply`) -- is carried out as
//! properties, metrics, logs and the reply if any. The decisions are pure (admission.zig); this
//! file acts on them. Split from context.zig (issue 17), whose `HttpContext` exposes these
//! functions as methods.
const std = @import("std");
const admission = @import("admission.zig");
const cache_flow = @import("cache.zig");
const context = @import("context.zig");
const downgrade = @import("downgrade.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const redis = @import("../store/redis.zig");
const request = @import("../usage/request.zig");
const response = @import("../respond/response.zig");
const script = @import("../store/script.zig");
const settlement = @import("settle.zig");
const store = @import("../store/store.zig");
const usage_endpoint = @import("usage_endpoint.zig");
const wait = @import("wait.zig"); // near the limit (issue 13)

const HttpContext = context.HttpContext;

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
pub fn carryOut(self: *HttpContext, answer: store.Admission) host.Action {
    const rule = self.rule.?;
    switch (admission.judge(rule.shadow, rule.failure_mode, answer)) {
        .wait => {
            std.debug.assert(self.store == .redis);
            self.enter(.awaiting_store);
            return .pause;
        },
        .allowed => {
            const first = &self.counters.items[0];
            context.setProperty("tokenlimit_key", admission.counterIdentity(first.key.slice()));
            context.setProperty("tokenlimit_decision", if (self.downgraded) "downgraded" else "allowed");
            if (wait.onAllowed(self)) |action| return action;
            host.logf(.debug, "allowed rule={s} counters={d} first={s} reserved={d}", .{ rule.name, self.counters.items.len, first.key.slice(), first.reserved });
            return self.admitted();
        },
        .shadow_rejected => |index| {
            const counter = &self.counters.items[index];
            context.setProperty("tokenlimit_key", admission.counterIdentity(counter.key.slice()));
            host.incrementMetric(metrics.plugin.requests_shadow_rejected, 1);
            self.countOutcome(.shadow_rejected);
            context.setProperty("tokenlimit_decision", downgrade.shadowDecision(rule) orelse wait.shadowDecision(self));
            host.logf(.info, "shadow: would reject rule={s} counter={s} used={d} limit={d}", .{ rule.name, counter.key.slice(), counter.check.used, counter.check.limit });
            return self.admitted();
        },
        .rejected => |index| {
            if (downgrade.onRefused(self)) |action| return action;
            const counter = &self.counters.items[index];
            context.setProperty("tokenlimit_key", admission.counterIdentity(counter.key.slice()));
            if (wait.onRefused(self, index)) |action| return action;
            self.enter(.idle);
            host.incrementMetric(metrics.plugin.requests_rejected, 1);
            self.countOutcome(.rejected);
            context.setProperty("tokenlimit_decision", "rejected");
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
pub fn storeUnavailable(self: *HttpContext) host.Action {
    const rule = self.rule.?;
    std.debug.assert(self.store == .redis);
    switch (rule.failure_mode) {
        .open => {
            context.setProperty("tokenlimit_decision", "allowed_store_unavailable");
            self.enter(.idle); // admitted uncounted, as Higress does
            host.incrementMetric(metrics.plugin.requests_allowed, 1);
            self.countOutcome(.allowed);
            return .@"continue";
        },
        .closed => {
            self.enter(.idle);
            host.incrementMetric(metrics.plugin.requests_rejected, 1);
            self.countOutcome(.rejected);
            context.setProperty("tokenlimit_decision", "rejected_store_unavailable");
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

pub fn admitted(self: *HttpContext) host.Action {
    self.enter(.admitted);
    host.incrementMetric(metrics.plugin.requests_allowed, 1);
    // Labelled when the stream ends (context.deinit): a request admitted on its headers learns
    // its model from the body later, and its tokens are counted under that model.
    self.allowed_uncounted = true;
    return .@"continue";
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
pub fn releaseAbandoned(self: *HttpContext, outcome: redis.Outcome) void {
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
