//! What the client sees of a decision: every local reply the filter sends (the 429 rejection
//! and the 503 when the budget store is unavailable) and OpenAI-style `x-ratelimit-*` headers.
//! Formatting is pure; the send functions make the one host call each.
const std = @import("std");
const text_format = @import("../abi/message.zig");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const header_map = @import("../abi/header_map.zig");
const host = @import("../abi/host.zig");
const higress = @import("higress.zig");

/// OpenAI's reset duration form: "1s", "42s", "1m30s", "2h0m0s" (Go's time.Duration style,
/// whole seconds, rounded up so a client that waits this long finds the window reset).
pub fn formatReset(reset_in_ms: u64, buffer: []u8) []const u8 {
    const total_s = std.math.divCeil(u64, reset_in_ms, 1000) catch 0;
    const hours = total_s / 3600;
    const minutes = (total_s % 3600) / 60;
    const seconds = total_s % 60;
    const text = if (hours > 0)
        text_format.printAll(buffer, "{d}h{d}m{d}s", .{ hours, minutes, seconds })
    else if (minutes > 0)
        text_format.printAll(buffer, "{d}m{d}s", .{ minutes, seconds })
    else
        text_format.printAll(buffer, "{d}s", .{seconds});
    return text orelse "0s";
}

/// `Retry-After` in whole seconds, at least 1 (a 0 invites an immediate retry storm).
pub fn retryAfterSeconds(reset_in_ms: u64) u64 {
    return @max(1, std.math.divCeil(u64, reset_in_ms, 1000) catch 1);
}

/// The `x-ratelimit-*-tokens` header values for one budget check.
pub const LimitHeaders = struct {
    limit: [24]u8 = undefined,
    limit_len: usize = 0,
    remaining: [24]u8 = undefined,
    remaining_len: usize = 0,
    reset: [24]u8 = undefined,
    reset_len: usize = 0,
    retry_after: [24]u8 = undefined,
    retry_after_len: usize = 0,

    /// Cost budgets (micro-USD) are shown in US dollars with 6 decimals.
    pub fn init(check: budget.Check, unit: config.Unit) LimitHeaders {
        // 24 bytes hold any u64 in decimal and any reset duration, so the prints cannot fail.
        var headers: LimitHeaders = .{};
        const print = if (unit == .cost) &printDollars else &printNumber;
        headers.limit_len = print(&headers.limit, check.limit);
        headers.remaining_len = print(&headers.remaining, check.remaining());
        headers.reset_len = formatReset(check.reset_in_ms, &headers.reset).len;
        headers.retry_after_len = printNumber(&headers.retry_after, retryAfterSeconds(check.reset_in_ms));
        return headers;
    }

    const Names = struct { limit: []const u8, remaining: []const u8, reset: []const u8 };
    const token_names = Names{ .limit = "x-ratelimit-limit-tokens", .remaining = "x-ratelimit-remaining-tokens", .reset = "x-ratelimit-reset-tokens" };
    const request_names = Names{ .limit = "x-ratelimit-limit-requests", .remaining = "x-ratelimit-remaining-requests", .reset = "x-ratelimit-reset-requests" };
    const cost_names = Names{ .limit = "x-ratelimit-limit-cost", .remaining = "x-ratelimit-remaining-cost", .reset = "x-ratelimit-reset-cost" };

    fn names(unit: config.Unit) Names {
        return switch (unit) {
            .tokens => token_names,
            .requests => request_names,
            .cost => cost_names,
        };
    }

    fn addTo(self: *const LimitHeaders, unit: config.Unit, writer: anytype) void {
        const n = names(unit);
        writer.add(n.limit, self.limit[0..self.limit_len]);
        writer.add(n.remaining, self.remaining[0..self.remaining_len]);
        writer.add(n.reset, self.reset[0..self.reset_len]);
    }
};

fn printNumber(buffer: *[24]u8, number: u64) usize {
    return text_format.decimal(buffer, number).len;
}

/// Micro-USD as US dollars: "12.345678" (at most 14 + 1 + 6 bytes for any u64).
pub fn printDollars(buffer: *[24]u8, micros: u64) usize {
    const whole = text_format.decimal(buffer, micros / 1_000_000).len;
    buffer[whole] = '.';
    const fraction = text_format.decimal(buffer[whole + 1 ..], micros % 1_000_000).len;
    // Zero-padded to 6 digits: the fraction's digits move to the end, zeros before them.
    const end = whole + 1 + 6;
    std.mem.copyBackwards(u8, buffer[end - fraction .. end], buffer[whole + 1 ..][0..fraction]);
    @memset(buffer[whole + 1 .. end - fraction], '0');
    return end;
}

