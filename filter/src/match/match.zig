//! Matching a request against rule items: extracting the key value (query parameter, cookie,
//! forwarded address) and picking the first matching limit key. (Counter names: meter/counter.zig.)
//! Pure functions: the HTTP context fetches headers and properties and passes them in.
const std = @import("std");
const config = @import("../config/config.zig");
const ip = @import("../config/ip.zig");

/// Longest value tested against `limit_keys`. A longer one is no credential anyone issues, so it
/// is not classified (no regexp runs over it): it is hashed whole (so two long values never
/// share a budget by accident) and counted under the item's strictest limits (`Decision.unknown`),
/// never let through unlimited.
pub const value_bytes_max = 4096;

/// Regexp steps one request may spend over all its items and keys (config/regex/regex.zig:
/// one step per NFA thread stepped or instruction reached). Sized so the worst request costs
/// about 1 ms of a worker's time (bench/regexp.py measures it); a benign key over a benign
/// value costs a few steps per byte. A value whose keys are still undecided when the steps run
/// out is held to the strictest limits of those keys (`Decision.unknown`).
pub const regexp_steps_per_request_max: u32 = 49152;

/// A request's value for one item, in the one spelling its budget is named by.
pub const Subject = struct {
    text: []const u8,
    /// per_ip: the parsed address; null when neither the value nor the peer parses.
    address: ?ip.Address = null,
};

/// Which limits a value gets: a key's, none (the item does not limit this value), or unknown
/// from keys[n] on (the value could not be classified against them; the caller applies the
/// strictest limits of keys[n..], which bound whatever the true match would have been).
pub const Decision = union(enum) {
    key: *const config.LimitKey,
    none,
    unknown: usize,
};

/// The first `limit_keys` entry of `item` that matches `subject`. `regexp_steps` is what is left
/// of the request's allowance (`regexp_steps_per_request_max`); regexps spend it.
pub fn matchKey(item: *const config.RuleItem, subject: Subject, regexp_steps: *u32) Decision {
    const value = subject.text;
    if (item.limit_type == .per_ip and subject.address == null) return .{ .unknown = 0 };
    // An empty value is a value (Higress: an empty header, parameter or consumer is held by `*`;
    // an empty cookie never gets here, see select.zig's `narrow`).
    const authorization = isAuthorizationItem(item);
    for (item.keys, 0..) |*key, index| {
        const matched = switch (key.matcher) {
            .literal => |literal| if (authorization) authorizationEql(literal, value) else std.mem.eql(u8, literal, value),
            .any => true,
            .pattern => |*pattern| if (value.len > value_bytes_max)
                return .{ .unknown = index }
            else
                pattern.isMatchWithin(value, regexp_steps) orelse return .{ .unknown = index },
            .ip_range => |range| if (subject.address) |a| range.contains(a) else false,
        };
        if (matched) return .{ .key = key };
    }
    return .none;
}

/// The strictest limit per unit and window over `keys[from..]`.
pub fn strictest(item: *const config.RuleItem, from: usize) config.Limits {
    var limits: config.Limits = .{};
    for (item.keys[from..]) |*key| {
        inline for (.{ "tokens", "requests" }) |unit| {
            for (&@field(limits, unit), @field(key.limits, unit)) |*kept, offered| {
                if (offered) |limit| kept.* = @min(kept.* orelse limit, limit);
            }
        }
    }
    return limits;
}

/// Items keyed on `authorization` or `proxy-authorization`: `Bearer x` and `bearer x` are one
/// credential (RFC 9110: the scheme is case-insensitive, the credential is not).
pub fn isAuthorizationItem(item: *const config.RuleItem) bool {
    const header_item = switch (item.limit_type) {
        .header, .per_header => true,
        else => false,
    };
    return header_item and (std.ascii.eqlIgnoreCase(item.source, "authorization") or
        std.ascii.eqlIgnoreCase(item.source, "proxy-authorization"));
}

