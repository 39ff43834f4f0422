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

pub const Usage = struct {
    input_tokens: ?u64 = null,
    output_tokens: ?u64 = null,
    /// Cached prompt tokens (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`, Gemini
    /// `cachedContentTokenCount`); reported, not added to the charge in this build.
    cached_tokens: ?u64 = null,

    pub fn seen(self: Usage) bool {
        return self.input_tokens != null or self.output_tokens != null;
    }

    /// Tokens to charge: input + output, as Higress does.
    pub fn total(self: Usage) u64 {
        return (self.input_tokens orelse 0) +| (self.output_tokens orelse 0);
    }
};

const Field = enum { input, output, cached };

const FieldName = struct { parent: []const u8, key: []const u8, field: Field };

/// (parent object key, key) pairs that carry usage, across the dialects.
const usage_fields = [_]FieldName{
    .{ .parent = "usage", .key = "prompt_tokens", .field = .input }, // OpenAI chat, vLLM, Ollama
    .{ .parent = "usage", .key = "completion_tokens", .field = .output },
    .{ .parent = "usage", .key = "input_tokens", .field = .input }, // Responses API, Anthropic
    .{ .parent = "usage", .key = "output_tokens", .field = .output },
    .{ .parent = "usage", .key = "cache_read_input_tokens", .field = .cached }, // Anthropic
    .{ .parent = "prompt_tokens_details", .key = "cached_tokens", .field = .cached }, // OpenAI
    .{ .parent = "input_tokens_details", .key = "cached_tokens", .field = .cached },
    .{ .parent = "usageMetadata", .key = "promptTokenCount", .field = .input }, // Gemini
    .{ .parent = "usageMetadata", .key = "candidatesTokenCount", .field = .output },
    .{ .parent = "usageMetadata", .key = "cachedContentTokenCount", .field = .cached },
};

/// Levels whose keys are tracked; deeper levels are followed by kind only.
pub const named_depth_max = 16;
/// Nesting beyond this stops the scan (the caller then estimates).
pub const depth_max = 64;
/// Longest key that can name a usage field ("cachedContentTokenCount" is 23 bytes).
pub const key_bytes_max = 24;

comptime {
    std.debug.assert(named_depth_max <= depth_max);
    std.debug.assert(depth_max <= 64); // container kinds live in one u64
    for (usage_fields) |field| {
        std.debug.assert(field.key.len <= key_bytes_max);
        std.debug.assert(field.parent.len <= key_bytes_max);
    }
}

