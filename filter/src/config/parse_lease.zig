//! `lease: {fraction}` (issue 17, store/lease.zig, docs/redis.md "Leases"): each gateway
//! worker takes `fraction` of a budget from Redis at a time and admits against it locally. Not
//! a Higress field, so unknown members are refused. Leases need what makes a slice safe: the
//! Redis store on tokenlimit's own keys (not `compat`) and fixed windows (a sliding window or
//! a token bucket frees room continuously, so a slice taken now would not stay inside the
//! budget). The control plane makes the same checks (tokenlimit.model.lease); contract/
//! config.json's "lease: ..." vectors pin the two equal.
//! (Its field parsers are `noinline`: parse.zig says why.)
const std = @import("std");
const config = @import("config.zig");
const json_tree = @import("json_tree.zig");
const parse_items = @import("parse_items.zig");
const reader_zig = @import("reader.zig");
const bounds = @import("limits");

const Reader = reader_zig.Reader;
const ParseError = reader_zig.ParseError;
const Value = json_tree.Value;

/// The rule-level field this file reads.
pub const rule_fields = [_][]const u8{"lease"};

/// The rule's lease, read after the rest of `rule` (its store and algorithm decide whether a
/// lease is allowed).
pub noinline fn field(reader: *Reader, items: parse_items.Items, rule: *const config.Rule, value: Value) ParseError!config.Lease {
    const saved = reader.enter("lease");
    defer reader.leave(saved);
    const map = try reader.object(value);
    try reader.refuseUnknown(map, &.{"fraction"});
    const fraction = map.get("fraction") orelse return reader.failField("fraction", "required: the share of a budget a worker takes at a time, e.g. 0.05", .{});
    const inner = reader.enter("fraction");
    const milli = try items.milli(fraction);
    if (milli == 0 or milli > bounds.lease_fraction_milli_max) {
        return reader.fail("must be a number greater than 0 and at most {d}.{d:0>3}, with at most 3 decimals", .{ bounds.lease_fraction_milli_max / 1000, bounds.lease_fraction_milli_max % 1000 });
    }
    reader.leave(inner);
    if (rule.redis == null) return reader.fail("needs a redis store (leases are slices of a budget kept in Redis)", .{});
    if (rule.compat != .none) return reader.fail("is not available under compat (Higress's keys and script have no leases)", .{});
    if (rule.algorithm != .fixed) return reader.fail("needs algorithm fixed, got {s} (a sliding window or a token bucket frees room continuously, so a slice would not stay inside the budget)", .{@tagName(rule.algorithm)});
    return .{ .fraction_milli = milli };
}

test "lease config: a fraction for a fixed-window Redis rule; refused elsewhere" {
    const parse = @import("parse.zig");
    const testing = std.testing;
    var diagnostic: reader_zig.Diagnostic = .{};
    const redis = "\"redis\":{\"service_name\":\"redis.dns\"}";
    const parsed = try parse.parse(testing.allocator, "{\"rule_name\":\"r\",\"global_threshold\":{\"token_per_minute\":1}," ++ redis ++ ",\"lease\":{\"fraction\":0.05}}", &diagnostic);
    defer config.destroy(testing.allocator, parsed);
    try testing.expectEqual(@as(u32, 50), parsed.default_rule.?.lease.?.fraction_milli);
    const refused = [_]struct { []const u8, []const u8 }{
        .{ "{\"rule_name\":\"r\",\"global_threshold\":{\"token_per_minute\":1},\"lease\":{\"fraction\":0.05}}", "lease" },
        .{ "{\"rule_name\":\"r\",\"global_threshold\":{\"token_per_minute\":1}," ++ redis ++ ",\"algorithm\":\"sliding\",\"lease\":{\"fraction\":0.05}}", "lease" },
        .{ "{\"rule_name\":\"r\",\"global_threshold\":{\"token_per_minute\":1}," ++ redis ++ ",\"lease\":{\"fraction\":0}}", "lease.fraction" },
        .{ "{\"rule_name\":\"r\",\"global_threshold\":{\"token_per_minute\":1}," ++ redis ++ ",\"lease\":{\"share\":0.1}}", "lease.share" },
    };
    for (refused) |case| {
        try testing.expectError(error.InvalidConfig, parse.parse(testing.allocator, case[0], &diagnostic));
        try testing.expectEqualStrings(case[1], diagnostic.field());
    }
}
