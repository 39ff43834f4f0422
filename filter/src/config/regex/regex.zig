//! Linear-time regular expressions for `regexp:` limit keys.
//!
//! Header values are attacker-controlled, so this is a Thompson NFA simulation (no backtracking):
//! a search runs in O(input bytes × program instructions), never allocates, and keeps its
//! scratch on the stack. Patterns are bounded (`pattern_bytes_max`, `program_instructions_max`)
//! so that the per-byte cost is bounded too. Linear is not cheap enough: `.{1000}Z` keeps 1000
//! threads alive over a 4 KiB value (4 M steps, ~60 ms in wasm). So the filter searches with
//! `isMatchWithin`, which spends a caller's allowance of steps and stops when it runs out;
//! match.zig shares one allowance across a request's keys and says what an undecided value gets.
//!
//! Matching is an unanchored search, like Go's `regexp.MatchString` (Higress matches `regexp:`
//! keys with it) or RE2's `PartialMatch`: a pattern matches when any substring of the input
//! matches. Only match / no match is reported; there are no capture groups. As in Go, the input
//! is read by character: UTF-8 code points, each invalid byte one U+FFFD (so `^.{3}$` matches
//! "专用1", 7 bytes).
//!
//! Supported syntax (Go's `regexp/syntax`, less what is refused below):
//!
//! | Syntax                      | Meaning                                                     |
//! |-----------------------------|-------------------------------------------------------------|
//! | `x`                         | literal character (UTF-8 in the pattern)                    |
//! | `.`                         | any character except `\n`                                  |
//! | `[abc]` `[a-z]` `[^a-z]`    | class, range (of code points), negated class; `\d \w \s`,  |
//! |                             | `\p{..}`, escapes and POSIX `[:alpha:]` `[:^alpha:]` may    |
//! |                             | appear inside; a literal `]` must be written `\]`           |
//! | `\d` `\w` `\s`              | `[0-9]`, `[0-9A-Za-z_]`, `[\t\n\f\r ]` (ASCII, as in Go)      |
//! | `\D` `\W` `\S`              | their negations (every other code point)                    |
//! | `\p{Han}` `\P{Han}` `\p{^Han}` | a Unicode script: Cyrillic Greek Han Hangul Hiragana     |
//! |                             | Katakana Latin (unicode.zig), or its negation               |
//! | `[[:alpha:]]` ...           | POSIX classes: alnum alpha ascii blank cntrl digit graph    |
//! |                             | lower print punct space upper word xdigit (ASCII)           |
//! | `\.` `\\` `\-` `\/` ...     | any escaped ASCII punctuation is literal                    |
//! | `\a \n \r \t \f \v`         | control characters                                          |
//! | `\xHH` `\x{10FFFF}`         | a code point in hex (as in Go: `\xff` is U+00FF, not a byte) |
//! | `^` `$` `\A` `\z`            | start / end of the whole input (no multi-line mode)         |
//! | `\b` `\B`                   | ASCII word boundary / not one (as in Go)                    |
//! | `(re)` `(?:re)`             | grouping (both are non-capturing here)                      |
//! | `(?P<name>re)` `(?<name>re)` | named group (grouping; names letters, digits, `_`, unique) |
//! | `re1\|re2`                  | alternation                                                 |
//! | `*` `+` `?`                 | zero or more, one or more, zero or one                      |
//! | `{n}` `{n,}` `{n,m}`        | counted repetition, n and m at most 1000                    |
//! | `*?` `+?` `??` `{n,m}?`     | non-greedy forms: accepted, same match / no-match result    |
//! | `(?i)` at pattern start     | case-insensitive for ASCII letters (Go folds all of Unicode) |
//!
//! As in RE2, a `{` that does not start a valid `{n}`, `{n,}` or `{n,m}` is a literal `{`, and
//! `]` and `}` outside a class are literals. Unlike RE2, `[]a]` is refused (RE2 reads a `]`
//! right after `[` as a literal), because `[]` is far more likely a mistake.
//!
//! Refused with `error.InvalidPattern` and a `Diagnostic` naming the offset and the problem:
//! backreferences (`\1`), lookaround (`(?=` `(?!` `(?<=` `(?<!`), other unicode classes
//! (`\pL`, `\p{Greek_Extended}`), other flags or a `(?i)` anywhere but the start, nested or
//! possessive quantifiers (`a**`, `a*+`), other escapes, invalid UTF-8 in the pattern,
//! unbalanced parentheses, a quantifier with nothing to repeat, an empty class `[]`, reversed
//! ranges (`[z-a]`, `{3,2}`), invalid or duplicate group names.
//!
//! Refused with `error.PatternTooComplex`: patterns longer than 256 bytes
//! (`pattern_bytes_max`), repetition counts above 1000, and patterns whose counted repetition
//! expands beyond 1024 instructions (`program_instructions_max`; `^\d{1000}$` fits,
//! `(\d{100}){20}` does not). Patterns without counted repetition always fit.
//!
//! This file is the API; the work is in parse.zig (text → node tree, with charset.zig building
//! its sets and unicode.zig holding the scripts), compile.zig (tree → program), vm.zig
//! (program × input → match) and program.zig (the instruction set they share). The tests, all through this API, are in regex_test.zig.

