//! Reads token usage out of LLM responses as the bytes pass, without buffering the body.
//!
//! A byte-at-a-time JSON state machine follows the object path (bounded depth, bounded key
//! length) and records integers that sit under a `usage` / `usageMetadata` object. It needs no
//! look-ahead, so a body split anywhere across chunks scans the same as one buffer, and memory is
//! fixed. For `text/event-stream` an SSE framer in front of it feeds each event's `data:` lines
//! to the JSON machine and resets it between events; usage seen in later events overwrites
//! earlier values (Anthropic's `message_delta` carries the final output count, Gemini repeats
//! cumulative `usageMetadata`).
const std = @import("std");
const json_scan = @import("json_scan.zig");
const slices = @import("../match/bytes.zig");

/// The per-request ceiling on each reported usage value: no single request processes a billion
/// tokens of one kind (the largest context windows hold a few million), so a larger number is
/// a broken or hostile upstream. Such a value is clamped to this and the request marked
/// `clamped` (logged), so no arithmetic downstream - weights, budgets, the Redis script's doubles -
/// ever sees a number near 2^64.
pub const value_tokens_max: u64 = 1_000_000_000;
/// The most one request can be charged: five clamped values (input, cached, cache writes,
/// output, thoughts) at the heaviest weight (contract/limits.json `weight_max`). Below 2^53, so
/// the Redis script's Lua doubles hold it exactly.
pub const request_tokens_max: u64 = 5 * value_tokens_max * @import("limits").weight_max;
comptime {
    std.debug.assert(request_tokens_max < 1 << 53);
}

pub const Usage = struct {
    /// Prompt tokens as the provider counts them (OpenAI and Gemini include cached ones).
    input_tokens: ?u64 = null,
    output_tokens: ?u64 = null,
    /// Cached prompt tokens inside `input_tokens` (OpenAI `cached_tokens`, Gemini
    /// `cachedContentTokenCount`).
    cached_in_input: u64 = 0,
    /// Anthropic reports cache reads and writes beside `input_tokens`, not inside it.
    cache_read_tokens: u64 = 0,
    cache_write_tokens: u64 = 0,
    /// Gemini thinking tokens, billed as output but reported apart.
    thoughts_tokens: u64 = 0,
    /// A reported value was above `value_tokens_max` and was clamped to it.
    clamped: bool = false,

    pub fn seen(self: Usage) bool {
        return self.input_tokens != null or self.output_tokens != null;
    }

    /// Cost under per-kind weights in thousandths (1000 = one token counts once), rounded up.
    /// With the default weights: every token the upstream processed.
    pub fn weighted(self: Usage, weights: Weights) u64 {
        const input = self.input_tokens orelse 0;
        const cached = @min(self.cached_in_input, input) +| self.cache_read_tokens;
        const uncached_input = (input - @min(self.cached_in_input, input)) +| self.cache_write_tokens;
        const output = (self.output_tokens orelse 0) +| self.thoughts_tokens;
        const milli = @as(u128, uncached_input) * weights.input_milli + @as(u128, cached) * weights.cached_milli +
            @as(u128, output) * weights.output_milli;
        const tokens = milli / 1000 + @intFromBool(milli % 1000 != 0);
        return @intCast(@min(tokens, request_tokens_max));
    }
};

/// Cost weights in thousandths per token kind (config `weights`).
pub const Weights = struct {
    input_milli: u32 = 1000,
    output_milli: u32 = 1000,
    cached_milli: u32 = 1000,
};

const Field = enum { input, output, cached_in_input, cache_read, cache_write, thoughts };

/// The object keys usage sits under, as the scanner reports them (json_scan.zig: the first
/// field stands for every other key).
const UsageKey = enum(u8) {
    none,
    usage,
    prompt_tokens_details,
    input_tokens_details,
    usageMetadata,
    prompt_tokens,
    completion_tokens,
    input_tokens,
    output_tokens,
    cache_read_input_tokens,
    cache_creation_input_tokens,
    cached_tokens,
    promptTokenCount,
    candidatesTokenCount,
    cachedContentTokenCount,
    thoughtsTokenCount,
    prompt_eval_count,
    eval_count,
    choices,
};

