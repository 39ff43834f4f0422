//! What the filter needs from an LLM request body: how many output tokens it may produce (for
//! reservations), whether it streams, and where to add `stream_options.include_usage` so an
//! OpenAI-style stream reports its usage. Scanned with json_scan.zig; nothing is allocated.
const std = @import("std");
const json_scan = @import("json_scan.zig");
const usage = @import("usage.zig");

pub const RequestInfo = struct {
    /// max_tokens / max_completion_tokens / max_output_tokens / generationConfig.maxOutputTokens.
    max_output_tokens: ?u64 = null,
    stream: bool = false,
    /// Offsets of the '{' of the document and of `stream_options`, for the insertion.
    root_open: ?usize = null,
    stream_options_open: ?usize = null,
    include_usage: ?bool = null,
    /// Offsets of the quotes around the top-level `model` string.
    model_start: ?usize = null,
    model_end: usize = 0,
};

const Handler = struct {
    info: RequestInfo = .{},

    pub fn number(self: *Handler, path: json_scan.Path, value: u64) void {
        const top_level = path.depth == 1;
        const is_max = top_level and (std.mem.eql(u8, path.key, "max_tokens") or
            std.mem.eql(u8, path.key, "max_completion_tokens") or
            std.mem.eql(u8, path.key, "max_output_tokens"));
        const is_gemini_max = path.depth == 2 and std.mem.eql(u8, path.parent, "generationConfig") and
            std.mem.eql(u8, path.key, "maxOutputTokens");
        if (is_max or is_gemini_max) self.info.max_output_tokens = value;
    }

    pub fn literal(self: *Handler, path: json_scan.Path, value: bool) void {
        if (path.depth == 1 and std.mem.eql(u8, path.key, "stream")) self.info.stream = value;
        if (path.depth == 2 and std.mem.eql(u8, path.parent, "stream_options") and std.mem.eql(u8, path.key, "include_usage")) {
            self.info.include_usage = value;
        }
    }

    pub fn stringValue(self: *Handler, path: json_scan.Path, start: usize, end: usize) void {
        if (path.depth == 1 and std.mem.eql(u8, path.key, "model")) {
            self.info.model_start = start;
            self.info.model_end = end;
        }
    }

    pub fn objectOpen(self: *Handler, path: json_scan.Path, offset: usize) void {
        if (path.depth == 0) self.info.root_open = offset;
        if (path.depth == 1 and std.mem.eql(u8, path.key, "stream_options")) self.info.stream_options_open = offset;
    }
};

pub const Scanner = json_scan.JsonScanner(Handler);

pub fn scan(body: []const u8) RequestInfo {
    var scanner = Scanner{};
    scanner.feed(body);
    if (scanner.state != .done) return .{}; // not a complete JSON document: learn nothing
    return scanner.handler.info;
}

/// Whether the path is an OpenAI-style completions endpoint, whose streams omit usage unless
/// the request asks for it (Anthropic, Gemini and the Responses API always report it).
pub fn isCompletionsPath(path: []const u8) bool {
    const path_only = path[0 .. std.mem.indexOfScalar(u8, path, '?') orelse path.len];
    return std.mem.endsWith(u8, path_only, "/chat/completions") or std.mem.endsWith(u8, path_only, "/completions");
}

/// Whether a completions request streams without having said anything about usage.
pub fn needsIncludeUsage(info: RequestInfo) bool {
    return info.stream and info.include_usage == null; // an explicit choice stands
}

/// The body with `"include_usage":true` added (inside an existing `stream_options`, or as a new
/// `stream_options` member). Returns null when `out` is too small or the body has no root object.
pub fn withIncludeUsage(body: []const u8, info: RequestInfo, out: []u8) ?[]u8 {
    const insert_at, const insertion = if (info.stream_options_open) |open|
        .{ open + 1, streamOptionsMember(body, open) }
    else if (info.root_open) |open|
        .{ open + 1, "\"stream_options\":{\"include_usage\":true}," }
    else
        return null;
    if (insert_at > body.len or out.len < body.len + insertion.len) return null;
    @memcpy(out[0..insert_at], body[0..insert_at]);
    @memcpy(out[insert_at..][0..insertion.len], insertion);
    @memcpy(out[insert_at + insertion.len ..][0 .. body.len - insert_at], body[insert_at..]);
    return out[0 .. body.len + insertion.len];
}