/// `value` with its auth scheme spelled one way ("Bearer", "Basic": first letter upper, the rest
/// lower), copied into `out`; `value` itself when it has no scheme or does not fit.
pub fn canonicalAuthorization(value: []const u8, out: []u8) []const u8 {
    const space = std.mem.indexOfScalar(u8, value, ' ') orelse return value;
    if (space == 0 or value.len > out.len) return value;
    @memcpy(out[0..value.len], value);
    out[0] = std.ascii.toUpper(value[0]);
    for (out[1..space]) |*c| c.* = std.ascii.toLower(c.*);
    return out[0..value.len];
}

fn authorizationEql(key: []const u8, value: []const u8) bool {
    if (key.len != value.len) return false;
    const space = std.mem.indexOfScalar(u8, key, ' ') orelse return std.mem.eql(u8, key, value);
    return std.ascii.eqlIgnoreCase(key[0..space], value[0..space]) and std.mem.eql(u8, key[space..], value[space..]);
}

/// Value of query parameter `name` in a request path ("/v1/chat?team=red+one&x=1"), decoded
/// into `out` as Go's url.ParseQuery decodes it (Higress reads parameters with it): pairs split
/// on `&`; a pair holding `;` is skipped, as is one whose key or value does not unescape; keys
/// and values unescaped (`+` is a space, `%XX` a byte); the first pair whose key is `name`
/// wins. (Go also returns an error for such a query, and Higress then skips the item: an
/// unlimited request. tokenlimit reads the pairs that parse instead.) Null when no pair
/// names it, or when the decoded value is longer than `out` (then the raw value, longer than
/// `value_bytes_max` too, is returned instead: it is held to the strictest limits anyway).
pub fn queryParam(path: []const u8, name: []const u8, out: []u8) ?[]const u8 {
    const query_start = std.mem.indexOfScalar(u8, path, '?') orelse return null;
    var query = path[query_start + 1 ..];
    if (std.mem.indexOfScalar(u8, query, '#')) |fragment| query = query[0..fragment];
    var pairs = std.mem.splitScalar(u8, query, '&');
    while (pairs.next()) |pair| {
        if (pair.len == 0 or std.mem.indexOfScalar(u8, pair, ';') != null) continue;
        const equals = std.mem.indexOfScalar(u8, pair, '=') orelse pair.len;
        if (!unescapedEql(pair[0..equals], name)) continue;
        const raw = if (equals < pair.len) pair[equals + 1 ..] else "";
        if (!validEscapes(raw)) continue;
        if (raw.len > out.len) return raw;
        return unescape(raw, out);
    }
    return null;
}

/// Whether every `%` starts a two-hex-digit escape (Go's QueryUnescape refuses the pair else).
fn validEscapes(text: []const u8) bool {
    var i: usize = 0;
    while (i < text.len) : (i += 1) {
        if (text[i] != '%') continue;
        if (i + 2 >= text.len or !std.ascii.isHex(text[i + 1]) or !std.ascii.isHex(text[i + 2])) return false;
        i += 2;
    }
    return true;
}

/// Query unescaping of `text` (escapes already checked) into `out` (at least as long).
fn unescape(text: []const u8, out: []u8) []const u8 {
    var len: usize = 0;
    var i: usize = 0;
    while (i < text.len) : (len += 1) {
        out[len] = unescapeAt(text, &i);
    }
    return out[0..len];
}

/// The byte that the escape or character at `i.*` stands for; moves `i.*` past it.
fn unescapeAt(text: []const u8, i: *usize) u8 {
    const c = text[i.*];
    i.* += 1;
    if (c == '+') return ' ';
    if (c != '%') return c;
    i.* += 2;
    return std.fmt.parseInt(u8, text[i.* - 2 .. i.*], 16) catch unreachable;
}

/// Whether the query key `raw` unescapes to `name`; a key that does not unescape never does.
fn unescapedEql(raw: []const u8, name: []const u8) bool {
    if (!validEscapes(raw)) return false;
    var i: usize = 0;
    for (name) |c| {
        if (i == raw.len or unescapeAt(raw, &i) != c) return false;
    }
    return i == raw.len;
}

