//! parse.zig's tests: Higress's configs read with Higress's meaning, errors naming the field.
const std = @import("std");
const config = @import("config.zig");
const parse_zig = @import("parse.zig");

const parse = parse_zig.parse;
const counterRuleName = parse_zig.counterRuleName;
const Diagnostic = config.Diagnostic;
const LimitType = config.LimitType;

fn expectInvalid(document: []const u8, field: []const u8, reason_part: []const u8) !void {
    var diagnostic: Diagnostic = .{};
    try std.testing.expectError(error.InvalidConfig, parse(std.testing.allocator, document, &diagnostic));
    try std.testing.expectEqualStrings(field, diagnostic.field());
    if (std.mem.indexOf(u8, diagnostic.reason(), reason_part) == null) {
        std.debug.print("reason was: {s}\n", .{diagnostic.reason()});
        return error.TestUnexpectedResult;
    }
}

test "config: Higress example parses into items, keys and windows" {
    const document =
        \\{"rule_name":"default_rule","rule_items":[
        \\  {"limit_by_per_param":"apikey","limit_keys":[{"key":"regexp:^a.*","token_per_minute":100},{"key":"*","token_per_day":5}]},
        \\  {"limit_by_header":"X-Api-Key","limit_keys":[{"key":"k1","token_per_minute":10,"token_per_hour":50}]}],
        \\ "redis":{"service_name":"redis.static"}}
    ;
    var diagnostic: Diagnostic = .{};
    const parsed = try parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    const rule = parsed.default_rule.?;
    try std.testing.expectEqualStrings("default_rule", rule.name);
    try std.testing.expectEqual(@as(u32, 429), rule.rejected_code);
    try std.testing.expectEqual(@as(usize, 2), rule.items.len);
    try std.testing.expectEqual(LimitType.per_param, rule.items[0].limit_type);
    try std.testing.expect(rule.items[0].keys[0].matcher == .pattern);
    try std.testing.expect(rule.items[0].keys[1].matcher == .any);
    try std.testing.expectEqual(@as(?u64, 5), rule.items[0].keys[1].limits.get(.tokens, .day));
    try std.testing.expectEqualStrings("x-api-key", rule.items[1].source);
    try std.testing.expectEqual(@as(?u64, 50), rule.items[1].keys[0].limits.get(.tokens, .hour));
    try std.testing.expectEqual(@as(u16, 80), rule.redis.?.service_port);
}

test "config: errors name the field and the reason" {
    try expectInvalid("{\"rule_name\":\"r\",\"rule_items\":[{\"limit_by_header\":\"a\",\"limit_keys\":[{\"key\":\"k\",\"token_per_minute\":-5}]}]}", "rule_items[0].limit_keys[0].token_per_minute", "got -5");
    try expectInvalid("{\"rule_name\":\"r\"}", "", "needs global_threshold, rule_items or both");
    try expectInvalid("{\"rule_name\":\"r\",\"rule_itmes\":[]}", "", "needs global_threshold, rule_items or both");
    try expectInvalid("{\"rule_name\":\"r\",\"rule_items\":[{\"limit_by_per_header\":\"x\",\"limit_keys\":[{\"key\":\"regexp:(a\",\"token_per_minute\":1}]}]}", "rule_items[0].limit_keys[0].key", "invalid regexp");
    try expectInvalid("{not json", "", "not valid JSON");
    try expectInvalid("{\"_rules_\":[{\"rule_name\":\"x\",\"global_threshold\":{\"token_per_minute\":1}}]}", "_rules_[0]", "_match_route_");
}

test "config: a failed parse leaks nothing" {
    // std.testing.allocator reports leaks; exercise every early-return path once.
    const documents = [_][]const u8{ "[]", "{}", "{\"rule_name\":[5],\"global_threshold\":{\"token_per_minute\":1}}", "{\"rule_name\":\"r\",\"global_threshold\":{}}" };
    for (documents) |document| {
        var diagnostic: Diagnostic = .{};
        try std.testing.expectError(error.InvalidConfig, parse(std.testing.allocator, document, &diagnostic));
    }
}

