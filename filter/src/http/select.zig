//! Route selection and counter collection: the one place that reads the request's identity
//! (route, authority, cluster, keyed headers, address) from the host. Matching itself is pure
//! (match/match.zig).
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const counter = @import("../meter/counter.zig");
const host = @import("../abi/host.zig");
const ip = @import("../config/ip.zig");
const match = @import("../match/match.zig");
const store = @import("../store/store.zig");
const higress_compat = @import("../store/higress_compat.zig");

const allocator = host.allocator;

/// The rule for this request: the first `_rules_` entry that matches, else the default.
pub fn rule(current: *const config.Config) ?*const config.Rule {
    if (current.route_rules.len > 0) {
        var names: RouteNames = .{};
        defer names.deinit();
        const identity = names.fetch();
        for (current.route_rules) |*route_rule| {
            const conditions: match.RouteConditions = .{
                .routes = route_rule.routes,
                .domains = route_rule.domains,
                .services = route_rule.services,
                .route_prefixes = route_rule.route_prefixes,
            };
            if (match.routeConditionsMatch(conditions, identity)) {
                return if (route_rule.rule) |*matched| matched else null;
            }
        }
    }
    return if (current.default_rule) |*default| default else null;
}

/// The request's route, authority and cluster, read once for all `_rules_` entries.
const RouteNames = struct {
    route: ?host.HostBytes = null,
    authority: ?host.HostBytes = null,
    cluster: ?host.HostBytes = null,

    fn fetch(self: *RouteNames) match.RequestRoute {
        self.route = host.getProperty("route_name") catch null;
        self.authority = host.getHeader(.request_headers, ":authority") catch null;
        self.cluster = host.getProperty("cluster_name") catch null;
        return .{
            .route = if (self.route) |bytes| bytes.bytes else null,
            .authority = if (self.authority) |bytes| bytes.bytes else null,
            .cluster = if (self.cluster) |bytes| bytes.bytes else null,
        };
    }

    fn deinit(self: *RouteNames) void {
        inline for (.{ &self.route, &self.authority, &self.cluster }) |field| {
            if (field.*) |*bytes| bytes.deinit();
        }
    }
};

/// Adds one counter per (matching item, unit, window) of `selected`, merging items that name
/// the same one.
pub fn collectCounters(counters: *std.ArrayList(store.Counter), selected: *const config.Rule) !void {
    var regexp_steps = match.regexp_steps_per_request_max;
    for (selected.items) |*item| {
        if (item.limit_type == .global) {
            try addItemCounters(counters, selected, item, "", "", &item.keys[0].limits);
            continue;
        }
        var raw = try requestValue(item);
        defer if (raw) |*bytes| bytes.deinit();
        var scratch: Scratch = undefined;
        const subject = try subjectOf(item, if (raw) |bytes| bytes.bytes else null, &scratch) orelse continue;
        const limits = switch (match.matchKey(item, subject, &regexp_steps)) {
            .key => |key| key.limits,
            .none => continue,
            .unknown => |from| match.strictest(item, from),
        };
        // Higress keys on the header as sent; tokenlimit canonicalizes Authorization schemes.
        const as_higress_reads = if (match.isAuthorizationItem(item)) raw.?.bytes else subject.text;
        try addItemCounters(counters, selected, item, subject.text, as_higress_reads, &limits);
    }
}

fn addItemCounters(
    counters: *std.ArrayList(store.Counter),
    selected: *const config.Rule,
    item: *const config.RuleItem,
    value: []const u8,
    higress_value: []const u8,
    limits: *const config.Limits,
) !void {
    var hashed: counter.HashedValue = undefined;
    const caller = counter.identity(item.limit_type, value, &hashed);
    for ([_]config.Unit{ .requests, .tokens, .cost }) |unit| { // issue 12: cost
        for (std.meta.tags(budget.Window)) |window| {
            const limit = limits.get(unit, window) orelse continue;
            try addCounter(counters, .{
                .key = try counter.counterKey(selected.name, item, unit, window, caller, null),
                .item = item, // issue 12: http/model.zig applies the item's model conditions
                .budget = .{ .algorithm = selected.algorithm, .window = window, .limit = limit },
                .unit = unit,
                .higress_key = if (selected.compat == .none) .{} else higress_compat.key(selected.compat, selected.configured_name, item, window, higress_value),
            });
        }
    }
}

