//! Hides the usage-only event of an OpenAI-style stream from a client that did not ask for
//! usage. The gateway always asks the upstream for it (request.zig), so the stream can be
//! counted; a client that had not asked should see the stream it asked for.
//!
//! Events are forwarded whole, as soon as their terminating blank line has passed: only the
//! bytes of an event still incomplete are held (upstreams flush one event per write, so in
//! practice nothing waits). An event larger than `held_bytes_max` is passed on as it comes
//! (it is not a usage-only event).
//!
//! The filter reads nothing itself: it feeds the response's usage scanner (sse_scan.zig
//! SseScanner), which frames the events and parses their data for usage anyway, and takes
//! its verdict on each event as it ends. Reading every event a second time to find the usage
//! one cost as much as the scan itself (issue 17: 177,346 instructions over the scanner's
//! 167,137 on a 6 KB stream).
const std = @import("std");
const usage_scan = @import("usage.zig");

/// An event held longer than this is not a usage chunk (those are ~300 bytes).
pub const held_bytes_max = 16 * 1024;

pub const UsageEventFilter = struct {
    held: std.ArrayList(u8) = .empty,
    /// The current event outgrew `held_bytes_max`: its bytes go straight out until it ends.
    passing: bool = false,
    /// The event ended on a CR at the end of a chunk: a LF first in the next still belongs to
    /// it, and `ended_usage_only` is the scanner's verdict on it.
    ended_on_cr: bool = false,
    ended_usage_only: bool = false,
    /// Usage-only events left out so far.
    hidden: u32 = 0,

    pub fn deinit(self: *UsageEventFilter, allocator: std.mem.Allocator) void {
        self.held.deinit(allocator);
        self.* = undefined;
    }

    /// Takes the next bytes of the stream and returns what the client gets now: `chunk`
    /// itself where that is all of it (whole events, none hidden: what upstreams send), a
    /// part of it, or bytes built in `out` (scratch space, cleared first). Every byte of `chunk`
    /// goes through `scanner` once, on failure too, so usage is read whatever the filter does.
    /// At `end_of_stream` whatever is held goes out (an unterminated last event as it was).
    pub fn process(self: *UsageEventFilter, allocator: std.mem.Allocator, scanner: *usage_scan.SseScanner, chunk: []const u8, end_of_stream: bool, out: *std.ArrayList(u8)) ![]const u8 {
        var start: usize = 0; // first byte of `chunk` not yet held or sent
        var fed: usize = 0; // first byte of `chunk` the scanner has not read
        errdefer scanner.feed(chunk[fed..]);
        out.clearRetainingCapacity();
        var sent: Sent = .{ .chunk = chunk, .out = out, .allocator = allocator, .bytes_max = self.held.items.len + chunk.len };
        if (self.ended_on_cr and chunk.len > 0) {
            self.ended_on_cr = false;
            // The scanner passes over a LF after the CR that ended an event.
            fed = @intFromBool(chunk[0] == '\n');
            scanner.feed(chunk[0..fed]);
            try self.endEvent(&sent, 0, fed, self.ended_usage_only);
            start = fed;
        }
        while (scanner.feedToEventEnd(chunk[fed..])) |taken| {
            fed += taken;
            const usage_only = scanner.event_usage_only;
            if (chunk[fed - 1] == '\r') {
                if (fed == chunk.len) {
                    self.ended_on_cr = true;
                    self.ended_usage_only = usage_only;
                    break;
                }
                if (chunk[fed] == '\n') {
                    scanner.feed(chunk[fed..][0..1]);
                    fed += 1;
                }
            }
            try self.endEvent(&sent, start, fed, usage_only);
            start = fed;
        } else fed = chunk.len;
        if (self.passing) {
            try sent.fromChunk(start, chunk.len);
        } else if (self.held.items.len + chunk.len - start > held_bytes_max) {
            try sent.other(self.held.items);
            try sent.fromChunk(start, chunk.len);
            self.held.clearRetainingCapacity();
            self.passing = true;
        } else {
            try self.held.appendSlice(allocator, chunk[start..]);
        }
        if (end_of_stream) {
            if (self.ended_on_cr) {
                // No LF can follow the CR that ended the last event: it is complete.
                self.ended_on_cr = false;
                try self.endEvent(&sent, chunk.len, chunk.len, self.ended_usage_only);
            }
            try sent.other(self.held.items);
            self.held.clearRetainingCapacity();
        }
        return sent.result();
    }

    /// `chunk[from..to]` completes the current event: send it unless it is the usage-only one.
    fn endEvent(self: *UsageEventFilter, sent: *Sent, from: usize, to: usize, usage_only: bool) !void {
        defer {
            self.held.clearRetainingCapacity();
            self.passing = false;
        }
        if (self.passing) return sent.fromChunk(from, to);
        if (usage_only) {
            self.hidden +|= 1;
            return;
        }
        try sent.other(self.held.items);
        try sent.fromChunk(from, to);
    }
};