/// `"include_usage":true` plus a comma unless `stream_options` is empty.
fn streamOptionsMember(body: []const u8, open: usize) []const u8 {
    var i = open + 1;
    while (i < body.len and std.ascii.isWhitespace(body[i])) i += 1;
    return if (i < body.len and body[i] == '}') "\"include_usage\":true" else "\"include_usage\":true,";
}

/// The body with its top-level `model` replaced by `model` (already a valid JSON string body,
/// without quotes). Null when the body names no model or `out` is too small.
pub fn withModel(body: []const u8, info: RequestInfo, model: []const u8, out: []u8) ?[]u8 {
    const start = info.model_start orelse return null;
    const end = info.model_end;
    if (end <= start or end >= body.len) return null;
    const new_len = body.len - (end - start - 1) + model.len;
    if (out.len < new_len) return null;
    @memcpy(out[0 .. start + 1], body[0 .. start + 1]);
    @memcpy(out[start + 1 ..][0..model.len], model);
    @memcpy(out[start + 1 + model.len ..][0 .. body.len - end], body[end..]);
    return out[0..new_len];
}

/// Tokens a request may use, for a reservation: its prompt (about 4 bytes a token of JSON) plus
/// its declared output limit or `default_output_tokens`.
pub fn estimateTokens(info: RequestInfo, body_bytes: u64, default_output_tokens: u64) u64 {
    const prompt = std.math.divCeil(u64, body_bytes, 4) catch 0;
    const output = @min(info.max_output_tokens orelse default_output_tokens, usage.value_tokens_max);
    return @min(prompt +| output, usage.request_tokens_max);
}

test "request: finds limits, stream flags and offsets" {
    const body = " {\"model\":\"m\",\"stream\":true,\"max_tokens\":300,\"messages\":[{\"max_tokens\":1}]}";
    const info = scan(body);
    try std.testing.expectEqual(@as(?u64, 300), info.max_output_tokens);
    try std.testing.expect(info.stream);
    try std.testing.expectEqual(@as(?usize, 1), info.root_open);
    try std.testing.expect(needsIncludeUsage(info));
    try std.testing.expect(isCompletionsPath("/v1/chat/completions?x=1"));
    try std.testing.expect(!isCompletionsPath("/v1/messages"));
    const gemini = scan("{\"generationConfig\":{\"maxOutputTokens\":77}}");
    try std.testing.expectEqual(@as(?u64, 77), gemini.max_output_tokens);
    try std.testing.expectEqual(@as(?u64, null), scan("{\"max_tokens\":").max_output_tokens);
}

test "request: include_usage is added where it belongs, and explicit choices stand" {
    var out: [256]u8 = undefined;
    const plain = "{\"stream\":true}";
    try std.testing.expectEqualStrings("{\"stream_options\":{\"include_usage\":true},\"stream\":true}", withIncludeUsage(plain, scan(plain), &out).?);
    const with_options = "{\"stream\":true,\"stream_options\":{\"x\":1}}";
    try std.testing.expectEqualStrings("{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"x\":1}}", withIncludeUsage(with_options, scan(with_options), &out).?);
    const empty_options = "{\"stream\":true,\"stream_options\":{ }}";
    try std.testing.expectEqualStrings("{\"stream\":true,\"stream_options\":{\"include_usage\":true }}", withIncludeUsage(empty_options, scan(empty_options), &out).?);
    const declined = "{\"stream\":true,\"stream_options\":{\"include_usage\":false}}";
    try std.testing.expect(!needsIncludeUsage(scan(declined)));
    try std.testing.expectEqual(@as(?[]u8, null), withIncludeUsage(plain, scan(plain), out[0..10]));
}

test "request: estimate is prompt bytes over four plus the output limit" {
    try std.testing.expectEqual(@as(u64, 25 + 300), estimateTokens(.{ .max_output_tokens = 300 }, 100, 512));
    try std.testing.expectEqual(@as(u64, 1 + 512), estimateTokens(.{}, 3, 512));
}

test "request: the top-level model is rewritten, nested ones are not" {
    var out: [128]u8 = undefined;
    const body = "{\"messages\":[{\"model\":\"inner\"}],\"model\" : \"gpt-4o\",\"x\":1}";
    const info = scan(body);
    try std.testing.expectEqualStrings("{\"messages\":[{\"model\":\"inner\"}],\"model\" : \"claude-3-haiku\",\"x\":1}", withModel(body, info, "claude-3-haiku", &out).?);
    try std.testing.expectEqual(@as(?[]u8, null), withModel("{}", scan("{}"), "m", &out));
}