/// `depth_max`: the deepest a provider puts the field (the `depth` of the number's path): the
/// top-level `usage` / `usageMetadata` (2), one level down (3: Anthropic `message.usage`, the
/// Responses API `response.usage`, a Gemini stream's array of chunks), details one below that.
/// A `usage` object deeper than that sits in content (a tool call's input, structured output)
/// and must not override the real one. `parent = .none`: a member of the top-level object.
const FieldName = struct { parent: UsageKey, key: UsageKey, field: Field, depth_max: usize = 3 };

/// (parent object key, key) pairs that carry usage, across the dialects.
const usage_fields = [_]FieldName{
    .{ .parent = .usage, .key = .prompt_tokens, .field = .input }, // OpenAI chat, Azure, vLLM
    .{ .parent = .usage, .key = .completion_tokens, .field = .output },
    .{ .parent = .usage, .key = .input_tokens, .field = .input }, // Responses API, Anthropic
    .{ .parent = .usage, .key = .output_tokens, .field = .output },
    .{ .parent = .usage, .key = .cache_read_input_tokens, .field = .cache_read }, // Anthropic
    .{ .parent = .usage, .key = .cache_creation_input_tokens, .field = .cache_write },
    .{ .parent = .prompt_tokens_details, .key = .cached_tokens, .field = .cached_in_input, .depth_max = 4 }, // OpenAI
    .{ .parent = .input_tokens_details, .key = .cached_tokens, .field = .cached_in_input, .depth_max = 4 },
    .{ .parent = .usageMetadata, .key = .promptTokenCount, .field = .input }, // Gemini
    .{ .parent = .usageMetadata, .key = .candidatesTokenCount, .field = .output },
    .{ .parent = .usageMetadata, .key = .cachedContentTokenCount, .field = .cached_in_input },
    .{ .parent = .usageMetadata, .key = .thoughtsTokenCount, .field = .thoughts },
    // Ollama's native API reports counts at the top level.
    .{ .parent = .none, .key = .prompt_eval_count, .field = .input, .depth_max = 1 },
    .{ .parent = .none, .key = .eval_count, .field = .output, .depth_max = 1 },
};

const UsageHandler = struct {
    pub const Key = UsageKey;
    const Path = json_scan.Path(Key);

    usage: Usage = .{},
    /// The document's shape, for SseScanner's verdict on each event (an OpenAI usage-only
    /// event): a top-level `usage` object, and an object in the top-level `choices`.
    usage_object: bool = false,
    choice: bool = false,

    pub fn number(self: *UsageHandler, path: Path, reported: u64) void {
        // Most numbers (ids, indexes, timestamps, totals) sit under no key asked about.
        if (path.key == .none) return;
        // A key known at depth > 1 under an unknown (or no) object is no usage field.
        if (path.parent == .none and path.depth != 1) return;
        const value = @min(reported, value_tokens_max);
        for (usage_fields) |candidate| {
            if (candidate.key != path.key or candidate.parent != path.parent or path.depth > candidate.depth_max) continue;
            switch (candidate.field) {
                .input => self.usage.input_tokens = value,
                .output => self.usage.output_tokens = value,
                .cached_in_input => self.usage.cached_in_input = value,
                .cache_read => self.usage.cache_read_tokens = value,
                .cache_write => self.usage.cache_write_tokens = value,
                .thoughts => self.usage.thoughts_tokens = value,
            }
            if (reported > value_tokens_max) self.usage.clamped = true;
            return;
        }
    }

    pub fn literal(_: *UsageHandler, _: Path, _: ?bool, _: usize, _: usize) void {}
    pub fn objectOpen(self: *UsageHandler, path: Path, _: usize) void {
        if (path.depth == 1 and path.key == .usage) self.usage_object = true;
        if (path.depth == 2 and path.parent == .choices) self.choice = true;
    }
    pub fn stringValue(_: *UsageHandler, _: Path, _: usize, _: usize) void {}
};

