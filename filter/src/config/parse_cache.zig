//! `cache: {ttl_seconds, scope, max_entry_bytes}` (issue 15, docs/cache.md): a rule's response
//! cache. Not a Higress field, so unknown members are refused (a typo would silently turn the
//! cache off), and integers must be JSON numbers. The control plane makes the same checks
//! (tokenlimit.model.cache); contract/config.json's "cache: ..." vectors pin the two equal.
//! (Its field parsers are `noinline`: parse.zig says why.)
const std = @import("std");
const config = @import("config.zig");
const json_tree = @import("json_tree.zig");
const reader_zig = @import("reader.zig");
const bounds = @import("limits");

const Reader = reader_zig.Reader;
const ParseError = reader_zig.ParseError;
const Value = json_tree.Value;

/// The rule's cache, or null when `ttl_seconds` is 0 or absent (no caching).
pub noinline fn field(reader: *Reader, value: Value) ParseError!?config.Cache {
    const saved = reader.enter("cache");
    defer reader.leave(saved);
    const map = try reader.object(value);
    try reader.refuseUnknown(map, &.{ "ttl_seconds", "scope", "max_entry_bytes" });
    var cache: config.Cache = .{ .ttl_seconds = 0 };
    if (map.get("ttl_seconds")) |ttl| cache.ttl_seconds = @intCast(try number(reader, "ttl_seconds", ttl, 0, bounds.cache_ttl_seconds_max));
    if (map.get("scope")) |scope| cache.scope = try reader.enumField(config.Cache.Scope, "scope", scope);
    if (map.get("max_entry_bytes")) |max| cache.max_entry_bytes = @intCast(try number(reader, "max_entry_bytes", max, 1, bounds.cache_entry_bytes_max));
    return if (cache.ttl_seconds == 0) null else cache;
}

fn number(reader: *Reader, name: []const u8, value: Value, min: i64, max: i64) ParseError!i64 {
    const saved = reader.enter(name);
    defer reader.leave(saved);
    return reader.jsonInteger(value, min, max);
}

test "cache config: fields, defaults, and ttl 0 as no cache" {
    const parse = @import("parse.zig");
    var diagnostic: reader_zig.Diagnostic = .{};
    const document =
        \\{"rule_name":"r","global_threshold":{"token_per_minute":1},"cache":{"ttl_seconds":60,"scope":"rule"}}
    ;
    const parsed = try parse.parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    const cache = parsed.default_rule.?.cache.?;
    try std.testing.expectEqual(@as(u32, 60), cache.ttl_seconds);
    try std.testing.expectEqual(config.Cache.Scope.rule, cache.scope);
    try std.testing.expectEqual(@as(u32, bounds.cache_entry_bytes_default), cache.max_entry_bytes);
    const off = try parse.parse(std.testing.allocator,
        \\{"rule_name":"r","global_threshold":{"token_per_minute":1},"cache":{"ttl_seconds":0}}
    , &diagnostic);
    defer config.destroy(std.testing.allocator, off);
    try std.testing.expect(off.default_rule.?.cache == null);
    try std.testing.expectError(error.InvalidConfig, parse.parse(std.testing.allocator,
        \\{"rule_name":"r","global_threshold":{"token_per_minute":1},"cache":{"ttl":5}}
    , &diagnostic));
    try std.testing.expectEqualStrings("cache.ttl", diagnostic.field());
}
