//! A byte-at-a-time JSON scanner with no look-ahead: a document split anywhere across chunks
//! scans the same as one buffer, and memory is fixed (bounded depth, bounded key length). It
//! follows the object path and reports integers, booleans and object starts to a handler;
//! usage.zig (responses) and request.zig (request bodies) are its two handlers.
//!
//! Cost (issue 17): it runs on every response body and every held request body, so the work
//! per byte is kept small. Runs that carry no structure (a string's body, whitespace, a number's
//! digits) are taken in tight loops, a string's body eight bytes at a time; a key is matched
//! once, when its closing quote passes, against the few keys the handler asks about, and the
//! path is carried as those keys' one-byte ids (`Handler.Key`), so nothing is copied or compared
//! per value.
const std = @import("std");
const slices = @import("../match/bytes.zig");
const json_keys = @import("json_keys.zig");

/// Levels whose keys are tracked; deeper levels are followed by kind only.
pub const named_depth_max = 16;
/// Nesting beyond this stops the scan (the caller then estimates). Deep enough that structured
/// output nested before `usage` does not hide it (one bit of state per level).
pub const depth_max = 1024;
/// Longest key a handler can ask about ("cache_creation_input_tokens" is 27 bytes); a longer
/// key is none of them.
pub const key_bytes_max = 32;

comptime {
    std.debug.assert(named_depth_max <= depth_max);
    std.debug.assert(depth_max % 32 == 0);
}

/// Where a value sits: its object key and the key of the object holding it, as the handler's
/// key ids (`Key.none` for any key the handler does not ask about, for no key at all, and
/// inside arrays).
pub fn Path(comptime Key: type) type {
    return struct {
        /// 1 for the members of the top-level object.
        depth: usize,
        /// Key under which the containing object sits (`.none` at the top level).
        parent: Key,
        /// The value's own key (`.none` inside arrays).
        key: Key,
    };
}