pub const JsonScanner = json_scan.JsonScanner(UsageHandler);

/// The SSE framing in front of the JSON scanner (sse_scan.zig).
pub const SseScanner = @import("sse_scan.zig").SseScanner;

/// Scans a response body in whichever framing its content type says.
pub const Scanner = union(enum) {
    json: JsonScanner,
    sse: SseScanner,

    pub fn init(content_type: []const u8) Scanner {
        if (isEventStream(content_type)) return .{ .sse = .{} };
        return .{ .json = .{} };
    }

    /// Whether `text/event-stream` appears in the content type, in any case. Compared where a
    /// `t` stands, as two words and a byte with the letters' case bit set: std.ascii's
    /// findIgnoreCase lowers each byte through selects, ~50 instructions a byte compared,
    /// ~1,000 a response (issue 17).
    fn isEventStream(content_type: []const u8) bool {
        const needle = "text/event-stream";
        // The case bit (0x20) at each letter of the needle: 'T' | 0x20 is 't', while '/' and
        // '-' are compared exactly (0x0F | 0x20 would be '/').
        const case_bits = comptime bits: {
            var bits: [needle.len]u8 = undefined;
            for (&bits, needle) |*bit, c| bit.* = if (std.ascii.isAlphabetic(c)) 0x20 else 0;
            break :bits bits;
        };
        const low_bits = std.mem.readInt(u64, case_bits[0..8], .little);
        const high_bits = std.mem.readInt(u64, case_bits[8..16], .little);
        const low = comptime std.mem.readInt(u64, needle[0..8], .little);
        const high = comptime std.mem.readInt(u64, needle[8..16], .little);
        comptime std.debug.assert(needle.len == 17 and case_bits[16] == 0x20);
        if (content_type.len < needle.len) return false;
        for (content_type[0 .. content_type.len - needle.len + 1], 0..) |c, at| {
            if (c | 0x20 != 't') continue;
            const text = content_type[at..][0..needle.len];
            if (slices.word(text) | low_bits == low and slices.word(text[8..]) | high_bits == high and
                text[16] | 0x20 == needle[16]) return true;
        }
        return false;
    }

    pub fn feed(self: *Scanner, bytes: []const u8) void {
        switch (self.*) {
            inline else => |*scanner| scanner.feed(bytes),
        }
    }

    pub fn finish(self: *Scanner) void {
        switch (self.*) {
            inline else => |*scanner| scanner.finish(),
        }
    }

    pub fn usage(self: *const Scanner) Usage {
        return switch (self.*) {
            .json => |scanner| scanner.handler.usage,
            .sse => |scanner| scanner.json.handler.usage,
        };
    }
};

// ---- tests -----------------------------------------------------------------------------------

fn scanSplitEverywhere(content_type: []const u8, body: []const u8) !Usage {
    // Every split point must give the same answer as one buffer: chunk boundaries are arbitrary.
    var whole = Scanner.init(content_type);
    whole.feed(body);
    whole.finish();
    const expected = whole.usage();
    var split_at: usize = 0;
    while (split_at <= body.len) : (split_at += 1) {
        var scanner = Scanner.init(content_type);
        scanner.feed(body[0..split_at]);
        scanner.feed(body[split_at..]);
        scanner.finish();
        try std.testing.expectEqual(expected, scanner.usage());
    }
    var bytewise = Scanner.init(content_type);
    for (body) |c| bytewise.feed(&.{c});
    bytewise.finish();
    try std.testing.expectEqual(expected, bytewise.usage());
    return expected;
}

