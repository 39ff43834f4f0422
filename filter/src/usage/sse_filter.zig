//! Hides the usage-only event of an OpenAI-style stream from a client that did not ask for
//! usage. The gateway always asks the upstream for it (request.zig), so the stream can be
//! counted; a client that had not asked should see the stream it asked for.
//!
//! Events are forwarded whole, as soon as their terminating blank line has passed: only the
//! bytes of an event still incomplete are held (upstreams flush one event per write, so in
//! practice nothing waits). An event larger than `held_bytes_max` is passed on as it comes
//! (it is not a usage-only event).
const std = @import("std");
const usage_scan = @import("usage.zig");
const slices = @import("../match/bytes.zig");

/// An event held longer than this is not a usage chunk (those are ~300 bytes).
pub const held_bytes_max = 16 * 1024;

pub const UsageEventFilter = struct {
    held: std.ArrayList(u8) = .empty,
    /// The current event outgrew `held_bytes_max`: its bytes go straight out until it ends.
    passing: bool = false,
    /// No byte in the current line yet (true at the start of an event).
    line_empty: bool = true,
    last_was_cr: bool = false,
    /// The event ended on a CR: a LF right after it still belongs to it.
    ended_on_cr: bool = false,
    /// Usage-only events left out so far.
    hidden: u32 = 0,

    pub fn deinit(self: *UsageEventFilter, allocator: std.mem.Allocator) void {
        self.held.deinit(allocator);
        self.* = undefined;
    }

    /// Takes the next bytes of the stream and appends what the client gets now to `out`.
    /// At `end_of_stream` whatever is held goes out (an unterminated last event as it was).
    pub fn process(self: *UsageEventFilter, allocator: std.mem.Allocator, chunk: []const u8, end_of_stream: bool, out: *std.ArrayList(u8)) !void {
        var start: usize = 0; // first byte of `chunk` not yet held or sent
        var i: usize = 0;
        while (i < chunk.len) : (i += 1) {
            const c = chunk[i];
            if (self.ended_on_cr) {
                self.ended_on_cr = false;
                if (c == '\n') {
                    try self.endEvent(allocator, chunk[start .. i + 1], out);
                    start = i + 1;
                    self.last_was_cr = false;
                    continue;
                }
                try self.endEvent(allocator, chunk[start..i], out);
                start = i;
            }
            if (c == '\n' and self.last_was_cr) {
                self.last_was_cr = false;
                continue;
            }
            if (c != '\n' and c != '\r') {
                // The rest of the line at once (byte by byte this loop cost ~40 instructions a
                // byte of every filtered stream, issue 17): none of it is a CR or LF.
                i += slices.countNeither(chunk[i..], '\r', '\n') - 1;
                self.last_was_cr = false;
                self.line_empty = false;
                continue;
            }
            self.last_was_cr = c == '\r';
            if (!self.line_empty) {
                self.line_empty = true;
                continue;
            }
            // A blank line: the event ends here (or after a LF still to come).
            if (c == '\r') {
                self.ended_on_cr = true;
                continue;
            }
            try self.endEvent(allocator, chunk[start .. i + 1], out);
            start = i + 1;
        }
        const rest = chunk[start..];
        if (self.passing) {
            try out.appendSlice(allocator, rest);
        } else if (self.held.items.len + rest.len > held_bytes_max) {
            try out.appendSlice(allocator, self.held.items);
            try out.appendSlice(allocator, rest);
            self.held.clearRetainingCapacity();
            self.passing = true;
        } else {
            try self.held.appendSlice(allocator, rest);
        }
        if (end_of_stream) {
            try out.appendSlice(allocator, self.held.items);
            self.held.clearRetainingCapacity();
        }
    }

    /// `tail` completes the current event: send it unless it is the usage-only one.
    fn endEvent(self: *UsageEventFilter, allocator: std.mem.Allocator, tail: []const u8, out: *std.ArrayList(u8)) !void {
        defer {
            self.held.clearRetainingCapacity();
            self.passing = false;
            self.line_empty = true;
        }
        if (self.passing) return out.appendSlice(allocator, tail);
        try self.held.appendSlice(allocator, tail);
        if (isUsageOnly(self.held.items)) {
            self.hidden +|= 1;
            return;
        }
        try out.appendSlice(allocator, self.held.items);
    }
};