/// Value of cookie `name` in a `cookie` header ("a=1; session=xyz"), as Higress 2.0.1 reads it
/// (util.ExtractCookieValueByKey): pairs split on `;` and trimmed of white space (Go's
/// strings.TrimSpace), a pair without `=` skipped, the first pair named `name` wins, and its value
/// is everything after the first `=`, quotes included (`session="q"` is `"q"`). Higress 1.0.0
/// stops the value at the next `=` and fails on a pair `name` without `=`; 2.0.1 fixed both.
pub fn cookieValue(header: []const u8, name: []const u8) ?[]const u8 {
    var pairs = std.mem.splitScalar(u8, header, ';');
    while (pairs.next()) |raw_pair| {
        const pair = trimGoSpace(raw_pair);
        const equals = std.mem.indexOfScalar(u8, pair, '=') orelse continue;
        if (std.mem.eql(u8, pair[0..equals], name)) return pair[equals + 1 ..];
    }
    return null;
}

/// `text` without leading and trailing white space as Go's strings.TrimSpace sees it: ASCII
/// space, `\t`, `\n`, `\v`, `\f`, `\r` and the Unicode spaces (U+0085, U+00A0, U+1680,
/// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
pub fn trimGoSpace(text: []const u8) []const u8 {
    var start: usize = 0;
    var end: usize = text.len;
    while (start < end) {
        const len = spaceAt(text[start..end]) orelse break;
        start += len;
    }
    while (end > start) {
        var begin = end - 1;
        while (begin > start and end - begin < 4 and text[begin] & 0xc0 == 0x80) begin -= 1;
        const len = spaceAt(text[begin..end]) orelse break;
        if (begin + len != end) break;
        end = begin;
    }
    return text[start..end];
}

/// The byte length of the Go white-space character that `text` starts with, or null.
fn spaceAt(text: []const u8) ?usize {
    switch (text[0]) {
        ' ', '\t', '\n', 0x0b, 0x0c, '\r' => return 1,
        else => {},
    }
    const len = std.unicode.utf8ByteSequenceLength(text[0]) catch return null;
    if (len == 1 or len > text.len) return null;
    const code_point = std.unicode.utf8Decode(text[0..len]) catch return null;
    return switch (code_point) {
        0x85, 0xa0, 0x1680, 0x2000...0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000 => len,
        else => null,
    };
}

/// The first address of an `x-forwarded-for`-style header, as Higress takes it.
pub fn firstListValue(header: []const u8) []const u8 {
    const comma = std.mem.indexOfScalar(u8, header, ',') orelse header.len;
    return std.mem.trim(u8, header[0..comma], " \t");
}

/// Whether a request host matches a Higress `_match_domain_` entry as Higress's rule matcher
/// reads it: `*x` is any host ending in `x` (so `*` is every host, `*.x.com` every subdomain),
/// `x*` any host starting with `x` (`api.*`), anything else the host itself. The port is
/// ignored. Unlike Higress (which compares bytes) the comparison ignores case, as DNS does, so
/// `API.example.com` cannot step out of a rule written for `api.example.com`.
pub fn domainMatches(pattern: []const u8, authority: []const u8) bool {
    const host = hostOf(authority);
    if (pattern.len > 0 and pattern[0] == '*') return std.ascii.endsWithIgnoreCase(host, pattern[1..]);
    if (pattern.len > 0 and pattern[pattern.len - 1] == '*') {
        return std.ascii.startsWithIgnoreCase(host, pattern[0 .. pattern.len - 1]);
    }
    return std.ascii.eqlIgnoreCase(pattern, host);
}

/// A Higress `_rules_` entry's conditions (config.RouteRule's `_match_*` fields). There is no
/// consumer condition: Higress's matcher (wasm-go pkg/matcher) has none, so a
/// `_match_consumer_` in a config is an unknown field, ignored as Higress ignores it.
pub const RouteConditions = struct {
    routes: []const []const u8,
    domains: []const []const u8,
    services: []const []const u8,
    route_prefixes: []const []const u8 = &.{},
};

