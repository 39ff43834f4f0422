//! Labelled metrics (issue 16): requests by rule, model and outcome; tokens, cost and upstream
//! 429s by rule and model; warn_at crossings by rule. proxy-wasm metrics have no labels, so
//! the labels travel in the name (`tokenlimit.requests.rule.<r>.model.<m>.outcome.<o>`) and
//! the rendered Envoy bootstrap's stats_tags move them back into labels. Names, labels, outcomes
//! and those regexes live in contract/metrics.json (build.zig hands it in as
//! `metrics_contract`; the enums here are checked against it at compile time).
//!
//! Bounded: each name is defined once per VM (on first use) and its id kept in a fixed table;
//! distinct models per VM are capped (`metrics_models_max`, contract/limits.json), later ones
//! count as `other`, so a client naming random models cannot grow the gateway's stats. Caller
//! keys are never labels. Nothing here allocates.
const std = @import("std");
const contract = @import("metrics_contract");
const host = @import("host.zig");
const message = @import("message.zig");

/// What happened to a request. `waited`, `downgraded` and `cached` are counted by the features
/// that do them (call `countRequest(rule_name, model, .waited)`); `estimated` (usage was not in
/// the answer) and `store_unavailable` (the Redis store could not be asked) are counted beside
/// the request's decision.
pub const Outcome = enum { allowed, rejected, shadow_rejected, waited, downgraded, cached, estimated, store_unavailable };

pub const Metric = enum {
    requests,
    tokens,
    cost_microusd,
    upstream_rate_limited,
    budget_warned,

    /// Its labels, in name order (contract/metrics.json).
    fn labels(self: Metric) []const u8 {
        return contract.metric_labels[@backingInt(self)];
    }
};

pub const models_max: usize = @import("limits").metrics_models_max;
pub const label_value_bytes_max: usize = contract.label_value_bytes_max;

comptime {
    // The contract and this file name the same outcomes and metrics, in the same order.
    std.debug.assert(contract.outcomes.len == std.meta.tags(Outcome).len);
    for (contract.outcomes, std.meta.tags(Outcome)) |name, tag| std.debug.assert(std.mem.eql(u8, name, @tagName(tag)));
    std.debug.assert(contract.metric_names.len == std.meta.tags(Metric).len);
    for (contract.metric_names, std.meta.tags(Metric)) |name, tag| std.debug.assert(std.mem.eql(u8, name, @tagName(tag)));
    std.debug.assert(std.mem.eql(u8, Metric.requests.labels(), "rule,model,outcome"));
    std.debug.assert(std.mem.eql(u8, Metric.tokens.labels(), "rule,model"));
    std.debug.assert(std.mem.eql(u8, Metric.cost_microusd.labels(), "rule,model"));
    std.debug.assert(std.mem.eql(u8, Metric.upstream_rate_limited.labels(), "rule,model"));
    std.debug.assert(std.mem.eql(u8, Metric.budget_warned.labels(), "rule"));
    std.debug.assert(models_max > 0 and label_value_bytes_max >= contract.model_other.len);
}

/// Longest metric name: the prefix, the metric, and three labels at their longest.
pub const name_bytes_max = contract.prefix.len + 1 + 32 + 3 * (1 + 8 + 1 + label_value_bytes_max);

pub const Label = struct {
    bytes: [label_value_bytes_max]u8 = undefined,
    len: usize = 0,

    pub fn slice(self: *const Label) []const u8 {
        return self.bytes[0..self.len];
    }
};

/// A label value as the stats tags read it: bytes outside [A-Za-z0-9_-] become `_` (a dot
/// would end the value), cut at `label_value_bytes_max`; empty reads as `model_none`.
pub fn sanitise(value: []const u8) Label {
    var label: Label = .{};
    const text = if (value.len == 0) contract.model_none else value;
    label.len = @min(text.len, label_value_bytes_max);
    for (text[0..label.len], label.bytes[0..label.len]) |c, *out| {
        out.* = if (std.ascii.isAlphanumeric(c) or c == '_' or c == '-') c else '_';
    }
    return label;
}

/// The label values of one sample: `model` and `outcome` only for metrics that carry them.
pub const Labels = struct {
    rule: []const u8,
    model: []const u8 = "",
    outcome: ?Outcome = null,
};

