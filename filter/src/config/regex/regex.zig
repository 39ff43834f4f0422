//! Linear-time regular expressions for `regexp:` limit keys.
//!
//! Header values are attacker-controlled, so this is a Thompson NFA simulation (no backtracking):
//! `isMatch` runs in O(input bytes × program instructions), never allocates, and keeps its
//! scratch on the stack. Patterns are bounded (`pattern_bytes_max`, `program_instructions_max`)
//! so that the per-byte cost is bounded too.
//!
//! Matching is an unanchored search, like Go's `regexp.MatchString` or RE2's `PartialMatch`:
//! a pattern matches when any substring of the input matches. Only match / no match is
//! reported; there are no capture groups.
//!
//! Supported syntax (a subset of RE2, byte-oriented):
//!
//! | Syntax                      | Meaning                                                     |
//! |-----------------------------|-------------------------------------------------------------|
//! | `x`                         | literal byte; bytes >= 0x80 are matched as literal bytes    |
//! | `.`                         | any byte except `\n`                                        |
//! | `[abc]` `[a-z]` `[^a-z]`    | byte class, range, negated class; `\d \w \s` and escapes    |
//! |                             | may appear inside; a literal `]` must be written `\]`       |
//! | `\d` `\w` `\s`              | `[0-9]`, `[0-9A-Za-z_]`, `[\t\n\f\r ]`                      |
//! | `\D` `\W` `\S`              | their negations                                             |
//! | `\.` `\\` `\-` `\/` ...     | any escaped ASCII punctuation is literal                    |
//! | `\n \r \t \f \v` `\xHH`     | control bytes, a byte in hex (exactly two digits)           |
//! | `^` `$`                     | start / end of the whole input (no multi-line mode)         |
//! | `(re)` `(?:re)`             | grouping (both are non-capturing here)                      |
//! | `re1\|re2`                  | alternation                                                 |
//! | `*` `+` `?`                 | zero or more, one or more, zero or one                      |
//! | `{n}` `{n,}` `{n,m}`        | counted repetition, n and m at most 1000                    |
//! | `*?` `+?` `??` `{n,m}?`     | non-greedy forms: accepted, same match / no-match result    |
//! | `(?i)` at pattern start     | ASCII case-insensitive matching for the whole pattern       |
//!
//! As in RE2, a `{` that does not start a valid `{n}`, `{n,}` or `{n,m}` is a literal `{`, and
//! `]` and `}` outside a class are literals. Unlike RE2, `[]a]` is refused (RE2 reads a `]`
//! right after `[` as a literal), because `[]` is far more likely a mistake.
//!
//! Refused with `error.InvalidPattern` and a `Diagnostic` naming the offset and the problem:
//! backreferences (`\1`), lookaround (`(?=` `(?!` `(?<=` `(?<!`), word boundaries (`\b` `\B`),
//! named groups, unicode classes (`\p{..}`), POSIX classes (`[:alpha:]`), other flags or a
//! `(?i)` anywhere but the start, nested or possessive quantifiers (`a**`, `a*+`), other
//! escapes, unbalanced parentheses, a quantifier with nothing to repeat, an empty class `[]`,
//! reversed ranges (`[z-a]`, `{3,2}`).
//!
//! Refused with `error.PatternTooComplex`: patterns longer than 256 bytes
//! (`pattern_bytes_max`), repetition counts above 1000, and patterns whose counted repetition
//! expands beyond 1024 instructions (`program_instructions_max`; `^\d{1000}$` fits,
//! `(\d{100}){20}` does not). Patterns without counted repetition always fit.

const std = @import("std");
const assert = std.debug.assert;

pub const pattern_bytes_max = 256;
/// Bounds both the heap program and the per-input-byte matching work (and `isMatch`'s ~6 KB
/// of stack scratch). Fits RE2's largest count on one byte or class: `^x{1000}$`.
pub const program_instructions_max = 1024;
/// RE2's limit.
pub const repeat_count_max = 1000;

/// Generous: the worst patterns (`||||`, `ab|ab`) need about 1.5 nodes per byte, and every
/// node needs at least one byte except the empty branch of a trailing `|` and the root.
/// `addNode` checks it anyway.
const nodes_max = 2 * pattern_bytes_max + 2;
/// Every class or literal consumes at least one pattern byte.
const sets_max = pattern_bytes_max;
/// Caps compile work for repetitions of empty sub-patterns such as `((){1000}){1000}`, which
/// emit no instructions and so never hit `program_instructions_max`.
const compile_steps_max = 16 * program_instructions_max;

const none: u16 = std.math.maxInt(u16);
const unbounded: u16 = std.math.maxInt(u16);

comptime {
    assert(program_instructions_max < none);
    assert(nodes_max < none);
    assert(sets_max < none);
    assert(repeat_count_max < unbounded);
    // Only counted repetition can overflow the program: no other byte of syntax emits more
    // than two instructions (`*` and `|` each emit a split and a jump), plus the final match.
    assert(2 * pattern_bytes_max + 1 <= program_instructions_max);
}

pub const Diagnostic = struct {
    offset: usize = 0,
    /// A static string.
    message: []const u8 = "",
};

pub const CompileError = error{ InvalidPattern, PatternTooComplex, OutOfMemory };

