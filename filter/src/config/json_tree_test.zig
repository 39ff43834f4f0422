//! json_tree.zig against std.json (the parser it stands in for): the same documents accepted,
//! the same refused, the same trees; its API, copying, duplicates, depth and out-of-memory;
//! and a fixed-seed fuzz run of generated and mutated documents.
const std = @import("std");
const json_tree = @import("json_tree.zig");

const Value = json_tree.Value;
const max_depth = json_tree.max_depth;
const parse = json_tree.parse;
const testing = std.testing;

/// Whether our tree and std.json's tree (parse_numbers = false) hold the same document.
fn sameTree(ours: Value, theirs: std.json.Value) bool {
    return switch (ours) {
        .null => theirs == .null,
        .bool => |b| theirs == .bool and theirs.bool == b,
        .number_string => |s| theirs == .number_string and std.mem.eql(u8, s, theirs.number_string),
        .string => |s| theirs == .string and std.mem.eql(u8, s, theirs.string),
        .array => |a| {
            if (theirs != .array or theirs.array.items.len != a.items.len) return false;
            for (a.items, theirs.array.items) |x, y| if (!sameTree(x, y)) return false;
            return true;
        },
        .object => |o| {
            if (theirs != .object or theirs.object.count() != o.count()) return false;
            // std.json's ObjectMap keeps insertion order too, so compare pairwise.
            var it = o.iterator();
            var index: usize = 0;
            while (it.next()) |entry| : (index += 1) {
                if (!std.mem.eql(u8, entry.key_ptr.*, theirs.object.keys()[index])) return false;
                if (!sameTree(entry.value_ptr.*, theirs.object.values()[index])) return false;
            }
            return true;
        },
    };
}

const Outcome = union(enum) { accepted, rejected: anyerror };

/// Parses with both parsers and checks they agree: both accept with the same tree, or both
/// refuse (DuplicateField on both sides or on neither). Documents nested deeper than
/// `max_depth` (which std.json allows) must be refused with TooDeep.
fn expectAgreement(document: []const u8) !Outcome {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const ours = parse(arena, document);
    const theirs = std.json.parseFromSliceLeaky(std.json.Value, arena, document, .{
        .duplicate_field_behavior = .@"error",
        .parse_numbers = false,
    });
    if (ours) |tree| {
        const their_tree = theirs catch |err| {
            std.debug.print("we accept, std.json refuses ({s}): {f}\n", .{ @errorName(err), std.ascii.hexEscape(document, .lower) });
            return error.TestUnexpectedResult;
        };
        if (!sameTree(tree, their_tree)) {
            std.debug.print("trees differ: {f}\n", .{std.ascii.hexEscape(document, .lower)});
            return error.TestUnexpectedResult;
        }
        return .accepted;
    } else |err| {
        if (err == error.OutOfMemory) return err;
        if (err == error.TooDeep) return .{ .rejected = err };
        if (theirs) |_| {
            std.debug.print("we refuse ({s}), std.json accepts: {f}\n", .{ @errorName(err), std.ascii.hexEscape(document, .lower) });
            return error.TestUnexpectedResult;
        } else |their_err| {
            if ((err == error.DuplicateField) != (their_err == error.DuplicateField)) {
                std.debug.print("we say {s}, std.json says {s}: {f}\n", .{ @errorName(err), @errorName(their_err), std.ascii.hexEscape(document, .lower) });
                return error.TestUnexpectedResult;
            }
        }
        return .{ .rejected = err };
    }
}