/// `tokenlimit.<metric>.rule.<r>[.model.<m>[.outcome.<o>]]`, the values already sanitised.
pub fn metricName(buffer: *[name_bytes_max]u8, metric: Metric, labels: Labels) []const u8 {
    // Joined: std.fmt's writer costs the module kilobytes for three joins.
    const parts = [_][]const u8{
        contract.prefix,                                 ".",                                                @tagName(metric),                             ".rule.",                                                    labels.rule,
        if (metric != .budget_warned) ".model." else "", if (metric != .budget_warned) labels.model else "", if (metric == .requests) ".outcome." else "", if (metric == .requests) @tagName(labels.outcome.?) else "",
    };
    // name_bytes_max holds the longest name: the label values are cut to label_value_bytes_max.
    return message.join(buffer, &parts) orelse unreachable;
}

/// The models a VM has labelled so far (by digest), at most `models_max`; the others are
/// `other`. Fixed size: a model is a few bytes of state however many requests name it.
pub const ModelSet = struct {
    digests: [models_max]u64 = undefined,
    len: usize = 0,

    /// The label for `model` (sanitised): itself while the set has room or knows it, else
    /// `model_other`; no model is `model_none`.
    pub fn label(self: *ModelSet, model: ?[]const u8) Label {
        const name = model orelse return sanitise(contract.model_none);
        const sanitised = sanitise(name);
        const digest = std.hash.Wyhash.hash(0, sanitised.slice());
        for (self.digests[0..self.len]) |known| if (known == digest) return sanitised;
        if (std.mem.eql(u8, sanitised.slice(), contract.model_none)) return sanitised;
        if (self.len == models_max) return sanitise(contract.model_other);
        self.digests[self.len] = digest;
        self.len += 1;
        return sanitised;
    }
};

/// Metric ids by the digest of their name: open addressing over a fixed table, linear probing.
/// Full (a config with very many rules): further names are not counted (id 0), logged once.
pub fn IdTable(comptime slot_count: usize) type {
    comptime std.debug.assert(std.math.isPowerOfTwo(slot_count));
    return struct {
        const Self = @This();
        const Slot = struct { digest: u64 = 0, id: u32 = 0 };
        slots: [slot_count]Slot = @splat(.{}),
        len: usize = 0,

        /// The id kept for `name`, or the one `define` gives it (kept too, even 0: a name the
        /// host refused is not asked for again). Null: the table is full.
        pub fn idOf(self: *Self, name: []const u8, context: anytype, comptime define: fn (@TypeOf(context), []const u8) u32) ?u32 {
            const Named = struct {
                context: @TypeOf(context),
                name: []const u8,
                fn defineNamed(named: @This()) u32 {
                    return define(named.context, named.name);
                }
            };
            return self.idOfDigest(std.hash.Wyhash.hash(1, name), Named{ .context = context, .name = name }, Named.defineNamed);
        }

        /// The id kept for `digest` (of whatever identifies the metric), or the one `define`
        /// gives it. Null: the table is full.
        pub fn idOfDigest(self: *Self, any_digest: u64, context: anytype, comptime define: fn (@TypeOf(context)) u32) ?u32 {
            const digest = any_digest | 1; // 0 marks a free slot
            var index: usize = @intCast(digest & (slot_count - 1));
            for (0..slot_count) |_| {
                const slot = &self.slots[index];
                if (slot.digest == digest) return slot.id;
                if (slot.digest == 0) {
                    // Keep a quarter free: probes stay short.
                    if (self.len >= slot_count - slot_count / 4) return null;
                    slot.* = .{ .digest = digest, .id = define(context) };
                    self.len += 1;
                    return slot.id;
                }
                index = (index + 1) & (slot_count - 1);
            }
            return null;
        }
    };
}

/// Room for every name a config of a few rules can produce at the model cap (8 outcomes + 3
/// per model, per rule): 4096 slots, 48 KiB, three quarters usable.
pub const id_slots = 4096;

var ids: IdTable(id_slots) = .{};
var models: ModelSet = .{};
var full_logged = false;