pub const Regex = struct {
    insts: []const Inst,
    sets: []const ByteSet,

    pub fn compile(
        allocator: std.mem.Allocator,
        pattern: []const u8,
        diagnostic: ?*Diagnostic,
    ) CompileError!Regex {
        if (diagnostic) |d| d.* = .{};
        if (pattern.len > pattern_bytes_max) {
            if (diagnostic) |d| d.* = .{
                .offset = pattern_bytes_max,
                .message = std.fmt.comptimePrint(
                    "pattern is longer than {d} bytes",
                    .{pattern_bytes_max},
                ),
            };
            return error.PatternTooComplex;
        }
        // The parser's fixed-size tables are ~20 KB: too much for a wasm stack frame.
        const p = try allocator.create(Parser);
        defer allocator.destroy(p);
        p.* = .{ .pattern = pattern, .diagnostic = diagnostic };
        // One integer compare: std.mem.startsWith pulls ~600 bytes of vectorized code into wasm.
        if (pattern.len >= 4 and std.mem.readInt(u32, pattern[0..4], .little) ==
            comptime std.mem.readInt(u32, "(?i)", .little))
        {
            p.fold_case = true;
            p.pos = 4;
        }
        const root = try p.parseAlternation();
        if (p.pos < pattern.len) {
            assert(pattern[p.pos] == ')');
            return p.invalid(p.pos, "unmatched ')'");
        }
        try p.compileNode(root);
        _ = try p.emit(.match, 0, 0);

        const insts = try allocator.dupe(Inst, p.insts[0..p.insts_len]);
        errdefer allocator.free(insts);
        const sets = try allocator.dupe(ByteSet, p.sets[0..p.sets_len]);
        return .{ .insts = insts, .sets = sets };
    }

    pub fn deinit(self: *Regex, allocator: std.mem.Allocator) void {
        allocator.free(self.insts);
        allocator.free(self.sets);
        self.* = undefined;
    }

    /// Unanchored search like Go's regexp.MatchString / RE2 PartialMatch: true when any
    /// substring matches. Linear in input length; no allocation.
    pub fn isMatch(self: *const Regex, input: []const u8) bool {
        assert(self.insts.len > 0);
        assert(self.insts.len <= program_instructions_max);
        var lists: [2]ThreadList = undefined;
        var stack: [program_instructions_max]u16 = undefined;
        var current = &lists[0];
        var next = &lists[1];
        current.clear();
        // Threads started after offset 0 would die at once on a leading `^`.
        const anchored = self.insts[0].op == .assert_begin;
        var pos: usize = 0;
        while (true) : (pos += 1) {
            if (pos == 0 or !anchored) {
                if (self.addThread(current, &stack, 0, pos, input.len)) return true;
            }
            if (pos == input.len) return false;
            if (anchored and current.len == 0) return false;
            next.clear();
            const byte = input[pos];
            for (current.pcs[0..current.len]) |pc| {
                const inst = self.insts[pc];
                assert(inst.op == .byte_set);
                if (self.sets[inst.a].contains(byte)) {
                    if (self.addThread(next, &stack, pc + 1, pos + 1, input.len)) return true;
                }
            }
            std.mem.swap(*ThreadList, &current, &next);
        }
    }

    /// Follows the empty-width edges from `pc_start` at input offset `pos` and adds every
    /// reachable byte-consuming instruction to `list`. Returns true when `match` is reachable.
    /// `list.seen` makes each instruction enter a list at most once per input offset, which is
    /// what keeps matching linear and lets empty loops such as `(a*)*` terminate.
    fn addThread(
        self: *const Regex,
        list: *ThreadList,
        stack: *[program_instructions_max]u16,
        pc_start: u16,
        pos: usize,
        input_len: usize,
    ) bool {
        if (list.seen.isSet(pc_start)) return false;
        list.seen.set(pc_start);
        stack[0] = pc_start;
        var stack_len: usize = 1;
        while (stack_len > 0) {
            stack_len -= 1;
            const pc = stack[stack_len];
            const inst = self.insts[pc];
            var targets: [2]u16 = .{ none, none };
            switch (inst.op) {
                .match => return true,
                .byte_set => {
                    list.pcs[list.len] = pc;
                    list.len += 1;
                },
                .jump => targets[0] = inst.a,
                .split => targets = .{ inst.a, inst.b },
                .assert_begin => if (pos == 0) {
                    targets[0] = pc + 1;
                },
                .assert_end => if (pos == input_len) {
                    targets[0] = pc + 1;
                },
            }
            for (targets) |target| {
                if (target == none or list.seen.isSet(target)) continue;
                assert(target < self.insts.len);
                list.seen.set(target);
                stack[stack_len] = target;
                stack_len += 1;
            }
        }
        return false;
    }
};

const Op = enum(u8) {
    /// Consume one byte in `sets[a]`, continue at pc + 1.
    byte_set,
    /// Continue at both `a` and `b`.
    split,
    /// Continue at `a`.
    jump,
    /// Continue at pc + 1 only at input offset 0.
    assert_begin,
    /// Continue at pc + 1 only at the end of the input.
    assert_end,
    match,
};

const Inst = struct { op: Op, a: u16, b: u16 };

const ThreadList = struct {
    /// Only `byte_set` instructions; empty-width ones are resolved by `addThread`.
    pcs: [program_instructions_max]u16,
    len: u16,
    seen: std.StaticBitSet(program_instructions_max),

    fn clear(list: *ThreadList) void {
        list.len = 0;
        list.seen = .empty;
    }
};