/// Incremental JSON scanner. Invalid JSON stops scanning (state `failed`) without error: the
/// caller charges an estimate when no usage was seen.
pub const JsonScanner = struct {
    const State = enum {
        value, // expecting a value
        object_key_or_end, // after '{'
        object_key, // after ','
        key_string,
        key_string_escape,
        colon,
        string,
        string_escape,
        number,
        literal,
        after_value,
        done,
        failed,
    };

    const Name = struct {
        bytes: [key_bytes_max]u8 = undefined,
        len: u8 = 0,
        usable: bool = false,

        fn slice(self: *const Name) []const u8 {
            return if (self.usable) self.bytes[0..self.len] else "";
        }
    };

    const Frame = struct {
        /// Key this container is the value of (unusable when none or too long to matter).
        name: Name = .{},
        /// Most recent key read inside this object.
        key: Name = .{},
    };

    state: State = .value,
    depth: usize = 0,
    /// Bit i set: the container at level i is an object.
    object_levels: u64 = 0,
    frames: [named_depth_max]Frame = undefined,
    key: Name = .{},
    number: u64 = 0,
    number_valid: bool = false,
    usage: Usage = .{},

    pub fn reset(self: *JsonScanner) void {
        self.* = .{ .usage = self.usage };
    }

    pub fn feed(self: *JsonScanner, bytes: []const u8) void {
        for (bytes) |c| {
            switch (self.state) {
                .failed => return,
                .done => if (!isSpace(c)) {
                    self.state = .failed;
                    return;
                },
                else => self.step(c),
            }
        }
    }

    fn inObject(self: *const JsonScanner) bool {
        std.debug.assert(self.depth > 0);
        return (self.object_levels >> @intCast(self.depth - 1)) & 1 == 1;
    }

    fn step(self: *JsonScanner, c: u8) void {
        switch (self.state) {
            .value => self.startValue(c),
            .object_key_or_end, .object_key => {
                if (isSpace(c)) return;
                if (c == '}' and self.state == .object_key_or_end) return self.closeContainer(true);
                if (c != '"') return self.fail();
                self.key = .{ .usable = true };
                self.state = .key_string;
            },
            .key_string => switch (c) {
                '"' => {
                    self.storeKey();
                    self.state = .colon;
                },
                '\\' => {
                    self.key.usable = false; // escaped keys never name usage fields
                    self.state = .key_string_escape;
                },
                else => {
                    if (self.key.len < key_bytes_max) {
                        self.key.bytes[self.key.len] = c;
                        self.key.len += 1;
                    } else self.key.usable = false;
                },
            },
            .key_string_escape => self.state = .key_string,
            .colon => {
                if (isSpace(c)) return;
                if (c != ':') return self.fail();
                self.state = .value;
            },
            .string => switch (c) {
                '"' => self.endValue(),
                '\\' => self.state = .string_escape,
                else => {},
            },
            .string_escape => self.state = .string,
            .number => {
                if (std.ascii.isDigit(c)) {
                    const times_ten = @mulWithOverflow(self.number, 10);
                    const plus_digit = @addWithOverflow(times_ten[0], c - '0');
                    if (times_ten[1] != 0 or plus_digit[1] != 0) self.number_valid = false;
                    self.number = plus_digit[0];
                    return;
                }
                if (c == '.' or c == 'e' or c == 'E' or c == '+' or c == '-') {
                    self.number_valid = false; // not a token count
                    return;
                }
                self.recordNumber();
                self.endValue();
                self.step(c);
            },
            .literal => {
                if (std.ascii.isAlphabetic(c)) return;
                self.endValue();
                self.step(c);
            },
            .after_value => {
                if (isSpace(c)) return;
                if (self.depth == 0) return self.fail();
                switch (c) {
                    ',' => self.state = if (self.inObject()) .object_key else .value,
                    '}', ']' => self.closeContainer(c == '}'),
                    else => self.fail(),
                }
            },
            .done, .failed => {},
        }
    }

    fn startValue(self: *JsonScanner, c: u8) void {
        switch (c) {
            ' ', '\t', '\r', '\n' => {},
            '{', '[' => self.openContainer(c == '{'),
            ']' => self.closeContainer(false), // empty array
            '"' => self.state = .string,
            '-' => {
                self.number = 0;
                self.number_valid = false;
                self.state = .number;
            },
            '0'...'9' => {
                self.number = c - '0';
                self.number_valid = true;
                self.state = .number;
            },
            't', 'f', 'n' => self.state = .literal,
            else => self.fail(),
        }
    }

    fn openContainer(self: *JsonScanner, is_object: bool) void {
        if (self.depth == depth_max) return self.fail();
        const level: u6 = @intCast(self.depth);
        if (is_object) self.object_levels |= @as(u64, 1) << level else self.object_levels &= ~(@as(u64, 1) << level);
        if (self.depth < named_depth_max) {
            var frame = Frame{};
            if (self.depth > 0 and self.inObject()) frame.name = self.frames[self.depth - 1].key;
            self.frames[self.depth] = frame;
        }
        self.depth += 1;
        self.state = if (is_object) .object_key_or_end else .value;
    }

    fn closeContainer(self: *JsonScanner, is_object: bool) void {
        if (self.depth == 0 or self.inObject() != is_object) return self.fail();
        self.depth -= 1;
        self.endValue();
    }

    fn endValue(self: *JsonScanner) void {
        self.state = if (self.depth == 0) .done else .after_value;
    }

    fn storeKey(self: *JsonScanner) void {
        if (self.depth == 0 or self.depth > named_depth_max) return;
        self.frames[self.depth - 1].key = self.key;
    }

    fn recordNumber(self: *JsonScanner) void {
        if (!self.number_valid or self.depth == 0 or self.depth > named_depth_max) return;
        if (!self.inObject()) return;
        const frame = &self.frames[self.depth - 1];
        const parent = frame.name.slice();
        const key = frame.key.slice();
        for (usage_fields) |candidate| {
            if (std.mem.eql(u8, candidate.key, key) and std.mem.eql(u8, candidate.parent, parent)) {
                switch (candidate.field) {
                    .input => self.usage.input_tokens = self.number,
                    .output => self.usage.output_tokens = self.number,
                    .cached => self.usage.cached_tokens = self.number,
                }
                return;
            }
        }
    }

    fn fail(self: *JsonScanner) void {
        self.state = .failed;
    }

    /// Flushes a number that ended at the end of input (a bare top-level number).
    pub fn finish(self: *JsonScanner) void {
        if (self.state == .number) {
            self.recordNumber();
            self.endValue();
        }
    }
};

