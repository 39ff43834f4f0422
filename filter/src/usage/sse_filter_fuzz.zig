//! The SSE usage-event filter against the one it replaced (issue 17): that filter framed the
//! stream itself and read every whole event again to find the usage-only one; this one takes
//! the response scanner's verdict on each event. The client must get the same bytes from both,
//! chunk for chunk, however the stream is split or mangled. Seeded and bounded like
//! usage_fuzz.zig, run by `zig build test`; the reference is kept verbatim below (tests only).
const std = @import("std");
const sse_filter = @import("sse_filter.zig");
const usage_fuzz = @import("usage_fuzz.zig");
const usage_scan = @import("usage.zig");
const slices = @import("../match/bytes.zig");

const held_bytes_max = sse_filter.held_bytes_max;

/// Streams the mutations start from: OpenAI's usage chunk among others, each line ending.
const stream_seeds = [_][]const u8{
    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
    ": ping\r\n\r\ndata: {\"choices\":[],\r\ndata: \"usage\":{\"prompt_tokens\":1}}\r\n\r\ndata: {\"choices\":[{}]}\r\n\r\n",
    "event: x\rdata:{\"choices\":[],\"usage\":{}}\r\rdata: {\"choices\":[],\"usage\":null}\r\rdata: [DONE]\r\r",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":6}}\n\n",
    // vLLM's continuous usage: usage beside a choice is content, shown.
    "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":2}}\n\ndata: {\"usage\":{},\"choices\":[{}]}\n\n",
};

test "fuzz: the one-pass filter sends what the two-pass filter sent, chunk for chunk" {
    var prng = std.Random.DefaultPrng.init(usage_fuzz.seed +% 17);
    const random = prng.random();
    const allocator = std.testing.allocator;
    var buffer: [512]u8 = undefined;
    var hidden_total: usize = 0;
    for (0..usage_fuzz.cases) |case| {
        const seed_stream = stream_seeds[case % stream_seeds.len];
        // A quarter of the cases unmutated: the usage event is hidden in every split.
        const stream = if (case % 4 == 0) seed_stream else usage_fuzz.mutate(random, seed_stream, &buffer);
        var reference: ReferenceFilter = .{};
        defer reference.deinit(allocator);
        var filter: sse_filter.UsageEventFilter = .{};
        defer filter.deinit(allocator);
        var scanner: usage_scan.SseScanner = .{};
        var expected: std.ArrayList(u8) = .empty;
        defer expected.deinit(allocator);
        var got: std.ArrayList(u8) = .empty;
        defer got.deinit(allocator);
        errdefer std.debug.print("case {d}: {s}\n", .{ case, stream });
        var at: usize = 0;
        while (true) {
            const step = @min(stream.len - at, random.intRangeAtMost(usize, 0, 9));
            const end = at + step == stream.len and random.boolean();
            try reference.process(allocator, stream[at..][0..step], end, &expected);
            try sse_filter.passChunk(&filter, allocator, &scanner, stream[at..][0..step], end, &got);
            try std.testing.expectEqualStrings(expected.items, got.items);
            at += step;
            if (end) break;
        }
        try std.testing.expectEqual(reference.hidden, filter.hidden);
        hidden_total += filter.hidden;
    }
    try std.testing.expect(hidden_total > usage_fuzz.cases / 4); // the cases do reach the hiding
}

// ---- the reference: sse_filter.zig before issue 17 (with the end-of-stream CR fix) --------

const ReferenceFilter = struct {
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

    pub fn deinit(self: *ReferenceFilter, allocator: std.mem.Allocator) void {
        self.held.deinit(allocator);
        self.* = undefined;
    }

    /// Takes the next bytes of the stream and appends what the client gets now to `out`.
    /// At `end_of_stream` whatever is held goes out (an unterminated last event as it was).
    pub fn process(self: *ReferenceFilter, allocator: std.mem.Allocator, chunk: []const u8, end_of_stream: bool, out: *std.ArrayList(u8)) !void {
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
            if (self.ended_on_cr) { // the CR that ended the last event is the stream's end
                self.ended_on_cr = false;
                try self.endEvent(allocator, "", out);
            }
            try out.appendSlice(allocator, self.held.items);
            self.held.clearRetainingCapacity();
        }
    }

    /// `tail` completes the current event: send it unless it is the usage-only one.
    fn endEvent(self: *ReferenceFilter, allocator: std.mem.Allocator, tail: []const u8, out: *std.ArrayList(u8)) !void {
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

fn isUsageOnly(event: []const u8) bool {
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