/// What the client gets of one chunk, built as it is decided. While it is the chunk's own
/// bytes from the first on, only their count is kept (`in_place`): nothing is copied, and the
/// caller need not compare the result with the chunk to see that it can stay as it is (copying
/// a 300-byte event and comparing it with std.mem.eql cost ~14,000 instructions, issue 17; an
/// answer flushed one event a write paid that for every event). At the first
/// difference (a hidden event, held bytes, a tail held back) the bytes so far are copied to
/// `out`, reserved once for the most the chunk can give.
const Sent = struct {
    chunk: []const u8,
    out: *std.ArrayList(u8),
    allocator: std.mem.Allocator,
    bytes_max: usize,
    in_place: ?usize = 0,

    /// `chunk[from..to]` goes out next.
    fn fromChunk(self: *Sent, from: usize, to: usize) !void {
        if (self.in_place) |count| if (count == from) {
            self.in_place = to;
            return;
        };
        try self.copy(self.chunk[from..to]);
    }

    /// `bytes`, from elsewhere than the chunk, go out next.
    fn other(self: *Sent, bytes: []const u8) !void {
        if (bytes.len > 0) try self.copy(bytes);
    }

    fn copy(self: *Sent, bytes: []const u8) !void {
        if (self.in_place) |count| {
            try self.out.ensureTotalCapacity(self.allocator, self.bytes_max);
            self.out.appendSliceAssumeCapacity(self.chunk[0..count]);
            self.in_place = null;
        }
        try self.out.appendSlice(self.allocator, bytes);
    }

    fn result(self: *const Sent) []const u8 {
        return if (self.in_place) |count| self.chunk[0..count] else self.out.items;
    }
};

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

/// Passes `chunk` through `filter` and appends what the client gets of it to `received`.
pub fn passChunk(filter: *UsageEventFilter, allocator: std.mem.Allocator, scanner: *usage_scan.SseScanner, chunk: []const u8, end_of_stream: bool, received: *std.ArrayList(u8)) !void {
    var scratch: std.ArrayList(u8) = .empty;
    defer scratch.deinit(allocator);
    try received.appendSlice(allocator, try filter.process(allocator, scanner, chunk, end_of_stream, &scratch));
}

/// What the client gets and the usage read, the stream given in `splits` pieces (offsets).
const Run = struct { out: std.ArrayList(u8) = .empty, usage: usage_scan.Usage = .{}, hidden: u32 = 0 };

fn filterRun(stream: []const u8, splits: []const usize) !Run {
    var filter: UsageEventFilter = .{};
    defer filter.deinit(testing.allocator);
    var scanner: usage_scan.SseScanner = .{};
    var run: Run = .{};
    errdefer run.out.deinit(testing.allocator);
    var at: usize = 0;
    for (splits) |split_at| {
        try passChunk(&filter, testing.allocator, &scanner, stream[at..split_at], false, &run.out);
        at = split_at;
    }
    try passChunk(&filter, testing.allocator, &scanner, stream[at..], true, &run.out);
    scanner.finish();
    run.usage = scanner.usage();
    run.hidden = filter.hidden;
    return run;
}

/// Split at every offset: the client gets `expected` and the usage read is what the scanner
/// alone reads from the whole stream.
fn filterSplitEverywhere(stream: []const u8, expected: []const u8) !void {
    var alone: usage_scan.SseScanner = .{};
    alone.feed(stream);
    alone.finish();
    var split_at: usize = 0;
    while (split_at <= stream.len) : (split_at += 1) {
        var run = try filterRun(stream, &.{split_at});
        defer run.out.deinit(testing.allocator);
        errdefer std.debug.print("split at {d}\n", .{split_at});
        try testing.expectEqualStrings(expected, run.out.items);
        try testing.expectEqual(alone.usage(), run.usage);
    }
}

