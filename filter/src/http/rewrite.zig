//! Request-body rewrites: the upstream-filter role (`model_rewrite`: the body's `model` is
//! renamed for this upstream) and `stream_options.include_usage` (so a streamed answer reports
//! its usage). Both are best effort: a body that cannot be rewritten goes on as it was.
const std = @import("std");
const host = @import("../abi/host.zig");
const message = @import("../abi/message.zig");
const metrics = @import("../abi/metrics.zig");
const request = @import("../usage/request.zig");

const allocator = host.allocator;

/// Request bodies up to this size are read (for reservations, `include_usage` and model
/// rewrites); larger ones pass unread. Envoy's default buffer limit is 1 MiB.
pub const request_body_bytes_max = 1024 * 1024;

/// Renames the complete request body's `model` to `model`.
pub fn rewriteModel(model: []const u8, size: usize) void {
    var body = (host.getBuffer(.request_body, 0, size) catch null) orelse return;
    defer body.deinit();
    const out = allocator.alloc(u8, body.bytes.len + model.len) catch return;
    defer allocator.free(out);
    const rewritten = request.withModel(body.bytes, request.scan(body.bytes), model, out) orelse return;
    host.setBuffer(.request_body, 0, body.bytes.len, rewritten) catch |err| {
        host.logf(.warn, "could not rewrite the model: {s}", .{@errorName(err)});
        return;
    };
    host.incrementMetric(metrics.plugin.models_rewritten, 1);
}

/// Makes a streamed completions body ask for usage (`stream_options.include_usage: true`)
/// whatever the client said. Returns whether the body now asks for it. `keep_length`: the
/// request headers are still held, and their `content-length` is set to the new length.
pub fn addIncludeUsage(body: []const u8, info: request.RequestInfo, keep_length: bool) bool {
    if (!request.needsIncludeUsage(info)) return info.stream;
    const out = allocator.alloc(u8, body.len + request.include_usage_bytes_max) catch return false;
    defer allocator.free(out);
    const rewritten = request.withIncludeUsage(body, info, out) orelse {
        host.log(.warn, "could not make stream_options.include_usage true (too many stream_options members?); the stream is charged an estimate if it reports no usage");
        return false;
    };
    host.setBuffer(.request_body, 0, body.len, rewritten) catch |err| {
        host.logf(.warn, "could not add stream_options.include_usage: {s}", .{@errorName(err)});
        return false;
    };
    if (keep_length) declareLength(rewritten.len);
    host.incrementMetric(metrics.plugin.include_usage_added, 1);
    return true;
}

/// Sets the held request headers' `content-length` to a rewritten body's length, so the
/// upstream gets a declared length rather than a chunked body (issue 17). Only while the
/// headers wait with the body: once they have gone on, Envoy no longer lets them change.
pub fn declareLength(length: usize) void {
    var digits: [20]u8 = undefined;
    host.replaceHeader(.request_headers, "content-length", message.decimal(&digits, length)) catch |err| {
        host.logf(.warn, "could not declare the rewritten body's content-length: {s}", .{@errorName(err)});
    };
}