const valid_documents = [_][]const u8{
    "null",                              "true",                                           "false",
    "0",                                 "-0",                                             "1",
    "-1",                                "12345678901234567890123456789",                  "0.5",
    "-0.0",                              "1e5",                                            "1E5",
    "1e+5",                              "1e-5",                                           "1.25e-10",
    "0e0",                               "-12.5E+3",                                       "\"\"",
    "\"abc\"",                           "[]",                                             "{}",
    " \t\r\n[ ] \n",                     "[1,2,3]",                                        "[[],[[]],{}]",
    "{\"a\":1}",                         "{ \"a\" : [ true , false , null ] }",            "{\"\":0}",
    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",    "\"\\u0000\"",                                    "\"\\u0041\\u00e9\\u20AC\"",
    "\"\\uD83D\\uDE00\"",                "\"\\ud83d\\ude00x\"",                            "\"\\uDBFF\\uDFFF\"",
    "\"\\uFFFF\"",                       "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"", "\"\xf4\x8f\xbf\xbf\"",
    "\"\xed\x9f\xbf\xee\x80\x80\"",      "\"\x7f\"",                                       "{\"a\":{\"b\":{\"c\":[1,{\"d\":\"e\"}]}}}",
    "{\"a\":1,\"b\":2,\"c\":3,\"A\":4}", "[\"a\",\"a\"]",                                  "{\"a\":{\"a\":{\"a\":1}}}",
    "{\"x\":{\"k\":1},\"y\":{\"k\":2}}", "[-1.5e300,1e-300,123.456]",                      "\"\\u0030\\u0031\"",
    \\{"rule_name":"default_rule","rule_items":[
    \\  {"limit_by_per_param":"apikey","limit_keys":[{"key":"regexp:^a.*","token_per_minute":100},{"key":"*","token_per_day":5}]},
    \\  {"limit_by_header":"X-Api-Key","limit_keys":[{"key":"k1","token_per_minute":10,"token_per_hour":50}]}],
    \\ "redis":{"service_name":"redis.static","timeout":1000},"weights":{"input":0.5,"output":4,"cached":0.125},
    \\ "_rules_":[{"_match_route_":["r1","r2"],"rule_name":"r","global_threshold":{"request_per_second":3}}]}
    ,
};

const invalid_documents = [_][]const u8{
    "",                             " ",                         "\n\t",                         "nul",
    "tru",                          "fals",                      "True",                         "NULL",
    "nulll",                        "truex",                     "null null",                    "[] []",
    "{}x",                          "1 2",                       "01",                           "-01",
    "00",                           "1.",                        ".5",                           "+1",
    "-",                            "--1",                       "1e",                           "1e+",
    "1E-",                          "1.e5",                      "0x10",                         "NaN",
    "Infinity",                     "-Infinity",                 "1_000",                        "[1,]",
    "[,1]",                         "[,]",                       "[1 2]",                        "[1,,2]",
    "[",                            "]",                         "[1",                           "[1,",
    "{",                            "}",                         "{,}",                          "{\"a\":1,}",
    "{\"a\"}",                      "{\"a\" 1}",                 "{\"a\":}",                     "{\"a\":1 \"b\":2}",
    "{a:1}",                        "{'a':1}",                   "{1:1}",                        "{\"a\":1]",
    "[1}",                          "\"abc",                     "\"",                           "'abc'",
    "\"a\x00b\"",                   "\"a\nb\"",                  "\"a\tb\"",                     "\"\x1f\"",
    "\"\\x41\"",                    "\"\\a\"",                   "\"\\U0041\"",                  "\"\\u004\"",
    "\"\\u004G\"",                  "\"\\u\"",                   "\"\\\"",                       "\"\\",
    "\"\\uD83D\"",                  "\"\\uD83Dx\"",              "\"\\uD83D\\n\"",               "\"\\uD83D\\uD83D\"",
    "\"\\uDE00\"",                  "\"\\uDE00\\uD83D\"",        "\"\\uD83D\\u0041\"",           "\"\\uD83D\\uDE0\"",
    "\"\xc0\x80\"",                 "\"\xc1\xbf\"",              "\"\xe0\x80\x80\"",             "\"\xe0\x9f\xbf\"",
    "\"\xed\xa0\x80\"",             "\"\xf0\x80\x80\x80\"",      "\"\xf0\x8f\xbf\xbf\"",         "\"\xf4\x90\x80\x80\"",
    "\"\xf5\x80\x80\x80\"",         "\"\xf8\x88\x80\x80\x80\"",  "\"\xfc\x84\x80\x80\x80\x80\"", "\"\xff\"",
    "\"\xfc\x80\x80\x80\"",         "\"\xf8\x88\x80\x80\"",      "\"\xf7\xbf\xbf\xbf\"",         "\"\xf4\x80\x80\"",
    "\"\x80\"",                     "\"\xc3\"",                  "\"\xc3\x28\"",                 "\"\xe2\x82\"",
    "\"\xf0\x9f\x98\"",             "\xef\xbb\xbf{}",            "/* c */ {}",                   "{} // c",
    "[1] # c",                      "\x00",                      "[\x00]",                       "{}\x00",
    "[1]\x0c",                      "\xc2\xa0[]",                "{\"a\":1,\"a\":2}",            "{\"a\":1,\"\\u0061\":2}",
    "[{\"x\":[],\"y\":0,\"x\":1}]", "{\"a\":{\"b\":1,\"b\":1}}",
};