test "usage: OpenAI chat completion JSON" {
    const body =
        \\{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"{\"usage\":{\"prompt_tokens\":999}}"},"finish_reason":"stop"}],
        \\ "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42, "prompt_tokens_details": {"cached_tokens": 4}}}
    ;
    const usage = try scanSplitEverywhere("application/json", body);
    try std.testing.expectEqual(@as(?u64, 12), usage.input_tokens);
    try std.testing.expectEqual(@as(?u64, 30), usage.output_tokens);
    try std.testing.expectEqual(@as(u64, 4), usage.cached_in_input);
    try std.testing.expectEqual(@as(u64, 42), usage.weighted(.{}));
}

test "usage: Anthropic stream, message_start then message_delta" {
    const body = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n" ++
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n" ++
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    const usage = try scanSplitEverywhere("text/event-stream; charset=utf-8", body);
    try std.testing.expectEqual(@as(?u64, 25), usage.input_tokens);
    try std.testing.expectEqual(@as(?u64, 15), usage.output_tokens);
}

test "usage: the framing follows text/event-stream anywhere in the content type, in any case" {
    for ([_][]const u8{ "text/event-stream", "Text/Event-Stream; charset=utf-8", "x, TEXT/EVENT-STREAM" }) |sse| {
        try std.testing.expect(Scanner.init(sse) == .sse);
    }
    for ([_][]const u8{ "", "application/json; charset=utf-8", "text/event-strea", "text/event_stream", "ttext/event-strean", "text\x0fevent\rstream" }) |json| {
        try std.testing.expect(Scanner.init(json) == .json);
    }
}

test "usage: OpenAI stream with [DONE] and Gemini usageMetadata" {
    const openai = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
    try std.testing.expectEqual(@as(u64, 10), (try scanSplitEverywhere("text/event-stream", openai)).weighted(.{}));
    const gemini = "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":6,\"totalTokenCount\":11}}";
    try std.testing.expectEqual(@as(u64, 11), (try scanSplitEverywhere("application/json", gemini)).weighted(.{}));
}

test "usage: malformed or usage-free bodies report nothing" {
    const bodies = [_][]const u8{ "", "not json", "{\"usage\":", "{\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":1.5}}", "[1,2,3]", "{\"a\":{\"b\":{\"c\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}}}", "}}}}", "{\"usage\":{\"prompt_tokens\":99999999999999999999999}}" };
    for (bodies) |body| {
        const usage = try scanSplitEverywhere("application/json", body);
        try std.testing.expect(!usage.seen());
    }
}

test "usage: deep nesting beyond the bound does not confuse the path" {
    var body: [200]u8 = undefined;
    var at: usize = 0;
    const open = "{\"x\":";
    for (0..20) |_| {
        @memcpy(body[at..][0..open.len], open);
        at += open.len;
    }
    body[at] = '1';
    at += 1;
    for (0..20) |_| {
        body[at] = '}';
        at += 1;
    }
    var scanner = JsonScanner{};
    scanner.feed(body[0..at]);
    try std.testing.expectEqual(JsonScanner.State.done, scanner.state);
    try std.testing.expect(!scanner.handler.usage.seen());
}

test "usage: weights split cached, uncached and output tokens" {
    // OpenAI: 100 prompt tokens of which 40 cached, 10 output; cached at half price, output x4.
    const openai = Usage{ .input_tokens = 100, .output_tokens = 10, .cached_in_input = 40 };
    const weights = Weights{ .input_milli = 1000, .output_milli = 4000, .cached_milli = 500 };
    try std.testing.expectEqual(@as(u64, 60 + 20 + 40), openai.weighted(weights));
    try std.testing.expectEqual(@as(u64, 110), openai.weighted(.{}));
    // Anthropic: cache reads and writes are beside input_tokens; all count by default.
    const anthropic = Usage{ .input_tokens = 5, .output_tokens = 7, .cache_read_tokens = 100, .cache_write_tokens = 20 };
    try std.testing.expectEqual(@as(u64, 132), anthropic.weighted(.{}));
    try std.testing.expectEqual(@as(u64, 25 + 7 + 50), anthropic.weighted(.{ .cached_milli = 500 }));
}