fn isSpace(c: u8) bool {
    return c == ' ' or c == '\t' or c == '\r' or c == '\n';
}

/// Server-sent events framing in front of the JSON scanner (https://html.spec.whatwg.org/#event-stream-interpretation).
/// Only `data:` fields matter; lines of any length are handled because data bytes go straight
/// to the JSON scanner, and field names are matched with a tiny fixed buffer.
pub const SseScanner = struct {
    const LineState = enum { line_start, field_name, skip_space, data, ignore };

    json: JsonScanner = .{},
    line_state: LineState = .line_start,
    field_buffer: [5]u8 = undefined,
    field_len: usize = 0,
    event_has_data: bool = false,
    last_was_cr: bool = false,

    pub fn feed(self: *SseScanner, bytes: []const u8) void {
        for (bytes) |c| self.step(c);
    }

    fn step(self: *SseScanner, c: u8) void {
        // CRLF counts as one line end; a lone CR ends a line too.
        if (c == '\n' and self.last_was_cr) {
            self.last_was_cr = false;
            return;
        }
        self.last_was_cr = c == '\r';
        const line_end = c == '\n' or c == '\r';
        switch (self.line_state) {
            .line_start => {
                if (line_end) return self.endEvent();
                self.field_len = 0;
                self.line_state = .field_name;
                self.step_field(c);
            },
            .field_name => {
                if (line_end) return self.endLine();
                self.step_field(c);
            },
            .skip_space => {
                if (line_end) return self.endLine();
                self.line_state = .data;
                if (c != ' ') self.json.feed(&.{c});
            },
            .data => {
                if (line_end) return self.endLine();
                self.json.feed(&.{c});
            },
            .ignore => if (line_end) self.endLine(),
        }
    }

    fn step_field(self: *SseScanner, c: u8) void {
        if (c == ':') {
            const is_data = std.mem.eql(u8, self.field_buffer[0..self.field_len], "data");
            if (is_data) {
                // Lines of one event's data are joined by '\n', which is JSON whitespace.
                if (self.event_has_data) self.json.feed("\n");
                self.event_has_data = true;
            }
            self.line_state = if (is_data) .skip_space else .ignore;
            return;
        }
        if (self.field_len == self.field_buffer.len) {
            self.line_state = .ignore;
            return;
        }
        self.field_buffer[self.field_len] = c;
        self.field_len += 1;
    }

    fn endLine(self: *SseScanner) void {
        self.line_state = .line_start;
    }

    fn endEvent(self: *SseScanner) void {
        if (self.event_has_data) self.json.finish();
        self.json.reset();
        self.event_has_data = false;
        self.line_state = .line_start;
    }

    pub fn finish(self: *SseScanner) void {
        self.endEvent();
    }

    pub fn usage(self: *const SseScanner) Usage {
        return self.json.usage;
    }
};

/// Scans a response body in whichever framing its content type says.
pub const Scanner = union(enum) {
    json: JsonScanner,
    sse: SseScanner,

    pub fn init(content_type: []const u8) Scanner {
        if (std.ascii.findIgnoreCase(content_type, "text/event-stream") != null) return .{ .sse = .{} };
        return .{ .json = .{} };
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
            .json => |scanner| scanner.usage,
            .sse => |scanner| scanner.json.usage,
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
    try std.testing.expectEqual(@as(?u64, 4), usage.cached_tokens);
    try std.testing.expectEqual(@as(u64, 42), usage.total());
}

test "usage: Anthropic stream, message_start then message_delta" {
    const body = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n" ++
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n" ++
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    const usage = try scanSplitEverywhere("text/event-stream; charset=utf-8", body);
    try std.testing.expectEqual(@as(?u64, 25), usage.input_tokens);
    try std.testing.expectEqual(@as(?u64, 15), usage.output_tokens);
}

test "usage: OpenAI stream with [DONE] and Gemini usageMetadata" {
    const openai = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
    try std.testing.expectEqual(@as(u64, 10), (try scanSplitEverywhere("text/event-stream", openai)).total());
    const gemini = "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":6,\"totalTokenCount\":11}}";
    try std.testing.expectEqual(@as(u64, 11), (try scanSplitEverywhere("application/json", gemini)).total());
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
    try std.testing.expect(!scanner.usage.seen());
}
