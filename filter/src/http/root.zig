//! The root context: one per plugin config. Parses the configuration; a bad one is refused
//! with one log line naming the field, and the config already in place keeps working.
const config = @import("../config/config.zig");
const host = @import("../abi/host.zig");
const metrics = @import("../abi/metrics.zig");
const redis = @import("../store/redis.zig");

const allocator = host.allocator;

pub const RootContext = struct {
    id: u32,
    config: ?*config.Config = null,

    pub fn deinit(self: *RootContext) void {
        if (self.config) |current| config.release(allocator, current);
        self.* = undefined;
    }

    pub fn configure(self: *RootContext, size: usize) bool {
        var bytes = (host.getBuffer(.plugin_configuration, 0, size) catch null) orelse host.HostBytes{ .bytes = &.{} };
        defer bytes.deinit();
        var diagnostic: config.Diagnostic = .{};
        const parsed = config.parse(allocator, bytes.bytes, &diagnostic) catch |err| {
            host.incrementMetric(metrics.plugin.config_rejected, 1);
            switch (err) {
                error.OutOfMemory => host.log(.err, "invalid config: out of memory while parsing"),
                error.InvalidConfig => if (diagnostic.field().len > 0)
                    host.logf(.err, "invalid config: {s}: {s}", .{ diagnostic.field(), diagnostic.reason() })
                else
                    host.logf(.err, "invalid config: {s}", .{diagnostic.reason()}),
            }
            return false;
        };
        if (self.config) |previous| config.release(allocator, previous);
        self.config = parsed;
        logIgnored(parsed);
        if (parsed.model_rewrite) |model| host.logf(.info, "config loaded: upstream filter, model rewritten to {s}", .{model});
        if (parsed.default_rule) |*rule| logRule(rule, "default");
        for (parsed.route_rules) |*route_rule| {
            if (route_rule.rule) |*rule| logRule(rule, "route");
        }
        return true;
    }
};

/// One warning line for what the config ignores as Higress does (docs/higress-compat.md).
fn logIgnored(parsed: *const config.Config) void {
    if (parsed.ignored_default) |reason| host.logf(.warn, "config: top-level rule ignored, as Higress ignores it beside _rules_ (only the route rules apply): {s}", .{reason});
    if (parsed.ignored_fields.len == 0) return;
    var buffer: [768]u8 = undefined;
    var used: usize = 0;
    for (parsed.ignored_fields, 0..) |field, i| {
        const separator: []const u8 = if (i > 0) ", " else "";
        if (used + separator.len + field.len + 4 > buffer.len) {
            @memcpy(buffer[used..][0..4], ", ..");
            used += 4;
            break;
        }
        @memcpy(buffer[used..][0..separator.len], separator);
        @memcpy(buffer[used + separator.len ..][0..field.len], field);
        used += separator.len + field.len;
    }
    host.logf(.warn, "config: ignored fields, as Higress ignores them: {s}", .{buffer[0..used]});
}

fn logRule(rule: *const config.Rule, scope: []const u8) void {
    redis.configure(rule);
    const store_name = if (rule.redis) |settings| settings.service_name else "local store";
    host.logf(.info, "config loaded: {s} rule {s} ({d} rule items, {s}, {s}{s}), budgets in {s}{s}{s}", .{
        scope,                    rule.configured_name,                              rule.items.len,
        @tagName(rule.admission), @tagName(rule.algorithm),                          if (rule.shadow) ", shadow" else "",
        store_name,               if (rule.redis != null) ", failure_mode " else "", if (rule.redis != null) @tagName(rule.failure_mode) else "",
    });
}
