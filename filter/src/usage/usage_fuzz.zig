//! Seeded, bounded fuzzing of what reads network bytes in usage/: the response scanners (JSON
//! and SSE, split anywhere), the request scanner and its rewrites, and the SSE usage-event
//! filter. Runs in `zig build test` (a Debug build: every overflow or bad index panics), a few
//! thousand cases in well under a second. The same seed gives the same cases; a failure found
//! here becomes a named regression vector in the file it concerns.
const std = @import("std");
const request = @import("request.zig");
const sse_filter = @import("sse_filter.zig");
const usage = @import("usage.zig");

pub const seed: u64 = 0x7031_6b65_6e11_0009;
pub const cases = 3000;

/// Bodies the mutations start from: every dialect, and the edges that once went wrong.
const response_seeds = [_][]const u8{
    "{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
    "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n",
    "{\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":6,\"thoughtsTokenCount\":18446744073709551615}}",
    "{\"prompt_eval_count\":99999999999999999999,\"eval_count\":1}",
    "data: {\"response\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":4}}}\r\r",
};

const request_seeds = [_][]const u8{
    "{\"model\":\"m\",\"stream\":true,\"messages\":[]}",
    "{\"stream\":true,\"stream_options\":{\"include_usage\":false,\"x\":1}}",
    "{\"stream\":true,\"stream_options\":null,\"n\":8,\"max_tokens\":100}",
    "{\"stream\":true,\"stream_options\":{\"include_usage\":null},\"stream_options\":{}}",
    "{\"generationConfig\":{\"candidateCount\":4,\"maxOutputTokens\":18446744073709551615}}",
};

/// One random change: a byte flipped, inserted or removed, a slice duplicated, a number
/// replaced by an extreme one, or a structural byte inserted.
pub fn mutate(random: std.Random, input: []const u8, out: []u8) []u8 {
    var len = @min(input.len, out.len);
    @memcpy(out[0..len], input[0..len]);
    const rounds = random.intRangeAtMost(usize, 1, 4);
    for (0..rounds) |_| {
        const at = if (len == 0) 0 else random.uintLessThan(usize, len);
        switch (random.uintLessThan(u8, 6)) {
            0 => if (len > 0) {
                out[at] = random.int(u8);
            },
            1 => if (len < out.len) {
                std.mem.copyBackwards(u8, out[at + 1 .. len + 1], out[at..len]);
                const structural = "{}[]\":,\\ \r\n0-9etnfa";
                out[at] = structural[random.uintLessThan(usize, structural.len)];
                len += 1;
            },
            2 => if (len > 0) {
                std.mem.copyForwards(u8, out[at .. len - 1], out[at + 1 .. len]);
                len -= 1;
            },
            3 => {
                const piece_len = @min(random.uintLessThan(usize, 32), len - at, out.len - len);
                std.mem.copyBackwards(u8, out[at + piece_len .. len + piece_len], out[at..len]);
                len += piece_len;
            },
            4 => {
                const numbers = [_][]const u8{ "18446744073709551615", "18446744073709551616", "-1", "0", "1e999", "9007199254740993" };
                const number = numbers[random.uintLessThan(usize, numbers.len)];
                if (len + number.len <= out.len) {
                    std.mem.copyBackwards(u8, out[at + number.len .. len + number.len], out[at..len]);
                    @memcpy(out[at..][0..number.len], number);
                    len += number.len;
                }
            },
            else => if (len > 0) {
                len = random.uintLessThan(usize, len + 1); // truncated
            },
        }
    }
    return out[0..len];
}

fn scanWhole(content_type: []const u8, body: []const u8) usage.Usage {
    var scanner = usage.Scanner.init(content_type);
    scanner.feed(body);
    scanner.finish();
    return scanner.usage();
}

