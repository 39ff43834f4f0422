//! Every metric the filter defines, in one place: Envoy shows each as `tokenlimit_<field>`
//! (plugin set) or `tokenlimit_redis_<field>` (Redis store set) in /stats/prometheus.
//! Defined once per VM (proxy_on_vm_start); until then every id is 0 and increments are no-ops.
const std = @import("std");
const message = @import("message.zig");
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
    /// Admitted responses that carried a `warn_at` warning (issue 12).
    budget_warnings: u32 = 0,
    /// Host calls that returned a status the filter did not expect (abi/host.zig `failed`).
    host_call_failures: u32 = 0,
    // Response cache (issue 15, http/cache.zig).
    cache_hits: u32 = 0,
    cache_misses: u32 = 0,
    cache_bypasses: u32 = 0,
    /// Bytes of entries written (local ring or Redis).
    cache_bytes_stored: u32 = 0,
    /// Tokens the answers served from the cache cost when they were fetched.
    cache_tokens_saved: u32 = 0,
    /// Lookups or stores the cache's store failed (a lookup failure is served as a miss).
    cache_store_errors: u32 = 0,
    // Near the limit (issue 13, http/wait.zig): requests admitted after waiting for room,
    // rejected at max_wait_ms, rejected at once (max_queued), held by pace_above, held now.
    requests_waited: u32 = 0,
    wait_timeouts: u32 = 0,
    wait_overflows: u32 = 0,
    requests_paced: u32 = 0,
    wait_queued: u32 = 0,
    /// Requests sent with when_exhausted.model instead (issue 13, http/downgrade.zig).
    requests_downgraded: u32 = 0,
};

pub const Redis = struct {
    calls: u32 = 0,
    failures: u32 = 0,
    circuit_open: u32 = 0,
    circuit_opened: u32 = 0,
    settle_retries_queued: u32 = 0,
    settles_dropped: u32 = 0,
    // redisfast (issue 17): settlements batched off the request path, refusals kept per worker.
    /// settle_batch calls made (each carries several requests' settlements).
    settle_batches: u32 = 0,
    /// Settlements sent inside settle_batch calls.
    settles_batched: u32 = 0,
    /// Requests refused from the worker's cache of exhausted counters, without a Redis call.
    refused_locally: u32 = 0,
    // coalesce (issue 17): admissions that waited for their rule's call in flight and went in
    // the next admit_many call with the others that waited (store/coalesce.zig).
    admissions_coalesced: u32 = 0,
};

pub var plugin: Plugin = .{};
pub var redis: Redis = .{};

/// Defines both sets; host-call failures are counted from here on.
pub fn define() void {
    plugin = defineSet(Plugin, "tokenlimit.", &.{"wait_queued"});
    host.failures_metric_id = plugin.host_call_failures;
    redis = defineSet(Redis, "tokenlimit.redis_", &.{"circuit_open"});
}

/// Defines one metric per field of `T` (each a u32 id) named `prefix ++ field`: a gauge when
/// the field name is listed in `gauges`, else a counter. A metric the host refuses gets id 0
/// (the refusal is reported by host.zig), which later increments skip: metrics never fail a
/// request.
fn defineSet(comptime T: type, comptime prefix: []const u8, comptime gauges: []const []const u8) T {
    const fields = comptime std.meta.fieldNames(T);
    // Names and kinds in tables walked by one loop: an inline loop of host calls was a copy of
    // the call per metric (issue 17, module size).
    const names, const kinds = comptime blk: {
        var names: [fields.len][]const u8 = undefined;
        var kinds: [fields.len]host.MetricType = undefined;
        for (fields, &names, &kinds) |field, *name, *kind| {
            name.* = prefix ++ field;
            kind.* = for (gauges) |gauge| {
                if (std.mem.eql(u8, gauge, field)) break .gauge;
            } else .counter;
        }
        break :blk .{ names, kinds };
    };
    var ids: [fields.len]u32 = undefined;
    for (&ids, &names, &kinds) |*id, name, kind| id.* = host.defineMetric(kind, name) catch 0;
    var defined: T = .{};
    inline for (fields, 0..) |field, index| @field(defined, field) = ids[index];
    return defined;
}