test "sse filter: the usage-only event is removed whole, split anywhere, LF or CRLF" {
    const content = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n";
    const usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
    const done = "data: [DONE]\n\n";
    try filterSplitEverywhere(content ++ usage ++ done, content ++ done);
    const crlf_usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n";
    try filterSplitEverywhere(content ++ crlf_usage ++ done, content ++ done);
    const cr_usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\r";
    try filterSplitEverywhere(content ++ cr_usage ++ done, content ++ done);
}

test "sse filter: a usage-only event ending the stream on a bare CR is removed too" {
    // Its final CR could still be followed by a LF, so the event waits for the next byte; the
    // end of the stream is that answer (it was flushed as it was, shown to the client).
    const content = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\r\r";
    const cr_usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\r";
    try filterSplitEverywhere(content ++ cr_usage, content);
    try filterSplitEverywhere(cr_usage, "");
}

test "sse filter: everything else passes unchanged, an unterminated tail included" {
    const stream = ": comment\n\ndata: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\nevent: x\ndata: {\"usage\":\n\ndata: [DONE]";
    try filterSplitEverywhere(stream, stream);
}

test "sse filter: OpenAI's own chunks, longer than one look, over two data lines: only the usage chunk goes" {
    // The usage chunk's choice-free shape is only known at its end, and the content chunk's
    // choice well past its start; multi-line data is joined as one document.
    const head = "{\"id\":\"chatcmpl-AQ3dNbEnChMaRkOvErHeAd0001\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-4o-mini-2024-07-18\",";
    const content = "data: " ++ head ++ "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    const usage = "data: " ++ head ++ "\ndata: \"choices\":[],\"usage\":{\"prompt_tokens\":52,\"completion_tokens\":118}}\n\n";
    try filterSplitEverywhere(content ++ usage ++ "data: [DONE]\n\n", content ++ "data: [DONE]\n\n");
    try filterSplitEverywhere(usage ++ content, content);
}

test "sse filter: what is not exactly a usage-only event is shown" {
    // A choice, a usage that is not an object, usage nested deeper, JSON left incomplete or
    // followed by more, data in a field that is not `data`, an array at the top.
    const shown = [_][]const u8{
        "data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: {\"choices\":[],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"x\":{\"usage\":{\"prompt_tokens\":1}}}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\ndata: x\n\n",
        "datum: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: [{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}]\n\n",
        "event: usage\n\n",
    };
    inline for (shown) |event| try filterSplitEverywhere(event ++ "data: [DONE]\n\n", event ++ "data: [DONE]\n\n");
    // Whitespace, a comment and other fields around it do not save it.
    const hidden = ": keep-alive\nevent: chunk\r\ndata:{\"choices\" : [ ] ,\r\ndata: \"usage\":{}}\nid: 7\r\n\r\n";
    try filterSplitEverywhere(hidden ++ "data: [DONE]\n\n", "data: [DONE]\n\n");
}

test "sse filter: an OpenAI stream split at every offset gives the one-chunk answer and usage" {
    // A realistic stream (bench/instructions.py STREAM_BODY's shape): a role chunk, content
    // chunks, the finish chunk, the usage-only chunk, [DONE]; in one chunk, then split once
    // at every offset, then in pieces of every size from 1 to 64 bytes.
    const head = "data: {\"id\":\"chatcmpl-AQ3dNbEnChMaRkOvErHeAd0001\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":";
    const role = head ++ "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
    const words = head ++ "[{\"index\":0,\"delta\":{\"content\":\" the duplicate \\u2014 charge\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
    const stop = head ++ "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    const usage_event = head ++ "[],\"usage\":{\"prompt_tokens\":52,\"completion_tokens\":118,\"total_tokens\":170,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n";
    const done = "data: [DONE]\n\n";
    const stream = role ++ words ++ words ++ words ++ stop ++ usage_event ++ done;
    const expected = role ++ words ++ words ++ words ++ stop ++ done;

    var whole = try filterRun(stream, &.{});
    defer whole.out.deinit(testing.allocator);
    try testing.expectEqualStrings(expected, whole.out.items);
    try testing.expectEqual(usage_scan.Usage{ .input_tokens = 52, .output_tokens = 118, .cached_in_input = 4 }, whole.usage);
    try testing.expectEqual(@as(u32, 1), whole.hidden);
    try filterSplitEverywhere(stream, expected);

    var splits: [stream.len]usize = undefined;
    for (1..65) |piece| {
        var count: usize = 0;
        var at = piece;
        while (at < stream.len) : (at += piece) {
            splits[count] = at;
            count += 1;
        }
        var run = try filterRun(stream, splits[0..count]);
        defer run.out.deinit(testing.allocator);
        try testing.expectEqualStrings(expected, run.out.items);
        try testing.expectEqual(whole.usage, run.usage);
        try testing.expectEqual(whole.hidden, run.hidden);
    }
}

