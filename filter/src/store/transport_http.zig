//! Stock Envoy / Istio: the RESP bytes go by proxy_http_call to the tokenlimit bridge
//! (controlplane/tokenlimit/bridge/), which forwards them to Redis. Both halves of the bridge
//! protocol live here: the request (POST /v1/resp, timeout and bearer token headers) and the
//! reply (status, `x-tokenlimit-bridge-error`, RESP body).
const std = @import("std");
const config = @import("../config/config.zig");
const header_map = @import("../abi/header_map.zig");
const host = @import("../abi/host.zig");
const script = @import("script.zig");
/// Budget replies and cached answers (redis.zig `reply_bytes_max`); longer replies are refused.
const reply_bytes_max = @max(script.reply_bytes_max, @import("../cache/store_redis.zig").reply_bytes_max);
const store = @import("store.zig");

/// Env var (Envoy `vm_config.environment_variables`) holding the bridge's bearer token.
pub const bridge_token_variable = "TOKENLIMIT_BRIDGE_TOKEN";
const bridge_token_bytes_max = 256;

var bridge_token: [bridge_token_bytes_max]u8 = undefined;
var bridge_token_len: usize = 0;

/// Once per VM: the bridge token.
pub fn start() void {
    if (host.environmentVariable(bridge_token_variable, &bridge_token)) |token| bridge_token_len = token.len;
}

/// Registers nothing: the bridge is an ordinary Envoy cluster.
pub fn configure(rule: *const config.Rule) void {
    _ = rule;
}

/// The Envoy cluster of the bridge, as configured.
pub fn targetName(redis: config.Redis, out: []u8) ![]u8 {
    return std.fmt.bufPrint(out, "{s}", .{redis.service_name});
}

/// Starts one call; the reply arrives in proxy_on_http_call_response.
pub fn send(target: []const u8, timeout_ms: u32, command: []const u8) !u32 {
    var timeout_text: [16]u8 = undefined;
    var authorization: [7 + bridge_token_bytes_max]u8 = undefined;
    var headers: header_map.HeaderMapWriter(6) = .{};
    headers.add(":method", "POST");
    headers.add(":path", "/v1/resp");
    headers.add(":authority", "tokenlimit-bridge");
    headers.add("content-type", "application/x-redis-resp");
    headers.add("x-tokenlimit-timeout-ms", std.fmt.bufPrint(&timeout_text, "{d}", .{timeout_ms}) catch "1000");
    if (bridge_token_len > 0) {
        headers.add("authorization", std.fmt.bufPrint(&authorization, "Bearer {s}", .{bridge_token[0..bridge_token_len]}) catch "");
    }
    var serialized: [1024]u8 = undefined;
    const header_bytes = headers.write(&serialized) catch return error.HeadersTooLarge;
    return host.httpCall(target, header_bytes, command, timeout_ms);
}

/// A finished call: the RESP body to parse, or (body null) why there is none. The caller
/// frees `body`.
pub const Reply = struct {
    body: ?host.HostBytes,
    failure: store.Failure,
};

/// Reads the reply being delivered (proxy_on_http_call_response).
pub fn readReply(header_count: u32, body_size: u32) Reply {
    // A call that failed (no response) has no header map to read: asking for one is an error.
    const status = if (header_count > 0) callStatus() else null;
    var bridge_error_buffer: [64]u8 = undefined;
    var bridge_error: []const u8 = "";
    const bridge_error_header = if (header_count > 0) host.getHeader(.http_call_response_headers, "x-tokenlimit-bridge-error") catch null else null;
    if (bridge_error_header) |value| {
        var bytes = value;
        defer bytes.deinit();
        const n = @min(bytes.bytes.len, bridge_error_buffer.len);
        @memcpy(bridge_error_buffer[0..n], bytes.bytes[0..n]);
        bridge_error = bridge_error_buffer[0..n];
    }
    if (status == 200 and body_size > reply_bytes_max) return .{ .body = null, .failure = .bad_reply };
    const body = if (status == 200 and body_size > 0) host.getBuffer(.http_call_response_body, 0, body_size) catch null else null;
    return .{ .body = body, .failure = classify(status, bridge_error) };
}

/// The `:status` of the call response being delivered; null when absent or not a number.
fn callStatus() ?u16 {
    var status = (host.getHeader(.http_call_response_headers, ":status") catch return null) orelse return null;
    defer status.deinit();
    return std.fmt.parseInt(u16, status.bytes, 10) catch null;
}

/// Why a call to the bridge brought no RESP body (`status` null: no response at all).
pub fn classify(status: ?u16, bridge_error: []const u8) store.Failure {
    const code = status orelse return .bridge_unreachable;
    if (code == 200) return .bad_reply; // a 200 without a body
    if (std.mem.eql(u8, bridge_error, "redis-unreachable")) return .redis_unreachable;
    if (std.mem.eql(u8, bridge_error, "redis-auth-failed")) return .auth_failed;
    if (std.mem.eql(u8, bridge_error, "redis-timeout")) return .timeout;
    if (std.mem.eql(u8, bridge_error, "unauthorized")) return .bridge_unauthorized;
    if (bridge_error.len > 0) return .redis_error;
    if (code == 504) return .timeout;
    return .bridge_unreachable; // Envoy's own 503: no healthy bridge to talk to
}

test "bridge reply: each error the bridge names maps to its failure class" {
    try std.testing.expectEqual(store.Failure.bridge_unreachable, classify(null, ""));
    try std.testing.expectEqual(store.Failure.bad_reply, classify(200, ""));
    try std.testing.expectEqual(store.Failure.redis_unreachable, classify(502, "redis-unreachable"));
    try std.testing.expectEqual(store.Failure.auth_failed, classify(502, "redis-auth-failed"));
    try std.testing.expectEqual(store.Failure.timeout, classify(504, "redis-timeout"));
    try std.testing.expectEqual(store.Failure.bridge_unauthorized, classify(401, "unauthorized"));
    try std.testing.expectEqual(store.Failure.redis_error, classify(502, "something-new"));
    try std.testing.expectEqual(store.Failure.timeout, classify(504, ""));
    try std.testing.expectEqual(store.Failure.bridge_unreachable, classify(503, ""));
}
