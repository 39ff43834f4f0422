//! Pattern text → node tree. The tree is compiled in a second pass (compile.zig) because
//! counted repetition emits its operand several times. Every refusal sets the `Diagnostic`
//! (offset and a static message) and returns `error.InvalidPattern` or
//! `error.PatternTooComplex`; regex.zig lists the syntax.
const std = @import("std");
const assert = std.debug.assert;
const program = @import("program.zig");
const regex = @import("regex.zig");

const charset = @import("charset.zig");
const unicode = @import("unicode.zig");

const none = program.none;
const CharSet = program.CharSet;
const Range = program.Range;
const CompileError = regex.CompileError;
const Diagnostic = regex.Diagnostic;
const pattern_bytes_max = regex.pattern_bytes_max;
const repeat_count_max = regex.repeat_count_max;

/// Generous: the worst patterns (`||||`, `ab|ab`) need about 1.5 nodes per byte, and every
/// node needs at least one byte except the empty branch of a trailing `|` and the root.
/// `addNode` checks it anyway.
pub const nodes_max = 2 * pattern_bytes_max + 2;
/// Every class or literal consumes at least one pattern byte.
const sets_max = pattern_bytes_max;
/// A named group takes at least 5 bytes: `(?<a>` and its `)`.
const names_max = pattern_bytes_max / 5;

/// `Node.max` of `*`, `+` and `{n,}`.
pub const unbounded: u16 = std.math.maxInt(u16);

comptime {
    assert(nodes_max < none);
    assert(sets_max < none);
    assert(charset.ranges_max < none);
    assert(repeat_count_max < unbounded);
}

pub const Node = struct {
    kind: Kind,
    /// `set`: index into `sets`; `concat`, `alternation`, `repeat`: first child.
    a: u16 = 0,
    /// Next sibling within a `concat` or `alternation`.
    next: u16 = none,
    min: u16 = 0,
    /// `unbounded` for `*`, `+`, `{n,}`.
    max: u16 = 0,
    /// Pattern offset of a `repeat`'s quantifier, for diagnostics about expansion.
    offset: u16 = 0,

    pub const Kind = enum(u8) {
        empty,
        set,
        assert_begin,
        assert_end,
        word_boundary,
        not_word_boundary,
        concat,
        alternation,
        repeat,
    };
};

/// An escape or class item: one character, or a class (`\d`, `\p{Han}`, `[:alpha:]`) already
/// merged into `Parser.class`.
const Atom = union(enum) { char: u21, class };

fn rangesEql(x: []const Range, y: []const Range) bool {
    if (x.len != y.len) return false;
    for (x, y) |a, b| if (a[0] != b[0] or a[1] != b[1]) return false;
    return true;
}

