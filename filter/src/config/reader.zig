//! Reads typed values out of a config's JSON tree and keeps the field path it is at
//! (`rule_items[0].limit_keys[1].key`), so that every refusal names the field and the reason.
//! parse.zig decides what the fields mean; this file only knows JSON types and bounds.
const std = @import("std");
const json_tree = @import("json_tree.zig");
const message = @import("../abi/message.zig");

const Value = json_tree.Value;
const ObjectMap = json_tree.Object;

/// Where a config error is and what it is: `field` is the path in the config's own names.
pub const Diagnostic = struct {
    field_buffer: [256]u8 = undefined,
    field_len: usize = 0,
    reason_buffer: [256]u8 = undefined,
    reason_len: usize = 0,

    pub fn field(self: *const Diagnostic) []const u8 {
        return self.field_buffer[0..self.field_len];
    }

    pub fn reason(self: *const Diagnostic) []const u8 {
        return self.reason_buffer[0..self.reason_len];
    }
};

pub const ParseError = error{ InvalidConfig, OutOfMemory };

pub const Reader = struct {
    diagnostic: *Diagnostic,
    /// Where the paths of ignored fields are kept (the config's arena); null: unknown fields
    /// are not recorded (they are still ignored).
    arena: ?std.mem.Allocator = null,
    /// Paths of the fields Higress ignores and so does the filter: unknown names, and the
    /// `limit_by_*` fields Higress's precedence overrides. The root context logs them once.
    ignored: std.ArrayList([]const u8) = .empty,
    path_buffer: [256]u8 = undefined,
    path_len: usize = 0,

    comptime {
        // `fail` copies the whole path into the diagnostic.
        std.debug.assert(@FieldType(Diagnostic, "field_buffer") == @FieldType(Reader, "path_buffer"));
    }

    // ---- field path ----------------------------------------------------------------------

    pub fn enter(self: *Reader, name: []const u8) usize {
        const saved = self.path_len;
        const dot: []const u8 = if (self.path_len > 0) "." else "";
        self.append(dot);
        self.append(name);
        return saved;
    }

    pub fn enterIndex(self: *Reader, index: usize) usize {
        const saved = self.path_len;
        var buffer: [24]u8 = undefined;
        self.append(message.print(&buffer, "[{d}]", .{index}));
        return saved;
    }

    pub fn leave(self: *Reader, saved: usize) void {
        self.path_len = saved;
    }

    fn append(self: *Reader, text: []const u8) void {
        const room = self.path_buffer.len - self.path_len;
        const n = @min(room, text.len);
        @memcpy(self.path_buffer[self.path_len..][0..n], text[0..n]);
        self.path_len += n;
    }

    /// Records the error at the current path (message.zig formats it without per-message code).
    /// Inline and tiny: a call site only lists its arguments; the work is `failWith`, once in
    /// the module (a hundred call sites each had their own copy: issue 17, module size).
    pub inline fn fail(self: *Reader, comptime format: []const u8, args: anytype) ParseError {
        return self.failWith(format, &message.argsOf(args));
    }

    pub inline fn failField(self: *Reader, name: []const u8, comptime format: []const u8, args: anytype) ParseError {
        return self.failFieldWith(name, format, &message.argsOf(args));
    }

    noinline fn failWith(self: *Reader, format: []const u8, args: []const message.Arg) ParseError {
        const d = self.diagnostic;
        @memcpy(d.field_buffer[0..self.path_len], self.path_buffer[0..self.path_len]);
        d.field_len = self.path_len;
        d.reason_len = message.interpolate(&d.reason_buffer, format, args);
        return error.InvalidConfig;
    }

    noinline fn failFieldWith(self: *Reader, name: []const u8, format: []const u8, args: []const message.Arg) ParseError {
        _ = self.enter(name);
        return self.failWith(format, args);
    }

    /// The current path, for callers that restore it after catching a failure.
    pub fn path(self: *const Reader) []const u8 {
        return self.path_buffer[0..self.path_len];
    }

    /// Records `name` (under the current path) as a field the config ignores.
    pub fn ignore(self: *Reader, name: []const u8) ParseError!void {
        const arena = self.arena orelse return;
        const saved = self.enter(name[0..@min(name.len, 64)]);
        defer self.leave(saved);
        try self.ignored.append(arena, try arena.dupe(u8, self.path()));
    }

    // ---- value helpers -------------------------------------------------------------------

    pub fn typeName(value: Value) []const u8 {
        return switch (value) {
            .null => "null",
            .bool => "a boolean",
            .number_string => "a number",
            .string => "a string",
            .array => "an array",
            .object => "an object",
        };
    }

    pub fn object(self: *Reader, value: Value) ParseError!ObjectMap {
        return switch (value) {
            .object => |map| map,
            else => self.fail("must be an object, got {s}", .{typeName(value)}),
        };
    }

    pub fn array(self: *Reader, value: Value, min: usize, max: usize) ParseError![]const Value {
        const items = switch (value) {
            .array => |list| list.items,
            else => return self.fail("must be an array, got {s}", .{typeName(value)}),
        };
        if (items.len < min) return self.fail("must have at least {d} entr{s}", .{ min, if (min == 1) "y" else "ies" });
        if (items.len > max) return self.fail("must have at most {d} entries, got {d}", .{ max, items.len });
        return items;
    }

    /// A scalar read as text, as Higress (gjson's `String()`) reads it: a string as written, an
    /// integer as its digits (`key: 102234` in YAML), a boolean as `true`/`false`. A fractional
    /// or exponent number is refused: Go would respell it (`1.50` → `1.5`), so the text the
    /// user wrote and the text matched would differ.
    pub fn scalarString(self: *Reader, value: Value, max_len: usize) ParseError![]const u8 {
        const text = switch (value) {
            .string => |s| s,
            .number_string => |digits| if (isInteger(digits)) digits else return self.fail("must be a string; a number other than an integer must be written in quotes, got {s}", .{digits[0..@min(digits.len, 32)]}),
            .bool => |b| if (b) "true" else "false",
            else => return self.fail("must be a string, got {s}", .{typeName(value)}),
        };
        if (text.len > max_len) return self.fail("must be at most {d} bytes, got {d}", .{ max_len, text.len });
        return text;
    }

    /// `-?[0-9]+`: how JSON writes an integer (json_tree.zig checked the rest of the grammar).
    pub fn isInteger(text: []const u8) bool {
        const digits = if (std.mem.startsWith(u8, text, "-")) text[1..] else text;
        if (digits.len == 0) return false;
        for (digits) |c| if (c < '0' or c > '9') return false;
        return true;
    }

    pub fn string(self: *Reader, value: Value, max_len: usize) ParseError![]const u8 {
        const text = switch (value) {
            .string => |s| s,
            else => return self.fail("must be a string, got {s}", .{typeName(value)}),
        };
        if (text.len > max_len) return self.fail("must be at most {d} bytes, got {d}", .{ max_len, text.len });
        return text;
    }

    /// An integer, also written as a decimal string (`"100"`), which Higress reads as the number.
    pub fn integer(self: *Reader, value: Value, min: i64, max: i64) ParseError!i64 {
        const number: i64 = switch (value) {
            .string => |text| if (isInteger(text)) std.fmt.parseInt(i64, text, 10) catch
                return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, text[0..@min(text.len, 32)] }) else return self.fail("must be an integer from {d} to {d}, got a string", .{ min, max }),
            .number_string => |text| std.fmt.parseInt(i64, text, 10) catch
                return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, text[0..@min(text.len, 32)] }),
            else => return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, typeName(value) }),
        };
        if (number < min or number > max) return self.fail("must be an integer from {d} to {d}, got {d}", .{ min, max, number });
        return number;
    }

    /// An integer written as a JSON number only: the project's own objects (`cache`,
    /// `when_exhausted`) are not Higress's, so they take no decimal strings (`"7"`), as the
    /// control plane's strict model refuses them.
    pub fn jsonInteger(self: *Reader, value: Value, min: i64, max: i64) ParseError!i64 {
        if (value != .number_string) return self.fail("must be an integer from {d} to {d}, got {s}", .{ min, max, typeName(value) });
        return self.integer(value, min, max);
    }

    /// Higress ignores fields it does not know (its README once documented one it never read),
    /// so the filter does too; each is recorded for the one warning line the root logs.
    pub fn ignoreUnknown(self: *Reader, map: ObjectMap, known: []const []const u8) ParseError!void {
        return self.ignoreUnknownIn(map, &.{known});
    }

    /// As `ignoreUnknown`, the known names given in several lists (a list made at run time,
    /// not per caller at compile time: issue 17, module size).
    pub fn ignoreUnknownIn(self: *Reader, map: ObjectMap, lists: []const []const []const u8) ParseError!void {
        var it = map.iterator();
        next_field: while (it.next()) |entry| {
            for (lists) |known| for (known) |name| {
                if (std.mem.eql(u8, entry.key_ptr.*, name)) continue :next_field;
            };
            try self.ignore(entry.key_ptr.*);
        }
    }

    /// The project's own objects (`prices` entries, `calendar`) are not Higress's: a field
    /// there that the filter does not know is a typo that would silently change a budget.
    pub fn refuseUnknown(self: *Reader, map: ObjectMap, known: []const []const u8) ParseError!void {
        var it = map.iterator();
        next_field: while (it.next()) |entry| {
            for (known) |name| {
                if (std.mem.eql(u8, entry.key_ptr.*, name)) continue :next_field;
            }
            return self.failField(entry.key_ptr.*, "is not a known field", .{});
        }
    }

    pub fn enumField(self: *Reader, comptime E: type, name: []const u8, value: Value) ParseError!E {
        const saved = self.enter(name);
        defer self.leave(saved);
        const text = try self.string(value, 32);
        inline for (comptime std.meta.fieldNames(E)) |option| {
            if (std.mem.eql(u8, text, option)) return @field(E, option);
        }
        const options = comptime blk: {
            var joined: []const u8 = "";
            for (std.meta.fieldNames(E), 0..) |option, i| joined = joined ++ (if (i > 0) ", " else "") ++ option;
            break :blk joined;
        };
        return self.fail("must be one of " ++ options ++ ", got \"{s}\"", .{text});
    }

    pub fn boolField(self: *Reader, name: []const u8, value: Value) ParseError!bool {
        return switch (value) {
            .bool => |b| b,
            else => self.failField(name, "must be true or false, got {s}", .{typeName(value)}),
        };
    }
};