test "json_tree: valid documents parse and match std.json" {
    for (valid_documents) |document| {
        const outcome = try expectAgreement(document);
        if (outcome != .accepted) {
            std.debug.print("refused: {s}\n", .{document});
            return error.TestUnexpectedResult;
        }
    }
}

test "json_tree: invalid documents are refused, as std.json refuses them" {
    for (invalid_documents) |document| {
        const outcome = try expectAgreement(document);
        if (outcome != .rejected) {
            std.debug.print("accepted: {f}\n", .{std.ascii.hexEscape(document, .lower)});
            return error.TestUnexpectedResult;
        }
    }
}

test "json_tree: the API config.zig uses" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const document = "{\"b\":[1,\"x\",null],\"a\":{\"n\":-2.5e3},\"c\":true,\"d\":false}";
    const root = try parse(arena_state.allocator(), document);
    const map = root.object;
    try testing.expectEqual(@as(usize, 4), map.count());
    try testing.expect(map.get("missing") == null);
    const b = map.get("b").?.array.items;
    try testing.expectEqual(@as(usize, 3), b.len);
    try testing.expectEqualStrings("1", b[0].number_string);
    try testing.expectEqualStrings("x", b[1].string);
    try testing.expect(b[2] == .null);
    try testing.expectEqualStrings("-2.5e3", map.get("a").?.object.get("n").?.number_string);
    try testing.expect(map.get("c").?.bool);
    try testing.expect(!map.get("d").?.bool);
    // Document order, via key_ptr/value_ptr like std.json's ObjectMap.
    var it = map.iterator();
    const expected = [_][]const u8{ "b", "a", "c", "d" };
    var index: usize = 0;
    while (it.next()) |entry| : (index += 1) {
        try testing.expectEqualStrings(expected[index], entry.key_ptr.*);
        try testing.expect(std.meta.activeTag(entry.value_ptr.*) == std.meta.activeTag(map.get(expected[index]).?));
    }
    try testing.expectEqual(@as(usize, 4), index);
    // Empty containers.
    try testing.expectEqual(@as(usize, 0), (try parse(arena_state.allocator(), "{}")).object.count());
    try testing.expectEqual(@as(usize, 0), (try parse(arena_state.allocator(), "[]")).array.items.len);
}

test "json_tree: strings and numbers are copied into the arena" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const document = "{\"key\":[\"plain\",12.5]}";
    const root = try parse(arena_state.allocator(), document);
    const start = @intFromPtr(document.ptr);
    var it = root.object.iterator();
    const entry = it.next().?;
    const items = entry.value_ptr.array.items;
    for ([_][]const u8{ entry.key_ptr.*, items[0].string, items[1].number_string }) |text| {
        const address = @intFromPtr(text.ptr);
        try testing.expect(address + text.len <= start or address >= start + document.len);
    }
}

test "json_tree: escapes decode to UTF-8" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const cases = [_]struct { []const u8, []const u8 }{
        .{ "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\x08\x0c\n\r\t" },
        .{ "\"\\u0000\"", "\x00" },
        .{ "\"\\u007f\\u0080\"", "\x7f\xc2\x80" },
        .{ "\"\\u07FF\\u0800\"", "\xdf\xbf\xe0\xa0\x80" },
        .{ "\"\\uD7FF\\uE000\\uFFFD\"", "\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbd" },
        .{ "\"\\uD800\\uDC00\"", "\xf0\x90\x80\x80" },
        .{ "\"\\uD83D\\uDE00!\"", "\xf0\x9f\x98\x80!" },
        .{ "\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf" },
        .{ "\"a\\u00e9b\xc3\xa9c\"", "a\xc3\xa9b\xc3\xa9c" },
        .{ "\"\\\\u0041\"", "\\u0041" },
    };
    for (cases) |case| try testing.expectEqualStrings(case[1], (try parse(arena, case[0])).string);
}

