//! The regexp's limits through its public API: refusals with their exact messages and offsets,
//! the bounds, linear time on pathological patterns, allocation failure, and a fuzz run.
//! (Match vectors: regex_test.zig.)
const std = @import("std");
const regex_zig = @import("regex.zig");

const CompileError = regex_zig.CompileError;
const Diagnostic = regex_zig.Diagnostic;
const Regex = regex_zig.Regex;
const pattern_bytes_max = regex_zig.pattern_bytes_max;
const program_instructions_max = regex_zig.program_instructions_max;
const repeat_count_max = regex_zig.repeat_count_max;
const testing = std.testing;
const expectVectors = @import("regex_test.zig").expectVectors;

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
        .{ .pattern = "(?)", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading (?i) are supported" },
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
        .{ .pattern = "\\x4", .err = invalid, .offset = 0, .message = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF" },
        .{ .pattern = "\\x{}", .err = invalid, .offset = 0, .message = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF" },
        .{ .pattern = "\\x{110000}", .err = invalid, .offset = 0, .message = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF" },
        .{ .pattern = "\\x{41", .err = invalid, .offset = 0, .message = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF" },
        .{ .pattern = "\\q", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\p{..} \\P{..}, \\b \\B \\A \\z, \\a \\n \\r \\t \\f \\v, \\xHH and \\x{H..} may be escaped" },
        .{ .pattern = "\\ ", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\p{..} \\P{..}, \\b \\B \\A \\z, \\a \\n \\r \\t \\f \\v, \\xHH and \\x{H..} may be escaped" },
        .{ .pattern = "\\\xc3", .err = invalid, .offset = 0, .message = "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\p{..} \\P{..}, \\b \\B \\A \\z, \\a \\n \\r \\t \\f \\v, \\xHH and \\x{H..} may be escaped" },
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
        .{ .pattern = "\\pL", .err = invalid, .offset = 0, .message = "unsupported unicode class; supported: \\p{Name} for the scripts Cyrillic, Greek, Han, Hangul, Hiragana, Katakana, Latin" },
        .{ .pattern = "[\\p{Arabic}]", .err = invalid, .offset = 1, .message = "unsupported unicode class; supported: \\p{Name} for the scripts Cyrillic, Greek, Han, Hangul, Hiragana, Katakana, Latin" },
        .{ .pattern = "\\p{Han", .err = invalid, .offset = 0, .message = "missing closing '}' for \\p{...}" },
        .{ .pattern = "[[:alfa:]]", .err = invalid, .offset = 1, .message = "unknown POSIX class; use one of alnum alpha ascii blank cntrl digit graph lower print punct space upper word xdigit, as [[:alpha:]]" },
        .{ .pattern = "(?P<>a)", .err = invalid, .offset = 0, .message = "invalid group name; write (?P<name>...) with letters, digits and _" },
        .{ .pattern = "(?<a-b>a)", .err = invalid, .offset = 0, .message = "invalid group name; write (?P<name>...) with letters, digits and _" },
        .{ .pattern = "(?P<a", .err = invalid, .offset = 0, .message = "invalid group name; write (?P<name>...) with letters, digits and _" },
        .{ .pattern = "(?P<a>x)(?P<a>y)", .err = invalid, .offset = 8, .message = "duplicate group name" },
        .{ .pattern = "(?'a'x)", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading (?i) are supported" },
        .{ .pattern = "[\\b]", .err = invalid, .offset = 1, .message = "word boundaries (\\b, \\B) are not allowed inside a class" },
        .{ .pattern = "a\xff", .err = invalid, .offset = 1, .message = "invalid UTF-8 in pattern" },
        .{ .pattern = "a(?i)b", .err = invalid, .offset = 1, .message = "the (?i) flag is only supported at the start of the pattern" },
        .{ .pattern = "(?i:ab)", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading (?i) are supported" },
        .{ .pattern = "(?m)^a$", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading (?i) are supported" },
        .{ .pattern = "(?s).", .err = invalid, .offset = 0, .message = "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading (?i) are supported" },
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

test "regex: a search stops when its steps run out, and says so" {
    var re = try Regex.compile(std.testing.allocator, ".{1000}Z", null);
    defer re.deinit(std.testing.allocator);
    const hostile: [4096]u8 = @splat('a');
    var steps: u32 = 65536;
    try std.testing.expectEqual(@as(?bool, null), re.isMatchWithin(&hostile, &steps));
    try std.testing.expectEqual(@as(u32, 0), steps);
    // Nothing left: the next search stops before any work.
    try std.testing.expectEqual(@as(?bool, null), re.isMatchWithin("aZ", &steps));
    // A benign search spends a few steps per byte and answers.
    var anchored = try Regex.compile(std.testing.allocator, "^sk-[a-z0-9]{32}$", null);
    defer anchored.deinit(std.testing.allocator);
    steps = 65536;
    try std.testing.expectEqual(@as(?bool, true), anchored.isMatchWithin("sk-0123456789abcdef0123456789abcdef", &steps));
    try std.testing.expect(65536 - steps < 4 * 36);
}
