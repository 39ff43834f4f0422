//! The request side of one HTTP context: its headers pick the rule and counters and decide
//! whether the body is needed (reserve, a model only the body names, the response cache, a
//! downgrade, `stream_options.include_usage` on OpenAI completion paths); the body, when held,
//! is scanned once. Admission itself is verdict.zig. Split from context.zig (issue 17), whose
//! `HttpContext` exposes these functions as methods.
const std = @import("std");
const cache_flow = @import("cache.zig");
const config = @import("../config/config.zig");
const context = @import("context.zig");
const higress_tokens = @import("higress_tokens.zig");
const host = @import("../abi/host.zig");
const model = @import("model.zig");
const request = @import("../usage/request.zig");
const rewrite = @import("rewrite.zig");
const root = @import("root.zig");
const select = @import("select.zig");
const usage_endpoint = @import("usage_endpoint.zig");
const wait = @import("wait.zig"); // near the limit (issue 13)
const RequestHead = @import("request_head.zig").RequestHead;

const HttpContext = context.HttpContext;

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

/// Whether anything can read the request's id: the Redis store's admit/settle markers, and a
/// Redis response cache's calls. A rule that keeps its budgets in Envoy's shared data never
/// sends it anywhere, so its requests skip the `x-request-id` read and the formatting.
fn usesRequestId(rule: *const config.Rule) bool {
    return rule.redis != null or rule.cache != null;
}

/// Names the request for the Redis store's markers (`<x-request-id>.<nonce>.<context id>`).
pub fn nameRequest(self: *HttpContext) void {
    if (worker_nonce == 0) worker_nonce = randomNonce() | 1;
    var header = (host.getHeader(.request_headers, "x-request-id") catch null) orelse host.HostBytes{ .bytes = &.{} };
    defer header.deinit();
    const given = header.bytes[0..@min(header.bytes.len, 48)];
    const text = std.fmt.bufPrint(&self.request_id, "{s}.{x}.{d}", .{ given, worker_nonce, self.id }) catch "";
    self.request_id_len = text.len;
}

