//! The response phase of an HTTP context (context.zig): usage is read from the answer as it
//! passes (the usage-only event hidden when the gateway asked for it), and the reservation is
//! settled against the real cost when the stream ends, however it ends. The charge itself is
//! pure (settle.zig); this file reads the response and carries the charge out.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const cache_flow = @import("cache.zig");
const config = @import("../config/config.zig");
const context = @import("context.zig");
const higress_tokens = @import("higress_tokens.zig");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const metrics = @import("../abi/metrics.zig");
const response = @import("../respond/response.zig");
const settlement = @import("settle.zig");
const sse_filter = @import("../usage/sse_filter.zig");
const store = @import("../store/store.zig");
const usage = @import("../usage/usage.zig");
const warn = @import("warn.zig");
const downgrade = @import("downgrade.zig");

const allocator = host.allocator;
const HttpContext = context.HttpContext;
const setProperty = context.setProperty;

pub fn onResponseHeaders(self: *HttpContext) host.Action {
    if (cache_flow.onResponseHeaders(self)) return .@"continue"; // a cached answer (issue 15)
    if (self.phase != .admitted) return .@"continue";
    self.response_seen = true;
    if (self.rule.?.show_limit_headers) addLimitHeaders(self.counters.items);
    warn.addWarning(self.rule.?, self.counters.items);
    downgrade.onResponseHeaders(self); // near the limit (issue 13)
    var status = (host.getHeader(.response_headers, ":status") catch null) orelse return .@"continue";
    defer status.deinit();
    const code = std.fmt.parseInt(u16, status.bytes, 10) catch 0;
    if (code == 429) labelled.countUpstreamRateLimited(context.ruleLabel(self.rule.?), self.modelName()); // issue 16
    // Upstream refusals and errors consume no tokens; only successful answers are charged.
    self.response_ok = code >= 200 and code < 300;
    if (!self.response_ok) return .@"continue";
    var content_type = (host.getHeader(.response_headers, "content-type") catch null) orelse host.HostBytes{ .bytes = &.{} };
    defer content_type.deinit();
    self.scanner = usage.Scanner.init(content_type.bytes);
    cache_flow.startCapture(self, code, content_type.bytes);
    if (encodedBody()) {
        // Compressed although identity was asked for: its bytes cannot be read for usage.
        self.response_encoded = true;
        host.logf(.warn, "rule {s}: the upstream answered with a content-encoding despite accept-encoding: identity; usage is estimated", .{self.rule.?.name});
        return .@"continue";
    }
    if (self.hide_usage_event and self.scanner == .sse) {
        self.event_filter = .{};
        // Events may be left out: a declared length would no longer hold.
        host.removeHeader(.response_headers, "content-length") catch {};
    }
    return .@"continue";
}

pub fn onResponseBody(self: *HttpContext, size: usize, end_of_stream: bool) host.Action {
    if (self.phase != .admitted or !self.response_ok) return .@"continue";
    if (size > 0) {
        // Scan the chunk as it passes; it is forwarded at once (never buffered).
        if (host.getBuffer(.response_body, 0, size) catch null) |chunk| {
            var bytes = chunk;
            defer bytes.deinit();
            self.response_bytes +|= bytes.bytes.len;
            if (self.event_filter) |*filter| {
                filterEvents(self, filter, bytes.bytes, end_of_stream); // it feeds the scanner
            } else {
                if (!self.response_encoded) self.scanner.feed(bytes.bytes);
                cache_flow.capture(self, bytes.bytes);
            }
        }
    } else if (end_of_stream) {
        if (self.event_filter) |*filter| filterEvents(self, filter, "", true);
    }
    if (end_of_stream) {
        settle(self, "end of stream");
        cache_flow.finish(self);
    }
    return .@"continue";
}

/// Replaces the chunk with what the client gets of it (whole events, the usage-only one
/// left out). The filter feeds the response's scanner and hides events on its verdicts, so
/// the stream is read once (issue 17). On any failure the filter steps aside and the bytes
/// pass as they are (the scanner has read them all the same).
fn filterEvents(self: *HttpContext, filter: *sse_filter.UsageEventFilter, chunk: []const u8, end_of_stream: bool) void {
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(allocator);
    const sent = filter.process(allocator, &self.scanner.sse, chunk, end_of_stream, &out) catch |err| sent: {
        host.logf(.warn, "could not filter the usage event ({s}); the stream passes unfiltered", .{@errorName(err)});
        out.clearRetainingCapacity();
        out.appendSlice(allocator, filter.held.items) catch {};
        out.appendSlice(allocator, chunk) catch {};
        filter.deinit(allocator);
        self.event_filter = null;
        break :sent out.items;
    };
    cache_flow.capture(self, sent); // what the client receives
    // The chunk itself (whole events, none hidden) stays as it is.
    if (sent.len == chunk.len and (sent.len == 0 or sent.ptr == chunk.ptr)) return;
    host.setBuffer(.response_body, 0, chunk.len, sent) catch |err| {
        host.logf(.warn, "could not replace the response chunk: {s}", .{@errorName(err)});
        return;
    };
}

