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
    return interpolateAll(out, format, args).len;
}

/// As `print`, or null when the text does not fit `out` (where std.fmt.bufPrint's NoSpaceLeft
/// was the answer).
pub fn printAll(out: []u8, comptime format: []const u8, tuple: anytype) ?[]u8 {
    const written = interpolateAll(out, format, &argsOf(tuple));
    return if (written.cut) null else out[0..written.len];
}

const Written = struct { len: usize, cut: bool };

fn interpolateAll(out: []u8, format: []const u8, args: []const Arg) Written {
    var len: usize = 0;
    var cut = false;
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
                .signed => |number| signed: {
                    const digits = decimal(number_text[1..], @abs(number));
                    if (number >= 0) break :signed digits;
                    number_text[0] = '-';
                    break :signed number_text[0 .. digits.len + 1];
                },
                .unsigned => |number| decimal(&number_text, number),
            };
            next_arg += 1;
            i += 3;
        } else {
            i += 1;
        }
        const n = @min(piece.len, out.len - len);
        if (n < piece.len) cut = true;
        @memcpy(out[len..][0..n], piece[0..n]);
        len += n;
    }
    return .{ .len = len, .cut = cut };
}

/// `value` in decimal at the start of `out` (20 bytes hold any u64). One small loop instead of
/// std.fmt's integer formatting instantiated per type and format (issue 17, module size).
pub fn decimal(out: []u8, value: u64) []u8 {
    var digits: [20]u8 = undefined;
    var at: usize = digits.len;
    var rest = value;
    while (true) {
        at -= 1;
        digits[at] = @intCast('0' + rest % 10);
        rest /= 10;
        if (rest == 0) break;
    }
    const n = @min(out.len, digits.len - at);
    @memcpy(out[0..n], digits[at..][0..n]);
    return out[0..n];
}

/// `value` in lower-case hexadecimal without leading zeros (Go's `%x`), at the start of `out`.
pub fn hex(out: []u8, value: u64) []u8 {
    var digits: [16]u8 = undefined;
    var at: usize = digits.len;
    var rest = value;
    while (true) {
        at -= 1;
        digits[at] = "0123456789abcdef"[@intCast(rest & 0xf)];
        rest >>= 4;
        if (rest == 0) break;
    }
    const n = @min(out.len, digits.len - at);
    @memcpy(out[0..n], digits[at..][0..n]);
    return out[0..n];
}

/// `parts` end to end at the start of `out`, or null when they do not fit. For names built on
/// every request (counter names, metric names): no format string to read at run time.
pub fn join(out: []u8, parts: []const []const u8) ?[]u8 {
    var len: usize = 0;
    for (parts) |part| {
        if (part.len > out.len - len) return null;
        @memcpy(out[len..][0..part.len], part);
        len += part.len;
    }
    return out[0..len];
}

test "message: text, numbers and escaped braces" {
    var out: [64]u8 = undefined;
    const args = [_]Arg{ Arg.of(@as([]const u8, "abc")), Arg.of(@as(usize, 42)), Arg.of(-5), Arg.of(@as(u64, std.math.maxInt(u64))) };
    try std.testing.expectEqualStrings("x abc {42} -5 18446744073709551615", out[0..interpolate(&out, "x {s} {{{d}}} {d} {d}", &args)]);
    try std.testing.expectEqualStrings("abc", out[0..interpolate(out[0..3], "abcdef", &.{})]);
}

test "message: decimal, hex, and printAll refuses what does not fit" {
    var out: [24]u8 = undefined;
    try std.testing.expectEqualStrings("0", decimal(&out, 0));
    try std.testing.expectEqualStrings("18446744073709551615", decimal(&out, std.math.maxInt(u64)));
    try std.testing.expectEqualStrings("0", hex(&out, 0));
    try std.testing.expectEqualStrings("ffff", hex(&out, 0xffff));
    try std.testing.expectEqualStrings("db8", hex(&out, 0xdb8));
    var args_out: [64]u8 = undefined;
    const extremes = [_]Arg{ Arg.of(@as(i64, std.math.minInt(i64))), Arg.of(@as(i64, 0)) };
    try std.testing.expectEqualStrings("-9223372036854775808 0", args_out[0..interpolate(&args_out, "{d} {d}", &extremes)]);
    try std.testing.expectEqualStrings("a7b", printAll(&out, "a{d}b", .{7}).?);
    try std.testing.expect(printAll(out[0..2], "a{d}b", .{7}) == null);
}

test "message: join puts the parts end to end, or refuses what does not fit" {
    var out: [8]u8 = undefined;
    try std.testing.expectEqualStrings("ab:cd", join(&out, &.{ "ab", ":", "", "cd" }).?);
    try std.testing.expectEqualStrings("", join(&out, &.{}).?);
    try std.testing.expectEqualStrings("12345678", join(&out, &.{ "1234", "5678" }).?);
    try std.testing.expect(join(&out, &.{ "1234", "56789" }) == null);
}
