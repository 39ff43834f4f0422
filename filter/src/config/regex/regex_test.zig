//! The regexp's behaviour through its public API: match vectors, refusals with their exact
//! messages and offsets, the bounds, linear time on pathological patterns, and a fuzz run.
const std = @import("std");
const regex_zig = @import("regex.zig");

const CompileError = regex_zig.CompileError;
const Diagnostic = regex_zig.Diagnostic;
const Regex = regex_zig.Regex;
const pattern_bytes_max = regex_zig.pattern_bytes_max;
const program_instructions_max = regex_zig.program_instructions_max;
const repeat_count_max = regex_zig.repeat_count_max;
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
        .{ .pattern = "^\\x41\\x7a\\xFF$", .input = "Az\xc3\xbf", .expected = true },
        .{ .pattern = "^\\xFF$", .input = "\xff", .expected = false },
        .{ .pattern = "^\\x{41}\\x{4e13}\\x{10FFFF}$", .input = "A\xe4\xb8\x93\xf4\x8f\xbf\xbf", .expected = true },
        .{ .pattern = "^\\a$", .input = "\x07", .expected = true },
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

test "regex: matching is by character (UTF-8 code point), as Go's regexp matches" {
    try expectVectors(&.{
        .{ .pattern = "caf\xc3\xa9", .input = "un caf\xc3\xa9", .expected = true },
        .{ .pattern = "^caf.$", .input = "caf\xc3\xa9", .expected = true },
        .{ .pattern = "^caf..$", .input = "caf\xc3\xa9", .expected = false },
        .{ .pattern = "^.{3}$", .input = "\xe4\xb8\x93\xe7\x94\xa8" ++ "1", .expected = true },
        .{ .pattern = "^[\\x80-\\xff]+$", .input = "\xc3\xa9", .expected = true },
        .{ .pattern = "^[\\x80-\\xff]+$", .input = "e", .expected = false },
        .{ .pattern = "^[\xe4\xb8\x80-\xe9\xbe\xa5]+$", .input = "\xe4\xb8\x93\xe7\x94\xa8", .expected = true },
        .{ .pattern = "^[^a]$", .input = "\xe4\xb8\x93", .expected = true },
        .{ .pattern = "^\\D\\W\\S$", .input = "\xe4\xb8\x93\xe4\xb8\x93\xe4\xb8\x93", .expected = true },
        // Invalid UTF-8 in the input: each byte is one U+FFFD, as in Go.
        .{ .pattern = "^..$", .input = "\xe4\xb8", .expected = true },
        .{ .pattern = "^\xef\xbf\xbd$", .input = "\xff", .expected = true },
    });
}

test "regex: unicode scripts, POSIX classes, word boundaries and named groups (Go syntax)" {
    try expectVectors(&.{
        .{ .pattern = "^\\p{Han}+$", .input = "\xe4\xb8\x93\xe7\x94\xa8", .expected = true },
        .{ .pattern = "^\\p{Han}+$", .input = "\xe4\xb8\x93" ++ "1", .expected = false },
        .{ .pattern = "^\\P{Han}$", .input = "a", .expected = true },
        .{ .pattern = "^\\p{^Han}$", .input = "\xe4\xb8\x93", .expected = false },
        .{ .pattern = "^[\\p{Han}\\d]+$", .input = "\xe4\xb8\x93" ++ "1", .expected = true },
        .{ .pattern = "^[^\\p{Han}]+$", .input = "ab", .expected = true },
        .{ .pattern = "^\\p{Latin}+$", .input = "caf\xc3\xa9", .expected = true },
        .{ .pattern = "^\\p{Greek}$", .input = "\xce\xb1", .expected = true },
        .{ .pattern = "^\\p{Cyrillic}$", .input = "\xd0\x96", .expected = true },
        .{ .pattern = "^\\p{Hiragana}\\p{Katakana}\\p{Hangul}$", .input = "\xe3\x81\x82\xe3\x82\xa2\xea\xb0\x80", .expected = true },
        .{ .pattern = "^[[:alpha:]]+$", .input = "Team", .expected = true },
        .{ .pattern = "^[[:alpha:]]+$", .input = "team1", .expected = false },
        .{ .pattern = "^[[:^digit:][:digit:]]+$", .input = "a1\xe4\xb8\x93", .expected = true },
        .{ .pattern = "^[[:xdigit:]]{4}$", .input = "0aF9", .expected = true },
        .{ .pattern = "^[[:space:]]$", .input = "\x0b", .expected = true },
        .{ .pattern = "^[[:x]$", .input = "[", .expected = true },
        .{ .pattern = "\\bvip\\b", .input = "the vip team", .expected = true },
        .{ .pattern = "\\bvip\\b", .input = "vipteam", .expected = false },
        .{ .pattern = "\\Bip\\b", .input = "vip", .expected = true },
        .{ .pattern = "\\Bip", .input = "ip", .expected = false },
        .{ .pattern = "\\Avip\\z", .input = "vip", .expected = true },
        .{ .pattern = "\\Avip\\z", .input = "vip!", .expected = false },
        .{ .pattern = "^(?P<team>[a-z]+)-(?<tier>\\d)$", .input = "red-1", .expected = true },
        .{ .pattern = "^(?P<team>[a-z]+)-(?<tier>\\d)$", .input = "red-x", .expected = false },
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