/// What of a request the conditions look at; null where the host has none.
pub const RequestRoute = struct {
    route: ?[]const u8 = null,
    authority: ?[]const u8 = null,
    cluster: ?[]const u8 = null,
};

/// Whether a `_rules_` entry applies, as Higress's rule matcher combines the conditions: the
/// first kind present decides, in this order: routes (AND services, when both are given);
/// else domains (services ignored); else services; else route prefixes (a route name that
/// starts with one). Empty names never match, as Higress drops them when it reads the config.
pub fn routeConditionsMatch(conditions: RouteConditions, request: RequestRoute) bool {
    if (conditions.routes.len > 0) {
        if (!anyEql(conditions.routes, request.route)) return false;
        return conditions.services.len == 0 or anyService(conditions.services, request.cluster);
    }
    if (conditions.domains.len > 0) {
        const authority = request.authority orelse return false;
        for (conditions.domains) |domain| if (domainMatches(domain, authority)) return true;
        return false;
    }
    if (conditions.services.len > 0) return anyService(conditions.services, request.cluster);
    if (conditions.route_prefixes.len > 0) {
        const route = request.route orelse return false;
        for (conditions.route_prefixes) |prefix| {
            if (prefix.len > 0 and std.mem.startsWith(u8, route, prefix)) return true;
        }
    }
    return false;
}

fn anyEql(names: []const []const u8, value: ?[]const u8) bool {
    const text = value orelse return false;
    for (names) |name| if (name.len > 0 and std.mem.eql(u8, name, text)) return true;
    return false;
}

fn anyService(services: []const []const u8, cluster: ?[]const u8) bool {
    const name = cluster orelse return false;
    for (services) |service| if (service.len > 0 and serviceMatches(service, name)) return true;
    return false;
}

fn hostOf(authority: []const u8) []const u8 {
    if (authority.len > 0 and authority[0] == '[') return ip.stripPort(authority);
    const colon = std.mem.lastIndexOfScalar(u8, authority, ':') orelse return authority;
    if (std.mem.indexOfScalar(u8, authority, ':') != colon) return authority; // bare IPv6
    return authority[0..colon];
}

/// Whether an Envoy cluster name ("outbound|80||llm.ns.svc.cluster.local") is the service a
/// Higress `_match_service_` entry names ("llm.ns.svc.cluster.local" or "...:80").
pub fn serviceMatches(pattern: []const u8, cluster_name: []const u8) bool {
    if (std.mem.eql(u8, pattern, cluster_name)) return true;
    var parts = std.mem.splitScalar(u8, cluster_name, '|');
    _ = parts.next(); // direction
    const port = parts.next() orelse return false;
    _ = parts.next(); // subset
    const fqdn = parts.next() orelse return false;
    if (std.mem.lastIndexOfScalar(u8, pattern, ':')) |colon| {
        return std.mem.eql(u8, pattern[0..colon], fqdn) and std.mem.eql(u8, pattern[colon + 1 ..], port);
    }
    return std.mem.eql(u8, pattern, fqdn);
}

// ---- tests -----------------------------------------------------------------------------------