const std = @import("std");
const assert = std.debug.assert;
const compile = @import("compile.zig");
const parse = @import("parse.zig");
const program = @import("program.zig");
const vm = @import("vm.zig");

const Inst = program.Inst;
const CharSet = program.CharSet;
const Range = program.Range;

pub const pattern_bytes_max = 256;
/// Bounds both the heap program and the per-input-byte matching work (and `isMatch`'s ~6 KB
/// of stack scratch). Fits RE2's largest count on one byte or class: `^x{1000}$`.
pub const program_instructions_max = 1024;
/// RE2's limit.
pub const repeat_count_max = 1000;

comptime {
    assert(program_instructions_max < program.none);
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
    sets: []const CharSet,
    ranges: []const Range,

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
        // The parser's and the compiler's fixed-size tables are ~20 KB: too much for a wasm
        // stack frame.
        const scratch = try allocator.create(Scratch);
        defer allocator.destroy(scratch);
        const p = &scratch.parser;
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
        const c = &scratch.compiler;
        c.* = .{ .nodes = p.nodes[0..p.nodes_len], .diagnostic = diagnostic };
        try c.compileNode(root);
        _ = try c.emit(.match, 0, 0);

        const insts = try allocator.dupe(Inst, c.insts[0..c.insts_len]);
        errdefer allocator.free(insts);
        const sets = try allocator.dupe(CharSet, p.sets[0..p.sets_len]);
        errdefer allocator.free(sets);
        const ranges = try allocator.dupe(Range, p.ranges[0..p.ranges_len]);
        return .{ .insts = insts, .sets = sets, .ranges = ranges };
    }

    pub fn deinit(self: *Regex, allocator: std.mem.Allocator) void {
        allocator.free(self.insts);
        allocator.free(self.sets);
        allocator.free(self.ranges);
        self.* = undefined;
    }

    /// Unanchored search like Go's regexp.MatchString / RE2 PartialMatch: true when any
    /// substring matches. Linear in input length, but unbounded: for tests and trusted input.
    pub fn isMatch(self: *const Regex, input: []const u8) bool {
        return vm.search(self.insts, self.sets, self.ranges, input, null).?;
    }

    /// `isMatch` spending at most `steps.*` steps (one per thread stepped or instruction
    /// reached; about 16 ns each in wasm); null, with the steps spent, when they run out before
    /// the answer. Request matching shares one allowance across every key (match.zig).
    pub fn isMatchWithin(self: *const Regex, input: []const u8, steps: *u32) ?bool {
        return vm.search(self.insts, self.sets, self.ranges, input, steps);
    }
};

const Scratch = struct { parser: parse.Parser, compiler: compile.Compiler };
