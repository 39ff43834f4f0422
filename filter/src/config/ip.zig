//! IP addresses and CIDR ranges for `limit_by_per_ip`. Addresses are kept as 16 bytes; IPv4 is
//! stored IPv4-mapped (::ffff:a.b.c.d) so one comparison serves both families.
const std = @import("std");
const message = @import("../abi/message.zig");

pub const Address = struct {
    bytes: [16]u8,
    is_ipv4: bool,
};

pub const Range = struct {
    base: Address,
    /// Prefix length in bits over the 16-byte form (IPv4 /24 is stored as 96 + 24).
    prefix_bits: u8,

    pub fn contains(self: Range, address: Address) bool {
        // A /0 of either family holds every address, as in Higress's radix tree, where IPv4
        // and IPv6 prefixes share one root: `0.0.0.0/0` also matches IPv6 clients.
        if (self.prefix_bits == 0 or (self.base.is_ipv4 and self.prefix_bits == 96)) return true;
        if (self.base.is_ipv4 != address.is_ipv4) return false;
        const full_bytes = self.prefix_bits / 8;
        if (!std.mem.eql(u8, self.base.bytes[0..full_bytes], address.bytes[0..full_bytes])) return false;
        const rest_bits: u3 = @intCast(self.prefix_bits % 8);
        if (rest_bits == 0) return true;
        const mask: u8 = @as(u8, 0xff) << @intCast(8 - @as(u4, rest_bits));
        return (self.base.bytes[full_bytes] & mask) == (address.bytes[full_bytes] & mask);
    }
};

pub const ParseError = error{InvalidAddress};

pub fn parseAddress(text: []const u8) ParseError!Address {
    if (std.mem.indexOfScalar(u8, text, ':') != null) return parseIpv6(text);
    var bytes: [16]u8 = @splat(0);
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    try parseIpv4Into(text, bytes[12..16]);
    return .{ .bytes = bytes, .is_ipv4 = true };
}

/// An address ("10.1.2.3" = /32) or a CIDR ("10.0.0.0/8", "2001:db8::/32").
pub fn parseRange(text: []const u8) ParseError!Range {
    const slash = std.mem.indexOfScalar(u8, text, '/') orelse {
        const address = try parseAddress(text);
        return .{ .base = address, .prefix_bits = 128 };
    };
    const address = try parseAddress(text[0..slash]);
    const prefix_text = text[slash + 1 ..];
    if (prefix_text.len == 0 or prefix_text.len > 3) return error.InvalidAddress;
    const prefix = std.fmt.parseInt(u8, prefix_text, 10) catch return error.InvalidAddress;
    const family_bits: u8 = if (address.is_ipv4) 32 else 128;
    if (prefix > family_bits) return error.InvalidAddress;
    return .{ .base = address, .prefix_bits = prefix + (128 - family_bits) };
}

fn parseIpv4Into(text: []const u8, out: *[4]u8) ParseError!void {
    var parts = std.mem.splitScalar(u8, text, '.');
    var index: usize = 0;
    while (parts.next()) |part| : (index += 1) {
        if (index == 4 or part.len == 0 or part.len > 3) return error.InvalidAddress;
        for (part) |c| if (!std.ascii.isDigit(c)) return error.InvalidAddress;
        if (part.len > 1 and part[0] == '0') return error.InvalidAddress; // no octal ambiguity
        out[index] = std.fmt.parseInt(u8, part, 10) catch return error.InvalidAddress;
    }
    if (index != 4) return error.InvalidAddress;
}

