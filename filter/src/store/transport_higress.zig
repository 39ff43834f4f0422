//! Higress: its own Redis ABI (proxy_redis_init / proxy_redis_call), replies in buffer type 9.
//! Only the Higress build references this file (a stock Envoy refuses a module that imports
//! proxy_redis_*).
const std = @import("std");
const config = @import("../config/config.zig");
const host = @import("../abi/host.zig");
const script = @import("script.zig");
/// Budget replies and cached answers (redis.zig `reply_bytes_max`); longer replies are refused.
const reply_bytes_max = @max(script.reply_bytes_max, @import("../cache/store_redis.zig").reply_bytes_max);
const store = @import("store.zig");

pub fn start() void {}

/// Registers the rule's Redis upstream (proxy_redis_init) when a config is loaded.
pub fn configure(rule: *const config.Rule) void {
    const redis = rule.redis orelse return;
    var name_buffer: [300]u8 = undefined;
    const name = targetName(redis, &name_buffer) catch "";
    host.higress.redisInit(name, redis.username, redis.password, redis.timeout_ms) catch |err| {
        host.logf(.err, "rule {s}: proxy_redis_init({s}) failed: {s}; check redis.service_name / service_port (Higress resolves `name.dns`, `name.static` on port 80, or `svc.ns.svc.cluster.local`)", .{ rule.name, name, @errorName(err) });
    };
}

/// Higress names a Redis service `outbound|<port>||<fqdn>`, plus `?db=N` for a database.
pub fn targetName(redis: config.Redis, out: []u8) ![]u8 {
    if (redis.database > 0) return std.fmt.bufPrint(out, "outbound|{d}||{s}?db={d}", .{ redis.service_port, redis.service_name, redis.database });
    return std.fmt.bufPrint(out, "outbound|{d}||{s}", .{ redis.service_port, redis.service_name });
}

/// Sends one RESP command; the reply arrives in proxy_on_redis_call_response. (Higress applies
/// the timeout given to proxy_redis_init.)
pub fn send(target: []const u8, timeout_ms: u32, command: []const u8) !u32 {
    _ = timeout_ms;
    return host.higress.redisCall(target, command);
}

/// A finished call: the RESP body to parse, or (body null) why there is none.
pub const Reply = struct {
    body: ?host.HostBytes,
    failure: store.Failure,
};

/// Reads the reply being delivered (proxy_on_redis_call_response); `status` 0 is success.
pub fn readReply(status: u32, response_size: u32) Reply {
    if (status == 0 and response_size > reply_bytes_max) return .{ .body = null, .failure = .bad_reply };
    const body = if (status == 0 and response_size > 0) host.getBuffer(.redis_call_response, 0, response_size) catch null else null;
    return .{ .body = body, .failure = .redis_unreachable };
}

test "higress target names carry port and database" {
    var buffer: [300]u8 = undefined;
    try std.testing.expectEqualStrings("outbound|6379||redis.dns", try targetName(.{ .service_name = "redis.dns" }, &buffer));
    try std.testing.expectEqualStrings("outbound|6380||r.static?db=2", try targetName(.{ .service_name = "r.static", .service_port = 6380, .database = 2 }, &buffer));
}