/// Parses into a node tree first, then compiles it, because counted repetition emits its
/// operand several times.
pub const Parser = struct {
    pattern: []const u8,
    diagnostic: ?*Diagnostic,
    pos: usize = 0,
    fold_case: bool = false,
    nodes: [nodes_max]Node = undefined,
    nodes_len: u16 = 0,
    sets: [sets_max]CharSet = undefined,
    sets_len: u16 = 0,
    ranges: [charset.ranges_max]Range = undefined,
    ranges_len: u16 = 0,
    /// The set being built: a class, an escape, a literal.
    class: charset.Builder = .{},
    names: [names_max][]const u8 = undefined,
    names_len: usize = 0,

    /// Not inlined: it has ~20 call sites and this ships in a size-sensitive wasm module.
    pub noinline fn invalid(p: *Parser, offset: usize, message: []const u8) CompileError {
        if (p.diagnostic) |d| d.* = .{ .offset = offset, .message = message };
        return error.InvalidPattern;
    }

    fn tooComplex(p: *Parser, offset: usize, message: []const u8) CompileError {
        if (p.diagnostic) |d| d.* = .{ .offset = offset, .message = message };
        return error.PatternTooComplex;
    }

    fn at(p: *const Parser, byte: u8) bool {
        return p.pos < p.pattern.len and p.pattern[p.pos] == byte;
    }

    fn addNode(p: *Parser, node: Node) CompileError!u16 {
        if (p.nodes_len == nodes_max) return p.tooComplex(p.pos, "pattern has too many parts");
        p.nodes[p.nodes_len] = node;
        p.nodes_len += 1;
        return p.nodes_len - 1;
    }

    /// Stores the set in `p.class` (normalized, folded, negated as asked) as a `set` node.
    fn addClassNode(p: *Parser, negated: bool) CompileError!u16 {
        const b = &p.class;
        b.normalize();
        if (p.fold_case) b.foldCase();
        if (negated) b.invert();
        const ranges = b.ranges[0..b.len];
        // Shared sets keep the program small: `aaaa` or `x{100}` store one set.
        const index: u16 = for (p.sets[0..p.sets_len], 0..) |existing, i| {
            const existing_ranges = p.ranges[existing.ranges_start..][0..existing.ranges_len];
            if (std.mem.eql(u8, &existing.ascii, &b.ascii) and rangesEql(existing_ranges, ranges)) {
                break @intCast(i);
            }
        } else index: {
            if (p.sets_len == sets_max) return p.tooComplex(p.pos, "pattern has too many parts");
            // The density bound in charset.zig keeps every pattern that fits within this.
            assert(p.ranges_len + ranges.len <= charset.ranges_max);
            @memcpy(p.ranges[p.ranges_len..][0..ranges.len], ranges);
            p.sets[p.sets_len] = .{
                .ascii = b.ascii,
                .ranges_start = p.ranges_len,
                .ranges_len = @intCast(ranges.len),
            };
            p.ranges_len += @intCast(ranges.len);
            p.sets_len += 1;
            break :index p.sets_len - 1;
        };
        return p.addNode(.{ .kind = .set, .a = index });
    }

    fn addCharNode(p: *Parser, c: u21) CompileError!u16 {
        p.class.reset();
        p.class.addChar(c);
        return p.addClassNode(false);
    }

    pub fn parseAlternation(p: *Parser) CompileError!u16 {
        const first = try p.parseConcat();
        if (!p.at('|')) return first;
        var last = first;
        while (p.at('|')) {
            p.pos += 1;
            const branch = try p.parseConcat();
            p.nodes[last].next = branch;
            last = branch;
        }
        return p.addNode(.{ .kind = .alternation, .a = first });
    }

    fn parseConcat(p: *Parser) CompileError!u16 {
        var first: u16 = none;
        var last: u16 = none;
        while (p.pos < p.pattern.len and !p.at('|') and !p.at(')')) {
            const item = try p.parseRepeat();
            if (first == none) first = item else p.nodes[last].next = item;
            last = item;
        }
        if (first == none) return p.addNode(.{ .kind = .empty });
        if (first == last) return first;
        return p.addNode(.{ .kind = .concat, .a = first });
    }

    fn parseRepeat(p: *Parser) CompileError!u16 {
        var node = try p.parseAtom();
        var quantified = false;
        while (p.pos < p.pattern.len) {
            const start = p.pos;
            var min: u16 = 0;
            var max: u16 = unbounded;
            switch (p.pattern[p.pos]) {
                '*' => p.pos += 1,
                '+' => {
                    min = 1;
                    p.pos += 1;
                },
                '?' => {
                    max = 1;
                    p.pos += 1;
                },
                '{' => {
                    const count = try p.parseCount() orelse break;
                    min, max = count;
                },
                else => break,
            }
            if (quantified) {
                return p.invalid(start, "quantifier follows another quantifier; nested and " ++
                    "possessive quantifiers are not supported");
            }
            quantified = true;
            // Non-greedy: only changes which match is preferred, not whether one exists.
            if (p.at('?')) p.pos += 1;
            node = try p.addNode(.{ .kind = .repeat, .a = node, .min = min, .max = max });
            p.nodes[node].offset = @intCast(start);
        }
        return node;
    }

    /// Parses `{n}`, `{n,}` or `{n,m}` at `pos`; null (and `pos` unchanged) when the text is
    /// not one of those, in which case the `{` is a literal as in RE2.
    fn parseCount(p: *Parser) CompileError!?[2]u16 {
        const start = p.pos;
        assert(p.pattern[start] == '{');
        var i = start + 1;
        const min = scanCount(p.pattern, &i) orelse return null;
        var max = min;
        if (i < p.pattern.len and p.pattern[i] == ',') {
            i += 1;
            max = if (i < p.pattern.len and p.pattern[i] == '}')
                unbounded
            else
                scanCount(p.pattern, &i) orelse return null;
        }
        if (i >= p.pattern.len or p.pattern[i] != '}') return null;
        p.pos = i + 1;
        if (min > repeat_count_max or (max != unbounded and max > repeat_count_max)) {
            const message = std.fmt.comptimePrint(
                "repetition count is larger than {d}",
                .{repeat_count_max},
            );
            return p.tooComplex(start, message);
        }
        if (max < min) {
            return p.invalid(start, "repetition range {n,m} has n greater than m");
        }
        return .{ min, max };
    }

    /// Decimal digits at `i.*`, saturating just above `repeat_count_max`.
    fn scanCount(pattern: []const u8, i: *usize) ?u16 {
        const start = i.*;
        var value: u16 = 0;
        while (i.* < pattern.len and std.ascii.isDigit(pattern[i.*])) : (i.* += 1) {
            value = @min(value * 10 + (pattern[i.*] - '0'), repeat_count_max + 1);
        }
        return if (i.* == start) null else value;
    }

    fn parseAtom(p: *Parser) CompileError!u16 {
        const start = p.pos;
        const byte = p.pattern[start];
        switch (byte) {
            '(' => return p.parseGroup(),
            '[' => return p.parseClass(),
            '\\' => {
                const kind: ?Node.Kind = if (start + 1 < p.pattern.len) switch (p.pattern[start + 1]) {
                    'b' => .word_boundary,
                    'B' => .not_word_boundary,
                    'A' => .assert_begin,
                    'z' => .assert_end,
                    else => null,
                } else null;
                if (kind) |assertion| {
                    p.pos += 2;
                    return p.addNode(.{ .kind = assertion });
                }
                p.class.reset();
                return switch (try p.parseEscape()) {
                    .char => |c| p.addCharNode(c),
                    .class => p.addClassNode(false),
                };
            },
            '.' => {
                p.pos += 1;
                p.class.reset();
                p.class.addRange(0, '\n' - 1);
                p.class.addRange('\n' + 1, program.max_code_point);
                return p.addClassNode(false);
            },
            '^', '$' => {
                p.pos += 1;
                return p.addNode(.{ .kind = if (byte == '^') .assert_begin else .assert_end });
            },
            '*', '+', '?' => return p.invalid(start, "quantifier has nothing to repeat"),
            '{' => if (try p.parseCount() != null) {
                return p.invalid(start, "quantifier has nothing to repeat");
            },
            else => {},
        }
        return p.addCharNode(try p.parseLiteral());
    }

    /// One character of the pattern as written (UTF-8, as Go reads a pattern).
    fn parseLiteral(p: *Parser) CompileError!u21 {
        const char = program.decode(p.pattern[p.pos..]);
        if (char.c == program.replacement and char.len == 1 and p.pattern[p.pos] >= 0x80) {
            return p.invalid(p.pos, "invalid UTF-8 in pattern");
        }
        p.pos += char.len;
        return char.c;
    }

    fn parseGroup(p: *Parser) CompileError!u16 {
        const start = p.pos;
        assert(p.pattern[start] == '(');
        p.pos += 1;
        if (p.at('?')) {
            // Classify by the two bytes after "(?"; a missing byte reads as 0.
            const rest = p.pattern[start + 2 ..];
            const first: u8 = if (rest.len > 0) rest[0] else 0;
            const second: u8 = if (rest.len > 1) rest[1] else 0;
            const lookaround = first == '=' or first == '!' or
                (first == '<' and (second == '=' or second == '!'));
            if (lookaround) {
                return p.invalid(start, "lookaround is not supported (RE2 syntax)");
            }
            if (first == '<' or (first == 'P' and second == '<')) {
                try p.parseGroupName(start, start + @as(usize, if (first == '<') 3 else 4));
            } else if (first == 'i' and second == ')') {
                return p.invalid(start, "the (?i) flag is only supported at the start of " ++
                    "the pattern");
            } else if (first == ':') {
                p.pos += 2;
            } else {
                return p.invalid(start, "unsupported group syntax; only (...), (?:...), " ++
                    "(?P<name>...), (?<name>...) and a leading (?i) are supported");
            }
        }
        const inner = try p.parseAlternation();
        if (!p.at(')')) return p.invalid(start, "missing closing ')' for group");
        p.pos += 1;
        return inner;
    }

    /// `name>` at `name_start`: letters, digits and `_` (as Go), not used before.
    fn parseGroupName(p: *Parser, start: usize, name_start: usize) CompileError!void {
        const close = std.mem.indexOfScalarPos(u8, p.pattern, name_start, '>') orelse
            return p.invalid(start, "invalid group name; write (?P<name>...) with letters, " ++
                "digits and _");
        const name = p.pattern[name_start..close];
        const valid = name.len > 0 and for (name) |c| {
            if (!program.isWordByte(c)) break false;
        } else true;
        if (!valid) {
            return p.invalid(start, "invalid group name; write (?P<name>...) with letters, " ++
                "digits and _");
        }
        for (p.names[0..p.names_len]) |earlier| {
            if (std.mem.eql(u8, earlier, name)) return p.invalid(start, "duplicate group name");
        }
        p.names[p.names_len] = name;
        p.names_len += 1;
        p.pos = close + 1;
    }

    fn parseClass(p: *Parser) CompileError!u16 {
        const start = p.pos;
        assert(p.pattern[start] == '[');
        p.pos += 1;
        const negated = p.at('^');
        if (negated) p.pos += 1;
        // RE2 reads `[]a]` as a class holding `]`; refusing it catches the likelier typo `[]`.
        if (p.at(']')) return p.invalid(start, "empty character class; write a literal ']' as \\]");
        p.class.reset();
        while (!p.at(']')) {
            if (p.pos >= p.pattern.len) {
                return p.invalid(start, "missing closing ']' for character class");
            }
            const item_start = p.pos;
            const first = try p.parseClassItem();
            if (p.pos + 1 < p.pattern.len and p.at('-') and p.pattern[p.pos + 1] != ']') {
                p.pos += 1;
                const last = try p.parseClassItem();
                if (first != .char or last != .char) {
                    const message = "a class escape like \\d cannot be a range endpoint";
                    return p.invalid(item_start, message);
                }
                if (first.char > last.char) {
                    return p.invalid(item_start, "invalid class range: start is greater than end");
                }
                p.class.addRange(first.char, last.char);
            } else switch (first) {
                .char => |c| p.class.addChar(c),
                .class => {},
            }
        }
        p.pos += 1;
        return p.addClassNode(negated);
    }

    /// A character, or a class merged into `p.class` (`\d`, `\p{Han}`, `[:alpha:]`).
    fn parseClassItem(p: *Parser) CompileError!Atom {
        const byte = p.pattern[p.pos];
        if (byte == '\\') return p.parseEscape();
        if (byte == '[' and p.pos + 1 < p.pattern.len and p.pattern[p.pos + 1] == ':') {
            // As Go: `[:` starts a POSIX class only when a `:]` closes it.
            if (std.mem.indexOfPos(u8, p.pattern, p.pos + 2, ":]")) |close| {
                var name = p.pattern[p.pos + 2 .. close];
                const negated = name.len > 0 and name[0] == '^';
                if (negated) name = name[1..];
                const ranges = charset.posixClass(name) orelse return p.invalid(p.pos, "unknown " ++
                    "POSIX class; use one of alnum alpha ascii blank cntrl digit graph lower " ++
                    "print punct space upper word xdigit, as [[:alpha:]]");
                p.class.addRanges(ranges, negated);
                p.pos = close + 2;
                return .class;
            }
        }
        return .{ .char = try p.parseLiteral() };
    }

    fn parseEscape(p: *Parser) CompileError!Atom {
        const start = p.pos;
        assert(p.pattern[start] == '\\');
        if (start + 1 == p.pattern.len) {
            return p.invalid(start, "trailing backslash at end of pattern");
        }
        const byte = p.pattern[start + 1];
        p.pos = start + 2;
        return switch (byte) {
            'd', 'D', 'w', 'W', 's', 'S' => {
                p.class.addRanges(charset.perlClass(std.ascii.toLower(byte)), std.ascii.isUpper(byte));
                return .class;
            },
            'p', 'P' => p.parseUnicodeClass(start, byte == 'P'),
            'a' => .{ .char = 0x07 },
            'n' => .{ .char = '\n' },
            'r' => .{ .char = '\r' },
            't' => .{ .char = '\t' },
            'f' => .{ .char = 0x0c },
            'v' => .{ .char = 0x0b },
            'x' => .{ .char = try p.parseHexEscape(start) },
            '1'...'9', 'k' => p.invalid(start, "backreferences are not supported (RE2 syntax)"),
            'b', 'B' => p.invalid(start, "word boundaries (\\b, \\B) are not allowed inside a class"),
            else => if (std.ascii.isPunctuation(byte))
                .{ .char = byte }
            else
                p.invalid(start, "unsupported escape sequence; only punctuation, \\d \\w \\s " ++
                    "\\D \\W \\S, \\p{..} \\P{..}, \\b \\B \\A \\z, \\a \\n \\r \\t \\f \\v, " ++
                    "\\xHH and \\x{H..} may be escaped"),
        };
    }

    /// `\xHH` or `\x{H...}` at `start`: a code point, as in Go (not a byte).
    fn parseHexEscape(p: *Parser, start: usize) CompileError!u21 {
        const message = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF";
        const braced = p.at('{');
        const digits_start = if (braced) start + 3 else start + 2;
        const digits_end = if (braced)
            std.mem.indexOfScalarPos(u8, p.pattern, digits_start, '}') orelse
                return p.invalid(start, message)
        else
            @min(digits_start + 2, p.pattern.len);
        const digits = p.pattern[digits_start..digits_end];
        if (digits.len == 0 or (!braced and digits.len != 2) or digits.len > 6) {
            return p.invalid(start, message);
        }
        // u64 as elsewhere in the module: one parseInt instantiation fewer (issue 17).
        const value = std.fmt.parseInt(u64, digits, 16) catch return p.invalid(start, message);
        if (value > program.max_code_point) return p.invalid(start, message);
        p.pos = if (braced) digits_end + 1 else digits_end;
        return @intCast(value);
    }

    /// `\p{Name}`, `\p{^Name}` or `\P{Name}` (after the letter): a script unicode.zig holds.
    fn parseUnicodeClass(p: *Parser, start: usize, negated: bool) CompileError!Atom {
        const unsupported = "unsupported unicode class; supported: \\p{Name} for the scripts " ++
            unicode.names;
        if (!p.at('{')) return p.invalid(start, unsupported);
        const close = std.mem.indexOfScalarPos(u8, p.pattern, p.pos, '}') orelse
            return p.invalid(start, "missing closing '}' for \\p{...}");
        var name = p.pattern[p.pos + 1 .. close];
        const caret = name.len > 0 and name[0] == '^';
        if (caret) name = name[1..];
        const script = unicode.find(name) orelse return p.invalid(start, unsupported);
        p.class.addRanges(script.ranges, negated != caret);
        p.pos = close + 1;
        return .class;
    }
};
