//! A byte-at-a-time JSON scanner with no look-ahead: a document split anywhere across chunks
//! scans the same as one buffer, and memory is fixed (bounded depth, bounded key length). It
//! follows the object path and reports integers, booleans and object starts to a handler;
//! usage.zig (responses) and request.zig (request bodies) are its two handlers.
const std = @import("std");
const slices = @import("../match/bytes.zig");

/// Levels whose keys are tracked; deeper levels are followed by kind only.
pub const named_depth_max = 16;
/// Nesting beyond this stops the scan (the caller then estimates). Deep enough that structured
/// output nested before `usage` does not hide it (one bit of state per level).
pub const depth_max = 1024;
/// Longest key a handler can ask about ("cache_creation_input_tokens" is 27 bytes).
pub const key_bytes_max = 32;

comptime {
    std.debug.assert(named_depth_max <= depth_max);
    std.debug.assert(depth_max % 32 == 0);
}

/// Where a value sits: its object key and the key of the object holding it.
pub const Path = struct {
    /// 1 for the members of the top-level object.
    depth: usize,
    /// Key under which the containing object sits ("" at the top level or when too long).
    parent: []const u8,
    /// The value's own key ("" inside arrays or when too long).
    key: []const u8,
};

/// Incremental JSON scanner that tells `Handler` about the values it passes:
///   fn number(handler: *Handler, path: Path, value: u64) void   — non-negative integers only
///   fn literal(handler: *Handler, path: Path, value: ?bool, start: usize, end: usize) void —
///      true / false / null (null), with the offsets of its first byte and just past its last
///   fn objectOpen(handler: *Handler, path: Path, offset: usize) void — offset of its '{'
///   fn stringValue(handler: *Handler, path: Path, start: usize, end: usize) void — offsets of
///      its opening and closing quotes (a value string, not a key)
/// Invalid JSON stops scanning (state `failed`) without error; callers fall back to estimates.
pub fn JsonScanner(comptime Handler: type) type {
    return struct {
        const Self = @This();

        pub const State = enum {
            value, // expecting a value
            object_key_or_end, // after '{'
            object_key, // after ','
            key_string,
            key_string_escape,
            key_string_unicode,
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

        handler: Handler = .{},
        /// Bytes fed so far (offsets reported to the handler count from the first byte).
        offset: usize = 0,
        key_unicode: u16 = 0,
        key_unicode_digits: u8 = 0,
        literal_start: usize = 0,
        literal_bytes: [5]u8 = undefined,
        literal_len: u8 = 0,
        string_start: usize = 0,
        state: State = .value,
        depth: usize = 0,
        /// Bit i set: the container at level i is an object.
        /// Words of bits, not std.StaticBitSet: its `isSet` takes the whole 128-byte set by
        /// value, and a size-optimised build copies it on every call (issue 17).
        object_levels: [depth_max / 32]u32 = @splat(0),
        frames: [named_depth_max]Frame = undefined,
        key: Name = .{},
        number: u64 = 0,
        number_valid: bool = false,

        /// Starts over on a new document, keeping what the handler collected.
        pub fn reset(self: *Self) void {
            self.* = .{ .handler = self.handler };
        }

        pub fn feed(self: *Self, bytes: []const u8) void {
            var i: usize = 0;
            while (i < bytes.len) {
                // Runs that only move the offset (a string's body, whitespace, a number's
                // digits, a key's bytes) are taken in tight loops over local state; the state
                // machine sees one byte at a time only where something happens (issue 17:
                // the per-byte dispatch, and `offset` written back on every byte, made the
                // scan ~4 ns a byte in V8-class engines).
                const run = self.takeRun(bytes[i..]);
                i += run;
                self.offset += run;
                if (i == bytes.len) return;
                const c = bytes[i];
                switch (self.state) {
                    .failed => return,
                    .done => if (!isSpace(c)) {
                        self.state = .failed;
                        return;
                    },
                    else => self.step(c),
                }
                self.offset += 1;
                i += 1;
            }
        }

        /// How many leading bytes of `rest` the current state passes over without a
        /// transition, taking what they carry (a number's value, a key's bytes) along.
        fn takeRun(self: *Self, rest: []const u8) usize {
            switch (self.state) {
                .string => return stringBodyBytes(rest),
                .value, .object_key_or_end, .object_key, .colon, .after_value, .done => return spaceBytes(rest),
                .number => {
                    var number = self.number;
                    var valid = self.number_valid;
                    var at: usize = 0;
                    while (at < rest.len and std.ascii.isDigit(rest[at])) : (at += 1) {
                        // Compared, not @mulWithOverflow: on wasm32 that is a 128-bit multiply
                        // call per digit. Past u64 the number is not a count.
                        const digit = rest[at] - '0';
                        const max = std.math.maxInt(u64);
                        if (number > max / 10 or (number == max / 10 and digit > max % 10)) {
                            valid = false;
                            number = 0;
                        } else number = number * 10 + digit;
                    }
                    self.number = number;
                    self.number_valid = valid;
                    return at;
                },
                .key_string => {
                    const run = stringBodyBytes(rest);
                    const room = key_bytes_max - self.key.len;
                    const kept = @min(run, room);
                    @memcpy(self.key.bytes[self.key.len..][0..kept], rest[0..kept]);
                    self.key.len += @intCast(kept);
                    if (run > room) self.key.usable = false;
                    return run;
                },
                else => return 0,
            }
        }

        /// How many leading bytes of `bytes` a string's body passes over unchanged (anything
        /// but a quote or a backslash), eight at a time where it can.
        fn stringBodyBytes(bytes: []const u8) usize {
            const ones: u64 = 0x0101010101010101;
            const highs: u64 = 0x8080808080808080;
            var at: usize = 0;
            while (at + 8 <= bytes.len) : (at += 8) {
                const word = slices.word(bytes[at..]); // little-endian: byte 0 is the low byte
                const quote = word ^ (ones * '"');
                const backslash = word ^ (ones * '\\');
                // A byte of `x` is zero exactly where (x - 1) borrows into its high bit while x's
                // own high bit is clear: the usual has-zero-byte test, for both needles.
                const hits = (((quote -% ones) & ~quote) | ((backslash -% ones) & ~backslash)) & highs;
                if (hits != 0) return at + @ctz(hits) / 8;
            }
            while (at < bytes.len and bytes[at] != '"' and bytes[at] != '\\') at += 1;
            return at;
        }

        fn spaceBytes(bytes: []const u8) usize {
            var at: usize = 0;
            while (at < bytes.len and isSpace(bytes[at])) at += 1;
            return at;
        }

        fn inObject(self: *const Self) bool {
            std.debug.assert(self.depth > 0);
            const level = self.depth - 1;
            return (self.object_levels[level / 32] >> @intCast(level % 32)) & 1 != 0;
        }

        fn step(self: *Self, c: u8) void {
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
                    '\\' => self.state = .key_string_escape,
                    else => self.appendKeyByte(c),
                },
                // Keys are compared decoded: `"stream\u005foptions"` is `stream_options` to
                // every JSON parser upstream, so it must be to this scanner too.
                .key_string_escape => {
                    self.state = .key_string;
                    switch (c) {
                        'u' => {
                            self.key_unicode = 0;
                            self.key_unicode_digits = 0;
                            self.state = .key_string_unicode;
                        },
                        '"', '\\', '/' => self.appendKeyByte(c),
                        'b' => self.appendKeyByte(8),
                        'f' => self.appendKeyByte(12),
                        'n' => self.appendKeyByte('\n'),
                        'r' => self.appendKeyByte('\r'),
                        't' => self.appendKeyByte('\t'),
                        else => self.fail(), // not JSON
                    }
                },
                .key_string_unicode => {
                    const digit = std.fmt.charToDigit(c, 16) catch return self.fail();
                    self.key_unicode = self.key_unicode * 16 + digit;
                    self.key_unicode_digits += 1;
                    if (self.key_unicode_digits < 4) return;
                    self.state = .key_string;
                    // No key a handler asks about has a byte outside ASCII.
                    if (self.key_unicode < 0x80) self.appendKeyByte(@intCast(self.key_unicode)) else self.key.usable = false;
                },
                .colon => {
                    if (isSpace(c)) return;
                    if (c != ':') return self.fail();
                    self.state = .value;
                },
                .string => switch (c) {
                    '"' => {
                        if (self.path()) |p| self.handler.stringValue(p, self.string_start, self.offset);
                        self.endValue();
                    },
                    '\\' => self.state = .string_escape,
                    else => {},
                },
                .string_escape => self.state = .string,
                .number => {
                    std.debug.assert(!std.ascii.isDigit(c)); // digits are taken by takeRun
                    if (c == '.' or c == 'e' or c == 'E' or c == '+' or c == '-') {
                        self.number_valid = false; // not a token count
                        return;
                    }
                    self.recordNumber();
                    self.endValue();
                    self.step(c);
                },
                .literal => {
                    if (std.ascii.isAlphabetic(c)) {
                        if (self.literal_len == self.literal_bytes.len) return self.fail();
                        self.literal_bytes[self.literal_len] = c;
                        self.literal_len += 1;
                        return;
                    }
                    const text = self.literal_bytes[0..self.literal_len];
                    const value: ?bool = if (std.mem.eql(u8, text, "true")) true else if (std.mem.eql(u8, text, "false")) false else if (std.mem.eql(u8, text, "null")) null else return self.fail();
                    if (self.path()) |p| self.handler.literal(p, value, self.literal_start, self.offset);
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

        fn startValue(self: *Self, c: u8) void {
            switch (c) {
                ' ', '\t', '\r', '\n' => {},
                '{', '[' => self.openContainer(c == '{'),
                ']' => self.closeContainer(false), // empty array
                '"' => {
                    self.string_start = self.offset;
                    self.state = .string;
                },
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
                't', 'f', 'n' => {
                    self.literal_start = self.offset;
                    self.literal_bytes[0] = c;
                    self.literal_len = 1;
                    self.state = .literal;
                },
                else => self.fail(),
            }
        }

        fn openContainer(self: *Self, is_object: bool) void {
            if (self.depth == depth_max) return self.fail();
            if (is_object) {
                if (self.path()) |p| self.handler.objectOpen(p, self.offset);
            }
            const bit = @as(u32, 1) << @intCast(self.depth % 32);
            const word = &self.object_levels[self.depth / 32];
            word.* = if (is_object) word.* | bit else word.* & ~bit;
            if (self.depth < named_depth_max) {
                var frame = Frame{};
                if (self.depth > 0 and self.inObject()) frame.name = self.frames[self.depth - 1].key;
                self.frames[self.depth] = frame;
            }
            self.depth += 1;
            self.state = if (is_object) .object_key_or_end else .value;
        }

        fn closeContainer(self: *Self, is_object: bool) void {
            if (self.depth == 0 or self.inObject() != is_object) return self.fail();
            self.depth -= 1;
            self.endValue();
        }

        fn endValue(self: *Self) void {
            self.state = if (self.depth == 0) .done else .after_value;
        }

        fn appendKeyByte(self: *Self, c: u8) void {
            if (self.key.len < key_bytes_max) {
                self.key.bytes[self.key.len] = c;
                self.key.len += 1;
            } else self.key.usable = false;
        }

        fn storeKey(self: *Self) void {
            if (self.depth == 0 or self.depth > named_depth_max) return;
            self.frames[self.depth - 1].key = self.key;
        }

        /// The path of the value about to start (or just ended), when its keys are known.
        fn path(self: *const Self) ?Path {
            if (self.depth == 0) return .{ .depth = 0, .parent = "", .key = "" };
            if (self.depth > named_depth_max) return null;
            const frame = &self.frames[self.depth - 1];
            const key = if (self.inObject()) frame.key.slice() else "";
            return .{ .depth = self.depth, .parent = frame.name.slice(), .key = key };
        }

        fn recordNumber(self: *Self) void {
            if (!self.number_valid) return;
            if (self.path()) |p| self.handler.number(p, self.number);
        }

        fn fail(self: *Self) void {
            self.state = .failed;
        }

        /// Flushes a number that ended at the end of input (a bare top-level number).
        pub fn finish(self: *Self) void {
            if (self.state == .number) {
                self.recordNumber();
                self.endValue();
            }
        }
    };
}

fn isSpace(c: u8) bool {
    return c == ' ' or c == '\t' or c == '\r' or c == '\n';
}