/// Whether a whole event is OpenAI's usage chunk: its data is one JSON object with a `usage`
/// object and no choice (`"choices":[]`).
/// How much of an event `isUsageOnly` reads between looks at what it has found.
const look_piece_bytes = 64;

pub fn isUsageOnly(event: []const u8) bool {
    // The response scanner: it notes the event's shape beside the usage it reads.
    var scanner = usage_scan.JsonScanner{};
    var data_lines: usize = 0;
    var at: usize = 0;
    while (at < event.len) {
        // Lines without their CR / LF; an empty one (between a CR and a LF) is no field.
        const line = event[at..][0..slices.countNeither(event[at..], '\r', '\n')];
        at += line.len + 1;
        if (line.len < "data:".len or !slices.eql(line[0.."data:".len], "data:")) continue;
        var data = line["data:".len..];
        if (data.len > 0 and data[0] == ' ') data = data[1..];
        if (data_lines > 0) scanner.feed("\n");
        data_lines += 1;
        // Fed in pieces, so that a choice ends the look early: every content chunk has one,
        // ahead of the rest of its fields. Where the pieces split the data changes nothing
        // (the scanner reads a document split anywhere the same).
        while (data.len > 0) {
            const piece = data[0..@min(data.len, look_piece_bytes)];
            scanner.feed(piece);
            data = data[piece.len..];
            if (scanner.handler.choice or scanner.state == .failed) return false;
        }
    }
    return data_lines > 0 and scanner.state == .done and scanner.handler.usage_object and !scanner.handler.choice;
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

fn filterSplitEverywhere(stream: []const u8, expected: []const u8) !void {
    var split_at: usize = 0;
    while (split_at <= stream.len) : (split_at += 1) {
        var filter: UsageEventFilter = .{};
        defer filter.deinit(testing.allocator);
        var out: std.ArrayList(u8) = .empty;
        defer out.deinit(testing.allocator);
        try filter.process(testing.allocator, stream[0..split_at], false, &out);
        try filter.process(testing.allocator, stream[split_at..], true, &out);
        try testing.expectEqualStrings(expected, out.items);
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

test "sse filter: everything else passes unchanged, an unterminated tail included" {
    const stream = ": comment\n\ndata: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\nevent: x\ndata: {\"usage\":\n\ndata: [DONE]";
    try filterSplitEverywhere(stream, stream);
}

test "sse filter: OpenAI's own chunks, longer than one look, over two data lines: only the usage chunk goes" {
    // The usage chunk's choice-free shape is only known at its end, and the content chunk's
    // choice well past the first look_piece_bytes; multi-line data is joined as one document.
    const head = "{\"id\":\"chatcmpl-AQ3dNbEnChMaRkOvErHeAd0001\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-4o-mini-2024-07-18\",";
    const content = "data: " ++ head ++ "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    const usage = "data: " ++ head ++ "\ndata: \"choices\":[],\"usage\":{\"prompt_tokens\":52,\"completion_tokens\":118}}\n\n";
    comptime std.debug.assert(head.len > 2 * look_piece_bytes);
    try testing.expect(isUsageOnly(usage) and !isUsageOnly(content));
    try filterSplitEverywhere(content ++ usage ++ "data: [DONE]\n\n", content ++ "data: [DONE]\n\n");
}

test "sse filter: an oversized event is passed on as it comes" {
    var big: [held_bytes_max + 100]u8 = undefined;
    @memset(&big, 'x');
    @memcpy(big[0..6], "data: ");
    var filter: UsageEventFilter = .{};
    defer filter.deinit(testing.allocator);
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(testing.allocator);
    try filter.process(testing.allocator, &big, false, &out);
    try testing.expectEqual(big.len, out.items.len);
    try filter.process(testing.allocator, "\n\n", true, &out);
    try testing.expectEqual(big.len + 2, out.items.len);
}