test "match: route, domain and service conditions combine as Higress combines them" {
    const cluster = "outbound|80||llm.ns.svc.cluster.local";
    const request: RequestRoute = .{ .route = "chat", .authority = "b.example", .cluster = cluster };
    // Routes decide; domains beside them are ignored; services beside them must match too.
    try std.testing.expect(routeConditionsMatch(.{ .routes = &.{"chat"}, .domains = &.{"a.example"}, .services = &.{} }, request));
    try std.testing.expect(!routeConditionsMatch(.{ .routes = &.{"chat"}, .domains = &.{}, .services = &.{"other"} }, request));
    try std.testing.expect(routeConditionsMatch(.{ .routes = &.{"chat"}, .domains = &.{}, .services = &.{"llm.ns.svc.cluster.local"} }, request));
    // Domains decide over services.
    try std.testing.expect(!routeConditionsMatch(.{ .routes = &.{}, .domains = &.{"a.example"}, .services = &.{"llm.ns.svc.cluster.local"} }, request));
    try std.testing.expect(routeConditionsMatch(.{ .routes = &.{}, .domains = &.{}, .services = &.{"llm.ns.svc.cluster.local:80"} }, request));
    // Route prefixes, read only when no route, domain or service is given.
    try std.testing.expect(routeConditionsMatch(.{ .routes = &.{}, .domains = &.{}, .services = &.{}, .route_prefixes = &.{ "", "ch" } }, request));
    try std.testing.expect(!routeConditionsMatch(.{ .routes = &.{}, .domains = &.{}, .services = &.{}, .route_prefixes = &.{"chats"} }, request));
    try std.testing.expect(!routeConditionsMatch(.{ .routes = &.{"x"}, .domains = &.{}, .services = &.{}, .route_prefixes = &.{"ch"} }, request));
    try std.testing.expect(!routeConditionsMatch(.{ .routes = &.{""}, .domains = &.{}, .services = &.{} }, .{ .route = "" }));
}

test "match: query parameters and cookies" {
    var out: [64]u8 = undefined;
    try std.testing.expectEqualStrings("red", queryParam("/v1/chat?team=red&x=1", "team", &out).?);
    try std.testing.expectEqualStrings("1", queryParam("/v1/chat?team=red&x=1#frag", "x", &out).?);
    try std.testing.expectEqualStrings("", queryParam("/v1?flag", "flag", &out).?);
    try std.testing.expectEqual(@as(?[]const u8, null), queryParam("/v1/chat", "team", &out));
    try std.testing.expectEqual(@as(?[]const u8, null), queryParam("/v1?teams=red", "team", &out));
    // As Go's url.ParseQuery: decoded, `;` pairs and bad escapes skipped, first value wins.
    try std.testing.expectEqualStrings("team one", queryParam("/v?k=team+one", "k", &out).?);
    try std.testing.expectEqualStrings("a b/", queryParam("/v?%6B=a%20b%2f&k=2", "k", &out).?);
    try std.testing.expectEqualStrings("3", queryParam("/v?k=1;x&k=%zz&k=%4&k=3", "k", &out).?);
    try std.testing.expectEqual(@as(?[]const u8, null), queryParam("/v?k=1;2", "k", &out));
    try std.testing.expectEqual(@as(?[]const u8, null), queryParam("/v?k%=1", "k", &out));
    // Too long to decode into `out`: the raw value, which the caller holds to the strictest limits.
    var small: [2]u8 = undefined;
    try std.testing.expectEqualStrings("a+b", queryParam("/v?k=a+b", "k", &small).?);
    try std.testing.expectEqualStrings("xyz", cookieValue("a=1; session=xyz", "session").?);
    try std.testing.expectEqualStrings("\"q\"", cookieValue("session=\"q\"", "session").?);
    try std.testing.expectEqualStrings("a=b", cookieValue("session; \x0bsession=a=b\u{a0} ;", "session").?);
    try std.testing.expectEqualStrings("", cookieValue("session=; session=x", "session").?);
    try std.testing.expectEqual(@as(?[]const u8, null), cookieValue("sessionx=1", "session"));
    try std.testing.expectEqualStrings("x\u{3000}y", trimGoSpace("\u{2028} x\u{3000}y\u{85}\r"));
    try std.testing.expectEqualStrings("\xe2\x80", trimGoSpace("\xe2\x80"));
    try std.testing.expectEqualStrings("1.2.3.4", firstListValue(" 1.2.3.4 , 5.6.7.8"));
}

