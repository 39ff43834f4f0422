//! Settlement, pure: what a finished request costs. The reservation made at admission is
//! replaced by this cost in the store that admitted it (context.zig makes the store call).
const std = @import("std");
const usage = @import("../usage/usage.zig");

pub const Charge = struct {
    tokens: u64,
    basis: Basis,

    pub const Basis = enum {
        /// Nothing to charge (the upstream refused, or never got the request).
        none,
        /// The usage the upstream reported.
        reported,
        /// No usage was reported (an upstream without it, an aborted stream, a client gone
        /// before the answer): estimated from the request and response sizes.
        estimated,
    };

    pub fn estimated(self: Charge) bool {
        return self.basis == .estimated;
    }

    /// The `tokenlimit_usage` access-log value.
    pub fn label(self: Charge) []const u8 {
        return @tagName(self.basis);
    }
};

/// How the request's exchange with the upstream ended, as far as the filter saw it.
pub const Outcome = enum {
    /// The upstream answered with an error status: it refused the work, nothing is charged.
    refused,
    /// The request never fully reached the upstream (the client left while sending it).
    not_sent,
    /// The request went upstream and no answer came back (the client left first): the
    /// upstream still read the prompt, and providers bill it.
    unanswered,
    /// A 2xx answer (whole, or cut short).
    answered,
};

/// What a finished request costs. Reported usage under the rule's weights when the answer
/// carried it. Without it, never nothing: the prompt (about 4 bytes a token of the request
/// body) plus the output seen (4 bytes a token of the response), as input and output tokens
/// under the same weights.
pub fn charge(outcome: Outcome, seen: usage.Usage, request_bytes: u64, response_bytes: u64, weights: usage.Weights) Charge {
    switch (outcome) {
        .refused, .not_sent => return .{ .tokens = 0, .basis = .none },
        .unanswered => return .{ .tokens = estimate(request_bytes, 0, weights), .basis = .estimated },
        .answered => {
            if (!seen.seen()) return .{ .tokens = estimate(request_bytes, response_bytes, weights), .basis = .estimated };
            return .{ .tokens = seen.weighted(weights), .basis = .reported };
        },
    }
}

/// The estimate of a request without reported usage (also the floor a reservation is never
/// refunded below when usage is missing).
pub fn estimate(request_bytes: u64, response_bytes: u64, weights: usage.Weights) u64 {
    const guessed = usage.Usage{
        .input_tokens = @min(bytesToTokens(request_bytes), usage.value_tokens_max),
        .output_tokens = @min(bytesToTokens(response_bytes), usage.value_tokens_max),
    };
    return guessed.weighted(weights);
}

fn bytesToTokens(bytes: u64) u64 {
    return std.math.divCeil(u64, bytes, 4) catch 0;
}

const testing = std.testing;

test "settle: a refused or unsent request costs nothing" {
    const cost = charge(.refused, .{ .input_tokens = 10, .output_tokens = 5 }, 400, 4096, .{});
    try testing.expectEqual(@as(u64, 0), cost.tokens);
    try testing.expectEqualStrings("none", cost.label());
    try testing.expectEqual(@as(u64, 0), charge(.not_sent, .{}, 400, 0, .{}).tokens);
}

test "settle: reported usage is charged under the rule's weights" {
    const cost = charge(.answered, .{ .input_tokens = 10, .output_tokens = 5 }, 4096, 4096, .{ .output_milli = 3000 });
    try testing.expectEqual(@as(u64, 25), cost.tokens);
    try testing.expectEqualStrings("reported", cost.label());
}

test "settle: without reported usage, the prompt plus the output seen, four bytes a token" {
    const cost = charge(.answered, .{}, 40, 9, .{});
    try testing.expectEqual(@as(u64, 10 + 3), cost.tokens);
    try testing.expect(cost.estimated());
    try testing.expectEqualStrings("estimated", cost.label());
    try testing.expectEqual(@as(u64, 0), charge(.answered, .{}, 0, 0, .{}).tokens);
}

test "settle: a client gone before the answer pays for its prompt" {
    const cost = charge(.unanswered, .{}, 400_000, 0, .{});
    try testing.expectEqual(@as(u64, 100_000), cost.tokens);
    try testing.expectEqualStrings("estimated", cost.label());
    try testing.expect(estimate(std.math.maxInt(u64), std.math.maxInt(u64), .{ .input_milli = 1_000_000, .output_milli = 1_000_000 }) <= usage.request_tokens_max);
}
