//! A small strict JSON (RFC 8259) parser that builds a tree, for the filter's config.
//! It stands in for `std.json.parseFromSliceLeaky(std.json.Value, ...)` with
//! `.parse_numbers = false` and `.duplicate_field_behavior = .@"error"`, at a fraction of the
//! code size: numbers stay text (`.number_string`), objects keep their members in document order
//! and `get` searches them linearly (configs are small), duplicate keys are refused (found with
//! a hash set, so a large object costs linear time, not quadratic).
//!
//! Strictness matches std.json: UTF-8 input only (overlong forms, surrogates and code points past
//! U+10FFFF refused), no control characters in strings, all escapes with `\uXXXX` surrogate pairs
//! decoded to UTF-8 (unpaired halves refused), numbers checked against the grammar, nothing but
//! whitespace after the value. In addition, nesting deeper than `max_depth` is refused.
//! Everything, strings included, is allocated from `arena`; nothing points into the input.
//! The tests, std.json agreement and a fuzz run among them, are in json_tree_test.zig.
const std = @import("std");

pub const max_depth = 64;

pub const ParseError = error{ SyntaxError, DuplicateField, TooDeep, OutOfMemory };

pub const Value = union(enum) {
    null,
    bool: bool,
    number_string: []const u8,
    string: []const u8,
    array: Array,
    object: Object,
};

pub const Array = struct {
    items: []Value = &.{},
};

pub const Object = struct {
    entries: []Entry = &.{},

    pub const Entry = struct { key: []const u8, value: Value };

    pub fn get(self: Object, key: []const u8) ?Value {
        for (self.entries) |entry| if (std.mem.eql(u8, entry.key, key)) return entry.value;
        return null;
    }

    pub fn count(self: Object) usize {
        return self.entries.len;
    }

    /// Members in document order, as `entry.key_ptr.*` / `entry.value_ptr.*`.
    pub fn iterator(self: Object) Iterator {
        return .{ .entries = self.entries };
    }

    pub const Iterator = struct {
        entries: []const Entry,
        index: usize = 0,

        pub const Item = struct { key_ptr: *const []const u8, value_ptr: *const Value };

        pub fn next(it: *Iterator) ?Item {
            if (it.index >= it.entries.len) return null;
            const entry = &it.entries[it.index];
            it.index += 1;
            return .{ .key_ptr = &entry.key, .value_ptr = &entry.value };
        }
    };
};

/// Parses one JSON document. The caller owns (and frees) `arena`.
pub fn parse(arena: std.mem.Allocator, bytes: []const u8) ParseError!Value {
    var parser: Parser = .{ .arena = arena, .src = bytes };
    const root = try parser.value(0);
    _ = parser.peek();
    if (parser.pos != bytes.len) return error.SyntaxError;
    return root;
}