// ---- Higress's own refusal counter (Higress build; respond/higress.zig) --------------------------

/// Distinct Higress-named metrics (`token_ratelimit_count`, and the token counters of
/// `higress_token_metrics`) kept per VM. Route and cluster come from the
/// gateway's config, the consumer from `x-mse-consumer`, which a client may set itself where no
/// auth plugin owns it: past this many names (Higress keeps every one) further consumers are
/// counted under the consumer `other`, so a client cannot grow the gateway's stats without bound.
pub const higress_rejection_names_max = 1024;
/// Longest name kept; a longer one (a very long consumer) is counted under the consumer `other`.
pub const higress_rejection_name_bytes_max = 512;

var higress_rejection_ids: std.StringHashMapUnmanaged(u32) = .empty;

/// Higress's metric name for refusals on a route, upstream cluster and consumer (its main.go
/// `generateMetricName(route, cluster, "none", consumer, "token_ratelimit_count")`).
pub fn higressRejectionName(buffer: []u8, route: []const u8, cluster: []const u8, consumer: []const u8) ?[]const u8 {
    return higressName(buffer, route, cluster, "none", consumer, "token_ratelimit_count");
}

/// Higress's AI metric names (ai-statistics' and ai-token-ratelimit's `generateMetricName`):
/// `route.<route>.upstream.<cluster>.model.<model>.consumer.<consumer>.metric.<metric>`.
pub fn higressName(buffer: []u8, route: []const u8, cluster: []const u8, model: []const u8, consumer: []const u8, metric: []const u8) ?[]const u8 {
    return message.printAll(buffer, "route.{s}.upstream.{s}.model.{s}.consumer.{s}.metric.{s}", .{ route, cluster, model, consumer, metric });
}

/// The counter id for `higressRejectionName(route, cluster, consumer)`, defined on first use
/// (Higress's DefineCounterMetric) and kept, so each name is defined once per VM. 0 (no metric)
/// when the host refuses it.
pub fn higressRejections(route: []const u8, cluster: []const u8, consumer: []const u8) u32 {
    return higressCounter(route, cluster, "none", consumer, "token_ratelimit_count");
}

/// As `higressRejections` for any of Higress's AI metrics (issue 16: ai-statistics' token
/// counters `input_token`, `output_token`, `total_token`). `model` must already be bounded
/// (labelled_metrics caps it); consumers past the table's bound count as `other`.
pub fn higressCounter(route: []const u8, cluster: []const u8, model: []const u8, consumer: []const u8, metric: []const u8) u32 {
    var buffer: [higress_rejection_name_bytes_max]u8 = undefined;
    const full = higress_rejection_ids.count() >= higress_rejection_names_max;
    var name = higressName(&buffer, route, cluster, model, consumer, metric);
    if (name) |text| if (higress_rejection_ids.get(text)) |id| return id;
    if (name == null or full) name = higressName(&buffer, route, cluster, model, "other", metric);
    const text = name orelse return 0;
    if (higress_rejection_ids.get(text)) |id| return id;
    const id = host.defineMetric(.counter, text) catch return 0;
    const owned = host.allocator.dupe(u8, text) catch return id;
    higress_rejection_ids.put(host.allocator, owned, id) catch host.allocator.free(owned);
    return id;
}

test "metrics: Higress's refusal counter name" {
    var buffer: [higress_rejection_name_bytes_max]u8 = undefined;
    try std.testing.expectEqualStrings(
        "route.default/chat.upstream.outbound|80||llm.ns.svc.cluster.local.model.none.consumer.alice.metric.token_ratelimit_count",
        higressRejectionName(&buffer, "default/chat", "outbound|80||llm.ns.svc.cluster.local", "alice").?,
    );
    try std.testing.expectEqualStrings(
        "route.r.upstream.c.model.qwen-max.consumer.none.metric.input_token",
        higressName(&buffer, "r", "c", "qwen-max", "none", "input_token").?,
    );
    const long: [higress_rejection_name_bytes_max]u8 = @splat('c');
    try std.testing.expectEqual(@as(?[]const u8, null), higressRejectionName(&buffer, "-", "-", &long));
}