fn defineOnHost(_: void, name: []const u8) u32 {
    return host.defineMetric(.counter, name) catch 0;
}

/// Ids by what a sample is made of (metric, outcome, the rule and model names as given), so
/// a request hashes a few bytes and builds no name: the name (sanitised labels, the model cap)
/// is built once, on a sample's first use (issue 17). Consistent with the name table: the
/// model cap only ever adds models, so a model's label never changes once given. Full: the
/// sample falls back to building its name.
pub const sample_slots = 1024;
var sample_ids: IdTable(sample_slots) = .{};

const Sample = struct {
    metric: Metric,
    rule_name: []const u8,
    model: ?[]const u8,
    outcome: ?Outcome = null,

    fn digest(self: Sample) u64 {
        const outcome: u64 = if (self.outcome) |o| @as(u64, @backingInt(o)) + 1 else 0;
        const seed = @as(u64, @backingInt(self.metric)) << 8 | outcome;
        // Two one-shot hashes (the streaming hasher costs the module a kilobyte), the model's
        // mixed in by an odd multiplier so (rule, model) and (model, rule) stay apart; no
        // model hashes under another seed than any name.
        const rule = std.hash.Wyhash.hash(seed, self.rule_name);
        const model = if (self.model) |name| std.hash.Wyhash.hash(seed ^ 0x6d, name) else std.hash.Wyhash.hash(seed ^ 0x6e, "");
        return rule ^ (model *% 0x9e3779b97f4a7c15);
    }

    /// The id by the metric's full name (the labels sanitised, the model through the cap).
    fn byName(self: Sample) u32 {
        const rule = ruleLabel(self.rule_name);
        const model_label = models.label(self.model);
        return nameId(self.metric, .{ .rule = rule.slice(), .model = model_label.slice(), .outcome = self.outcome }) orelse 0;
    }
};

fn count(sample: Sample, amount: u64) void {
    if (amount == 0) return;
    const id = sample_ids.idOfDigest(sample.digest(), sample, Sample.byName) orelse sample.byName();
    if (id != 0) host.incrementMetric(id, @intCast(@min(amount, std.math.maxInt(i64))));
}

/// The id of the metric named by `metric` and `labels`, defined on first use. Null (or 0):
/// not counted.
fn nameId(metric: Metric, labels: Labels) ?u32 {
    var buffer: [name_bytes_max]u8 = undefined;
    const name = metricName(&buffer, metric, labels);
    const id = ids.idOf(name, {}, defineOnHost) orelse {
        if (!full_logged) host.logf(.warn, "labelled metrics: {d} names defined, no room for more; {s} and later names are not counted", .{ ids.len, name });
        full_logged = true;
        return null;
    };
    return id;
}

/// The rule's label: the configured `rule_name` (its counter form when none is configured).
fn ruleLabel(rule_name: []const u8) Label {
    return sanitise(rule_name);
}

/// The `model` label for `model`, through this VM's cap (also for Higress-named metrics).
pub fn modelLabel(model: ?[]const u8) Label {
    return models.label(model);
}

/// One request of `rule_name` (configured name) for `model` (null: not known) had `outcome`.
pub fn countRequest(rule_name: []const u8, model: ?[]const u8, outcome: Outcome) void {
    count(.{ .metric = .requests, .rule_name = rule_name, .model = model, .outcome = outcome }, 1);
}

/// What a finished request was charged: tokens, and its cost in micro-USD (0: no price).
pub fn countCharge(rule_name: []const u8, model: ?[]const u8, tokens: u64, cost_microusd: u64) void {
    count(.{ .metric = .tokens, .rule_name = rule_name, .model = model }, tokens);
    count(.{ .metric = .cost_microusd, .rule_name = rule_name, .model = model }, cost_microusd);
}

/// An admitted request the upstream refused with 429.
pub fn countUpstreamRateLimited(rule_name: []const u8, model: ?[]const u8) void {
    count(.{ .metric = .upstream_rate_limited, .rule_name = rule_name, .model = model }, 1);
}