test "fuzz: response scanners give one answer however the body is split, within the bounds" {
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    var buffer: [512]u8 = undefined;
    for (0..cases) |case| {
        const body = mutate(random, response_seeds[case % response_seeds.len], &buffer);
        const content_type = if (random.boolean()) "text/event-stream" else "application/json";
        const whole = scanWhole(content_type, body);
        var split = usage.Scanner.init(content_type);
        var at: usize = 0;
        while (at < body.len) {
            const step = @min(body.len - at, random.intRangeAtMost(usize, 1, 9));
            split.feed(body[at..][0..step]);
            at += step;
        }
        split.finish();
        errdefer std.debug.print("case {d}: {s} {s}\n", .{ case, content_type, body });
        try std.testing.expectEqual(whole, split.usage());
        inline for (.{ whole.input_tokens, whole.output_tokens }) |value| {
            if (value) |tokens| try std.testing.expect(tokens <= usage.value_tokens_max);
        }
        const heaviest = usage.Weights{ .input_milli = 1_000_000, .output_milli = 1_000_000, .cached_milli = 1_000_000 };
        try std.testing.expect(whole.weighted(heaviest) <= usage.request_tokens_max);
    }
}

test "fuzz: a rewritten request is valid JSON that asks for usage, whatever the client sent" {
    var prng = std.Random.DefaultPrng.init(seed +% 1);
    const random = prng.random();
    var buffer: [512]u8 = undefined;
    var out: [512 + request.include_usage_bytes_max]u8 = undefined;
    var rewritten_count: usize = 0;
    for (0..cases) |case| {
        const body = mutate(random, request_seeds[case % request_seeds.len], &buffer);
        const info = request.scan(body);
        const estimate = request.estimateTokens(info, body.len, 512);
        try std.testing.expect(estimate <= usage.request_tokens_max);
        if (!request.needsIncludeUsage(info)) continue;
        const rewritten = request.withIncludeUsage(body, info, &out) orelse continue;
        rewritten_count += 1;
        var check = request.Scanner{};
        check.feed(rewritten);
        errdefer std.debug.print("case {d}: {s}\n -> {s}\n", .{ case, body, rewritten });
        try std.testing.expectEqual(request.Scanner.State.done, check.state);
        const again = check.handler.info;
        try std.testing.expect(again.usage_asked);
        try std.testing.expect(!request.needsIncludeUsage(again));
    }
    try std.testing.expect(rewritten_count > cases / 10); // the mutations still reach the rewrite
}

test "fuzz: the SSE usage-event filter gives one answer however the stream is split" {
    var prng = std.Random.DefaultPrng.init(seed +% 2);
    const random = prng.random();
    var buffer: [512]u8 = undefined;
    const allocator = std.testing.allocator;
    for (0..cases / 3) |case| {
        const stream = mutate(random, response_seeds[case % 3], &buffer);
        var outputs: [2]std.ArrayList(u8) = .{ .empty, .empty };
        defer for (&outputs) |*out| out.deinit(allocator);
        var usages: [2]usage.Usage = undefined;
        for (&outputs, &usages, 0..) |*out, *read, pass| {
            var filter: sse_filter.UsageEventFilter = .{};
            defer filter.deinit(allocator);
            // The filter feeds the scanner it reads its verdicts from.
            var scanner: usage.SseScanner = .{};
            defer read.* = scanner.usage();
            defer scanner.finish();
            if (pass == 0) {
                try sse_filter.passChunk(&filter, allocator, &scanner, stream, true, out);
                continue;
            }
            var at: usize = 0;
            while (at < stream.len) {
                const step = @min(stream.len - at, random.intRangeAtMost(usize, 1, 7));
                try sse_filter.passChunk(&filter, allocator, &scanner, stream[at..][0..step], false, out);
                at += step;
            }
            try sse_filter.passChunk(&filter, allocator, &scanner, "", true, out);
        }
        errdefer std.debug.print("case {d}: {s}\n", .{ case, stream });
        try std.testing.expectEqualStrings(outputs[0].items, outputs[1].items);
        try std.testing.expectEqual(usages[0], usages[1]);
        var alone: usage.SseScanner = .{}; // the usage read is the scanner's own, filter or not
        alone.feed(stream);
        alone.finish();
        try std.testing.expectEqual(alone.usage(), usages[0]);
        try std.testing.expect(outputs[0].items.len <= stream.len);
    }
}
