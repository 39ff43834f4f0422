//! `when_exhausted: downgrade` (issue 13): when the requested model's budgets are spent, the
//! request is sent with the rule's cheaper `model` instead -- the body's `model` rewritten as
//! the fallback role rewrites it (rewrite.zig) -- and judged again as a request for that model:
//! its budgets, its price. If those are spent too, the request waits (when `max_wait_ms` is
//! written) or is rejected. The response names the model that served it
//! (`x-tokenlimit-served-model`), and the access log too (`tokenlimit_served_model`).
//!
//! Only a request whose JSON body is held when it is judged can be downgraded (the model lives
//! in the body); context.zig holds the body of such a request when the rule downgrades. Envoy
//! keeps a body the filter paused on (StopIterationAndBuffer) writable while Redis answers.
const std = @import("std");
const config = @import("../config/config.zig");
const context = @import("context.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const model = @import("model.zig");
const request = @import("../usage/request.zig");
const rewrite = @import("rewrite.zig");

const allocator = host.allocator;
const HttpContext = context.HttpContext;

/// The response header naming the model a downgraded request was served by.
pub const served_model_header = "x-tokenlimit-served-model";

/// A counter refused the request. Returns null when it is not downgraded (the rule does not
/// downgrade, it was downgraded already, its body is not held, or the body has no `model` to
/// rewrite); nothing about the request has changed then. Otherwise the request has been
/// judged again as one for the downgrade model, and this is what that judgement says.
pub fn onRefused(self: *HttpContext) ?host.Action {
    const rule = self.rule.?;
    const near = &rule.near_limit;
    if (near.action != .downgrade or self.downgraded or !self.body_held or rule.shadow) return null;
    const size: usize = @intCast(self.request_bytes);
    const info = rewriteBody(near.model, size, self.length_kept) orelse return null;
    self.downgraded = true;
    host.incrementMetric(metrics.plugin.requests_downgraded, 1);
    self.countOutcome(.downgraded);
    context.setProperty("tokenlimit_served_model", near.model);
    host.logf(.debug, "rule {s}: budget spent; downgraded to {s}", .{ rule.name, near.model });
    // A new admission for Redis: the script ignores an admit under a marker it has seen.
    const suffix = std.fmt.bufPrint(self.request_id[self.request_id_len..], ".d", .{}) catch "";
    self.request_id_len += suffix.len;
    if (self.phase == .awaiting_store) self.enter(.idle);
    self.requested_model = model.fromHeaderValue(near.model, &self.model_buffer);
    self.counters.clearRetainingCapacity();
    self.collectCounters(rule);
    if (!self.resolveModel(rule)) {
        self.enter(.idle);
        return model.refuseUnpriced(rule, self.requested_model);
    }
    if (self.counters.items.len == 0) {
        // No budget applies to the downgrade model: it goes on uncounted, as such requests do.
        self.enter(.idle);
        return .@"continue";
    }
    return self.decide(info, size);
}

/// Shadow mode: what a refused request would have got.
pub fn shadowDecision(rule: *const config.Rule) ?[]const u8 {
    return if (rule.near_limit.action == .downgrade) "shadow_downgraded" else null;
}

/// On the response: which model served a downgraded request.
pub fn onResponseHeaders(self: *const HttpContext) void {
    if (!self.downgraded) return;
    host.replaceHeader(.response_headers, served_model_header, self.rule.?.near_limit.model) catch |err| {
        host.logf(.warn, "could not add {s}: {s}", .{ served_model_header, @errorName(err) });
    };
}

/// Renames the held body's `model`; returns what the rewritten body asks for, or null when it
/// names no model (or cannot be rewritten), so nothing changed.
fn rewriteBody(name: []const u8, size: usize, keep_length: bool) ?request.RequestInfo {
    if (size == 0 or size > rewrite.request_body_bytes_max) return null;
    var body = (host.getBuffer(.request_body, 0, size) catch null) orelse return null;
    defer body.deinit();
    const info = request.scan(body.bytes);
    const out = allocator.alloc(u8, body.bytes.len + name.len) catch return null;
    defer allocator.free(out);
    const rewritten = request.withModel(body.bytes, info, name, out) orelse return null;
    host.setBuffer(.request_body, 0, body.bytes.len, rewritten) catch |err| {
        host.logf(.warn, "could not rewrite the model for a downgrade: {s}", .{@errorName(err)});
        return null;
    };
    if (keep_length) rewrite.declareLength(rewritten.len);
    return request.scan(rewritten);
}
