//! What the filter needs from an LLM request body: how many output tokens it may produce (for
//! reservations), whether it streams, and where to add `stream_options.include_usage` so an
//! OpenAI-style stream reports its usage. Scanned with json_scan.zig; nothing is allocated.
const std = @import("std");
const json_scan = @import("json_scan.zig");
const slices = @import("../match/bytes.zig");
const usage = @import("usage.zig");

/// Most edits one body gets to make `stream_options.include_usage` true (one per duplicate
/// `stream_options` or `include_usage` member). A body that needs more is left as it is: its
/// stream then reports no usage and is charged the estimate (settle.zig).
pub const usage_edits_max = 8;

/// One change to the request body at `at` (an offset of the body as received).
pub const Edit = struct {
    pub const Kind = enum {
        /// `"include_usage":true` as the first member of the object whose '{' is at `at - 1`.
        insert_member,
        /// `"stream_options":{"include_usage":true},` as the first member of the root object.
        insert_stream_options,
        /// The literal at [at, at + remove) (false, null) becomes `true`.
        replace_with_true,
        /// The literal at [at, at + remove) (`stream_options: null`) becomes the object.
        replace_with_object,
    };
    kind: Kind,
    at: usize,
    remove: usize = 0,
    cancelled: bool = false,
};

pub const RequestInfo = struct {
    /// max_tokens / max_completion_tokens / max_output_tokens / generationConfig.maxOutputTokens.
    max_output_tokens: ?u64 = null,
    /// How many outputs the request asks for: `n`, `best_of` (the larger), Gemini
    /// `generationConfig.candidateCount`.
    outputs: ?u64 = null,
    stream: bool = false,
    /// Offset of the '{' of the document.
    root_open: ?usize = null,
    /// Whether the client itself asked for usage: the last top-level `stream_options` is an
    /// object whose last `include_usage` is true.
    usage_asked: bool = false,
    stream_options_seen: bool = false,
    /// What makes every `include_usage` true (in offset order).
    edits: [usage_edits_max]Edit = undefined,
    edits_len: usize = 0,
    /// More edits were needed than fit.
    edits_overflow: bool = false,
    /// Index in `edits` of the insertion for the `stream_options` object being read.
    open_insertion: ?usize = null,
    /// Offsets of the quotes around the top-level `model` string.
    model_start: ?usize = null,
    model_end: usize = 0,

    fn addEdit(self: *RequestInfo, edit: Edit) ?usize {
        if (self.edits_len == usage_edits_max) {
            self.edits_overflow = true;
            return null;
        }
        self.edits[self.edits_len] = edit;
        self.edits_len += 1;
        return self.edits_len - 1;
    }
};