const ByteSet = struct {
    bits: [32]u8 = @splat(0),

    fn single(byte: u8) ByteSet {
        var set: ByteSet = .{};
        set.add(byte);
        return set;
    }

    fn eql(set: ByteSet, other: ByteSet) bool {
        for (set.bits, other.bits) |bits, other_bits| {
            if (bits != other_bits) return false;
        }
        return true;
    }

    fn contains(set: ByteSet, byte: u8) bool {
        return set.bits[byte >> 3] & (@as(u8, 1) << @as(u3, @truncate(byte))) != 0;
    }

    fn add(set: *ByteSet, byte: u8) void {
        set.bits[byte >> 3] |= @as(u8, 1) << @as(u3, @truncate(byte));
    }

    fn addRange(set: *ByteSet, first: u8, last: u8) void {
        assert(first <= last);
        for (first..@as(usize, last) + 1) |byte| set.add(@intCast(byte));
    }

    fn invert(set: *ByteSet) void {
        for (&set.bits) |*bits| bits.* = ~bits.*;
    }

    fn merge(set: *ByteSet, other: ByteSet) void {
        for (&set.bits, other.bits) |*bits, other_bits| bits.* |= other_bits;
    }

    /// Closes the set under ASCII case; must run before `invert` so `(?i)[^a]` excludes `A`.
    fn foldCase(set: *ByteSet) void {
        for ('a'..'z' + 1) |lower| {
            const upper = lower - ('a' - 'A');
            if (set.contains(@intCast(lower)) or set.contains(@intCast(upper))) {
                set.add(@intCast(lower));
                set.add(@intCast(upper));
            }
        }
    }

    /// `\d \w \s`, and with an upper-case letter their negations.
    fn perlClass(letter: u8) ByteSet {
        var set: ByteSet = .{};
        switch (std.ascii.toLower(letter)) {
            'd' => set.addRange('0', '9'),
            'w' => {
                set.addRange('0', '9');
                set.addRange('A', 'Z');
                set.addRange('a', 'z');
                set.add('_');
            },
            's' => for ("\t\n\x0c\r ") |byte| set.add(byte),
            else => unreachable, // Callers pass only d, w, s in either case.
        }
        if (std.ascii.isUpper(letter)) set.invert();
        return set;
    }
};

const Node = struct {
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

    const Kind = enum(u8) { empty, set, assert_begin, assert_end, concat, alternation, repeat };
};

const Atom = union(enum) { byte: u8, set: ByteSet };

