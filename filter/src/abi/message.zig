//! Messages for logs and config errors, formatted at run time by one small interpolator
//! (`{s}`, `{d}`, `{{`, `}}`). std.fmt instantiates formatting code per format string; with
//! dozens of messages that cost the module kilobytes for text only a log reader sees.
const std = @import("std");

/// `format` with `args` (strings and integers, in order) into `out`, cut to fit.
pub fn print(out: []u8, comptime format: []const u8, tuple: anytype) []u8 {
    return out[0..interpolate(out, format, &argsOf(tuple))];
}

/// A tuple of strings and integers as `Arg`s, for `interpolate`.
pub inline fn argsOf(tuple: anytype) [@typeInfo(@TypeOf(tuple)).@"struct".field_names.len]Arg {
    var values: [@typeInfo(@TypeOf(tuple)).@"struct".field_names.len]Arg = undefined;
    inline for (tuple, 0..) |arg, i| values[i] = Arg.of(arg);
    return values;
}

/// An argument of a message.
pub const Arg = union(enum) {
    text: []const u8,
    signed: i64,
    unsigned: u64,

    pub fn of(value: anytype) Arg {
        return switch (@typeInfo(@TypeOf(value))) {
            .comptime_int => if (value < 0) .{ .signed = value } else .{ .unsigned = value },
            .int => |int| if (int.signedness == .signed) .{ .signed = value } else .{ .unsigned = value },
            else => .{ .text = value },
        };
    }
};

/// `format` with `{s}` / `{d}` replaced by `args` in order and `{{` / `}}` unescaped, cut to
/// fit `out`. Returns the length written.
pub fn interpolate(out: []u8, format: []const u8, args: []const Arg) usize {
    var len: usize = 0;
    var next_arg: usize = 0;
    var i: usize = 0;
    while (i < format.len) {
        var piece: []const u8 = format[i .. i + 1];
        var number_text: [24]u8 = undefined;
        if ((format[i] == '{' or format[i] == '}') and i + 1 < format.len and format[i + 1] == format[i]) {
            i += 2; // escaped brace: one literal brace
        } else if (format[i] == '{' and i + 2 < format.len and format[i + 2] == '}' and next_arg < args.len) {
            piece = switch (args[next_arg]) {
                .text => |text| text,
                .signed => |number| std.fmt.bufPrint(&number_text, "{d}", .{number}) catch "?",
                .unsigned => |number| std.fmt.bufPrint(&number_text, "{d}", .{number}) catch "?",
            };
            next_arg += 1;
            i += 3;
        } else {
            i += 1;
        }
        const n = @min(piece.len, out.len - len);
        @memcpy(out[len..][0..n], piece[0..n]);
        len += n;
    }
    return len;
}

test "message: text, numbers and escaped braces" {
    var out: [64]u8 = undefined;
    const args = [_]Arg{ Arg.of(@as([]const u8, "abc")), Arg.of(@as(usize, 42)), Arg.of(-5), Arg.of(@as(u64, std.math.maxInt(u64))) };
    try std.testing.expectEqualStrings("x abc {42} -5 18446744073709551615", out[0..interpolate(&out, "x {s} {{{d}}} {d} {d}", &args)]);
    try std.testing.expectEqualStrings("abc", out[0..interpolate(out[0..3], "abcdef", &.{})]);
}