pub fn onResponseTrailers(self: *HttpContext) host.Action {
    settle(self, "trailers");
    cache_flow.finish(self);
    return .@"continue";
}

/// Called when the stream is over, however it ended (client abort, upstream reset).
pub fn onLog(self: *HttpContext) void {
    settle(self, "stream closed");
}

/// Replaces the reservation with the request's real cost, exactly once.
fn settle(self: *HttpContext, reason: []const u8) void {
    if (self.phase != .admitted) return;
    self.enter(.settled);
    const rule = self.rule.?;
    var seen: usage.Usage = .{};
    if (self.response_ok and !self.response_encoded) {
        self.scanner.finish();
        seen = self.scanner.usage();
        if (seen.clamped) host.logf(.warn, "rule {s}: the upstream reported a usage value above {d} tokens; clamped to it (usage.zig value_tokens_max)", .{ rule.name, usage.value_tokens_max });
    }
    const outcome: settlement.Outcome = if (self.response_seen)
        (if (self.response_ok) .answered else .refused)
    else if (self.request_sent) .unanswered else .not_sent;
    const cost = settlement.charge(outcome, seen, self.request_bytes, self.response_bytes, rule.weights);
    var charged_micros: u64 = 0;
    if (self.price) |price| {
        const micros = settlement.chargeCost(cost, price, seen, self.request_bytes, self.response_bytes, outcome == .unanswered);
        charged_micros = micros;
        for (self.counters.items) |*counter| counter.actual_cost = micros;
        var dollars: [24]u8 = undefined;
        setProperty("tokenlimit_cost", dollars[0..response.printDollars(&dollars, micros)]);
    }
    self.store.settle(self.caller(), self.counters.items, host.nowMs(), cost.tokens) catch |err| {
        host.incrementMetric(metrics.plugin.store_errors, 1);
        host.logf(.err, "rule {s}: settling {d} tokens{s} failed: {s}", .{ rule.name, cost.tokens, if (self.store == .redis) " in redis" else "", @errorName(err) });
    };
    if (cost.tokens > 0) host.incrementMetric(metrics.plugin.tokens_charged, @intCast(@min(cost.tokens, std.math.maxInt(i64))));
    if (cost.estimated() and cost.tokens > 0) host.incrementMetric(metrics.plugin.usage_estimated, 1);
    // labelled metrics (issue 16)
    labelled.countCharge(context.ruleLabel(rule), self.modelName(), cost.tokens, charged_micros);
    if (rule.higress_token_metrics) higress_tokens.count(self.modelName(), &self.higress_consumer, seen);
    if (cost.estimated() and cost.tokens > 0) self.countOutcome(.estimated);
    var cost_text: [24]u8 = undefined;
    setProperty("tokenlimit_tokens", std.fmt.bufPrint(&cost_text, "{d}", .{cost.tokens}) catch "");
    setProperty("tokenlimit_usage", cost.label());
    cache_flow.noteCost(self, cost.tokens, cost.basis == .reported);
    host.logf(.debug, "charged {d} tokens ({s}, {s}) rule={s} counters={d}", .{ cost.tokens, cost.label(), reason, rule.name, self.counters.items.len });
}

/// OpenAI-style headers on an admitted response: the token budget with the least room, and the
/// request budget with the least room, as admission left them.
fn addLimitHeaders(counters: []const store.Counter) void {
    for ([_]config.Unit{ .tokens, .requests, .cost }) |unit| {
        var tightest: ?budget.Check = null;
        for (counters) |counter| {
            if (counter.unit != unit) continue;
            if (tightest == null or counter.check.remaining() < tightest.?.remaining()) tightest = counter.check;
        }
        if (tightest) |check| response.addLimitHeaders(unit, check);
    }
}

/// Whether the response being delivered declares a content-encoding other than identity.
fn encodedBody() bool {
    var encoding = (host.getHeader(.response_headers, "content-encoding") catch null) orelse return false;
    defer encoding.deinit();
    const value = std.mem.trim(u8, encoding.bytes, " \t");
    return value.len > 0 and !std.ascii.eqlIgnoreCase(value, "identity");
}
