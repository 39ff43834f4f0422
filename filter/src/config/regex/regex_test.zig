//! The regexp's behaviour through its public API: match vectors by feature (literals, classes,
//! anchors, alternation, repetition, case folding, UTF-8, Unicode scripts). Refusals, bounds,
//! linear time and the fuzz run: regex_limits_test.zig.
const std = @import("std");
const regex_zig = @import("regex.zig");

const Diagnostic = regex_zig.Diagnostic;
const Regex = regex_zig.Regex;
const testing = std.testing;
pub const Vector = struct { pattern: []const u8, input: []const u8, expected: bool };

pub fn expectVectors(vectors: []const Vector) !void {
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
