//! The response cache's key (issue 15): SHA-256 of the normalised request -- method, host,
//! path (with its query), the request's model, the scope's identity, and the body as canonical
//! JSON, so that member order and insignificant whitespace do not make two equal questions
//! differ.
//!
//! Every body member counts (messages, tools, temperature, max_tokens, stream, user, ...): a
//! field that does not change the answer only costs hits, while leaving out one that does
//! would serve a wrong answer. Strings and numbers are kept as written (`1.0` and `1` differ,
//! as do `"\u0041"` and `"A"`): a miss, never a wrong hit.
//!
//! The canonicaliser reads hostile bytes: it is bounded in depth (`depth_max`), its output is
//! never longer than its input, and its scratch memory is O(input) (each object's members are
//! sorted through one copy of that object). Anything that is not JSON is an error, and the
//! request is not cached. key_fuzz.zig fuzzes it.
const std = @import("std");
const sha256 = @import("../match/sha256.zig");

/// Nesting deeper than this is refused (the request is not cached): recursion stays shallow.
pub const depth_max = 64;

pub const Error = error{ NotJson, TooDeep, OutOfMemory };

pub const Digest = [32]u8;

/// What besides the body names the request, and whose answers it may be served.
pub const Parts = struct {
    method: []const u8,
    authority: []const u8,
    path: []const u8,
    model: []const u8,
    /// `scope: rule`: the rule's name; `scope: key`: the caller's identity (http/cache.zig).
    scope: []const u8,
};

/// The cache key of a request whose body is `body` ("" for none).
pub fn digest(allocator: std.mem.Allocator, parts: Parts, body: []const u8) Error!Digest {
    var material: std.ArrayList(u8) = .empty;
    defer material.deinit(allocator);
    const fields = [_][]const u8{ "tokenlimit-cache-v1", parts.method, parts.authority, parts.path, parts.model, parts.scope };
    var size: usize = body.len;
    for (fields) |field| size += field.len + 9;
    try material.ensureTotalCapacity(allocator, size);
    // Each field is length-prefixed: no choice of values can make two field lists run together.
    for (fields) |field| {
        var length: [8]u8 = undefined;
        std.mem.writeInt(u64, &length, field.len, .little);
        material.appendSliceAssumeCapacity(&length);
        material.appendSliceAssumeCapacity(field);
    }
    if (body.len > 0) try canonicalize(allocator, body, &material);
    return sha256.hash(material.items);
}

/// Appends the canonical form of the JSON document `input` to `out`: no whitespace outside
/// strings, object members sorted by key (stably: duplicate keys keep their order).
pub fn canonicalize(allocator: std.mem.Allocator, input: []const u8, out: *std.ArrayList(u8)) Error!void {
    var canonicalizer: Canonicalizer = .{ .allocator = allocator, .input = input, .out = out };
    try out.ensureUnusedCapacity(allocator, input.len);
    try canonicalizer.value(0);
    canonicalizer.skipSpace();
    if (canonicalizer.at != input.len) return error.NotJson;
}