test "match: domains and services as Higress names them" {
    try std.testing.expect(domainMatches("*.example.com", "api.example.com:8080"));
    try std.testing.expect(!domainMatches("*.example.com", "example.com"));
    try std.testing.expect(domainMatches("API.example.org", "api.example.org"));
    try std.testing.expect(domainMatches("*", "anything:1"));
    try std.testing.expect(domainMatches("api.*", "api.example.com"));
    try std.testing.expect(!domainMatches("api.*", "www.api.example.com"));
    try std.testing.expect(domainMatches("*example.com", "example.com"));
    try std.testing.expect(domainMatches("[::1]", "[::1]:80") or domainMatches("::1", "[::1]:80"));
    try std.testing.expect(serviceMatches("llm.ns.svc.cluster.local", "outbound|80||llm.ns.svc.cluster.local"));
    try std.testing.expect(serviceMatches("llm.ns.svc.cluster.local:80", "outbound|80||llm.ns.svc.cluster.local"));
    try std.testing.expect(!serviceMatches("llm.ns.svc.cluster.local:81", "outbound|80||llm.ns.svc.cluster.local"));
}

test "match: first matching key wins, per kind" {
    const document =
        \\{"rule_name":"r","rule_items":[
        \\ {"limit_by_per_header":"x-api-key","limit_keys":[{"key":"regexp:^vip-","token_per_minute":1000},{"key":"*","token_per_minute":10}]},
        \\ {"limit_by_per_ip":"from-remote-addr","limit_keys":[{"key":"10.0.0.0/8","token_per_minute":5},{"key":"::1","token_per_minute":6}]},
        \\ {"limit_by_header":"x-team","limit_keys":[{"key":"red","token_per_minute":7}]}]}
    ;
    var diagnostic: config.Diagnostic = .{};
    const parsed = try config.parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    const items = parsed.default_rule.?.items;
    var steps = regexp_steps_per_request_max;
    try std.testing.expectEqualStrings("regexp:^vip-", matchKey(&items[0], .{ .text = "vip-123" }, &steps).key.text);
    try std.testing.expectEqualStrings("*", matchKey(&items[0], .{ .text = "basic-1" }, &steps).key.text);
    try std.testing.expectEqualStrings("*", matchKey(&items[0], .{ .text = "" }, &steps).key.text); // as Higress
    try std.testing.expectEqual(Decision.none, matchKey(&items[2], .{ .text = "" }, &steps));
    const a = try ip.parseAddress("10.9.8.7");
    try std.testing.expectEqualStrings("10.0.0.0/8", matchKey(&items[1], .{ .text = "10.9.8.7", .address = a }, &steps).key.text);
    const b = try ip.parseAddress("::1");
    try std.testing.expectEqualStrings("::1", matchKey(&items[1], .{ .text = "::1", .address = b }, &steps).key.text);
    try std.testing.expectEqual(Decision{ .unknown = 0 }, matchKey(&items[1], .{ .text = "not-an-ip" }, &steps));
    try std.testing.expectEqual(Decision.none, matchKey(&items[2], .{ .text = "blue" }, &steps));
    // Too long to run a regexp over: undecided from the regexp on, strictest of the rest.
    const long: [value_bytes_max + 1]u8 = @splat('v');
    try std.testing.expectEqual(Decision{ .unknown = 0 }, matchKey(&items[0], .{ .text = &long }, &steps));
    try std.testing.expectEqual(@as(?u64, 10), strictest(&items[0], 0).get(.tokens, .minute));
    try std.testing.expectEqual(@as(?u64, null), strictest(&items[0], 0).get(.requests, .minute));
    // Out of regexp steps: undecided from the regexp on, as well.
    steps = 3;
    try std.testing.expectEqual(Decision{ .unknown = 0 }, matchKey(&items[0], .{ .text = "basic-000000" }, &steps));
}

test "match: the auth scheme is one spelling, the credential is kept" {
    var buffer: [64]u8 = undefined;
    try std.testing.expectEqualStrings("Bearer sk-A", canonicalAuthorization("bEARER sk-A", &buffer));
    try std.testing.expectEqualStrings("Basic eA==", canonicalAuthorization("BASIC eA==", &buffer));
    try std.testing.expectEqualStrings("sk-no-scheme", canonicalAuthorization("sk-no-scheme", &buffer));
    try std.testing.expect(authorizationEql("Bearer k", "bearer k"));
    try std.testing.expect(!authorizationEql("Bearer k", "Bearer K"));
}