test "config: Higress configs load with Higress's meaning" {
    const document =
        \\{"rule_name":"专用:1","show_limit_quota_header":true,
        \\ "global_threshold":{"token_per_minute":"100"},
        \\ "rule_items":[{"limit_by_header":"x-ca-key","limit_by_per_param":"apikey","limit_keys":[{"key":"*","token_per_hour":10}]},
        \\   {"limit_by_header":"x-ca-key","limit_keys":[{"key":102234,"token_per_hour":10,"query_per_minute":1}]},
        \\   {"limit_by_consumer":null,"limit_keys":[{"key":true,"token_per_day":5}]}],
        \\ "redis":{"service_name":"redis.static","service_port":0,"timeout":0}}
    ;
    var diagnostic: Diagnostic = .{};
    const parsed = try parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    const rule = parsed.default_rule.?;
    try std.testing.expectEqualStrings("专用:1", rule.configured_name);
    try std.testing.expectEqual(@as(usize, 65), rule.name.len); // hashed for counter names
    try std.testing.expectEqual(LimitType.global, rule.items[0].limit_type);
    try std.testing.expectEqual(@as(?u64, 100), rule.items[0].keys[0].limits.get(.tokens, .minute));
    try std.testing.expectEqual(LimitType.per_param, rule.items[1].limit_type); // Higress's precedence
    try std.testing.expectEqualStrings("102234", rule.items[2].keys[0].text);
    try std.testing.expectEqualStrings("true", rule.items[3].keys[0].text);
    try std.testing.expectEqual(@as(u16, 80), rule.redis.?.service_port);
    try std.testing.expectEqual(@as(u32, 1000), rule.redis.?.timeout_ms);
    const ignored = [_][]const u8{ "show_limit_quota_header", "rule_items[0].limit_by_header", "rule_items[1].limit_keys[0].query_per_minute" };
    try std.testing.expectEqual(ignored.len, parsed.ignored_fields.len);
    for (ignored, parsed.ignored_fields) |expected, got| try std.testing.expectEqualStrings(expected, got);
}

test "config: a rule name valid before keeps its counter name" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    try std.testing.expectEqualStrings("default_rule", try counterRuleName(arena.allocator(), "default_rule"));
    // Pinned: tokenlimit.model.counter_rule_name (Python) computes the same name.
    const hashed = try counterRuleName(arena.allocator(), "a:b");
    try std.testing.expectEqualStrings("=6783a31eabf68ccc0660f935c0826282bdd2241f3a80a9f2d10d59aea9ebb5d8", hashed);
    try std.testing.expectEqual(config.counter_rule_name_bytes_max, hashed.len);
    try std.testing.expect(!std.mem.eql(u8, hashed, try counterRuleName(arena.allocator(), "a:c")));
}

test "config: a broken top-level rule beside _rules_ is dropped, alone it is refused" {
    const document =
        \\{"rule_name":"top","global_threshold":{"token_per_minute":0},
        \\ "_rules_":[{"_match_route_prefix_":["default/"],"_match_route_":[""],"rule_name":"chat","global_threshold":{"token_per_minute":1}}]}
    ;
    var diagnostic: Diagnostic = .{};
    const parsed = try parse(std.testing.allocator, document, &diagnostic);
    defer config.destroy(std.testing.allocator, parsed);
    try std.testing.expect(parsed.default_rule == null);
    try std.testing.expect(std.mem.startsWith(u8, parsed.ignored_default.?, "global_threshold.token_per_minute: "));
    try std.testing.expectEqual(@as(usize, 0), parsed.route_rules[0].routes.len);
    try std.testing.expectEqualStrings("default/", parsed.route_rules[0].route_prefixes[0]);
    try expectInvalid("{\"rule_name\":\"top\",\"global_threshold\":{\"token_per_minute\":0},\"_rules_\":[]}", "global_threshold.token_per_minute", "got 0");
}

test "config: counter names that cannot fit are refused at the field" {
    const name: [64]u8 = @splat('r');
    const header: [128]u8 = @splat('h');
    try expectInvalid("{\"rule_name\":\"" ++ name ++ "\",\"rule_items\":[{\"limit_by_per_header\":\"" ++ header ++ "\",\"limit_keys\":[{\"key\":\"*\",\"request_per_day\":1}]}]}", "rule_items[0].limit_by_per_header", "longer than the 256 bytes");
}