const Canonicalizer = struct {
    allocator: std.mem.Allocator,
    input: []const u8,
    at: usize = 0,
    /// Capacity for input.len more bytes is reserved up front: the output never outgrows it.
    out: *std.ArrayList(u8),

    const Member = struct { start: usize, key_end: usize, end: usize };

    fn skipSpace(self: *Canonicalizer) void {
        while (self.at < self.input.len) : (self.at += 1) {
            switch (self.input[self.at]) {
                ' ', '\t', '\r', '\n' => {},
                else => return,
            }
        }
    }

    fn peek(self: *Canonicalizer) Error!u8 {
        self.skipSpace();
        if (self.at >= self.input.len) return error.NotJson;
        return self.input[self.at];
    }

    fn emit(self: *Canonicalizer, bytes: []const u8) void {
        self.out.appendSliceAssumeCapacity(bytes);
    }

    fn value(self: *Canonicalizer, depth: usize) Error!void {
        if (depth >= depth_max) return error.TooDeep;
        switch (try self.peek()) {
            '{' => try self.object(depth),
            '[' => try self.array(depth),
            '"' => try self.string(),
            't' => try self.literal("true"),
            'f' => try self.literal("false"),
            'n' => try self.literal("null"),
            '-', '0'...'9' => try self.number(),
            else => return error.NotJson,
        }
    }

    fn literal(self: *Canonicalizer, word: []const u8) Error!void {
        if (!std.mem.startsWith(u8, self.input[self.at..], word)) return error.NotJson;
        self.emit(word);
        self.at += word.len;
    }

    fn number(self: *Canonicalizer) Error!void {
        const start = self.at;
        var digits = false;
        while (self.at < self.input.len) : (self.at += 1) {
            switch (self.input[self.at]) {
                '0'...'9' => digits = true,
                '-', '+', '.', 'e', 'E' => {},
                else => break,
            }
        }
        if (!digits) return error.NotJson;
        self.emit(self.input[start..self.at]);
    }

    /// Copied as written, escapes included; control characters are not JSON.
    fn string(self: *Canonicalizer) Error!void {
        const start = self.at;
        self.at += 1; // the opening quote
        while (self.at < self.input.len) : (self.at += 1) {
            switch (self.input[self.at]) {
                '"' => {
                    self.at += 1;
                    self.emit(self.input[start..self.at]);
                    return;
                },
                '\\' => self.at += 1, // the escaped byte cannot close the string
                0...0x1f => return error.NotJson,
                else => {},
            }
        }
        return error.NotJson;
    }

    fn array(self: *Canonicalizer, depth: usize) Error!void {
        self.at += 1;
        self.emit("[");
        if (try self.peek() == ']') {
            self.at += 1;
            self.emit("]");
            return;
        }
        while (true) {
            try self.value(depth + 1);
            switch (try self.peek()) {
                ',' => self.emit(","),
                ']' => {
                    self.at += 1;
                    self.emit("]");
                    return;
                },
                else => return error.NotJson,
            }
            self.at += 1;
        }
    }

    fn object(self: *Canonicalizer, depth: usize) Error!void {
        self.at += 1;
        self.emit("{");
        const base = self.out.items.len;
        var members: std.ArrayList(Member) = .empty;
        defer members.deinit(self.allocator);
        if (try self.peek() == '}') {
            self.at += 1;
            self.emit("}");
            return;
        }
        while (true) {
            if (try self.peek() != '"') return error.NotJson;
            const start = self.out.items.len;
            try self.string();
            const key_end = self.out.items.len;
            if (try self.peek() != ':') return error.NotJson;
            self.at += 1;
            try self.value(depth + 1);
            try members.append(self.allocator, .{ .start = start, .key_end = key_end, .end = self.out.items.len });
            const next = try self.peek();
            self.at += 1;
            if (next == '}') break;
            if (next != ',') return error.NotJson;
        }
        // Members were written back to back (no separators); write them again, sorted.
        const written = try self.allocator.dupe(u8, self.out.items[base..]);
        defer self.allocator.free(written);
        const Order = struct {
            /// Equal keys keep their order by where they were written (`start` grows with the
            /// document), so the unstable heap sort gives the stable order. Heap sort: O(n log n)
            /// on a hostile body, and a fraction of std.sort.block's code (issue 17, 8 KB).
            fn less(bytes: []const u8, a: Member, b: Member) bool {
                return switch (std.mem.order(u8, bytes[a.start..a.key_end], bytes[b.start..b.key_end])) {
                    .lt => true,
                    .gt => false,
                    .eq => a.start < b.start,
                };
            }
        };
        for (members.items) |*member| {
            member.start -= base;
            member.key_end -= base;
            member.end -= base;
        }
        std.sort.heap(Member, members.items, written, Order.less);
        self.out.shrinkRetainingCapacity(base);
        for (members.items, 0..) |member, index| {
            if (index > 0) self.emit(",");
            self.emit(written[member.start..member.key_end]);
            self.emit(":");
            self.emit(written[member.key_end..member.end]);
        }
        self.emit("}");
    }
};

fn expectCanonical(expected: []const u8, input: []const u8) !void {
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(std.testing.allocator);
    try canonicalize(std.testing.allocator, input, &out);
    try std.testing.expectEqualStrings(expected, out.items);
}

test "cache key: member order and whitespace do not matter" {
    try expectCanonical(
        \\{"max_tokens":5,"messages":[{"content":"hi","role":"user"}],"model":"m"}
    ,
        \\ { "model" : "m", "messages": [ {"role":"user",
        \\   "content":"hi"} ], "max_tokens": 5 }
    );
    try expectCanonical("[1,true,null,\"a b\",{}]", " [ 1 , true,null, \"a b\" , { } ] ");
    // Duplicate keys keep their order (stable), so the document's meaning is kept too.
    try expectCanonical("{\"a\":1,\"a\":2,\"b\":0}", "{\"b\":0,\"a\":1,\"a\":2}");
}

test "cache key: what is not JSON is refused" {
    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(std.testing.allocator);
    for ([_][]const u8{ "", "{", "{\"a\"}", "[1,]", "tru", "\"x", "{} {}", "{\"a\":1,}", "\"\x01\"", "-" }) |bad| {
        out.clearRetainingCapacity();
        try std.testing.expectError(error.NotJson, canonicalize(std.testing.allocator, bad, &out));
    }
    const deep: [depth_max + 1]u8 = @splat('[');
    try std.testing.expectError(error.TooDeep, canonicalize(std.testing.allocator, &deep, &out));
}

test "cache key: every part and the scope change the key; equal questions share it" {
    const a = std.testing.allocator;
    const parts: Parts = .{ .method = "POST", .authority = "h", .path = "/v1/chat/completions", .model = "m", .scope = "alice" };
    const base = try digest(a, parts, "{\"b\":1,\"a\":2}");
    try std.testing.expectEqual(base, try digest(a, parts, "{ \"a\" : 2 , \"b\" : 1 }"));
    var other = parts;
    other.scope = "bob";
    try std.testing.expect(!std.mem.eql(u8, &base, &try digest(a, other, "{\"b\":1,\"a\":2}")));
    other = parts;
    other.path = "/v1/completions";
    try std.testing.expect(!std.mem.eql(u8, &base, &try digest(a, other, "{\"b\":1,\"a\":2}")));
    // Fields are length-prefixed: moving a byte from one field to the next changes the key.
    const left = try digest(a, .{ .method = "POST", .authority = "ab", .path = "c", .model = "", .scope = "" }, "");
    const right = try digest(a, .{ .method = "POST", .authority = "a", .path = "bc", .model = "", .scope = "" }, "");
    try std.testing.expect(!std.mem.eql(u8, &left, &right));
}
