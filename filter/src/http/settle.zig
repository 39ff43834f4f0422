//! Settlement, pure: what a finished request costs. The reservation made at admission is
//! replaced by this cost in the store that admitted it (context.zig makes the store call).
const std = @import("std");
const config = @import("../config/config.zig");
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

/// What tokens cost at `price` (micro-USD per 1M tokens), in micro-USD: each class at its
/// price (cached reads and cache writes apart from the rest of the prompt; thinking tokens as
/// output), summed exactly and rounded up once, so a budget never under-counts.
pub fn priced(price: config.Price, seen: usage.Usage) u64 {
    const input = seen.input_tokens orelse 0;
    const cached_in_input = @min(seen.cached_in_input, input);
    const output = (seen.output_tokens orelse 0) +| seen.thoughts_tokens;
    // Each product fits u128 (u64 x u64); the sum saturates (far past any real bill).
    const micro_per_million = (@as(u128, input - cached_in_input) * price.input) +|
        (@as(u128, cached_in_input +| seen.cache_read_tokens) * price.cached) +|
        (@as(u128, seen.cache_write_tokens) * price.cache_write) +| (@as(u128, output) * price.output);
    const micros = micro_per_million / 1_000_000 + @intFromBool(micro_per_million % 1_000_000 != 0);
    return @intCast(@min(micros, std.math.maxInt(u64)));
}

/// The cost of a finished request: its reported usage priced, or (no usage) the same byte
/// estimate `charge` makes, as input and output tokens.
pub fn chargeCost(charged: Charge, price: config.Price, seen: usage.Usage, request_bytes: u64, response_bytes: u64, unanswered: bool) u64 {
    return switch (charged.basis) {
        .none => 0,
        .reported => priced(price, seen),
        .estimated => priced(price, .{
            .input_tokens = @min(bytesToTokens(request_bytes), usage.value_tokens_max),
            .output_tokens = if (unanswered) 0 else @min(bytesToTokens(response_bytes), usage.value_tokens_max),
        }),
    };
}

/// The reservation's cost: the prompt at the input price, the declared output at the output
/// price (`estimate_tokens` is both, as request.estimateTokens makes it).
pub fn estimateCost(price: config.Price, body_bytes: u64, estimate_tokens: u64) u64 {
    const prompt = @min(bytesToTokens(body_bytes), estimate_tokens);
    return priced(price, .{ .input_tokens = prompt, .output_tokens = estimate_tokens - prompt });
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

test "settle: cost is each token class at its price, rounded up once (micro-USD)" {
    // gpt-4o: $2.50 in, $10 out, $1.25 cached, per 1M tokens.
    const price = config.Price{ .input = 2_500_000, .output = 10_000_000, .cached = 1_250_000, .cache_write = 3_750_000 };
    // 1000 in (400 of them cached) and 500 out: 600 x 2.5 + 400 x 1.25 + 500 x 10 = 7000 micro-USD.
    try testing.expectEqual(@as(u64, 7000), priced(price, .{ .input_tokens = 1000, .cached_in_input = 400, .output_tokens = 500 }));
    // Anthropic reports cache reads and writes beside the input: 2.5 + 1.25 + 3.75 = 7.5 -> 8.
    try testing.expectEqual(@as(u64, 8), priced(price, .{ .input_tokens = 1, .cache_read_tokens = 1, .cache_write_tokens = 1 }));
    try testing.expectEqual(@as(u64, 3), priced(price, .{ .input_tokens = 1 })); // 2.5, never under-counted
    try testing.expectEqual(@as(u64, 0), priced(price, .{}));
    const most = std.math.maxInt(u64);
    try testing.expectEqual(most, priced(.{ .input = most, .output = most }, .{ .input_tokens = most, .output_tokens = most }));
    // A reservation: 400 body bytes (100 prompt tokens) and 50 output tokens: 250 + 500.
    try testing.expectEqual(@as(u64, 750), estimateCost(price, 400, 150));
    const charged = charge(.answered, .{}, 400, 200, .{});
    try testing.expectEqual(@as(u64, 250 + 500), chargeCost(charged, price, .{}, 400, 200, false));
}