test "json_tree: duplicate keys are refused, in any object" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    for ([_][]const u8{
        "{\"a\":1,\"a\":1}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\":1,\"\\u0061\":2}",
        "{\"\":1,\"\":2}",
        "{\"x\":[{\"k\":1,\"k\":2}]}",
    }) |document| try testing.expectError(error.DuplicateField, parse(arena, document));
    // The same key in different objects, or differing only in case, is fine.
    _ = try parse(arena, "{\"k\":{\"k\":1},\"K\":[{\"k\":2},{\"k\":3}]}");
}

test "json_tree: duplicates are found in objects of any size, at any positions" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    var buffer: [2048]u8 = undefined;
    for (1..70) |count| {
        // A key per member, then the same object with member `j`'s key replaced by member `i`'s.
        for (0..count) |j| {
            for (0..j + 1) |i| {
                if (count > 20 and i > 3 and i + 3 < j) continue; // enough pairs for the larger sizes
                var writer: std.Io.Writer = .fixed(&buffer);
                try writer.writeAll("{");
                for (0..count) |m| try writer.print("{s}\"k{d}\":{d}", .{ if (m > 0) "," else "", if (m == j) i else m, m });
                try writer.writeAll("}");
                if (i == j) {
                    const root = try parse(arena, writer.buffered());
                    try testing.expectEqual(count, root.object.count());
                    try testing.expectEqualStrings("0", root.object.get("k0").?.number_string);
                    if (j + 1 == count) try testing.expect((try expectAgreement(writer.buffered())) == .accepted);
                } else {
                    try testing.expectError(error.DuplicateField, parse(arena, writer.buffered()));
                }
            }
        }
        _ = arena_state.reset(.retain_capacity);
    }
}

test "json_tree: nesting is bounded" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    var buffer: [8 * (max_depth + 2)]u8 = undefined;
    for ([_]struct { []const u8, []const u8 }{ .{ "[", "]" }, .{ "{\"a\":", "}" } }) |pair| {
        for ([_]usize{ max_depth, max_depth + 1 }) |depth| {
            var writer: std.Io.Writer = .fixed(&buffer);
            for (0..depth) |_| try writer.writeAll(pair[0]);
            try writer.writeAll("0");
            for (0..depth) |_| try writer.writeAll(pair[1]);
            const document = writer.buffered();
            if (depth <= max_depth) {
                try testing.expect((try expectAgreement(document)) == .accepted);
            } else {
                try testing.expectError(error.TooDeep, parse(arena, document));
            }
        }
    }
    // Deep but unbalanced input fails on depth before it fails on syntax.
    try testing.expectError(error.TooDeep, parse(arena, &@as([1000]u8, @splat('['))));
}

test "json_tree: out of memory is reported and leaks nothing" {
    try testing.checkAllAllocationFailures(testing.allocator, struct {
        fn run(gpa: std.mem.Allocator) !void {
            var arena_state = std.heap.ArenaAllocator.init(gpa);
            defer arena_state.deinit();
            _ = try parse(arena_state.allocator(), valid_documents[valid_documents.len - 1]);
        }
    }.run, .{});
}

const fuzz_alphabet = "{}[]\",:.-+0123456789eEtrufalsn \t\r\n\\/bu\x00\x1f\x7f" ++
    "\x80\x8f\x90\x9f\xa0\xbf\xc0\xc1\xc2\xc3\xa9\xdf\xe0\xe2\xed\xee\xef\xf0\xf4\xf5\xf7\xf8\xfc\xff";

