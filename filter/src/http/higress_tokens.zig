//! `higress_token_metrics` (issue 16): a finished request's usage also counted under the names
//! Higress's ai-statistics plugin defines, `route.<route>.upstream.<cluster>.model.<model>.
//! consumer.<consumer>.metric.{input_token,output_token,total_token}`, which Higress's stats
//! tags turn into `route_upstream_model_consumer_metric_input_token{ai_route,ai_cluster,
//! ai_model,ai_consumer}`: dashboards built on ai-statistics keep working where tokenlimit
//! replaced it. Off by default: with ai-statistics on the same route both would count.
//!
//! As ai-statistics does: only usage the upstream reported (an estimate is not), route and
//! cluster from the `route_name` / `cluster_name` properties ("-" when absent), the consumer
//! from `x-mse-consumer` ("none"). The model is the request's, through the labelled metrics'
//! cap (past it: `other`); consumers past abi/metrics.zig's bound count as `other`.
const std = @import("std");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const metrics = @import("../abi/metrics.zig");
const usage = @import("../usage/usage.zig");

/// What ai-statistics adds for one answer: input, output and their sum; null when the answer
/// reported no usage (ai-statistics then records nothing).
pub fn amounts(seen: usage.Usage) ?[3]u64 {
    if (!seen.seen()) return null;
    const input = seen.input_tokens orelse 0;
    const output = seen.output_tokens orelse 0;
    return .{ input, output, input +| output };
}

/// The request's `x-mse-consumer`, kept from the request phase (request headers cannot be read
/// when the answer is settled). Longer than the buffer: counted as `other`.
pub const Consumer = struct {
    bytes: [128]u8 = undefined,
    len: usize = 0,
    present: bool = false,

    pub fn read() Consumer {
        var consumer: Consumer = .{};
        var header = (host.getHeader(.request_headers, "x-mse-consumer") catch null) orelse return consumer;
        defer header.deinit();
        const value = if (header.bytes.len <= consumer.bytes.len) header.bytes else "other";
        @memcpy(consumer.bytes[0..value.len], value);
        consumer.len = value.len;
        consumer.present = true;
        return consumer;
    }

    fn slice(self: *const Consumer) []const u8 {
        return if (self.present) self.bytes[0..self.len] else "none";
    }
};

pub fn count(model: ?[]const u8, consumer: *const Consumer, seen: usage.Usage) void {
    const values = amounts(seen) orelse return;
    var route = host.getProperty("route_name") catch null;
    defer if (route) |*bytes| bytes.deinit();
    var cluster = host.getProperty("cluster_name") catch null;
    defer if (cluster) |*bytes| bytes.deinit();
    const model_label = labelled.modelLabel(model);
    const names = [_][]const u8{ "input_token", "output_token", "total_token" };
    for (names, values) |name, value| {
        if (value == 0) continue;
        const id = metrics.higressCounter(
            if (route) |bytes| bytes.bytes else "-",
            if (cluster) |bytes| bytes.bytes else "-",
            model_label.slice(),
            consumer.slice(),
            name,
        );
        host.incrementMetric(id, @intCast(@min(value, std.math.maxInt(i64))));
    }
}

test "higress tokens: what the answer reported, and nothing for an estimate" {
    try std.testing.expectEqual([3]u64{ 10, 30, 40 }, amounts(.{ .input_tokens = 10, .output_tokens = 30 }).?);
    try std.testing.expectEqual(@as(?[3]u64, null), amounts(.{}));
}
