//! Server-sent events framing in front of the usage JSON scanner (usage.zig): each event's
//! `data:` lines go to the JSON machine, which is reset between events, and each event's shape
//! is noted as it ends (the usage-only verdict sse_filter.zig acts on, issue 17).
const usage = @import("usage.zig");
const slices = @import("../match/bytes.zig");

const JsonScanner = usage.JsonScanner;
const Usage = usage.Usage;

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
    /// The event that ended last was OpenAI's usage-only chunk: its data one JSON object with
    /// a top-level `usage` object and no choice (`"choices":[]`). sse_filter.zig hides it from
    /// a client that did not ask for usage, on this verdict: the event is read once (issue 17).
    event_usage_only: bool = false,

    pub fn feed(self: *SseScanner, bytes: []const u8) void {
        _ = self.feedTo(bytes, false);
    }

    /// Feeds `bytes` up to the end of the first event that ends in them: how many were taken,
    /// the byte that ended it the last (the first line end of its blank line, so a CR where
    /// CRLF ends it; the LF is passed over when it comes). Null: no event ended, all taken.
    /// `event_usage_only` then tells what the event was.
    pub fn feedToEventEnd(self: *SseScanner, bytes: []const u8) ?usize {
        return self.feedTo(bytes, true);
    }

    /// One loop for both uses, told at run time whether to stop at an event's end (issue 17,
    /// 22-event stream): a comptime flag made two copies, and a scan that does not stop ~900
    /// instructions dearer; `feed` as a loop over `feedToEventEnd` cost as much (a call per
    /// event). `noinline` keeps it one copy.
    noinline fn feedTo(self: *SseScanner, bytes: []const u8, stop_at_event_end: bool) ?usize {
        // Byte by byte through `step`, a streamed answer cost ~180 instructions a byte (issue
        // 17). The common runs are taken whole, each doing exactly what `step` would do to its
        // bytes: none of them is a CR or LF, so none ends a line or follows a CR (nor an event).
        var i: usize = 0;
        while (i < bytes.len) {
            switch (self.line_state) {
                // The rest of a `data:` line goes to the JSON scanner in one piece; the rest of
                // another field's line is passed over.
                .data, .ignore => {
                    const run = slices.countNeither(bytes[i..], '\r', '\n');
                    if (run > 0) {
                        if (self.line_state == .data) self.json.feed(bytes[i..][0..run]);
                        self.last_was_cr = false;
                        i += run;
                        continue;
                    }
                },
                // A line that starts `data:`, whole in this chunk.
                .line_start => if (bytes.len - i >= 5 and slices.eql(bytes[i..][0..5], "data:")) {
                    self.last_was_cr = false;
                    self.startData();
                    i += 5;
                    continue;
                },
                // The one space after the colon is dropped; any other byte is data's first.
                .skip_space => if (bytes[i] != '\r' and bytes[i] != '\n') {
                    self.last_was_cr = false;
                    self.line_state = .data;
                    if (bytes[i] == ' ') i += 1;
                    continue;
                },
                .field_name => {},
            }
            const event_ended = self.step(bytes[i]);
            i += 1;
            if (event_ended and stop_at_event_end) return i;
        }
        return null;
    }

    /// Takes one byte; whether it ended an event.
    fn step(self: *SseScanner, c: u8) bool {
        // CRLF counts as one line end; a lone CR ends a line too.
        if (c == '\n' and self.last_was_cr) {
            self.last_was_cr = false;
            return false;
        }
        self.last_was_cr = c == '\r';
        const line_end = c == '\n' or c == '\r';
        switch (self.line_state) {
            .line_start => {
                if (line_end) {
                    self.endEvent();
                    return true;
                }
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
            .ignore => if (line_end) return self.endLine(),
        }
        return false;
    }

    fn step_field(self: *SseScanner, c: u8) void {
        if (c == ':') {
            if (slices.eql(self.field_buffer[0..self.field_len], "data")) return self.startData();
            self.line_state = .ignore;
            return;
        }
        if (self.field_len == self.field_buffer.len) {
            self.line_state = .ignore;
            return;
        }
        self.field_buffer[self.field_len] = c;
        self.field_len += 1;
    }

    /// A `data:` field's colon has passed: its value (after one optional space) is JSON.
    fn startData(self: *SseScanner) void {
        // Lines of one event's data are joined by '\n', which is JSON whitespace.
        if (self.event_has_data) self.json.feed("\n");
        self.event_has_data = true;
        self.line_state = .skip_space;
    }

    /// A line that is not blank ended (no event ends with it).
    fn endLine(self: *SseScanner) bool {
        self.line_state = .line_start;
        return false;
    }

    fn endEvent(self: *SseScanner) void {
        const shape = &self.json.handler;
        // Complete as it stands: a usage object is never a bare top-level number `finish` ends.
        self.event_usage_only = self.event_has_data and self.json.state == .done and shape.usage_object and !shape.choice;
        if (self.event_has_data) self.json.finish();
        self.json.reset();
        // The shape is the event's own; the usage read stays.
        shape.usage_object = false;
        shape.choice = false;
        self.event_has_data = false;
        self.line_state = .line_start;
    }

    pub fn finish(self: *SseScanner) void {
        self.endEvent();
    }

    pub fn usage(self: *const SseScanner) Usage {
        return self.json.handler.usage;
    }
};
