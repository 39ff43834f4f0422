//! Every metric the filter defines, in one place: Envoy shows each as `tokenlimit_<field>`
//! (plugin set) or `tokenlimit_redis_<field>` (Redis store set) in /stats/prometheus.
//! Defined once per VM (proxy_on_vm_start); until then every id is 0 and increments are no-ops.
const std = @import("std");
const host = @import("host.zig");

pub const Plugin = struct {
    requests_allowed: u32 = 0,
    requests_rejected: u32 = 0,
    requests_shadow_rejected: u32 = 0,
    tokens_charged: u32 = 0,
    usage_estimated: u32 = 0,
    include_usage_added: u32 = 0,
    models_rewritten: u32 = 0,
    store_errors: u32 = 0,
    store_fallbacks: u32 = 0,
    config_rejected: u32 = 0,
    /// Host calls that returned a status the filter did not expect (abi/host.zig `failed`).
    host_call_failures: u32 = 0,
};

pub const Redis = struct {
    calls: u32 = 0,
    failures: u32 = 0,
    circuit_open: u32 = 0,
    circuit_opened: u32 = 0,
    settle_retries_queued: u32 = 0,
    settles_dropped: u32 = 0,
};

pub var plugin: Plugin = .{};
pub var redis: Redis = .{};

/// Defines both sets; host-call failures are counted from here on.
pub fn define() void {
    plugin = defineSet(Plugin, "tokenlimit.", &.{});
    host.failures_metric_id = plugin.host_call_failures;
    redis = defineSet(Redis, "tokenlimit.redis_", &.{"circuit_open"});
}

/// Defines one metric per field of `T` (each a u32 id) named `prefix ++ field`: a gauge when
/// the field name is listed in `gauges`, else a counter. A metric the host refuses gets id 0
/// (the refusal is reported by host.zig), which later increments skip: metrics never fail a
/// request.
fn defineSet(comptime T: type, comptime prefix: []const u8, comptime gauges: []const []const u8) T {
    var defined: T = .{};
    inline for (comptime std.meta.fieldNames(T)) |name| {
        const is_gauge = comptime for (gauges) |gauge| {
            if (std.mem.eql(u8, gauge, name)) break true;
        } else false;
        @field(defined, name) = host.defineMetric(if (is_gauge) .gauge else .counter, prefix ++ name) catch 0;
    }
    return defined;
}