/// An admitted request whose budget was past its warn_at fraction.
pub fn countBudgetWarned(rule_name: []const u8) void {
    count(.{ .metric = .budget_warned, .rule_name = rule_name, .model = null }, 1);
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

test "labelled metrics: names carry sanitised labels in the contract's order" {
    var buffer: [name_bytes_max]u8 = undefined;
    const rule = sanitise("chat.api v2");
    const model = sanitise("gpt-3.5-turbo");
    try testing.expectEqualStrings("chat_api_v2", rule.slice());
    try testing.expectEqualStrings(
        "tokenlimit.requests.rule.chat_api_v2.model.gpt-3_5-turbo.outcome.shadow_rejected",
        metricName(&buffer, .requests, .{ .rule = rule.slice(), .model = model.slice(), .outcome = .shadow_rejected }),
    );
    try testing.expectEqualStrings("tokenlimit.tokens.rule.r.model.none", metricName(&buffer, .tokens, .{ .rule = "r", .model = "none" }));
    try testing.expectEqualStrings("tokenlimit.budget_warned.rule.r", metricName(&buffer, .budget_warned, .{ .rule = "r" }));
    const long: [3 * label_value_bytes_max]u8 = @splat('m');
    try testing.expectEqual(label_value_bytes_max, sanitise(&long).len);
    try testing.expectEqualStrings("none", sanitise("").slice());
    // The longest name fits the buffer.
    const longest = sanitise(&long);
    _ = metricName(&buffer, .requests, .{ .rule = longest.slice(), .model = longest.slice(), .outcome = .store_unavailable });
}

test "labelled metrics: distinct models are capped, later ones count as other" {
    var set: ModelSet = .{};
    var name: [16]u8 = undefined;
    for (0..models_max) |index| {
        const model = std.fmt.bufPrint(&name, "m{d}", .{index}) catch unreachable;
        try testing.expectEqualStrings(model, set.label(model).slice());
    }
    try testing.expectEqualStrings("other", set.label("one-too-many").slice());
    // Known models keep their label; no model is `none`, and never takes a place.
    try testing.expectEqualStrings("m0", set.label("m0").slice());
    try testing.expectEqualStrings("none", set.label(null).slice());
    try testing.expectEqual(models_max, set.len);
}

test "labelled metrics: each name is defined once; a full table counts nothing more" {
    const Counter = struct {
        defined: u32 = 0,
        fn define(self: *@This(), _: []const u8) u32 {
            self.defined += 1;
            return self.defined * 4;
        }
    };
    var table: IdTable(16) = .{};
    var counter: Counter = .{};
    try testing.expectEqual(@as(?u32, 4), table.idOf("a", &counter, Counter.define));
    try testing.expectEqual(@as(?u32, 4), table.idOf("a", &counter, Counter.define));
    try testing.expectEqual(@as(?u32, 8), table.idOf("b", &counter, Counter.define));
    var name: [8]u8 = undefined;
    var refused: usize = 0;
    for (0..32) |index| {
        if (table.idOf(std.fmt.bufPrint(&name, "n{d}", .{index}) catch unreachable, &counter, Counter.define) == null) refused += 1;
    }
    try testing.expectEqual(@as(usize, 12), table.len);
    try testing.expectEqual(@as(usize, 32 - 10), refused);
    try testing.expectEqual(@as(u32, 12), counter.defined);
}

test "labelled metrics: a sample is known by its metric, outcome, rule and model" {
    const base: Sample = .{ .metric = .requests, .rule_name = "chat", .model = "gpt-4o", .outcome = .allowed };
    var other = base;
    other.outcome = .rejected;
    try testing.expect(base.digest() != other.digest());
    other = base;
    other.model = null;
    try testing.expect(base.digest() != other.digest());
    other.model = "";
    try testing.expect(base.digest() != other.digest());
    other = base;
    other.metric = .tokens;
    other.outcome = null;
    try testing.expect(base.digest() != other.digest());
    // Names that only concatenate alike stay apart.
    const a: Sample = .{ .metric = .tokens, .rule_name = "ab", .model = "c" };
    const b: Sample = .{ .metric = .tokens, .rule_name = "a", .model = "bc" };
    try testing.expect(a.digest() != b.digest());
    try testing.expectEqual(base.digest(), (Sample{ .metric = .requests, .rule_name = "chat", .model = "gpt-4o", .outcome = .allowed }).digest());
}