const Handler = struct {
    /// The object keys a request's fields sit under (json_scan.zig: `none` is every other key).
    pub const Key = enum(u8) {
        none,
        model,
        stream,
        stream_options,
        include_usage,
        max_tokens,
        max_completion_tokens,
        max_output_tokens,
        n,
        best_of,
        generationConfig,
        maxOutputTokens,
        candidateCount,
    };
    const Path = json_scan.Path(Key);

    info: RequestInfo = .{},

    pub fn number(self: *Handler, path: Path, value: u64) void {
        const top_level = path.depth == 1;
        const in_generation_config = path.depth == 2 and path.parent == .generationConfig;
        const is_max = (top_level and (path.key == .max_tokens or path.key == .max_completion_tokens or
            path.key == .max_output_tokens)) or (in_generation_config and path.key == .maxOutputTokens);
        if (is_max) self.info.max_output_tokens = value;
        const is_outputs = (top_level and (path.key == .n or path.key == .best_of)) or
            (in_generation_config and path.key == .candidateCount);
        if (is_outputs) self.info.outputs = @max(self.info.outputs orelse 0, value);
    }

    pub fn literal(self: *Handler, path: Path, value: ?bool, start: usize, end: usize) void {
        if (path.depth == 1 and path.key == .stream) self.info.stream = value orelse false;
        if (path.depth == 1 and path.key == .stream_options) {
            // `stream_options: null` (or another literal) would override an inserted member.
            self.info.stream_options_seen = true;
            self.info.usage_asked = false;
            self.info.open_insertion = null;
            _ = self.info.addEdit(.{ .kind = .replace_with_object, .at = start, .remove = end - start });
        }
        if (path.depth == 2 and path.parent == .stream_options and path.key == .include_usage) {
            if (self.info.open_insertion) |index| self.info.edits[index].cancelled = true;
            self.info.open_insertion = null;
            self.info.usage_asked = value orelse false;
            if (value != true) _ = self.info.addEdit(.{ .kind = .replace_with_true, .at = start, .remove = end - start });
        }
    }

    pub fn stringValue(self: *Handler, path: Path, start: usize, end: usize) void {
        if (path.depth == 1 and path.key == .model) {
            self.info.model_start = start;
            self.info.model_end = end;
        }
    }

    pub fn objectOpen(self: *Handler, path: Path, offset: usize) void {
        if (path.depth == 0) self.info.root_open = offset;
        if (path.depth == 1 and path.key == .stream_options) {
            self.info.stream_options_seen = true;
            self.info.usage_asked = false;
            self.info.open_insertion = self.info.addEdit(.{ .kind = .insert_member, .at = offset + 1 });
        }
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
    // Not std.mem.indexOfScalar and endsWith: ~1,300 instructions a call between them in a
    // size-optimised build, ~400 so (issue 17). `/chat/completions` ends so too.
    var end: usize = 0;
    while (end < path.len and path[end] != '?') end += 1;
    const path_only = path[0..end];
    const suffix = "/completions";
    return path_only.len >= suffix.len and slices.eql(path_only[path_only.len - suffix.len ..], suffix);
}

/// Whether a streamed completions request needs its body changed so the upstream reports
/// usage: the gateway decides that, whatever the client said (absent, false, null).
pub fn needsIncludeUsage(info: RequestInfo) bool {
    if (!info.stream) return false;
    if (!info.stream_options_seen) return true;
    for (info.edits[0..info.edits_len]) |edit| {
        if (!edit.cancelled) return true;
    }
    return false;
}

/// Bytes the include_usage edits add at most.
pub const include_usage_bytes_max = usage_edits_max * "\"stream_options\":{\"include_usage\":true},".len;

/// The body with every `stream_options.include_usage` made true (inserted where missing,
/// `false`/`null` replaced, `stream_options: null` replaced by the object). Null when `out` is
/// too small, the body has no root object, or it needed more edits than fit.
pub fn withIncludeUsage(body: []const u8, info: RequestInfo, out: []u8) ?[]u8 {
    if (info.edits_overflow) return null;
    var root_edit = [1]Edit{.{ .kind = .insert_stream_options, .at = (info.root_open orelse return null) + 1 }};
    const edits: []const Edit = if (info.stream_options_seen) info.edits[0..info.edits_len] else &root_edit;
    var written: usize = 0;
    var read: usize = 0;
    for (edits) |edit| {
        if (edit.cancelled) continue;
        if (edit.at < read or edit.at + edit.remove > body.len) return null;
        const kept = body[read..edit.at];
        const text = switch (edit.kind) {
            .insert_member => if (objectIsEmpty(body, edit.at)) "\"include_usage\":true" else "\"include_usage\":true,",
            .insert_stream_options => "\"stream_options\":{\"include_usage\":true},",
            .replace_with_true => "true",
            .replace_with_object => "{\"include_usage\":true}",
        };
        if (out.len < written + kept.len + text.len) return null;
        @memcpy(out[written..][0..kept.len], kept);
        written += kept.len;
        @memcpy(out[written..][0..text.len], text);
        written += text.len;
        read = edit.at + edit.remove;
    }
    const rest = body[read..];
    if (out.len < written + rest.len) return null;
    @memcpy(out[written..][0..rest.len], rest);
    return out[0 .. written + rest.len];
}

/// Whether the object whose members start at `at` has none.
fn objectIsEmpty(body: []const u8, at: usize) bool {
    var i = at;
    while (i < body.len and std.ascii.isWhitespace(body[i])) i += 1;
    return i < body.len and body[i] == '}';
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

/// The request's top-level `model` string, decoded (escapes resolved, so `"\u0067pt-4o"` is
/// `gpt-4o` for a budget as it is for the provider) into `out`. `.none` when the body names no
/// model as a string; `.invalid` when the string does not decode (a lone surrogate, a bad
/// escape) or holds a control character; `.too_long` when it decodes to more than `out` holds.
pub fn decodeModel(body: []const u8, info: RequestInfo, out: []u8) DecodedModel {
    const start = info.model_start orelse return .none;
    if (info.model_end <= start or info.model_end > body.len) return .none;
    return decodeString(body[start + 1 .. info.model_end], out);
}

pub const DecodedModel = union(enum) { none, invalid, too_long, value: []const u8 };

/// A JSON string's contents (without the quotes) decoded into `out`.
pub fn decodeString(raw: []const u8, out: []u8) DecodedModel {
    var len: usize = 0;
    var i: usize = 0;
    while (i < raw.len) {
        var code: u21 = raw[i];
        if (code == '\\') {
            if (i + 1 >= raw.len) return .invalid;
            const escape = raw[i + 1];
            i += 2;
            code = switch (escape) {
                '"', '\\', '/' => escape,
                'b' => 0x08,
                'f' => 0x0c,
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => unicode: {
                    const high = hex4(raw, i) orelse return .invalid;
                    i += 4;
                    if (high >= 0xdc00 and high <= 0xdfff) return .invalid;
                    if (high < 0xd800 or high > 0xdbff) break :unicode high;
                    if (i + 6 > raw.len or raw[i] != '\\' or raw[i + 1] != 'u') return .invalid;
                    const low = hex4(raw, i + 2) orelse return .invalid;
                    if (low < 0xdc00 or low > 0xdfff) return .invalid;
                    i += 6;
                    break :unicode 0x10000 + ((@as(u21, high) - 0xd800) << 10) + (low - 0xdc00);
                },
                else => return .invalid,
            };
            if (code < 0x20 or code == 0x7f) return .invalid;
            const width = std.unicode.utf8CodepointSequenceLength(code) catch return .invalid;
            if (len + width > out.len) return .too_long;
            _ = std.unicode.utf8Encode(code, out[len..][0..width]) catch return .invalid;
            len += width;
            continue;
        }
        if (code < 0x20 or code == 0x7f) return .invalid;
        if (len == out.len) return .too_long;
        out[len] = raw[i];
        len += 1;
        i += 1;
    }
    return .{ .value = out[0..len] };
}

fn hex4(raw: []const u8, at: usize) ?u16 {
    if (at + 4 > raw.len) return null;
    return std.fmt.parseInt(u16, raw[at..][0..4], 16) catch null;
}

/// Outputs counted at most (OpenAI allows n up to 128): a larger number is clamped.
pub const outputs_max = 128;

/// Tokens a request may use, for a reservation: its prompt (about 4 bytes a token of JSON) plus
/// its declared output limit (or `default_output_tokens`) for every output it asks for (`n`,
/// `best_of`, `candidateCount`: each output is generated, and billed, in full).
pub fn estimateTokens(info: RequestInfo, body_bytes: u64, default_output_tokens: u64) u64 {
    const prompt = std.math.divCeil(u64, body_bytes, 4) catch 0;
    const per_output = @min(info.max_output_tokens orelse default_output_tokens, usage.value_tokens_max);
    const outputs = std.math.clamp(info.outputs orelse 1, 1, outputs_max);
    return @min(prompt +| per_output * outputs, usage.request_tokens_max);
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
    try std.testing.expect(isCompletionsPath("/completions") and isCompletionsPath("/v1/completions?stream=/x"));
    try std.testing.expect(!isCompletionsPath("/v1/completions/x") and !isCompletionsPath("/v1/x?/completions") and !isCompletionsPath("completions"));
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
    try std.testing.expectEqualStrings("{\"stream\":true,\"stream_options\":{\"include_usage\":true}}", withIncludeUsage(declined, scan(declined), &out).?);
    try std.testing.expect(!scan(declined).usage_asked);
    const nulled = "{\"stream\":true,\"stream_options\":null}";
    try std.testing.expectEqualStrings("{\"stream\":true,\"stream_options\":{\"include_usage\":true}}", withIncludeUsage(nulled, scan(nulled), &out).?);
    const asked = "{\"stream\":true,\"stream_options\":{\"x\":1,\"include_usage\":true}}";
    try std.testing.expect(!needsIncludeUsage(scan(asked)));
    try std.testing.expect(scan(asked).usage_asked);
    try std.testing.expect(!needsIncludeUsage(scan("{\"stream\":false,\"stream_options\":null}")));
    try std.testing.expectEqual(@as(?[]u8, null), withIncludeUsage(plain, scan(plain), out[0..10]));
}

test "request: escaped keys cannot hide stream_options or include_usage (fuzz regression)" {
    var out: [256]u8 = undefined;
    const escaped = "{\"stream\":true,\"stream\\u005foptions\":{\"include\\u005Fusage\":false}}";
    try std.testing.expectEqualStrings("{\"stream\":true,\"stream\\u005foptions\":{\"include\\u005Fusage\":true}}", withIncludeUsage(escaped, scan(escaped), &out).?);
    // An escape JSON does not have is not JSON: nothing is learnt, nothing rewritten.
    try std.testing.expect(!scan("{\"stream\":true,\"stream\\_options\":{}}").stream);
}

test "request: estimate is prompt bytes over four plus the output limit" {
    try std.testing.expectEqual(@as(u64, 25 + 300), estimateTokens(.{ .max_output_tokens = 300 }, 100, 512));
    try std.testing.expectEqual(@as(u64, 1 + 512), estimateTokens(.{}, 3, 512));
}

test "request: every output counts: n, best_of (the larger), candidateCount, clamped" {
    try std.testing.expectEqual(@as(?u64, 8), scan("{\"n\":8,\"max_tokens\":10}").outputs);
    try std.testing.expectEqual(@as(?u64, 5), scan("{\"n\":2,\"best_of\":5}").outputs);
    try std.testing.expectEqual(@as(?u64, 3), scan("{\"generationConfig\":{\"candidateCount\":3}}").outputs);
    try std.testing.expectEqual(@as(?u64, null), scan("{\"messages\":[{\"n\":9}]}").outputs);
    try std.testing.expectEqual(@as(u64, 25 + 8 * 300), estimateTokens(.{ .max_output_tokens = 300, .outputs = 8 }, 100, 512));
    try std.testing.expectEqual(@as(u64, 25 + 128 * 300), estimateTokens(.{ .max_output_tokens = 300, .outputs = 1 << 40 }, 100, 512));
    try std.testing.expectEqual(@as(u64, 25 + 300), estimateTokens(.{ .max_output_tokens = 300, .outputs = 0 }, 100, 512));
    try std.testing.expectEqual(usage.request_tokens_max, estimateTokens(.{ .max_output_tokens = std.math.maxInt(u64), .outputs = std.math.maxInt(u64) }, std.math.maxInt(u64), 512));
}

test "request: the top-level model is rewritten, nested ones are not" {
    var out: [128]u8 = undefined;
    const body = "{\"messages\":[{\"model\":\"inner\"}],\"model\" : \"gpt-4o\",\"x\":1}";
    const info = scan(body);
    try std.testing.expectEqualStrings("{\"messages\":[{\"model\":\"inner\"}],\"model\" : \"claude-3-haiku\",\"x\":1}", withModel(body, info, "claude-3-haiku", &out).?);
    try std.testing.expectEqual(@as(?[]u8, null), withModel("{}", scan("{}"), "m", &out));
}

test "request: the model is decoded before it names a budget, odd spellings refused" {
    var out: [16]u8 = undefined;
    const escaped = "{\"model\":\"\\u0067pt-4o\"}";
    try std.testing.expectEqualStrings("gpt-4o", decodeModel(escaped, scan(escaped), &out).value);
    const plain = "{\"messages\":[],\"model\":\"gpt-4o-mini\"}";
    try std.testing.expectEqualStrings("gpt-4o-mini", decodeModel(plain, scan(plain), &out).value);
    try std.testing.expectEqualStrings("é😀", decodeString("\\u00e9\\ud83d\\ude00", &out).value);
    try std.testing.expectEqual(DecodedModel.none, decodeModel("{\"model\":4}", scan("{\"model\":4}"), &out));
    try std.testing.expectEqual(DecodedModel.none, decodeModel("{}", scan("{}"), &out));
    try std.testing.expectEqual(DecodedModel.invalid, decodeString("gpt\\u0000", &out));
    try std.testing.expectEqual(DecodedModel.invalid, decodeString("gpt\\n", &out));
    try std.testing.expectEqual(DecodedModel.invalid, decodeString("\\ud800", &out));
    try std.testing.expectEqual(DecodedModel.invalid, decodeString("\\x41", &out));
    const sixteen: [16]u8 = @splat('a');
    try std.testing.expectEqual(DecodedModel.too_long, decodeString(sixteen ++ "a", &out));
    try std.testing.expectEqualStrings(&sixteen, decodeString(&sixteen, &out).value);
}

fn expectSameInfo(expected: RequestInfo, actual: RequestInfo) !void {
    // `edits` past `edits_len` is undefined: every other field, and the edits made, compared.
    inline for (comptime std.meta.fieldNames(RequestInfo)) |name| {
        if (comptime !std.mem.eql(u8, name, "edits")) try std.testing.expectEqual(@field(expected, name), @field(actual, name));
    }
    try std.testing.expectEqualSlices(Edit, expected.edits[0..expected.edits_len], actual.edits[0..actual.edits_len]);
}

/// What one buffer gives, checked against every split in two and byte-by-byte feeding.
fn scanSplitEverywhere(body: []const u8) !RequestInfo {
    const whole = scan(body);
    for (0..body.len + 1) |split_at| {
        var scanner = Scanner{};
        scanner.feed(body[0..split_at]);
        scanner.feed(body[split_at..]);
        try std.testing.expectEqual(Scanner.State.done, scanner.state);
        try expectSameInfo(whole, scanner.handler.info);
    }
    var bytewise = Scanner{};
    for (body) |c| bytewise.feed(&.{c});
    try std.testing.expectEqual(Scanner.State.done, bytewise.state);
    try expectSameInfo(whole, bytewise.handler.info);
    return whole;
}

test "request: the bench's chat request reads the same split anywhere, and with a stream's edits" {
    const bench_bodies = @import("bench_bodies.zig");
    const body = bench_bodies.request_body;
    const info = try scanSplitEverywhere(body);
    try std.testing.expectEqual(@as(?u64, 256), info.max_output_tokens);
    try std.testing.expect(!info.stream);
    var out: [16]u8 = undefined;
    try std.testing.expectEqualStrings("gpt-4o-mini", decodeModel(body, info, &out).value);
    // The same request streamed with usage declined twice: edits, offsets and flags all split.
    const streamed = body[0 .. body.len - 1] ++ ",\"stream\":true,\"stream_options\":{\"include_usage\":false},\"stream\\u005foptions\":{\"x\":null,\"include_usage\":null}}";
    const edited = try scanSplitEverywhere(streamed);
    try std.testing.expect(edited.stream and needsIncludeUsage(edited));
    try std.testing.expectEqual(@as(usize, 4), edited.edits_len);
}
