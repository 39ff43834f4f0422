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
        if (parsed.model_rewrite) |model| host.logf(.info, "config loaded: upstream filter, model rewritten to {s}", .{model});
        if (parsed.default_rule) |*rule| logRule(rule, "default");
        for (parsed.route_rules) |*route_rule| {
            if (route_rule.rule) |*rule| logRule(rule, "route");
        }
        return true;
    }
};

fn logRule(rule: *const config.Rule, scope: []const u8) void {
    redis.configure(rule);
    const store_name = if (rule.redis) |settings| settings.service_name else "local store";
    host.logf(.info, "config loaded: {s} rule {s} ({d} rule items, {s}, {s}{s}), budgets in {s}{s}{s}", .{
        scope,                    rule.name,                                         rule.items.len,
        @tagName(rule.admission), @tagName(rule.algorithm),                          if (rule.shadow) ", shadow" else "",
        store_name,               if (rule.redis != null) ", failure_mode " else "", if (rule.redis != null) @tagName(rule.failure_mode) else "",
    });
}