fn parseIpv6(text: []const u8) ParseError!Address {
    if (text.len < 2 or text.len > 45) return error.InvalidAddress;
    var groups: [8]u16 = undefined;
    var head_count: usize = 0;
    var tail: [8]u16 = undefined;
    var tail_count: usize = 0;
    var seen_gap = false;

    var rest = text;
    if (std.mem.startsWith(u8, rest, "::")) {
        seen_gap = true;
        rest = rest[2..];
    } else if (rest[0] == ':') return error.InvalidAddress;

    var embedded_ipv4: ?[4]u8 = null;
    while (rest.len > 0) {
        const end = std.mem.indexOfScalar(u8, rest, ':') orelse rest.len;
        const part = rest[0..end];
        if (end == rest.len and std.mem.indexOfScalar(u8, part, '.') != null) {
            var v4: [4]u8 = undefined;
            try parseIpv4Into(part, &v4);
            embedded_ipv4 = v4;
            rest = rest[end..];
            break;
        }
        if (part.len == 0 or part.len > 4) return error.InvalidAddress;
        const value = std.fmt.parseInt(u16, part, 16) catch return error.InvalidAddress;
        if (seen_gap) {
            if (tail_count == 8) return error.InvalidAddress;
            tail[tail_count] = value;
            tail_count += 1;
        } else {
            if (head_count == 8) return error.InvalidAddress;
            groups[head_count] = value;
            head_count += 1;
        }
        rest = rest[end..];
        if (rest.len == 0) break;
        // rest starts with ':'
        if (std.mem.startsWith(u8, rest, "::")) {
            if (seen_gap) return error.InvalidAddress;
            seen_gap = true;
            rest = rest[2..];
        } else {
            rest = rest[1..];
            if (rest.len == 0) return error.InvalidAddress; // trailing single ':'
        }
    }

    const ipv4_groups: usize = if (embedded_ipv4 != null) 2 else 0;
    const total = head_count + tail_count + ipv4_groups;
    if (seen_gap) {
        if (total > 7) return error.InvalidAddress;
    } else if (total != 8) return error.InvalidAddress;

    var bytes: [16]u8 = @splat(0);
    for (groups[0..head_count], 0..) |group, i| std.mem.writeInt(u16, bytes[i * 2 ..][0..2], group, .big);
    const tail_start = 8 - ipv4_groups - tail_count;
    for (tail[0..tail_count], 0..) |group, i| std.mem.writeInt(u16, bytes[(tail_start + i) * 2 ..][0..2], group, .big);
    if (embedded_ipv4) |v4| @memcpy(bytes[12..16], &v4);
    // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the same peer as a.b.c.d.
    const mapped_prefix = [_]u8{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    const is_ipv4 = std.mem.eql(u8, bytes[0..12], &mapped_prefix);
    return .{ .bytes = bytes, .is_ipv4 = is_ipv4 };
}

/// Longest canonical text `format` writes ("ffff:ffff:...:ffff" is 39 bytes).
pub const text_bytes_max = 39;

/// One address as a peer or an `X-Forwarded-For` entry spells it: bare ("1.2.3.4", "::1"),
/// with a port ("1.2.3.4:5678", "[::1]:80") or bracketed ("[::1]"). Higress strips the same
/// ports; a port that is not a number makes the entry unparsable rather than guessed at.
pub fn parseEntry(entry: []const u8) ParseError!Address {
    const text = std.mem.trim(u8, entry, " \t");
    if (text.len > 0 and text[0] == '[') {
        const close = std.mem.indexOfScalar(u8, text, ']') orelse return error.InvalidAddress;
        try checkPort(text[close + 1 ..]);
        return parseIpv6(text[1..close]);
    }
    const first_colon = std.mem.indexOfScalar(u8, text, ':') orelse return parseAddress(text);
    if (std.mem.lastIndexOfScalar(u8, text, ':') != first_colon) return parseAddress(text); // IPv6
    try checkPort(text[first_colon..]);
    const address = try parseAddress(text[0..first_colon]);
    if (!address.is_ipv4) return error.InvalidAddress;
    return address;
}

/// "" or ":<1-5 digits>".
fn checkPort(text: []const u8) ParseError!void {
    if (text.len == 0) return;
    if (text[0] != ':' or text.len < 2 or text.len > 6) return error.InvalidAddress;
    for (text[1..]) |c| if (!std.ascii.isDigit(c)) return error.InvalidAddress;
}

/// The one spelling of `address` (as Go's net.IP.String writes it): IPv4 and IPv4-mapped IPv6
/// as dotted quads, IPv6 in lower case with the longest run of two or more zero groups
/// compressed (RFC 5952). So every spelling of one peer names one budget.
pub fn format(address: Address, out: *[text_bytes_max]u8) []const u8 {
    if (address.is_ipv4) {
        const b = address.bytes[12..16];
        return message.print(out, "{d}.{d}.{d}.{d}", .{ b[0], b[1], b[2], b[3] });
    }
    var groups: [8]u16 = undefined;
    for (&groups, 0..) |*group, i| group.* = std.mem.readInt(u16, address.bytes[i * 2 ..][0..2], .big);
    // The longest run of zero groups (the first on a tie), compressed only when 2 or longer.
    var run_start: usize = 8;
    var run_len: usize = 0;
    var i: usize = 0;
    while (i < 8) {
        if (groups[i] != 0) {
            i += 1;
            continue;
        }
        const start = i;
        while (i < 8 and groups[i] == 0) i += 1;
        if (i - start > run_len) {
            run_start = start;
            run_len = i - start;
        }
    }
    if (run_len < 2) run_start = 8;
    var len: usize = 0;
    i = 0;
    while (i < 8) {
        if (i == run_start) {
            out[len..][0..2].* = "::".*;
            len += 2;
            i += run_len;
            continue;
        }
        const written = message.hex(out[len..], groups[i]);
        len += written.len;
        i += 1;
        if (i < 8 and i != run_start) {
            out[len] = ':';
            len += 1;
        }
    }
    return out[0..len];
}

/// The address part of an Envoy `source.address` ("1.2.3.4:5678", "[::1]:80", "::1").
pub fn stripPort(text: []const u8) []const u8 {
    if (text.len > 0 and text[0] == '[') {
        const close = std.mem.indexOfScalar(u8, text, ']') orelse return text;
        return text[1..close];
    }
    const first_colon = std.mem.indexOfScalar(u8, text, ':') orelse return text;
    if (std.mem.lastIndexOfScalar(u8, text, ':') != first_colon) return text; // bare IPv6
    return text[0..first_colon];
}

test "ip: IPv4 CIDR containment" {
    const range = try parseRange("10.0.0.0/8");
    try std.testing.expect(range.contains(try parseAddress("10.200.3.4")));
    try std.testing.expect(!range.contains(try parseAddress("11.0.0.1")));
    try std.testing.expect(!range.contains(try parseAddress("::1")));
    const odd = try parseRange("192.168.1.128/25");
    try std.testing.expect(odd.contains(try parseAddress("192.168.1.200")));
    try std.testing.expect(!odd.contains(try parseAddress("192.168.1.127")));
    try std.testing.expect((try parseRange("0.0.0.0/0")).contains(try parseAddress("8.8.8.8")));
    try std.testing.expect((try parseRange("0.0.0.0/0")).contains(try parseAddress("2001:db8::1")));
    try std.testing.expect((try parseRange("::/0")).contains(try parseAddress("8.8.8.8")));
}

test "ip: IPv6 forms and containment" {
    const range = try parseRange("2001:db8::/32");
    try std.testing.expect(range.contains(try parseAddress("2001:db8:1::5")));
    try std.testing.expect(!range.contains(try parseAddress("2001:db9::1")));
    try std.testing.expect((try parseRange("::1")).contains(try parseAddress("0:0:0:0:0:0:0:1")));
    try std.testing.expect((try parseRange("1.2.3.4")).contains(try parseAddress("::ffff:1.2.3.4")));
}

test "ip: refuses malformed input" {
    const bad = [_][]const u8{ "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4/33", "::/129", "1::2::3", ":1", "1:", "localhost", "1.2.3.4/", "12345::", "1:2:3:4:5:6:7:8:9", "a.b.c.d" };
    for (bad) |text| try std.testing.expectError(error.InvalidAddress, parseRange(text));
}

test "ip: strips ports from peer addresses" {
    try std.testing.expectEqualStrings("1.2.3.4", stripPort("1.2.3.4:5678"));
    try std.testing.expectEqualStrings("::1", stripPort("[::1]:80"));
    try std.testing.expectEqualStrings("::1", stripPort("::1"));
    try std.testing.expectEqualStrings("1.2.3.4", stripPort("1.2.3.4"));
}

test "ip: entries with ports and brackets parse; others do not" {
    var text: [text_bytes_max]u8 = undefined;
    const cases = [_][2][]const u8{
        .{ "1.2.3.4:5678", "1.2.3.4" },            .{ " 10.0.0.1 ", "10.0.0.1" },
        .{ "[2001:db8::1]:443", "2001:db8::1" },   .{ "[::1]", "::1" },
        .{ "::ffff:10.1.1.1", "10.1.1.1" },        .{ "2001:DB8:0:0:0:0:0:0001", "2001:db8::1" },
        .{ "0:0:0:0:0:0:0:0", "::" },              .{ "1:0:0:2:0:0:0:3", "1:0:0:2::3" },
        .{ "1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0" }, .{ "1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7" },
        .{ "fe80::", "fe80::" },
    };
    for (cases) |case| try std.testing.expectEqualStrings(case[1], format(try parseEntry(case[0]), &text));
    const bad = [_][]const u8{ "unknown", "garbage", "[v6]", "[::1", "1.2.3.4:port", "1.2.3.4:", "", "[::1]x", "1.2.3.4:1234567" };
    for (bad) |entry| try std.testing.expectError(error.InvalidAddress, parseEntry(entry));
}