/// Incremental JSON scanner that tells `Handler` about the values it passes. `Handler.Key` is
/// an `enum(u8)` whose first field is `none` and whose other fields are named by the (decoded)
/// object keys the handler asks about; the scanner reports every other key as `.none`.
///   fn number(handler: *Handler, path: Path(Key), value: u64) void — non-negative integers only
///   fn literal(handler: *Handler, path: Path(Key), value: ?bool, start: usize, end: usize) void
///      — true / false / null (null), with the offsets of its first byte and just past its last
///   fn objectOpen(handler: *Handler, path: Path(Key), offset: usize) void — offset of its '{'
///   fn stringValue(handler: *Handler, path: Path(Key), start: usize, end: usize) void — offsets
///      of its opening and closing quotes (a value string, not a key)
/// Invalid JSON stops scanning (state `failed`) without error; callers fall back to estimates.
pub fn JsonScanner(comptime Handler: type) type {
    return struct {
        const Self = @This();
        const Key = Handler.Key;
        const keys = json_keys.KeyTable(Key);

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

        /// One named level: the key it sits under and the latest key read in it (both `.none`
        /// for what the handler does not ask about; `key` stays `.none` in an array).
        const Frame = struct { name: Key, key: Key };

        handler: Handler = .{},
        /// Bytes fed so far (offsets reported to the handler count from the first byte).
        offset: usize = 0,
        state: State = .value,
        depth: usize = 0,
        /// Bit i set: the container at level i is an object. Written when level i opens,
        /// before anything reads it, so it needs no clearing between documents.
        /// Words of bits, not std.StaticBitSet: its `isSet` takes the whole 128-byte set by
        /// value, and a size-optimised build copies it on every call (issue 17).
        object_levels: [depth_max / 32]u32 = undefined,
        frames: [named_depth_max]Frame = undefined,
        /// The key being read, decoded; `key_len` past `key_bytes_max` means too long.
        key_bytes: [key_bytes_max]u8 = undefined,
        key_len: usize = 0,
        key_unicode: u16 = 0,
        key_unicode_digits: u8 = 0,
        /// The literal being read ("true", "false" or "null") and how much of it has passed.
        literal_text: []const u8 = undefined,
        literal_len: usize = 0,
        /// Offset of the literal's first byte or of the string's opening quote.
        value_start: usize = 0,
        number: u64 = 0,
        number_valid: bool = false,

        /// Starts over on a new document, keeping what the handler collected. Every other
        /// field is set where a value or key starts, before it is read.
        pub fn reset(self: *Self) void {
            self.offset = 0;
            self.state = .value;
            self.depth = 0;
        }

        pub fn feed(self: *Self, bytes: []const u8) void {
            // `base + i` is the offset of bytes[i]; `self.offset` is written once, here, and
            // `self.state` only where the input runs out (`pause`). States follow each other by
            // `continue :state` (a labelled switch), with nothing stored between; LLVM still
            // routes most of those through one br_table, so the commonest steps of compact JSON
            // (a key's quote to its colon and value, a comma to the next key) are taken in place.
            const base = self.offset;
            self.offset = base + bytes.len;
            var i: usize = 0;
            state: switch (self.state) {
                .failed => self.state = .failed,
                .done => self.state = if (skipSpace(bytes, i) < bytes.len) .failed else .done,
                // Each state's likeliest byte carries @branchHint(.likely): without it LLVM turns
                // the tests into one switch that checks whitespace first, and most bodies (every
                // one the bench sends) have none between tokens.
                .value => {
                    if (i == bytes.len) return self.pause(.value);
                    const c = bytes[i];
                    i += 1;
                    if (c == '"') {
                        @branchHint(.likely);
                        self.value_start = base + i - 1;
                        continue :state .string;
                    }
                    switch (c) {
                        ' ', '\t', '\r', '\n' => {
                            i = skipSpace(bytes, i);
                            continue :state .value;
                        },
                        '{', '[' => continue :state self.openContainer(c == '{', base + i - 1),
                        ']' => continue :state self.closeContainer(false), // empty array
                        '-' => {
                            self.number = 0;
                            self.number_valid = false;
                            continue :state .number;
                        },
                        '0'...'9' => {
                            self.number = c - '0';
                            self.number_valid = true;
                            continue :state .number;
                        },
                        't', 'f', 'n' => {
                            self.value_start = base + i - 1;
                            self.literal_text = switch (c) {
                                't' => "true",
                                'f' => "false",
                                else => "null",
                            };
                            self.literal_len = 1;
                            continue :state .literal;
                        },
                        else => continue :state .failed,
                    }
                },
                .object_key_or_end => {
                    if (i == bytes.len) return self.pause(.object_key_or_end);
                    switch (bytes[i]) {
                        '}' => {
                            i += 1;
                            continue :state self.closeContainer(true);
                        },
                        ' ', '\t', '\r', '\n' => {
                            i = skipSpace(bytes, i);
                            continue :state .object_key_or_end;
                        },
                        else => continue :state .object_key,
                    }
                },
                .object_key => {
                    if (i == bytes.len) return self.pause(.object_key);
                    const c = bytes[i];
                    i += 1;
                    if (c == '"') {
                        @branchHint(.likely);
                        self.key_len = 0;
                        continue :state .key_string;
                    }
                    if (!isSpace(c)) continue :state .failed;
                    i = skipSpace(bytes, i);
                    continue :state .object_key;
                },
                .key_string => {
                    const from = i;
                    i += stringBodyBytes(bytes[i..]);
                    if (self.key_len == 0 and i < bytes.len and bytes[i] == '"') {
                        @branchHint(.likely);
                        // The whole key, unescaped, lies in this chunk: matched where it is.
                        self.storeKey(bytes[from..i]);
                        i += 1;
                        // The colon right behind it (compact JSON) is taken here, sparing a
                        // trip through the dispatch.
                        if (i < bytes.len and bytes[i] == ':') {
                            @branchHint(.likely);
                            i += 1;
                            continue :state .value;
                        }
                        continue :state .colon;
                    }
                    self.appendKeyBytes(bytes[from..i]);
                    if (i == bytes.len) return self.pause(.key_string);
                    i += 1;
                    if (bytes[i - 1] == '\\') continue :state .key_string_escape;
                    self.storeKey(self.key_bytes[0..@min(self.key_len, key_bytes_max)]);
                    continue :state .colon;
                },
                // Keys are compared decoded: `"stream\u005foptions"` is `stream_options` to
                // every JSON parser upstream, so it must be to this scanner too.
                .key_string_escape => {
                    if (i == bytes.len) return self.pause(.key_string_escape);
                    const c = bytes[i];
                    i += 1;
                    self.appendKeyByte(switch (c) {
                        'u' => {
                            self.key_unicode = 0;
                            self.key_unicode_digits = 0;
                            continue :state .key_string_unicode;
                        },
                        '"', '\\', '/' => c,
                        'b' => 8,
                        'f' => 12,
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        else => continue :state .failed, // not JSON
                    });
                    continue :state .key_string;
                },
                .key_string_unicode => {
                    if (i == bytes.len) return self.pause(.key_string_unicode);
                    const digit = std.fmt.charToDigit(bytes[i], 16) catch continue :state .failed;
                    i += 1;
                    self.key_unicode = self.key_unicode * 16 + digit;
                    self.key_unicode_digits += 1;
                    if (self.key_unicode_digits < 4) continue :state .key_string_unicode;
                    // No key a handler asks about has a byte outside ASCII.
                    self.appendKeyByte(if (self.key_unicode < 0x80) @intCast(self.key_unicode) else null);
                    continue :state .key_string;
                },
                .colon => {
                    if (i == bytes.len) return self.pause(.colon);
                    const c = bytes[i];
                    i += 1;
                    if (c == ':') {
                        @branchHint(.likely);
                        continue :state .value;
                    }
                    if (!isSpace(c)) continue :state .failed;
                    i = skipSpace(bytes, i);
                    continue :state .colon;
                },
                .string => {
                    i += stringBodyBytes(bytes[i..]);
                    if (i == bytes.len) return self.pause(.string);
                    i += 1;
                    if (bytes[i - 1] == '\\') {
                        @branchHint(.unlikely);
                        continue :state .string_escape;
                    }
                    if (self.path()) |p| self.handler.stringValue(p, self.value_start, base + i - 1);
                    continue :state self.valueEnded();
                },
                .string_escape => {
                    if (i == bytes.len) return self.pause(.string_escape);
                    i += 1;
                    continue :state .string;
                },
                .number => {
                    i += self.takeDigits(bytes[i..]);
                    if (i == bytes.len) return self.pause(.number);
                    switch (bytes[i]) {
                        '.', 'e', 'E', '+', '-' => {
                            self.number_valid = false; // not a token count
                            i += 1;
                            continue :state .number;
                        },
                        else => {}, // the next state's byte: not consumed
                    }
                    if (self.number_valid) {
                        if (self.path()) |p| self.handler.number(p, self.number);
                    }
                    continue :state self.valueEnded();
                },
                .literal => {
                    const text = self.literal_text;
                    while (i < bytes.len and std.ascii.isAlphabetic(bytes[i])) : (i += 1) {
                        if (self.literal_len == text.len or text[self.literal_len] != bytes[i]) continue :state .failed;
                        self.literal_len += 1;
                    }
                    if (i == bytes.len) return self.pause(.literal);
                    if (self.literal_len != text.len) continue :state .failed;
                    const value: ?bool = switch (text[0]) {
                        't' => true,
                        'f' => false,
                        else => null,
                    };
                    // bytes[i] is the next state's: not consumed.
                    if (self.path()) |p| self.handler.literal(p, value, self.value_start, base + i);
                    continue :state self.valueEnded();
                },
                .after_value => {
                    if (i == bytes.len) return self.pause(.after_value);
                    const c = bytes[i];
                    i += 1;
                    if (c == ',') {
                        @branchHint(.likely);
                        if (!self.inObject()) continue :state .value;
                        // The next key's quote right behind the comma: taken here.
                        if (i < bytes.len and bytes[i] == '"') {
                            @branchHint(.likely);
                            i += 1;
                            self.key_len = 0;
                            continue :state .key_string;
                        }
                        continue :state .object_key;
                    }
                    if (c == '}' or c == ']') continue :state self.closeContainer(c == '}');
                    if (!isSpace(c)) continue :state .failed;
                    i = skipSpace(bytes, i);
                    continue :state .after_value;
                },
            }
        }

        /// Where the input ran out: the state the next bytes continue from.
        fn pause(self: *Self, state: State) void {
            @branchHint(.unlikely); // once a chunk
            self.state = state;
        }

        /// Takes the digits at the start of `rest` into the number; returns how many.
        fn takeDigits(self: *Self, rest: []const u8) usize {
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
        }

        /// How many leading bytes of `bytes` a string's body passes over unchanged (anything
        /// but a quote or a backslash).
        fn stringBodyBytes(bytes: []const u8) usize {
            return slices.countNeither(bytes, '"', '\\');
        }

        inline fn inObject(self: *const Self) bool {
            std.debug.assert(self.depth > 0);
            const level = self.depth - 1;
            return (self.object_levels[level / 32] >> @intCast(level % 32)) & 1 != 0;
        }

        /// A decoded key byte; null for one no key asked about has (the key becomes unknown).
        fn appendKeyByte(self: *Self, byte: ?u8) void {
            if (self.key_len < key_bytes_max) {
                if (byte) |c| {
                    self.key_bytes[self.key_len] = c;
                    self.key_len += 1;
                    return;
                }
            }
            self.key_len = key_bytes_max + 1;
        }

        /// Opens an object or array at `offset`; the state that reads its first member.
        fn openContainer(self: *Self, is_object: bool, offset: usize) State {
            if (self.depth == depth_max) return .failed;
            if (is_object) {
                if (self.path()) |p| self.handler.objectOpen(p, offset);
            }
            const bit = @as(u32, 1) << @intCast(self.depth % 32);
            const word = &self.object_levels[self.depth / 32];
            word.* = if (is_object) word.* | bit else word.* & ~bit;
            if (self.depth < named_depth_max) {
                // An array's frame keeps key `.none`, so this is the key in an object only.
                const name: Key = if (self.depth > 0) self.frames[self.depth - 1].key else .none;
                self.frames[self.depth] = .{ .name = name, .key = .none };
            }
            self.depth += 1;
            return if (is_object) .object_key_or_end else .value;
        }

        fn closeContainer(self: *Self, is_object: bool) State {
            if (self.depth == 0 or self.inObject() != is_object) return .failed;
            self.depth -= 1;
            return self.valueEnded();
        }

        /// The state after a value (a container's or a scalar's) has ended.
        inline fn valueEnded(self: *const Self) State {
            return if (self.depth == 0) .done else .after_value;
        }

        /// Takes a run of a key's bytes into the buffer; a key longer than the buffer is none
        /// a handler asks about, so past it only the length (`key_bytes_max + 1`) is kept.
        fn appendKeyBytes(self: *Self, run: []const u8) void {
            if (self.key_len + run.len > key_bytes_max) {
                self.key_len = key_bytes_max + 1;
                return;
            }
            @memcpy(self.key_bytes[self.key_len..][0..run.len], run);
            self.key_len += run.len;
        }

        /// Notes the key just read (`text`, decoded; cut short when `key_len` says too long).
        fn storeKey(self: *Self, text: []const u8) void {
            std.debug.assert(self.depth > 0); // keys are read inside objects only
            if (self.depth > named_depth_max) return;
            const key: Key = if (self.key_len > key_bytes_max or text.len > key_bytes_max) .none else keys.find(text);
            self.frames[self.depth - 1].key = key;
        }

        /// The path of the value about to start (or just ended), when its keys are known.
        inline fn path(self: *const Self) ?Path(Key) {
            if (self.depth == 0) return .{ .depth = 0, .parent = .none, .key = .none };
            if (self.depth > named_depth_max) return null;
            const frame = self.frames[self.depth - 1];
            return .{ .depth = self.depth, .parent = frame.name, .key = frame.key };
        }

        /// Flushes a number that ended at the end of input (a bare top-level number).
        pub fn finish(self: *Self) void {
            if (self.state == .number) {
                if (self.number_valid) {
                    if (self.path()) |p| self.handler.number(p, self.number);
                }
                self.state = self.valueEnded();
            }
        }
    };
}

/// The offset of the first byte at or after `at` that is not JSON whitespace.
inline fn skipSpace(bytes: []const u8, at: usize) usize {
    var i = at;
    while (i < bytes.len and isSpace(bytes[i])) i += 1;
    return i;
}

fn isSpace(c: u8) bool {
    return c == ' ' or c == '\t' or c == '\r' or c == '\n';
}