test "sse filter: an event is forwarded as soon as its blank line has passed" {
    const event = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n";
    var filter: UsageEventFilter = .{};
    defer filter.deinit(testing.allocator);
    var scanner: usage_scan.SseScanner = .{};
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(testing.allocator);
    // Up to the blank line's CR: held, since a LF may still follow (and belong to it).
    try passChunk(&filter, testing.allocator, &scanner, event[0 .. event.len - 1], false, &out);
    try testing.expectEqual(@as(usize, 0), out.items.len);
    try passChunk(&filter, testing.allocator, &scanner, event[event.len - 1 ..] ++ "data: x", false, &out);
    try testing.expectEqualStrings(event, out.items);
}

test "sse filter: whole events, none hidden, are the chunk itself (nothing copied); a tail held back leaves a part of it" {
    const event = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    var filter: UsageEventFilter = .{};
    defer filter.deinit(testing.allocator);
    var scanner: usage_scan.SseScanner = .{};
    var scratch: std.ArrayList(u8) = .empty;
    defer scratch.deinit(testing.allocator);
    const whole = event ++ event;
    const sent = try filter.process(testing.allocator, &scanner, whole, false, &scratch);
    try testing.expect(sent.ptr == whole.ptr and sent.len == whole.len);
    const cut = event ++ event[0..9];
    const part = try filter.process(testing.allocator, &scanner, cut, false, &scratch);
    try testing.expect(part.ptr == cut.ptr and part.len == event.len);
    try testing.expectEqual(@as(usize, 0), scratch.capacity);
    // The held bytes go first in the next chunk: built in the scratch list.
    const rest = try filter.process(testing.allocator, &scanner, event[9..], true, &scratch);
    try testing.expectEqualStrings(event, rest);
    try testing.expect(rest.ptr == scratch.items.ptr);
}

test "sse filter: an oversized event is passed on as it comes" {
    var big: [held_bytes_max + 100]u8 = undefined;
    @memset(&big, 'x');
    @memcpy(big[0..6], "data: ");
    var filter: UsageEventFilter = .{};
    defer filter.deinit(testing.allocator);
    var scanner: usage_scan.SseScanner = .{};
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(testing.allocator);
    try passChunk(&filter, testing.allocator, &scanner, &big, false, &out);
    try testing.expectEqual(big.len, out.items.len);
    try passChunk(&filter, testing.allocator, &scanner, "\n\n", true, &out);
    try testing.expectEqual(big.len + 2, out.items.len);
}

test "sse filter: when the filter fails the scanner still reads every byte" {
    const stream = "data: {\"choices\":[{\"delta\":{}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
    const chunks = [_][]const u8{ stream[0..40], stream[40..100], stream[100..] };
    var fail_index: usize = 0;
    while (true) : (fail_index += 1) {
        var failing = std.testing.FailingAllocator.init(testing.allocator, .{ .fail_index = fail_index });
        var filter: UsageEventFilter = .{};
        defer filter.deinit(failing.allocator());
        var scanner: usage_scan.SseScanner = .{};
        var out: std.ArrayList(u8) = .empty;
        defer out.deinit(failing.allocator());
        // As response_phase.zig does: after a failure the filter steps aside and the scanner
        // is fed directly.
        var filtering = true;
        for (chunks, 0..) |chunk, i| {
            if (!filtering) {
                scanner.feed(chunk);
                continue;
            }
            _ = filter.process(failing.allocator(), &scanner, chunk, i == chunks.len - 1, &out) catch {
                filtering = false;
            };
        }
        scanner.finish();
        try testing.expectEqual(usage_scan.Usage{ .input_tokens = 7, .output_tokens = 3 }, scanner.usage());
        if (filtering) break;
    }
    try testing.expect(fail_index > 0);
}
