//! Pattern text → node tree. The tree is compiled in a second pass (compile.zig) because
//! counted repetition emits its operand several times. Every refusal sets the `Diagnostic`
//! (offset and a static message) and returns `error.InvalidPattern` or
//! `error.PatternTooComplex`; regex.zig lists the syntax.
const std = @import("std");
const assert = std.debug.assert;
const program = @import("program.zig");
const regex = @import("regex.zig");

const none = program.none;
const ByteSet = program.ByteSet;
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

/// `Node.max` of `*`, `+` and `{n,}`.
pub const unbounded: u16 = std.math.maxInt(u16);

comptime {
    assert(nodes_max < none);
    assert(sets_max < none);
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

    pub const Kind = enum(u8) { empty, set, assert_begin, assert_end, concat, alternation, repeat };
};

const Atom = union(enum) { byte: u8, set: ByteSet };

/// Parses into a node tree first, then compiles it, because counted repetition emits its
/// operand several times.
pub const Parser = struct {
    pattern: []const u8,
    diagnostic: ?*Diagnostic,
    pos: usize = 0,
    fold_case: bool = false,
    nodes: [nodes_max]Node = undefined,
    nodes_len: u16 = 0,
    sets: [sets_max]ByteSet = undefined,
    sets_len: u16 = 0,

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

    fn addSetNode(p: *Parser, set: ByteSet) CompileError!u16 {
        // Shared sets keep the program small: `aaaa` or `x{100}` store one set.
        const index: u16 = for (p.sets[0..p.sets_len], 0..) |existing, i| {
            if (existing.eql(set)) break @intCast(i);
        } else index: {
            if (p.sets_len == sets_max) return p.tooComplex(p.pos, "pattern has too many parts");
            p.sets[p.sets_len] = set;
            p.sets_len += 1;
            break :index p.sets_len - 1;
        };
        return p.addNode(.{ .kind = .set, .a = index });
    }

    fn addByteNode(p: *Parser, byte: u8) CompileError!u16 {
        var set: ByteSet = .single(byte);
        if (p.fold_case) set.foldCase();
        return p.addSetNode(set);
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
            '[' => return p.addSetNode(try p.parseClass()),
            '\\' => switch (try p.parseEscape()) {
                .byte => |escaped| return p.addByteNode(escaped),
                .set => |set| return p.addSetNode(set),
            },
            '.' => {
                p.pos += 1;
                var set: ByteSet = .single('\n');
                set.invert();
                return p.addSetNode(set);
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
        p.pos += 1;
        return p.addByteNode(byte);
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
            if (first == '<' or first == 'P' or first == '\'') {
                return p.invalid(start, "named groups are not supported; use (...) or (?:...)");
            }
            if (first == 'i' and second == ')') {
                return p.invalid(start, "the (?i) flag is only supported at the start of " ++
                    "the pattern");
            }
            if (first != ':') {
                return p.invalid(start, "unsupported group syntax; only (...), (?:...) and a " ++
                    "leading (?i) are supported");
            }
            p.pos += 2;
        }
        const inner = try p.parseAlternation();
        if (!p.at(')')) return p.invalid(start, "missing closing ')' for group");
        p.pos += 1;
        return inner;
    }

    fn parseClass(p: *Parser) CompileError!ByteSet {
        const start = p.pos;
        assert(p.pattern[start] == '[');
        p.pos += 1;
        const negated = p.at('^');
        if (negated) p.pos += 1;
        // RE2 reads `[]a]` as a class holding `]`; refusing it catches the likelier typo `[]`.
        if (p.at(']')) return p.invalid(start, "empty character class; write a literal ']' as \\]");
        var set: ByteSet = .{};
        while (!p.at(']')) {
            if (p.pos >= p.pattern.len) {
                return p.invalid(start, "missing closing ']' for character class");
            }
            const item_start = p.pos;
            const first = try p.parseClassItem();
            if (p.pos + 1 < p.pattern.len and p.at('-') and p.pattern[p.pos + 1] != ']') {
                p.pos += 1;
                const last = try p.parseClassItem();
                if (first != .byte or last != .byte) {
                    const message = "a class escape like \\d cannot be a range endpoint";
                    return p.invalid(item_start, message);
                }
                if (first.byte > last.byte) {
                    return p.invalid(item_start, "invalid class range: start is greater than end");
                }
                set.addRange(first.byte, last.byte);
            } else switch (first) {
                .byte => |byte| set.add(byte),
                .set => |item_set| set.merge(item_set),
            }
        }
        p.pos += 1;
        if (p.fold_case) set.foldCase();
        if (negated) set.invert();
        return set;
    }

    fn parseClassItem(p: *Parser) CompileError!Atom {
        const byte = p.pattern[p.pos];
        if (byte == '\\') return p.parseEscape();
        if (byte == '[' and p.pos + 1 < p.pattern.len and p.pattern[p.pos + 1] == ':') {
            return p.invalid(p.pos, "POSIX classes like [:alpha:] are not supported");
        }
        p.pos += 1;
        return .{ .byte = byte };
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
            'd', 'D', 'w', 'W', 's', 'S' => .{ .set = .perlClass(byte) },
            'n' => .{ .byte = '\n' },
            'r' => .{ .byte = '\r' },
            't' => .{ .byte = '\t' },
            'f' => .{ .byte = 0x0c },
            'v' => .{ .byte = 0x0b },
            'x' => {
                if (start + 4 <= p.pattern.len) {
                    const high = std.fmt.charToDigit(p.pattern[start + 2], 16) catch 0xff;
                    const low = std.fmt.charToDigit(p.pattern[start + 3], 16) catch 0xff;
                    if (high < 16 and low < 16) {
                        p.pos = start + 4;
                        return .{ .byte = high * 16 + low };
                    }
                }
                return p.invalid(start, "\\x must be followed by exactly two hex digits");
            },
            '1'...'9', 'k' => p.invalid(start, "backreferences are not supported (RE2 syntax)"),
            'b', 'B' => p.invalid(start, "word boundaries (\\b, \\B) are not supported"),
            'p', 'P' => p.invalid(start, "unicode classes (\\p, \\P) are not supported; " ++
                "matching is byte-oriented"),
            else => if (std.ascii.isPunctuation(byte))
                .{ .byte = byte }
            else
                p.invalid(start, "unsupported escape sequence; only punctuation, " ++
                    "\\d \\w \\s \\D \\W \\S, \\n \\r \\t \\f \\v and \\xHH may be escaped"),
        };
    }
};