/// Room for a canonical spelling: an address, an auth value with its scheme rewritten, or a
/// decoded query parameter.
const Scratch = struct {
    address: [ip.text_bytes_max]u8,
    value: [match.value_bytes_max]u8,
};

/// The value an item keys on, canonical (match.Subject), or null when the request has none and
/// the item therefore does not apply. A per-IP item always has one: an address that is absent
/// or does not parse (`unknown`, `garbage`) falls back to the peer's own address, and when even
/// that fails to one shared "unparsable" caller held to the item's strictest limits.
fn subjectOf(item: *const config.RuleItem, raw: ?[]const u8, scratch: *Scratch) !?match.Subject {
    if (item.limit_type == .per_ip) {
        const entry: ?[]const u8 = if (raw) |text| switch (item.ip_source) {
            .remote_address => text,
            .header => match.firstListValue(text),
        } else null;
        const address = if (entry) |text| ip.parseEntry(text) catch try peerAddress() else try peerAddress();
        const parsed = address orelse return .{ .text = "unparsable" };
        return .{ .text = ip.format(parsed, &scratch.address), .address = parsed };
    }
    const value = narrow(item, raw orelse return null, &scratch.value) orelse return null;
    if (match.isAuthorizationItem(item)) {
        return .{ .text = match.canonicalAuthorization(value, &scratch.value) };
    }
    return .{ .text = value };
}

fn peerAddress() host.Error!?ip.Address {
    var peer = (try host.getProperty("source\x00address")) orelse return null;
    defer peer.deinit();
    return ip.parseEntry(peer.bytes) catch null;
}

fn addCounter(counters: *std.ArrayList(store.Counter), added: store.Counter) !void {
    for (counters.items) |*existing| {
        if (std.mem.eql(u8, existing.key.slice(), added.key.slice())) {
            existing.budget.limit = @min(existing.budget.limit, added.budget.limit); // strictest
            if (existing.item != added.item) existing.item = null; // issue 12: kept whatever the model
            return;
        }
    }
    if (counters.items.len == counter.counters_max) return error.TooManyCounters;
    try counters.append(allocator, added);
}

/// The raw request value an item keys on (header, `:path` for params, `cookie`, address).
fn requestValue(item: *const config.RuleItem) host.Error!?host.HostBytes {
    return switch (item.limit_type) {
        .global => null,
        .header, .per_header => host.getHeader(.request_headers, item.source),
        .param, .per_param => host.getHeader(.request_headers, ":path"),
        .cookie, .per_cookie => host.getHeader(.request_headers, "cookie"),
        .consumer, .per_consumer => host.getHeader(.request_headers, "x-mse-consumer"),
        .model, .per_model => null, // issue 12: counted by http/model.zig, once the model is known
        .per_ip => switch (item.ip_source) {
            .remote_address => host.getProperty("source\x00address"),
            .header => |name| host.getHeader(.request_headers, name),
        },
    };
}

/// Narrows a raw value to what the item matches: the parameter, the cookie.
fn narrow(item: *const config.RuleItem, raw: []const u8, out: []u8) ?[]const u8 {
    return switch (item.limit_type) {
        .param, .per_param => match.queryParam(raw, item.source, out),
        // An empty cookie counts as absent (Higress skips the item); other empty values count.
        .cookie, .per_cookie => if (match.cookieValue(raw, item.source)) |value| (if (value.len > 0) value else null) else null,
        else => raw,
    };
}