/// A random document, mostly valid: nested containers, keys from a small set (so duplicates
/// are common), scalars of every kind, random whitespace. Stops quietly when the buffer is full.
fn generate(random: std.Random, writer: *std.Io.Writer, depth: usize) std.Io.Writer.Error!void {
    const scalars = [_][]const u8{
        "null",               "true",               "false",                        "0",                       "-0.5", "-1.5e+3", "1E-2", "12345678901234567890", "\"\"", "\"a\"",
        "\"\\u00e9\\n\\\"\"", "\"\\uD83D\\uDE00\"", "\"\xf0\x9f\x98\x80\xc3\xa9\"", "\"\\/\\b\\f\\r\\t\\\\\"",
    };
    const keys = [_][]const u8{ "\"a\"", "\"b\"", "\"\\u0061\"", "\"\"", "\"key\"", "\"\xc3\xa9\"", "\"\\u00e9\"" };
    const spaces = [_][]const u8{ "", "", "", " ", "\n", "\t\r\n " };
    try writer.writeAll(spaces[random.uintLessThan(usize, spaces.len)]);
    const kind = if (depth >= 5) 0 else random.uintLessThan(u8, 3);
    if (kind == 0) {
        try writer.writeAll(scalars[random.uintLessThan(usize, scalars.len)]);
    } else {
        try writer.writeAll(if (kind == 1) "[" else "{");
        // Wide at the top (past the member buffer's growth points), narrow below.
        for (0..random.uintLessThan(usize, if (depth == 0) 20 else 4)) |i| {
            if (i > 0) try writer.writeAll(",");
            if (kind == 2) {
                try writer.writeAll(keys[random.uintLessThan(usize, keys.len)]);
                try writer.writeAll(spaces[random.uintLessThan(usize, spaces.len)]);
                try writer.writeAll(":");
            }
            try generate(random, writer, depth + 1);
        }
        try writer.writeAll(if (kind == 1) "]" else "}");
    }
    try writer.writeAll(spaces[random.uintLessThan(usize, spaces.len)]);
}

/// Replaces, inserts or deletes a random byte, or truncates; returns the new length.
fn mutate(random: std.Random, buffer: []u8, len_in: usize) usize {
    var len = len_in;
    const at = random.uintLessThan(usize, len + 1);
    const byte = fuzz_alphabet[random.uintLessThan(usize, fuzz_alphabet.len)];
    switch (random.uintLessThan(u8, 4)) {
        0 => if (at < len) {
            buffer[at] = byte;
        },
        1 => if (len < buffer.len) {
            std.mem.copyBackwards(u8, buffer[at + 1 .. len + 1], buffer[at..len]);
            buffer[at] = byte;
            len += 1;
        },
        2 => if (at < len) {
            std.mem.copyForwards(u8, buffer[at .. len - 1], buffer[at + 1 .. len]);
            len -= 1;
        },
        else => len = at,
    }
    return len;
}

test "json_tree: fuzz against std.json (fixed seed)" {
    var prng = std.Random.DefaultPrng.init(0x7031_4e5a_a11c_e5ed);
    const random = prng.random();
    const fragments = [_][]const u8{
        "{",   "}",       "[",       "]",   ",",  ":",        "\"",               "\"a\"", "\"a\":", "null", "true", "false", "0", "-1.5e+3",
        "\\u", "\\uD83D", "\\uDE00", "\\n", "\\", "\xc3\xa9", "\xf0\x9f\x98\x80", " ",     "01",     "1.",   "[]",   "{}",
    };
    var buffer: [600]u8 = undefined;
    var accepted: usize = 0;
    var refused: usize = 0;
    var duplicates: usize = 0;
    for (0..80_000) |round| {
        var len: usize = 0;
        switch (round % 4) {
            0 => { // random bytes from a JSON-ish alphabet
                len = random.uintLessThan(usize, 24);
                for (buffer[0..len]) |*byte| byte.* = fuzz_alphabet[random.uintLessThan(usize, fuzz_alphabet.len)];
            },
            1 => { // random fragments glued together
                for (0..random.uintLessThan(usize, 12)) |_| {
                    const piece = fragments[random.uintLessThan(usize, fragments.len)];
                    @memcpy(buffer[len..][0..piece.len], piece);
                    len += piece.len;
                }
            },
            2 => { // a valid document with a few mutations
                const source = valid_documents[random.uintLessThan(usize, valid_documents.len)];
                len = @min(source.len, buffer.len);
                @memcpy(buffer[0..len], source[0..len]);
                for (0..1 + random.uintLessThan(usize, 3)) |_| len = mutate(random, &buffer, len);
            },
            else => { // a generated document, mutated half of the time
                var writer: std.Io.Writer = .fixed(&buffer);
                generate(random, &writer, 0) catch {};
                len = writer.buffered().len;
                if (random.boolean()) len = mutate(random, &buffer, len);
            },
        }
        switch (try expectAgreement(buffer[0..len])) {
            .accepted => accepted += 1,
            .rejected => |err| {
                refused += 1;
                if (err == error.DuplicateField) duplicates += 1;
            },
        }
    }
    // The generators must reach every outcome.
    try testing.expect(accepted > 5000 and refused > 5000 and duplicates > 1000);
}