/// Sends the rejection for the budget that refused the request (of `unit`).
/// On Higress it also carries what Higress's own refusal carries (respond/higress.zig: details,
/// `x-tokenratelimit-reset`, its counter and `ai_log` field), here, where every refusal is sent.
pub fn sendRejection(status_code: u32, message: []const u8, unit: config.Unit, check: budget.Check) host.Error!void {
    const headers = LimitHeaders.init(check, unit);
    var writer: header_map.HeaderMapWriter(6) = .{};
    writer.add("content-type", "text/plain; charset=utf-8");
    writer.add("retry-after", headers.retry_after[0..headers.retry_after_len]);
    // Higress's value is the refusing counter's Redis TTL: whole seconds until the window resets.
    if (higress.on_higress) writer.add(higress.reset_header, headers.retry_after[0..headers.retry_after_len]);
    headers.addTo(unit, &writer);
    var buffer: [512]u8 = undefined;
    comptime std.debug.assert(512 > 4 + 6 * 8 + 6 * (32 + 24 + 2)); // six short headers always fit
    const serialized = writer.write(&buffer) catch return error.HostFailure;
    higress.recordRejection();
    try host.sendLocalResponse(status_code, higress.rejection_details, message, serialized);
}

/// The 503 for `failure_mode: closed` when the budget store cannot be asked.
pub fn sendStoreUnavailable() host.Error!void {
    var headers: header_map.HeaderMapWriter(2) = .{};
    headers.add("content-type", "text/plain; charset=utf-8");
    headers.add("retry-after", "1");
    var buffer: [128]u8 = undefined;
    const serialized = headers.write(&buffer) catch return error.HostFailure;
    try host.sendLocalResponse(503, "tokenlimit_store_unavailable", "Token budget store unavailable", serialized);
}

/// A plain refusal without budget headers: a model the rule cannot judge (400), a model
/// without a price under cost limits (the rule's code) (http/model.zig).
pub fn sendPlain(status_code: u32, details: []const u8, message: []const u8) host.Error!void {
    var headers: header_map.HeaderMapWriter(1) = .{};
    headers.add("content-type", "text/plain; charset=utf-8");
    var buffer: [64]u8 = undefined;
    const serialized = headers.write(&buffer) catch return error.HostFailure;
    try host.sendLocalResponse(status_code, details, message, serialized);
}

/// Adds the budget's headers to an admitted response (`show_limit_headers`).
pub fn addLimitHeaders(unit: config.Unit, check: budget.Check) void {
    const headers = LimitHeaders.init(check, unit);
    const n = LimitHeaders.names(unit);
    // Best effort: a response without them is still a correct response.
    host.replaceHeader(.response_headers, n.limit, headers.limit[0..headers.limit_len]) catch return;
    host.replaceHeader(.response_headers, n.remaining, headers.remaining[0..headers.remaining_len]) catch return;
    host.replaceHeader(.response_headers, n.reset, headers.reset[0..headers.reset_len]) catch return;
}

test "response: reset durations in OpenAI's form" {
    var buffer: [24]u8 = undefined;
    try std.testing.expectEqualStrings("1s", formatReset(1, &buffer));
    try std.testing.expectEqualStrings("42s", formatReset(41_500, &buffer));
    try std.testing.expectEqualStrings("1m30s", formatReset(90_000, &buffer));
    try std.testing.expectEqualStrings("2h0m1s", formatReset(7_201_000, &buffer));
    try std.testing.expectEqual(@as(u64, 1), retryAfterSeconds(0));
    try std.testing.expectEqual(@as(u64, 60), retryAfterSeconds(60_000));
}

test "response: limit headers reflect the refusing budget" {
    const headers = LimitHeaders.init(.{ .limit = 300, .used = 320, .reset_in_ms = 12_300 }, .tokens);
    try std.testing.expectEqualStrings("300", headers.limit[0..headers.limit_len]);
    try std.testing.expectEqualStrings("0", headers.remaining[0..headers.remaining_len]);
    try std.testing.expectEqualStrings("13s", headers.reset[0..headers.reset_len]);
    try std.testing.expectEqualStrings("13", headers.retry_after[0..headers.retry_after_len]);
}

test "response: cost budgets are shown in US dollars" {
    const headers = LimitHeaders.init(.{ .limit = 200_000_000, .used = 1_234_567, .reset_in_ms = 1000 }, .cost);
    try std.testing.expectEqualStrings("200.000000", headers.limit[0..headers.limit_len]);
    try std.testing.expectEqualStrings("198.765433", headers.remaining[0..headers.remaining_len]);
    var buffer: [24]u8 = undefined;
    try std.testing.expectEqualStrings("18446744073709.551615", buffer[0..printDollars(&buffer, std.math.maxInt(u64))]);
}