test "usage: Responses API completed event and Anthropic cache fields" {
    const responses = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n" ++
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":4}}}\n\n";
    const usage = try scanSplitEverywhere("text/event-stream", responses);
    try std.testing.expectEqual(@as(u64, 13), usage.weighted(.{}));
    try std.testing.expectEqual(@as(u64, 3), usage.cached_in_input);
    const anthropic = "{\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":100,\"output_tokens\":7}}";
    try std.testing.expectEqual(@as(u64, 132), (try scanSplitEverywhere("application/json", anthropic)).weighted(.{}));
}

test "usage: values above the per-request ceiling are clamped and marked" {
    const body = "{\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":1000000000001,\"prompt_tokens_details\":{\"cached_tokens\":18446744073709551615}}}";
    const usage = try scanSplitEverywhere("application/json", body);
    try std.testing.expectEqual(@as(?u64, value_tokens_max), usage.input_tokens);
    try std.testing.expectEqual(@as(?u64, value_tokens_max), usage.output_tokens);
    try std.testing.expect(usage.clamped);
    // The weighted cost of clamped values stays exact in a Lua double (Redis) at any weight.
    const heaviest = Weights{ .input_milli = 1_000_000, .output_milli = 1_000_000, .cached_milli = 1_000_000 };
    const worst = Usage{ .input_tokens = value_tokens_max, .output_tokens = value_tokens_max, .cache_read_tokens = value_tokens_max, .cache_write_tokens = value_tokens_max, .thoughts_tokens = value_tokens_max };
    try std.testing.expect(worst.weighted(heaviest) <= request_tokens_max);
    try std.testing.expect(!(try scanSplitEverywhere("application/json", "{\"usage\":{\"prompt_tokens\":5}}")).clamped);
}

test "usage: a usage object inside content never overrides the real one; deep nesting is read" {
    const anthropic = "{\"usage\":{\"input_tokens\":500,\"output_tokens\":300},\"content\":[{\"type\":\"tool_use\",\"input\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}]}";
    try std.testing.expectEqual(@as(u64, 800), (try scanSplitEverywhere("application/json", anthropic)).weighted(.{}));
    const gemini_array = "[{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":6}}]";
    try std.testing.expectEqual(@as(u64, 11), (try scanSplitEverywhere("application/json", gemini_array)).weighted(.{}));
    const deep = comptime nested: {
        var text: []const u8 = "{\"output\":";
        for (0..100) |_| text = text ++ "[";
        text = text ++ "1";
        for (0..100) |_| text = text ++ "]";
        break :nested text ++ ",\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10}}";
    };
    try std.testing.expectEqual(@as(u64, 40), (try scanSplitEverywhere("application/json", deep)).weighted(.{}));
}

test "usage: a quote or backslash anywhere in an eight-byte run of a string is seen (the scanner skips string bodies by words)" {
    // A decoy `"usage"` inside the content, behind an escaped quote at every offset modulo 8
    // (and a literal backslash pair): were the escape missed, the decoy would be read.
    inline for (0..17) |pad| {
        const filler: [pad]u8 = @splat('x');
        const body = "{\"content\":\"" ++ filler ++ "\\\"usage\\\":{\\\"prompt_tokens\\\":999}\\\\\",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5}}";
        const usage = try scanSplitEverywhere("application/json", body);
        try std.testing.expectEqual(@as(?u64, 7), usage.input_tokens);
        try std.testing.expectEqual(@as(?u64, 5), usage.output_tokens);
    }
}

test "usage: the bench's chat answer reads the same split anywhere, as JSON and as one SSE event" {
    const bench_bodies = @import("bench_bodies.zig");
    const json = try scanSplitEverywhere("application/json", bench_bodies.response_body);
    try std.testing.expectEqual(Usage{ .input_tokens = 52, .output_tokens = 118 }, json);
    const event = "data: " ++ bench_bodies.response_body ++ "\n\ndata: [DONE]\n\n";
    try std.testing.expectEqual(json, try scanSplitEverywhere("text/event-stream", event));
}