/// Parses into a node tree first, then compiles it, because counted repetition emits its
/// operand several times.
const Parser = struct {
    pattern: []const u8,
    diagnostic: ?*Diagnostic,
    pos: usize = 0,
    fold_case: bool = false,
    nodes: [nodes_max]Node = undefined,
    nodes_len: u16 = 0,
    sets: [sets_max]ByteSet = undefined,
    sets_len: u16 = 0,
    insts: [program_instructions_max]Inst = undefined,
    insts_len: u16 = 0,
    compile_steps: u32 = 0,
    /// Offset of the outermost repetition being compiled, blamed when the program overflows.
    repeat_offset: u16 = 0,

    /// Not inlined: it has ~20 call sites and this ships in a size-sensitive wasm module.
    noinline fn invalid(p: *Parser, offset: usize, message: []const u8) CompileError {
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

    fn parseAlternation(p: *Parser) CompileError!u16 {
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

    fn emit(p: *Parser, op: Op, a: u16, b: u16) CompileError!u16 {
        if (p.insts_len == program_instructions_max) return p.programTooLarge();
        p.insts[p.insts_len] = .{ .op = op, .a = a, .b = b };
        p.insts_len += 1;
        return p.insts_len - 1;
    }

    fn programTooLarge(p: *Parser) CompileError {
        const message = std.fmt.comptimePrint(
            "pattern expands to more than {d} instructions; reduce the counted repetition",
            .{program_instructions_max},
        );
        return p.tooComplex(p.repeat_offset, message);
    }

    /// Forward targets are unknown when emitted, so pending instructions form a chain linked
    /// through the operand `field` that will hold the target (ended by `none`).
    fn patchChain(p: *Parser, comptime field: []const u8, chain_first: u16, target: u16) void {
        var pc = chain_first;
        while (pc != none) {
            const next = @field(p.insts[pc], field);
            @field(p.insts[pc], field) = target;
            pc = next;
        }
    }

    fn compileNode(p: *Parser, index: u16) CompileError!void {
        p.compile_steps += 1;
        if (p.compile_steps > compile_steps_max) return p.programTooLarge();
        const node = p.nodes[index];
        switch (node.kind) {
            .empty => {},
            .set => _ = try p.emit(.byte_set, node.a, 0),
            .assert_begin => _ = try p.emit(.assert_begin, 0, 0),
            .assert_end => _ = try p.emit(.assert_end, 0, 0),
            .concat => {
                var child = node.a;
                while (child != none) : (child = p.nodes[child].next) try p.compileNode(child);
            },
            .alternation => {
                // split L1, L2; L1: branch 1; jump end; L2: split ...; last branch; end:
                var jumps: u16 = none;
                var child = node.a;
                while (p.nodes[child].next != none) : (child = p.nodes[child].next) {
                    const split = try p.emit(.split, p.insts_len + 1, 0);
                    try p.compileNode(child);
                    jumps = try p.emit(.jump, jumps, 0);
                    p.insts[split].b = p.insts_len;
                }
                try p.compileNode(child);
                p.patchChain("a", jumps, p.insts_len);
            },
            .repeat => {
                const outermost = p.repeat_offset == 0;
                if (outermost) p.repeat_offset = node.offset;
                defer if (outermost) {
                    p.repeat_offset = 0;
                };
                try p.compileRepeat(node);
            },
        }
    }

    fn compileRepeat(p: *Parser, node: Node) CompileError!void {
        assert(node.kind == .repeat);
        assert(node.min <= node.max);
        if (node.max == unbounded and node.min == 0) {
            // L: split L+1, out; body; jump L; out:
            const split = try p.emit(.split, p.insts_len + 1, 0);
            try p.compileNode(node.a);
            _ = try p.emit(.jump, split, 0);
            p.insts[split].b = p.insts_len;
        } else if (node.max == unbounded) {
            // body{min - 1}; L: body; split L, out; out:
            for (1..node.min) |_| try p.compileNode(node.a);
            const body = p.insts_len;
            try p.compileNode(node.a);
            _ = try p.emit(.split, body, p.insts_len + 1);
        } else {
            // body{min}, then each optional copy may skip to the end: x{1,3} = x(?:x(?:x)?)?
            for (0..node.min) |_| try p.compileNode(node.a);
            var skips: u16 = none;
            for (node.min..node.max) |_| {
                skips = try p.emit(.split, p.insts_len + 1, skips);
                try p.compileNode(node.a);
            }
            p.patchChain("b", skips, p.insts_len);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Tests

const testing = std.testing;

/// `text` repeated `count` times (Zig 0.17 has no `**` operator).
fn repeated(comptime text: []const u8, comptime count: usize) *const [text.len * count]u8 {
    return comptime result: {
        @setEvalBranchQuota(4 * text.len * count + 1000);
        var bytes: [text.len * count]u8 = undefined;
        for (0..count) |i| @memcpy(bytes[i * text.len ..][0..text.len], text);
        const result = bytes;
        break :result &result;
    };
}

const Vector = struct { pattern: []const u8, input: []const u8, expected: bool };

fn expectVectors(vectors: []const Vector) !void {
    for (vectors) |vector| {
        var diagnostic: Diagnostic = .{};
        var regex = Regex.compile(testing.allocator, vector.pattern, &diagnostic) catch |err| {
            std.debug.print("pattern \"{s}\": {s} at {d}: {s}\n", .{
                vector.pattern, @errorName(err), diagnostic.offset, diagnostic.message,
            });
            return err;
        };
        defer regex.deinit(testing.allocator);
        const actual = regex.isMatch(vector.input);
        if (actual != vector.expected) {
            std.debug.print("pattern \"{s}\" input \"{s}\": expected {}, got {}\n", .{
                vector.pattern, vector.input, vector.expected, actual,
            });
            return error.TestUnexpectedResult;
        }
    }
}

test "regex: literals match anywhere in the input (unanchored search)" {
    try expectVectors(&.{
        .{ .pattern = "abc", .input = "abc", .expected = true },
        .{ .pattern = "abc", .input = "xxabcxx", .expected = true },
        .{ .pattern = "abc", .input = "ab", .expected = false },
        .{ .pattern = "abc", .input = "ABC", .expected = false },
        .{ .pattern = "abc", .input = "", .expected = false },
        .{ .pattern = "a{", .input = "a{", .expected = true },
        .{ .pattern = "a{x}", .input = "a{x}", .expected = true },
        .{ .pattern = "a{,2}", .input = "a{,2}", .expected = true },
        .{ .pattern = "]}", .input = "]}", .expected = true },
        .{ .pattern = "-", .input = "a-b", .expected = true },
    });
}

test "regex: empty pattern and empty group match every input" {
    try expectVectors(&.{
        .{ .pattern = "", .input = "", .expected = true },
        .{ .pattern = "", .input = "anything", .expected = true },
        .{ .pattern = "()", .input = "", .expected = true },
        .{ .pattern = "(?i)", .input = "x", .expected = true },
        .{ .pattern = "a|", .input = "zzz", .expected = true },
    });
}

test "regex: dot matches any byte except newline" {
    try expectVectors(&.{
        .{ .pattern = "a.c", .input = "abc", .expected = true },
        .{ .pattern = "a.c", .input = "a\xffc", .expected = true },
        .{ .pattern = "a.c", .input = "a\x00c", .expected = true },
        .{ .pattern = "a.c", .input = "a\nc", .expected = false },
        .{ .pattern = "a.c", .input = "ac", .expected = false },
        .{ .pattern = "^.$", .input = "\n", .expected = false },
    });
}

test "regex: character classes, ranges and negation" {
    try expectVectors(&.{
        .{ .pattern = "^[abc]$", .input = "b", .expected = true },
        .{ .pattern = "^[abc]$", .input = "d", .expected = false },
        .{ .pattern = "^[a-z]+$", .input = "hello", .expected = true },
        .{ .pattern = "^[a-z]+$", .input = "Hello", .expected = false },
        .{ .pattern = "^[^a-z]+$", .input = "HELLO-1", .expected = true },
        .{ .pattern = "^[^a-z]+$", .input = "HELLo", .expected = false },
        .{ .pattern = "^[^a]$", .input = "\n", .expected = true },
        .{ .pattern = "^[a-cx-z0-2]+$", .input = "abzx10", .expected = true },
        .{ .pattern = "^[a-cx-z0-2]+$", .input = "abd", .expected = false },
        .{ .pattern = "^[-a]+$", .input = "-a-", .expected = true },
        .{ .pattern = "^[a-]+$", .input = "a-", .expected = true },
        .{ .pattern = "^[a\\-z]+$", .input = "-az", .expected = true },
        .{ .pattern = "^[a\\-z]+$", .input = "b", .expected = false },
        .{ .pattern = "^[\\]\\[]+$", .input = "[]", .expected = true },
        .{ .pattern = "^[\\d.]+$", .input = "10.0.0.1", .expected = true },
        .{ .pattern = "^[\\d.]+$", .input = "10.0.0.x", .expected = false },
        .{ .pattern = "^[\\x41-\\x43]+$", .input = "ABC", .expected = true },
        .{ .pattern = "^[\\x41-\\x43]+$", .input = "D", .expected = false },
        .{ .pattern = "^[^\\s]+$", .input = "no-space", .expected = true },
        .{ .pattern = "^[^\\s]+$", .input = "a space", .expected = false },
        .{ .pattern = "[.]", .input = "a.b", .expected = true },
        .{ .pattern = "[.]", .input = "ab", .expected = false },
        .{ .pattern = "[$^|()*+?{]", .input = "a{", .expected = true },
    });
}

test "regex: perl classes \\d \\w \\s and their negations" {
    try expectVectors(&.{
        .{ .pattern = "^\\d+$", .input = "0123456789", .expected = true },
        .{ .pattern = "^\\d+$", .input = "12a", .expected = false },
        .{ .pattern = "^\\D+$", .input = "abc", .expected = true },
        .{ .pattern = "^\\D+$", .input = "ab1", .expected = false },
        .{ .pattern = "^\\w+$", .input = "user_Name9", .expected = true },
        .{ .pattern = "^\\w+$", .input = "user-name", .expected = false },
        .{ .pattern = "^\\W+$", .input = "-/.", .expected = true },
        .{ .pattern = "^\\W+$", .input = "-a", .expected = false },
        .{ .pattern = "^\\s+$", .input = " \t\r\n\x0c", .expected = true },
        .{ .pattern = "^\\s+$", .input = "\x0b", .expected = false },
        .{ .pattern = "^\\S+$", .input = "abc", .expected = true },
        .{ .pattern = "^\\S+$", .input = "a c", .expected = false },
    });
}

test "regex: escaped metacharacters and control escapes match literally" {
    try expectVectors(&.{
        .{ .pattern = "^a\\.b$", .input = "a.b", .expected = true },
        .{ .pattern = "^a\\.b$", .input = "axb", .expected = false },
        .{ .pattern = "^\\\\$", .input = "\\", .expected = true },
        .{ .pattern = "^\\-\\/\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$$", .input = "-/*+?()[]{}|^$", .expected = true },
        .{ .pattern = "^a\\tb\\n$", .input = "a\tb\n", .expected = true },
        .{ .pattern = "^\\r\\f\\v$", .input = "\r\x0c\x0b", .expected = true },
        .{ .pattern = "^\\x41\\x7a\\xFF$", .input = "Az\xff", .expected = true },
        .{ .pattern = "\\x00", .input = "a\x00b", .expected = true },
    });
}

test "regex: anchors match only at the start and end of the whole input" {
    try expectVectors(&.{
        .{ .pattern = "^abc", .input = "abcdef", .expected = true },
        .{ .pattern = "^abc", .input = "xabc", .expected = false },
        .{ .pattern = "abc$", .input = "xxabc", .expected = true },
        .{ .pattern = "abc$", .input = "abcx", .expected = false },
        .{ .pattern = "abc$", .input = "abc\n", .expected = false },
        .{ .pattern = "^abc$", .input = "abc", .expected = true },
        .{ .pattern = "^abc$", .input = "abc\nabc", .expected = false },
        .{ .pattern = "^$", .input = "", .expected = true },
        .{ .pattern = "^$", .input = "a", .expected = false },
        .{ .pattern = "^", .input = "anything", .expected = true },
        .{ .pattern = "$", .input = "anything", .expected = true },
        .{ .pattern = "a^b", .input = "ab", .expected = false },
        .{ .pattern = "^a|b$", .input = "xxb", .expected = true },
        .{ .pattern = "^a|b$", .input = "ax", .expected = true },
        .{ .pattern = "^a|b$", .input = "xa", .expected = false },
        .{ .pattern = "(^a|^b)c", .input = "bc", .expected = true },
        .{ .pattern = "(^a|^b)c", .input = "xbc", .expected = false },
        .{ .pattern = "^*a", .input = "xa", .expected = true },
        .{ .pattern = "^+a", .input = "xa", .expected = false },
    });
}

test "regex: alternation matches either branch" {
    try expectVectors(&.{
        .{ .pattern = "^(cat|dog)$", .input = "cat", .expected = true },
        .{ .pattern = "^(cat|dog)$", .input = "dog", .expected = true },
        .{ .pattern = "^(cat|dog)$", .input = "cow", .expected = false },
        .{ .pattern = "^(a|b|c|)$", .input = "", .expected = true },
        .{ .pattern = "^(a|b|c|)$", .input = "c", .expected = true },
        .{ .pattern = "^(a|b|c|)$", .input = "d", .expected = false },
        .{ .pattern = "gpt-4|claude", .input = "model=claude-3", .expected = true },
        .{ .pattern = "^ab|cd$", .input = "abx", .expected = true },
    });
}

test "regex: groups and non-capturing groups nest" {
    try expectVectors(&.{
        .{ .pattern = "^(ab)+$", .input = "ababab", .expected = true },
        .{ .pattern = "^(ab)+$", .input = "ababa", .expected = false },
        .{ .pattern = "^(?:ab)+$", .input = "abab", .expected = true },
        .{ .pattern = "^(?:a(?:b|c))+$", .input = "abacab", .expected = true },
        .{ .pattern = "^(?:a(?:b|c))+$", .input = "abad", .expected = false },
        .{ .pattern = "^((((a))))$", .input = "a", .expected = true },
    });
}

test "regex: quantifiers star, plus and question mark" {
    try expectVectors(&.{
        .{ .pattern = "^ab*c$", .input = "ac", .expected = true },
        .{ .pattern = "^ab*c$", .input = "abbbc", .expected = true },
        .{ .pattern = "^ab+c$", .input = "ac", .expected = false },
        .{ .pattern = "^ab+c$", .input = "abbc", .expected = true },
        .{ .pattern = "^ab?c$", .input = "ac", .expected = true },
        .{ .pattern = "^ab?c$", .input = "abc", .expected = true },
        .{ .pattern = "^ab?c$", .input = "abbc", .expected = false },
        .{ .pattern = "^(a*)*$", .input = "aaaa", .expected = true },
        .{ .pattern = "^(a*)+$", .input = "", .expected = true },
        .{ .pattern = "^(a?)+b$", .input = "aab", .expected = true },
        .{ .pattern = "^()+$", .input = "", .expected = true },
    });
}

test "regex: counted repetition" {
    try expectVectors(&.{
        .{ .pattern = "^a{3}$", .input = "aaa", .expected = true },
        .{ .pattern = "^a{3}$", .input = "aa", .expected = false },
        .{ .pattern = "^a{3}$", .input = "aaaa", .expected = false },
        .{ .pattern = "^a{2,}$", .input = "a", .expected = false },
        .{ .pattern = "^a{2,}$", .input = "aaaaaa", .expected = true },
        .{ .pattern = "^a{2,4}$", .input = "a", .expected = false },
        .{ .pattern = "^a{2,4}$", .input = "aa", .expected = true },
        .{ .pattern = "^a{2,4}$", .input = "aaaa", .expected = true },
        .{ .pattern = "^a{2,4}$", .input = "aaaaa", .expected = false },
        .{ .pattern = "^a{0}b$", .input = "b", .expected = true },
        .{ .pattern = "^a{0}b$", .input = "ab", .expected = false },
        .{ .pattern = "^a{0,}$", .input = "", .expected = true },
        .{ .pattern = "^a{0,1}$", .input = "aa", .expected = false },
        .{ .pattern = "^(ab){2}$", .input = "abab", .expected = true },
        .{ .pattern = "^[0-9a-f]{8}-[0-9a-f]{4}$", .input = "deadbeef-0123", .expected = true },
        .{ .pattern = "^[0-9a-f]{8}-[0-9a-f]{4}$", .input = "deadbeef-012", .expected = false },
        .{ .pattern = "^(a|bc){1,2}$", .input = "bca", .expected = true },
        .{ .pattern = "^(a|bc){1,2}$", .input = "bcabc", .expected = false },
    });
}

test "regex: non-greedy quantifiers give the same match result" {
    try expectVectors(&.{
        .{ .pattern = "^a*?$", .input = "aaa", .expected = true },
        .{ .pattern = "^a+?b$", .input = "aab", .expected = true },
        .{ .pattern = "^a??b$", .input = "ab", .expected = true },
        .{ .pattern = "^a{1,2}?b$", .input = "aab", .expected = true },
        .{ .pattern = "^a{1,2}?b$", .input = "aaab", .expected = false },
    });
}

test "regex: leading (?i) matches ASCII case-insensitively" {
    try expectVectors(&.{
        .{ .pattern = "(?i)bearer", .input = "BeArEr token", .expected = true },
        .{ .pattern = "(?i)^[a-c]+$", .input = "AbC", .expected = true },
        .{ .pattern = "(?i)^[^a]$", .input = "A", .expected = false },
        .{ .pattern = "(?i)^[^a]$", .input = "b", .expected = true },
        .{ .pattern = "(?i)\\x41", .input = "a", .expected = true },
        .{ .pattern = "(?i)^\\d$", .input = "7", .expected = true },
        .{ .pattern = "(?i)z", .input = "[", .expected = false },
        .{ .pattern = "(?i)\xc3\xa9", .input = "\xc3\x89", .expected = false },
        .{ .pattern = "bearer", .input = "Bearer", .expected = false },
    });
}

test "regex: non-ASCII bytes match as literal bytes" {
    try expectVectors(&.{
        .{ .pattern = "caf\xc3\xa9", .input = "un caf\xc3\xa9", .expected = true },
        .{ .pattern = "^caf.$", .input = "caf\xc3\xa9", .expected = false },
        .{ .pattern = "^caf..$", .input = "caf\xc3\xa9", .expected = true },
        .{ .pattern = "^[\x80-\xff]+$", .input = "\xc3\xa9", .expected = true },
        .{ .pattern = "^[\x80-\xff]+$", .input = "e", .expected = false },
    });
}

const Refusal = struct {
    pattern: []const u8,
    err: CompileError,
    offset: usize,
    message: []const u8,
};

fn expectRefusals(refusals: []const Refusal) !void {
    for (refusals) |refusal| {
        var diagnostic: Diagnostic = .{};
        const result = Regex.compile(testing.allocator, refusal.pattern, &diagnostic);
        if (result) |compiled| {
            var regex = compiled;
            regex.deinit(testing.allocator);
            std.debug.print("pattern \"{s}\" compiled, expected {s}\n", .{ refusal.pattern, @errorName(refusal.err) });
            return error.TestUnexpectedResult;
        } else |err| {
            errdefer std.debug.print("pattern \"{s}\": {s} at {d}: {s}\n", .{
                refusal.pattern, @errorName(err), diagnostic.offset, diagnostic.message,
            });
            try testing.expectEqual(refusal.err, err);
            try testing.expectEqualStrings(refusal.message, diagnostic.message);
            try testing.expectEqual(refusal.offset, diagnostic.offset);
        }
    }
}

test "regex: malformed patterns are refused with offset and message" {
    const invalid = error.InvalidPattern;
    try expectRefusals(&.{
        .{ .pattern = "(ab", .err = invalid, .offset = 0, .message = "missing closing ')' for group" },
        .{ .pattern = "a(b(c)", .err = invalid, .offset = 1, .message = "missing closing ')' for group" },
        .{ .pattern = "ab)", .err = invalid, .offset = 2, .message = "unmatched ')'" },
        .{ .pattern = ")", .err = invalid, .offset = 0, .message = "unmatched ')'" },
        .{ .pattern = "*a", .err = invalid, .offset = 0, .message = "quantifier has nothing to repeat" },
        .{ .pattern = "a|+", .err = invalid, .offset = 2, .message = "quantifier has nothing to repeat" },
        .{ .pattern = "(?)", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...) and a leading (?i) are supported" },
        .{ .pattern = "(*)", .err = invalid, .offset = 1, .message = "quantifier has nothing to repeat" },
        .{ .pattern = "{2}", .err = invalid, .offset = 0, .message = "quantifier has nothing to repeat" },
        .{ .pattern = "a**", .err = invalid, .offset = 2, .message = "quantifier follows another quantifier; nested and possessive quantifiers are not supported" },
        .{ .pattern = "a*+", .err = invalid, .offset = 2, .message = "quantifier follows another quantifier; nested and possessive quantifiers are not supported" },
        .{ .pattern = "a??*", .err = invalid, .offset = 3, .message = "quantifier follows another quantifier; nested and possessive quantifiers are not supported" },
        .{ .pattern = "a{2}{3}", .err = invalid, .offset = 4, .message = "quantifier follows another quantifier; nested and possessive quantifiers are not supported" },
        .{ .pattern = "a{3,2}", .err = invalid, .offset = 1, .message = "repetition range {n,m} has n greater than m" },
        .{ .pattern = "[]", .err = invalid, .offset = 0, .message = "empty character class; write a literal ']' as \\]" },
        .{ .pattern = "x[^]", .err = invalid, .offset = 1, .message = "empty character class; write a literal ']' as \\]" },
        .{ .pattern = "[abc", .err = invalid, .offset = 0, .message = "missing closing ']' for character class" },
        .{ .pattern = "[a-", .err = invalid, .offset = 0, .message = "missing closing ']' for character class" },
        .{ .pattern = "[z-a]", .err = invalid, .offset = 1, .message = "invalid class range: start is greater than end" },
        .{ .pattern = "[\\d-z]", .err = invalid, .offset = 1, .message = "a class escape like \\d cannot be a range endpoint" },
        .{ .pattern = "abc\\", .err = invalid, .offset = 3, .message = "trailing backslash at end of pattern" },
        .{ .pattern = "\\x4", .err = invalid, .offset = 0, .message = "\\x must be followed by exactly two hex digits" },
        .{ .pattern = "\\x{41}", .err = invalid, .offset = 0, .message = "\\x must be followed by exactly two hex digits" },
        .{ .pattern = "\\q", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\n \\r \\t \\f \\v and \\xHH may be escaped" },
        .{ .pattern = "\\ ", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\n \\r \\t \\f \\v and \\xHH may be escaped" },
        .{ .pattern = "\\\xc3", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\n \\r \\t \\f \\v and \\xHH may be escaped" },
    });
}

test "regex: unsupported RE2 and PCRE features are refused by name" {
    const invalid = error.InvalidPattern;
    try expectRefusals(&.{
        .{ .pattern = "(a)\\1", .err = invalid, .offset = 3, .message = "backreferences are not supported (RE2 syntax)" },
        .{ .pattern = "\\k<x>", .err = invalid, .offset = 0, .message = "backreferences are not supported (RE2 syntax)" },
        .{ .pattern = "a(?=b)", .err = invalid, .offset = 1, .message = "lookaround is not supported (RE2 syntax)" },
        .{ .pattern = "a(?!b)", .err = invalid, .offset = 1, .message = "lookaround is not supported (RE2 syntax)" },
        .{ .pattern = "(?<=a)b", .err = invalid, .offset = 0, .message = "lookaround is not supported (RE2 syntax)" },
        .{ .pattern = "(?<!a)b", .err = invalid, .offset = 0, .message = "lookaround is not supported (RE2 syntax)" },
        .{ .pattern = "(?P<name>a)", .err = invalid, .offset = 0, .message = "named groups are not supported; use (...) or (?:...)" },
        .{ .pattern = "(?<name>a)", .err = invalid, .offset = 0, .message = "named groups are not supported; use (...) or (?:...)" },
        .{ .pattern = "\\bword\\b", .err = invalid, .offset = 0, .message = "word boundaries (\\b, \\B) are not supported" },
        .{ .pattern = "\\p{Greek}", .err = invalid, .offset = 0, .message = "unicode classes (\\p, \\P) are not supported; matching is byte-oriented" },
        .{ .pattern = "[\\PL]", .err = invalid, .offset = 1, .message = "unicode classes (\\p, \\P) are not supported; matching is byte-oriented" },
        .{ .pattern = "[[:alpha:]]", .err = invalid, .offset = 1, .message = "POSIX classes like [:alpha:] are not supported" },
        .{ .pattern = "a(?i)b", .err = invalid, .offset = 1, .message = "the (?i) flag is only supported at the start of the pattern" },
        .{ .pattern = "(?i:ab)", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...) and a leading (?i) are supported" },
        .{ .pattern = "(?m)^a$", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...) and a leading (?i) are supported" },
        .{ .pattern = "(?s).", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...) and a leading (?i) are supported" },
    });
}

test "regex: pattern length and repetition bounds are PatternTooComplex" {
    const too_complex = error.PatternTooComplex;
    const longest = comptime repeated("a", pattern_bytes_max);
    var regex = try Regex.compile(testing.allocator, longest, null);
    defer regex.deinit(testing.allocator);
    try testing.expect(regex.isMatch("x" ++ longest));
    try testing.expect(!regex.isMatch(longest[1..]));

    try expectRefusals(&.{
        .{ .pattern = longest ++ "a", .err = too_complex, .offset = 256, .message = "pattern is longer than 256 bytes" },
        .{ .pattern = "a{1001}", .err = too_complex, .offset = 1, .message = "repetition count is larger than 1000" },
        .{ .pattern = "a{1,99999999999999999999}", .err = too_complex, .offset = 1, .message = "repetition count is larger than 1000" },
        .{ .pattern = "^(ab){512}", .err = too_complex, .offset = 5, .message = "pattern expands to more than 1024 instructions; reduce the counted repetition" },
        .{ .pattern = "xy(ab{40}){40}", .err = too_complex, .offset = 10, .message = "pattern expands to more than 1024 instructions; reduce the counted repetition" },
        .{ .pattern = "\\d{0,600}", .err = too_complex, .offset = 2, .message = "pattern expands to more than 1024 instructions; reduce the counted repetition" },
        .{ .pattern = "((((){1000}){1000}){1000}){1000}", .err = too_complex, .offset = 26, .message = "pattern expands to more than 1024 instructions; reduce the counted repetition" },
    });

    // Without counted repetition even the densest patterns of the maximum length fit.
    inline for (.{ "|", "a*", "(a*)*|", "()*" }) |unit| {
        const dense = comptime repeated(unit, pattern_bytes_max / unit.len);
        var diagnostic: Diagnostic = .{};
        var dense_regex = Regex.compile(testing.allocator, dense, &diagnostic) catch |err| {
            std.debug.print("{s}: {s}\n", .{ unit, diagnostic.message });
            return err;
        };
        dense_regex.deinit(testing.allocator);
    }

    // RE2's largest count fits on a single byte: `^`, 1000 copies, `$` and `match`.
    var wide = try Regex.compile(testing.allocator, "^a{1000}$", null);
    defer wide.deinit(testing.allocator);
    try testing.expect(wide.isMatch(comptime repeated("a", 1000)));
    try testing.expect(!wide.isMatch(comptime repeated("a", 999)));
    try testing.expect(!wide.isMatch(comptime repeated("a", 1001)));
    // The program may be filled exactly: `^`, 1022 copies and `match`.
    var full = try Regex.compile(testing.allocator, "^(ab){511}", null);
    defer full.deinit(testing.allocator);
    try testing.expectEqual(program_instructions_max, full.insts.len);
    try testing.expect(full.isMatch(comptime repeated("ab", 511) ++ "x"));
    try testing.expect(!full.isMatch(comptime repeated("ab", 510)));
}

test "regex: the diagnostic is reset on success and optional" {
    var diagnostic: Diagnostic = .{ .offset = 7, .message = "stale" };
    var regex = try Regex.compile(testing.allocator, "a", &diagnostic);
    defer regex.deinit(testing.allocator);
    try testing.expectEqual(@as(usize, 0), diagnostic.offset);
    try testing.expectEqualStrings("", diagnostic.message);
    try testing.expectError(error.InvalidPattern, Regex.compile(testing.allocator, "(", null));
}

test "regex: pathological patterns run in linear time" {
    // A backtracking matcher needs about 2^n steps for most of these; the NFA simulation needs
    // at most input bytes × program instructions.
    const input = comptime repeated("a", 10_000);
    try expectVectors(&.{
        .{ .pattern = "(a*)*b", .input = input, .expected = false },
        .{ .pattern = "(a*)*b", .input = input ++ "b", .expected = true },
        .{ .pattern = "(a|a)*c", .input = input, .expected = false },
        .{ .pattern = "^(a|aa)+$", .input = input, .expected = true },
        .{ .pattern = "^(a|aa)+b$", .input = input, .expected = false },
        .{ .pattern = "(x+x+)+y", .input = input, .expected = false },
        .{ .pattern = "^(a?){50}a{50}$", .input = input, .expected = false },
        .{ .pattern = "(.*)*(.*)*z", .input = input, .expected = false },
        .{ .pattern = "(a{0,10}){0,10}b", .input = input, .expected = false },
    });
}

fn compileAndMatch(allocator: std.mem.Allocator) !void {
    var regex = try Regex.compile(allocator, "(?i)^(bearer|token)\\s+[a-z0-9]{2,8}$", null);
    defer regex.deinit(allocator);
    try testing.expect(regex.isMatch("Bearer abc123"));
}

test "regex: compile frees everything when allocation fails" {
    try testing.checkAllAllocationFailures(testing.allocator, compileAndMatch, .{});
}

test "regex: fuzz random patterns and inputs never crash" {
    // Deterministic: the seed is fixed so a failure reproduces.
    var prng: std.Random.DefaultPrng = .init(0x7e57_4e9e);
    const random = prng.random();
    const pattern_alphabet = "ab.|()*+?{}[]^$\\-,0129dwsSxi:";
    const input_alphabet = "abAB\n-0 {";
    var pattern_buffer: [24]u8 = undefined;
    var input_buffer: [40]u8 = undefined;
    var compiled_count: usize = 0;
    for (0..20_000) |_| {
        const pattern = pattern_buffer[0..random.uintAtMost(usize, pattern_buffer.len)];
        for (pattern) |*byte| byte.* = pattern_alphabet[random.uintLessThan(usize, pattern_alphabet.len)];
        var regex = Regex.compile(testing.allocator, pattern, null) catch |err| switch (err) {
            error.InvalidPattern, error.PatternTooComplex => continue,
            error.OutOfMemory => return err,
        };
        defer regex.deinit(testing.allocator);
        compiled_count += 1;
        // Without anchors, a match in a substring is a match in any input containing it.
        const has_anchor = std.mem.indexOfAny(u8, pattern, "^$") != null;
        for (0..8) |_| {
            const input = input_buffer[0..random.uintAtMost(usize, input_buffer.len)];
            for (input) |*byte| byte.* = input_alphabet[random.uintLessThan(usize, input_alphabet.len)];
            const inner = input[random.uintAtMost(usize, input.len)..];
            const inner_matches = regex.isMatch(inner[0..random.uintAtMost(usize, inner.len)]);
            const outer_matches = regex.isMatch(input);
            if (!has_anchor and inner_matches) try testing.expect(outer_matches);
        }
    }
    // Guards against the alphabet drifting so far that almost nothing compiles.
    try testing.expect(compiled_count > 2_000);
}