const Parser = struct {
    arena: std.mem.Allocator,
    src: []const u8,
    pos: usize = 0,

    /// Skips whitespace and returns the next byte without taking it; 0 at the end (a 0 byte
    /// outside a string is never valid either).
    fn peek(p: *Parser) u8 {
        while (p.pos < p.src.len) : (p.pos += 1) {
            switch (p.src[p.pos]) {
                ' ', '\t', '\n', '\r' => {},
                else => |c| return c,
            }
        }
        return 0;
    }

    fn expect(p: *Parser, c: u8) ParseError!void {
        if (p.peek() != c) return error.SyntaxError;
        p.pos += 1;
    }

    /// Takes `c` if it is the next byte (no whitespace skipped).
    fn eat(p: *Parser, c: u8) bool {
        if (p.pos >= p.src.len or p.src[p.pos] != c) return false;
        p.pos += 1;
        return true;
    }

    fn digits(p: *Parser) usize {
        const start = p.pos;
        while (p.pos < p.src.len and std.ascii.isDigit(p.src[p.pos])) p.pos += 1;
        return p.pos - start;
    }

    fn value(p: *Parser, depth: usize) ParseError!Value {
        const c = p.peek();
        switch (c) {
            '{', '[' => {
                if (depth == max_depth) return error.TooDeep;
                p.pos += 1;
                const close: u8 = c + 2; // '{' + 2 == '}', '[' + 2 == ']'
                // Members, or elements under "" keys, in a doubling buffer (one growth path for
                // both kinds: smaller code); an array's values are copied out at the end.
                // An object's keys also go into a hash set, rebuilt as the buffer grows, so
                // duplicates are found in linear time however many members there are.
                var entries: []Object.Entry = &.{};
                var keys: []u32 = &.{};
                var n: usize = 0;
                if (p.peek() != close) while (true) {
                    var key: []const u8 = "";
                    if (c == '{') {
                        try p.expect('"');
                        key = try p.string();
                        try p.expect(':');
                    }
                    const member = try p.value(depth + 1);
                    if (n == entries.len) {
                        const bigger = try p.arena.alloc(Object.Entry, n * 2 + 4);
                        @memcpy(bigger[0..n], entries);
                        entries = bigger;
                        if (c == '{') {
                            keys = try p.arena.alloc(u32, bigger.len * 2);
                            @memset(keys, 0);
                            for (0..n) |i| try addKey(keys, entries, i);
                        }
                    }
                    entries[n] = .{ .key = key, .value = member };
                    if (c == '{') try addKey(keys, entries, n);
                    n += 1;
                    if (p.peek() != ',') break;
                    p.pos += 1;
                };
                try p.expect(close);
                if (c == '{') return .{ .object = .{ .entries = entries[0..n] } };
                const items = try p.arena.alloc(Value, n);
                for (items, entries[0..n]) |*item, entry| item.* = entry.value;
                return .{ .array = .{ .items = items } };
            },
            '"' => {
                p.pos += 1;
                return .{ .string = try p.string() };
            },
            '-', '0'...'9' => {
                const start = p.pos;
                _ = p.eat('-');
                if (!p.eat('0') and p.digits() == 0) return error.SyntaxError;
                if (p.eat('.') and p.digits() == 0) return error.SyntaxError;
                if (p.eat('e') or p.eat('E')) {
                    _ = p.eat('+') or p.eat('-');
                    if (p.digits() == 0) return error.SyntaxError;
                }
                return .{ .number_string = try p.arena.dupe(u8, p.src[start..p.pos]) };
            },
            else => {
                const literals = [_]struct { []const u8, Value }{
                    .{ "null", .null }, .{ "true", .{ .bool = true } }, .{ "false", .{ .bool = false } },
                };
                for (literals) |literal| {
                    if (std.mem.startsWith(u8, p.src[p.pos..], literal[0])) {
                        p.pos += literal[0].len;
                        return literal[1];
                    }
                }
                return error.SyntaxError;
            },
        }
    }

    /// The string whose opening quote was just taken, decoded into the arena.
    fn string(p: *Parser) ParseError![]const u8 {
        // Find the closing quote first: the decoded text is never longer than the raw text.
        var end = p.pos;
        while (end < p.src.len and p.src[end] != '"') : (end += 1) {
            if (p.src[end] == '\\') end += 1;
        }
        if (end >= p.src.len) return error.SyntaxError;
        const out = try p.arena.alloc(u8, end - p.pos);
        var n: usize = 0;
        while (p.pos < end) {
            const c = p.src[p.pos];
            p.pos += 1;
            var code_point: u21 = c;
            if (c == '\\') {
                const escape = p.src[p.pos]; // before `end`: the scan above stepped over it
                p.pos += 1;
                code_point = switch (escape) {
                    '"', '\\', '/' => escape,
                    'b' => 0x08,
                    'f' => 0x0c,
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => try p.hex4(end),
                    else => return error.SyntaxError,
                };
                if (code_point >= 0xD800 and code_point <= 0xDBFF) {
                    // A high surrogate half must be followed by a low one, in \u form.
                    if (!std.mem.startsWith(u8, p.src[p.pos..end], "\\u")) return error.SyntaxError;
                    p.pos += 2;
                    const low = try p.hex4(end);
                    if (low < 0xDC00 or low > 0xDFFF) return error.SyntaxError;
                    code_point = 0x10000 + ((code_point - 0xD800) << 10) + (low - 0xDC00);
                }
            } else if (c < 0x20) {
                return error.SyntaxError;
            } else if (c >= 0x80) {
                // Raw UTF-8: decode and check it; it is re-encoded below to the same bytes.
                const len: usize = if (c >= 0xF8) return error.SyntaxError else if (c >= 0xF0) 4 else if (c >= 0xE0) 3 else if (c >= 0xC0) 2 else return error.SyntaxError;
                if (end - p.pos < len - 1) return error.SyntaxError;
                code_point = c & (@as(u8, 0x7F) >> @intCast(len));
                for (p.src[p.pos..][0 .. len - 1]) |byte| {
                    if (byte & 0xC0 != 0x80) return error.SyntaxError;
                    code_point = (code_point << 6) | (byte & 0x3F);
                }
                p.pos += len - 1;
                const shortest = [_]u21{ 0, 0, 0x80, 0x800, 0x10000 };
                if (code_point < shortest[len]) return error.SyntaxError; // overlong form
            }
            if ((code_point >= 0xD800 and code_point <= 0xDFFF) or code_point > 0x10FFFF) return error.SyntaxError;
            n += encodeUtf8(code_point, out[n..]);
        }
        p.pos += 1; // the closing quote
        return out[0..n];
    }

    fn hex4(p: *Parser, end: usize) ParseError!u21 {
        if (end - p.pos < 4) return error.SyntaxError;
        var result: u21 = 0;
        for (p.src[p.pos..][0..4]) |digit| {
            result = result * 16 + (std.fmt.charToDigit(digit, 16) catch return error.SyntaxError);
        }
        p.pos += 4;
        return result;
    }
};

/// Adds `entries[index]`'s key to `keys`, an open-addressing hash set of entry indexes + 1
/// (0 = free) that is never more than half full, unless an equal key is there already.
fn addKey(keys: []u32, entries: []const Object.Entry, index: usize) ParseError!void {
    const key = entries[index].key;
    var hash: u32 = 0x811c9dc5; // FNV-1a
    for (key) |byte| hash = (hash ^ byte) *% 0x01000193;
    var slot = hash % keys.len;
    while (keys[slot] != 0) : (slot = (slot + 1) % keys.len) {
        if (std.mem.eql(u8, entries[keys[slot] - 1].key, key)) return error.DuplicateField;
    }
    keys[slot] = @intCast(index + 1);
}

/// Writes a Unicode scalar value as UTF-8; returns the number of bytes.
fn encodeUtf8(code_point: u21, out: []u8) usize {
    if (code_point < 0x80) {
        out[0] = @intCast(code_point);
        return 1;
    }
    const len: usize = if (code_point < 0x800) 2 else if (code_point < 0x10000) 3 else 4;
    var rest = code_point;
    var i = len - 1;
    while (i > 0) : (i -= 1) {
        out[i] = 0x80 | @as(u8, @intCast(rest & 0x3F));
        rest >>= 6;
    }
    out[0] = @as(u8, @truncate(@as(u12, 0xF00) >> @intCast(len))) | @as(u8, @intCast(rest));
    return len;
}