pub fn onRequestHeaders(self: *HttpContext, root_context: ?*root.RootContext, end_of_stream: bool) host.Action {
    const current = (root_context orelse return .@"continue").config orelse return .@"continue";
    // The headers this file reads, each asked from the host once, and only if needed.
    var head: RequestHead = .{};
    defer head.deinit();
    if (current.model_rewrite != null) return prepareModelRewrite(self, current, end_of_stream, &head);
    const rule = select.rule(current) orelse return .@"continue";
    self.collectCounters(rule);
    if (usage_endpoint.isUsageRequest(rule, head.pathValue())) return usage_endpoint.answer(self, current, rule); // issue 16
    if (rule.modelAware()) {
        self.requested_model = model.fromRequestHeaders(rule, &self.model_buffer, head.pathValue());
        if (self.requested_model == .refused) return model.refuse(rule, self.requested_model.refused);
        // Only the body can still name the model: judge the request once it is complete
        // (a body past the bound, or one without a `model`, reads as no model).
        const length = if (end_of_stream) null else head.contentLength();
        self.model_pending = self.requested_model == .none and !end_of_stream and (length orelse 0) <= rewrite.request_body_bytes_max;
        if (!self.model_pending and !self.resolveModel(rule)) return model.refuseUnpriced(rule, self.requested_model);
    } else {
        // Nothing to count: no label either (the path's model scan is skipped).
        if (self.counters.items.len == 0) return .@"continue";
        // labelled metrics (issue 16): the model as the headers name it, for the `model`
        // label only (the rule's budgets do not depend on it; a refusal reads as none).
        self.requested_model = model.fromRequestHeaders(rule, &self.model_buffer, head.pathValue());
        if (self.requested_model == .refused) self.requested_model = .none;
    }
    if (self.counters.items.len == 0 and !self.model_pending) return .@"continue";
    self.config = current.retain();
    self.rule = rule;
    wait.readLane(self);
    if (usesRequestId(rule)) self.nameRequest();
    if (rule.higress_token_metrics) self.higress_consumer = higress_tokens.Consumer.read(); // issue 16
    context.setProperty("tokenlimit_rule", rule.name);
    // Usage can only be read from an answer the upstream did not compress: ask for identity
    // (Envoy's compressor filter can still compress towards the client, docs/config.md).
    host.replaceHeader(.request_headers, "accept-encoding", "identity") catch |err| {
        host.logf(.warn, "rule {s}: could not ask the upstream for identity encoding: {s}", .{ rule.name, @errorName(err) });
    };

    self.request_sent = end_of_stream;
    const body_length = if (end_of_stream) 0 else head.contentLength();
    const body_readable = !end_of_stream and body_length != null and body_length.? <= rewrite.request_body_bytes_max and head.isJson();
    self.include_usage_candidate = body_readable and head.isOpenAiCompletionsPath();
    // The body may grow by the include_usage member (or a downgrade's model). Where Envoy can
    // hold the headers, they wait with the body and keep their `content-length` (set anew if
    // the body changes: a non-streaming request reaches the upstream as the client sent it);
    // otherwise they go on first, and the length, no longer known, goes (issue 17).
    const downgrades = rule.near_limit.action == .downgrade; // downgrade rewrites the body
    if (self.include_usage_candidate or (downgrades and body_readable)) {
        self.length_kept = headersCanBeHeld();
        if (!self.length_kept) host.removeHeader(.request_headers, "content-length") catch {};
    }

    // Response cache (issue 15): its key may need the whole body.
    const cache_needs_body = cache_flow.onRequestHeaders(self, rule, end_of_stream, body_readable);
    if (self.model_pending or ((rule.admission == .reserve or downgrades) and body_readable) or cache_needs_body or self.length_kept) {
        self.enter(.awaiting_body);
        // The headers wait with the body (Envoy buffers it, at most request_body_bytes_max)
        // so the upstream sees nothing of a request the budget refuses.
        return if (headersCanBeHeld()) .pause else .@"continue";
    }
    if (cache_flow.lookup(self, .{}, body_length orelse 0)) |action| return action;
    return self.decide(.{}, body_length orelse 0);
}

/// Upstream-filter role: hold the JSON body so its `model` can be renamed for this upstream.
fn prepareModelRewrite(self: *HttpContext, current: *config.Config, end_of_stream: bool, head: *RequestHead) host.Action {
    // A body of unknown length (chunked, or one an earlier tokenlimit instance grew by
    // include_usage) is held too; one larger than the bound is passed on unread.
    if (end_of_stream or !head.isJson()) return .@"continue";
    if (head.contentLength()) |length| {
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
    // The body's model for a rule whose budgets depend on it, read from this one read and scan
    // of the body (a body past the bound reads as no model).
    var body_model: model.Requested = .none;
    if (size <= rewrite.request_body_bytes_max) {
        if (host.getBuffer(.request_body, 0, size) catch null) |body| {
            var bytes = body;
            defer bytes.deinit();
            info = request.scan(bytes.bytes);
            if (self.model_pending) body_model = .of(request.decodeModel(bytes.bytes, info, &self.model_buffer));
            // The body's model where the rule's budgets do not read it (model-aware rules read it
            // below): for the metric label and the access log's model field (issue 16).
            if (self.requested_model == .none and self.rule != null and !self.rule.?.modelAware()) {
                const named = model.Requested.of(request.decodeModel(bytes.bytes, info, &self.model_buffer));
                if (named == .name) {
                    self.requested_model = named;
                    context.setProperty("tokenlimit_model", named.name);
                }
            }
            cache_flow.keyFromBody(self, bytes.bytes); // before include_usage changes it
            if (self.include_usage_candidate and rewrite.addIncludeUsage(bytes.bytes, info, self.length_kept)) {
                self.hide_usage_event = !info.usage_asked;
            }
        }
    }
    self.include_usage_candidate = false;
    if (self.phase != .awaiting_body) return .@"continue";
    if (self.model_pending) {
        const rule = self.rule.?;
        self.requested_model = body_model;
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
