//! The request's model (issue 12; docs/design-model-budgets.md §2-3): where it is read from,
//! how it is bounded, and what it means for a rule's items (`models`, `limit_by_model`,
//! `limit_by_per_model`, `per_model`). Pure but for `fromRequestHeaders`, which reads the
//! header and the path. select.zig collects counters without the model (request headers are
//! readable only in their callback, the body's model arrives later); `resolve` applies it.
const std = @import("std");
const config = @import("../config/config.zig");
const counter = @import("../meter/counter.zig");
const host = @import("../abi/host.zig");
const labelled = @import("../abi/labelled_metrics.zig");
const metrics = @import("../abi/metrics.zig");
const response = @import("../respond/response.zig");
const budget = @import("../meter/budget.zig");
const bytes = @import("../match/bytes.zig");
const match = @import("../match/match.zig");
const request = @import("../usage/request.zig");
const store = @import("../store/store.zig");

/// The model's decoded bytes live here, in the request's context.
pub const Buffer = [config.model_bytes_max]u8;

/// What the request says about its model.
pub const Requested = union(enum) {
    /// No model anywhere (or a body too large to read): items without a model condition
    /// still apply; items with `models` do not.
    none,
    /// A model that cannot be judged: a rule with model conditions refuses the request (400),
    /// so an odd spelling never escapes a budget.
    refused: Refusal,
    /// The decoded model name (at most `config.model_bytes_max` bytes, no control characters).
    name: []const u8,

    pub fn of(decoded: request.DecodedModel) Requested {
        return switch (decoded) {
            .none => .none,
            .invalid => .{ .refused = .invalid },
            .too_long => .{ .refused = .too_long },
            .value => |value| .{ .name = value },
        };
    }
};

pub const Refusal = enum {
    invalid,
    too_long,

    pub fn describe(self: Refusal) []const u8 {
        return switch (self) {
            .invalid => "the request's model does not decode or holds a control character",
            .too_long => std.fmt.comptimePrint("the request's model is longer than {d} bytes", .{config.model_bytes_max}),
        };
    }
};

/// The model from the request headers, first that yields a value (§2): `model_header` when
/// the rule names one, then Azure's deployment path, then Gemini's model path. `.none` means
/// "read the body's `model`". `path`: the request's `:path`, read once (request_head.zig).
pub fn fromRequestHeaders(rule: *const config.Rule, out: *Buffer, path: ?[]const u8) Requested {
    if (rule.model_header.len > 0) {
        if (host.getHeader(.request_headers, rule.model_header) catch null) |header| {
            var value = header;
            defer value.deinit();
            const requested = fromHeaderValue(value.bytes, out);
            if (requested != .none) return requested;
        }
    }
    return fromPath(path orelse return .none, out);
}

/// A header's value as it came (a gateway-set header is trusted like any `limit_by_header`).
pub fn fromHeaderValue(value: []const u8, out: *Buffer) Requested {
    if (value.len == 0) return .none;
    if (value.len > out.len) return .{ .refused = .too_long };
    for (value) |c| if (c < 0x20 or c == 0x7f) return .{ .refused = .invalid };
    @memcpy(out[0..value.len], value);
    return .{ .name = out[0..value.len] };
}

/// Azure's `/openai/deployments/{name}/...` (Azure ignores the body's model: the deployment is
/// the model), else Gemini's `.../models/{model}:<method>`. Percent-escapes are decoded, as the
/// provider decodes them (`gpt%2D4o` is `gpt-4o`); a bad escape is refused.
pub fn fromPath(full_path: []const u8, out: *Buffer) Requested {
    const path = full_path[0 .. std.mem.indexOfAny(u8, full_path, "?#") orelse full_path.len];
    const azure = "/openai/deployments/";
    if (std.mem.indexOf(u8, path, azure)) |at| {
        const rest = path[at + azure.len ..];
        return unescapeSegment(rest[0 .. std.mem.indexOfScalar(u8, rest, '/') orelse rest.len], out);
    }
    const gemini = "/models/";
    if (lastIndexOf(path, gemini)) |at| {
        const rest = path[at + gemini.len ..];
        const colon = std.mem.indexOfScalar(u8, rest, ':') orelse return .none;
        if (std.mem.indexOfScalar(u8, rest[0..colon], '/') != null) return .none;
        return unescapeSegment(rest[0..colon], out);
    }
    return .none;
}

/// `std.mem.lastIndexOf` for a short path: std's took ~11,000 Wasm instructions on a 20-byte
/// path in a size-optimised build (issue 17), this a few hundred.
fn lastIndexOf(haystack: []const u8, needle: []const u8) ?usize {
    if (needle.len > haystack.len) return null;
    var at = haystack.len - needle.len + 1;
    while (at > 0) {
        at -= 1;
        if (haystack[at] == needle[0] and bytes.eql(haystack[at..][0..needle.len], needle)) return at;
    }
    return null;
}

test "model path: lastIndexOf finds the last occurrence, or none" {
    try std.testing.expectEqual(@as(?usize, 9), lastIndexOf("/models/a/models/b", "/models/"));
    try std.testing.expectEqual(@as(?usize, 0), lastIndexOf("/models/", "/models/"));
    try std.testing.expectEqual(@as(?usize, null), lastIndexOf("/v1/chat/completions", "/models/"));
    try std.testing.expectEqual(@as(?usize, null), lastIndexOf("/m", "/models/"));
}

fn unescapeSegment(text: []const u8, out: *Buffer) Requested {
    if (text.len == 0) return .none;
    var len: usize = 0;
    var i: usize = 0;
    while (i < text.len) : (len += 1) {
        if (len == out.len) return .{ .refused = .too_long };
        var c = text[i];
        if (c == '%') {
            if (i + 3 > text.len) return .{ .refused = .invalid };
            c = std.fmt.parseInt(u8, text[i + 1 ..][0..2], 16) catch return .{ .refused = .invalid };
            i += 3;
        } else i += 1;
        if (c < 0x20 or c == 0x7f) return .{ .refused = .invalid };
        out[len] = c;
    }
    return .{ .name = out[0..len] };
}

/// Whether `item` applies to a request for `requested` (its `models` condition). A request
/// without a model matches only items without one. A regexp that runs out of the request's
/// steps counts as a match: the item's budget then holds the request (never an escape).
pub fn applies(item: *const config.RuleItem, requested: Requested, regexp_steps: *u32) bool {
    if (item.models.len == 0) return true;
    const name = switch (requested) {
        .name => |name| name,
        else => return false,
    };
    return matchesAny(item.models, name, regexp_steps);
}

pub fn matchesAny(matchers: []const config.KeyMatcher, name: []const u8, regexp_steps: *u32) bool {
    for (matchers) |*matcher| {
        const matched = switch (matcher.*) {
            .literal => |literal| std.mem.eql(u8, literal, name),
            .any => true,
            .pattern => |*pattern| pattern.isMatchWithin(name, regexp_steps) orelse true,
            .ip_range => false,
        };
        if (matched) return true;
    }
    return false;
}

/// Brings counters collected without the model (select.zig collects every item but the model
/// items, whatever the model) to the request's model: drops those of items whose `models` it
/// does not match, names `per_model` ones by it, and adds the model items' own counters.
pub fn resolve(counters: *std.ArrayList(store.Counter), rule: *const config.Rule, requested: Requested) !void {
    var regexp_steps = match.regexp_steps_per_request_max;
    var kept: usize = 0;
    for (counters.items) |collected| {
        var next = collected;
        if (collected.item) |item| {
            if (!applies(item, requested, &regexp_steps)) continue;
            var hashed: counter.HashedValue = undefined;
            if (segment(item, requested, &hashed)) |model_segment| try appendSegment(&next.key, model_segment);
        }
        counters.items[kept] = next;
        kept += 1;
    }
    counters.shrinkRetainingCapacity(kept);
    const name = switch (requested) {
        .name => |name| name,
        else => return, // a model item without a model does not apply, as a header item without its header
    };
    for (rule.items) |*item| {
        if (item.limit_type != .model and item.limit_type != .per_model) continue;
        if (!applies(item, requested, &regexp_steps)) continue;
        var matched: ?*const config.LimitKey = null;
        const limits = switch (match.matchKey(item, .{ .text = name }, &regexp_steps)) {
            .key => |key| blk: {
                matched = key;
                break :blk key.limits;
            },
            .none => continue,
            .unknown => |from| match.strictest(item, from),
        };
        var hashed: counter.HashedValue = undefined;
        const caller = counter.identity(item.limit_type, budgetValue(item, matched, name), &hashed);
        for ([_]config.Unit{ .requests, .tokens, .cost }) |unit| {
            for (std.meta.tags(budget.Window)) |window| {
                const limit = limits.get(unit, window) orelse continue;
                try addCounter(counters, .{
                    .key = try counter.counterKey(rule.name, item, unit, window, caller, null),
                    .item = item,
                    .budget = .{ .algorithm = rule.algorithm, .window = window, .limit = limit, .zone = rule.calendar },
                    .unit = unit,
                });
            }
        }
    }
}

/// `:m=<model>` after a counter's name (checked to fit when the config was loaded).
fn appendSegment(key: *counter.CounterKey, model_segment: []const u8) error{Overflow}!void {
    const text = std.fmt.bufPrint(key.bytes[key.len..], ":m={s}", .{model_segment}) catch return error.Overflow;
    key.len += text.len;
}

/// As select.zig's: one counter per name, the strictest limit when two items name it.
fn addCounter(counters: *std.ArrayList(store.Counter), added: store.Counter) !void {
    for (counters.items) |*existing| {
        if (std.mem.eql(u8, existing.key.slice(), added.key.slice())) {
            existing.budget.limit = @min(existing.budget.limit, added.budget.limit);
            return;
        }
    }
    if (counters.items.len == counter.counters_max) return error.TooManyCounters;
    try counters.append(host.allocator, added);
}

/// The price of a request for `requested`: the first `prices` entry (in document order) that
/// matches its model; a request without a model is priced by a `*` entry only. Null: the
/// model has no price (a rule with cost limits then refuses it: silently free would be an
/// escape from every cost budget).
pub fn priceOf(rule: *const config.Rule, requested: Requested) ?config.Price {
    var regexp_steps = match.regexp_steps_per_request_max;
    for (rule.prices) |*entry| {
        const matched = switch (requested) {
            .name => |name| matchesAny((&entry.matcher)[0..1], name, &regexp_steps),
            else => entry.matcher == .any,
        };
        if (matched) return entry.price;
    }
    return null;
}

/// What a budget of `item` is named by: for `limit_by_model`, the matched key (every model it
/// matches shares one budget); for `limit_by_per_model`, the model.
pub fn budgetValue(item: *const config.RuleItem, key: ?*const config.LimitKey, value: []const u8) []const u8 {
    if (item.limit_type == .model) if (key) |matched| return matched.text;
    return value;
}

/// The `m=` segment of a `per_model` item's counter names: the model through the counter
/// identity rule (plain, or hashed when long or odd); "" for a request without a model (one
/// shared budget for those, never none). Null for items without `per_model`.
pub fn segment(item: *const config.RuleItem, requested: Requested, out: *counter.HashedValue) ?[]const u8 {
    if (!item.per_model) return null;
    return switch (requested) {
        .name => |name| counter.identity(.per_model, name, out),
        else => "",
    };
}

// ---- refusals (host calls) --------------------------------------------------------------------

/// A model the rule cannot judge (too long, undecodable): 400, never an escape from its budgets.
pub fn refuse(rule: *const config.Rule, refusal: Refusal) host.Action {
    host.logf(.info, "rule {s}: request refused: {s}", .{ rule.name, refusal.describe() });
    host.incrementMetric(metrics.plugin.requests_rejected, 1);
    labelled.countRequest(ruleLabel(rule), null, .rejected); // issue 16
    setProperty("tokenlimit_decision", "rejected_model");
    response.sendPlain(400, "tokenlimit_bad_model", refusal.describe()) catch |err| {
        host.logf(.err, "could not send the rejection: {s}", .{@errorName(err)});
        return .@"continue";
    };
    return .pause;
}

/// Cost limits and a model without a price: refused with the rule's code (never free).
pub fn refuseUnpriced(rule: *const config.Rule, requested: Requested) host.Action {
    const name = if (requested == .name) requested.name else "(none)";
    host.logf(.warn, "model {s} has no price in rule {s}; request refused (add it, or a \"*\" entry, to prices)", .{ name, rule.name });
    host.incrementMetric(metrics.plugin.requests_rejected, 1);
    labelled.countRequest(ruleLabel(rule), if (requested == .name) requested.name else null, .rejected); // issue 16
    setProperty("tokenlimit_decision", "rejected_unpriced");
    response.sendPlain(rule.rejected_code, "tokenlimit_unpriced", "The requested model has no price for this budget") catch |err| {
        host.logf(.err, "could not send the rejection: {s}", .{@errorName(err)});
        return .@"continue";
    };
    return .pause;
}

fn ruleLabel(rule: *const config.Rule) []const u8 {
    return if (rule.configured_name.len > 0) rule.configured_name else rule.name;
}

fn setProperty(name: []const u8, value: []const u8) void {
    host.setProperty(name, value) catch {}; // access-log fields are best effort
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

test "model: Azure deployments and Gemini model paths name the model, decoded" {
    var out: Buffer = undefined;
    try testing.expectEqualStrings("gpt-4o", fromPath("/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01", &out).name);
    try testing.expectEqualStrings("gpt-4o", fromPath("/openai/deployments/gpt%2D4o/chat/completions", &out).name);
    try testing.expectEqualStrings("gemini-1.5-pro", fromPath("/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse", &out).name);
    try testing.expectEqualStrings("gemini-2.0-flash", fromPath("/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent", &out).name);
    try testing.expectEqual(Requested.none, fromPath("/v1/chat/completions", &out));
    try testing.expectEqual(Requested.none, fromPath("/v1/models", &out));
    try testing.expectEqual(Requested.none, fromPath("/v1/models/gpt-4o", &out));
    try testing.expectEqual(Requested{ .refused = .invalid }, fromPath("/openai/deployments/gpt%2/chat", &out));
    try testing.expectEqual(Requested{ .refused = .invalid }, fromPath("/openai/deployments/a%0Ab/chat", &out));
    const long_name: [config.model_bytes_max + 1]u8 = @splat('m');
    const long = "/openai/deployments/" ++ long_name ++ "/chat";
    try testing.expectEqual(Requested{ .refused = .too_long }, fromPath(long, &out));
}

test "model: a header value is bounded and checked" {
    var out: Buffer = undefined;
    const long_name: [config.model_bytes_max + 1]u8 = @splat('m');
    try testing.expectEqualStrings("qwen-max", fromHeaderValue("qwen-max", &out).name);
    try testing.expectEqual(Requested.none, fromHeaderValue("", &out));
    try testing.expectEqual(Requested{ .refused = .too_long }, fromHeaderValue(&long_name, &out));
    try testing.expectEqual(Requested{ .refused = .invalid }, fromHeaderValue("a\tb", &out));
}

test "model: `models` conditions; no model matches only items without one" {
    var steps: u32 = 10_000;
    const models = [_]config.KeyMatcher{ .{ .literal = "gpt-4o" }, .{ .literal = "o1" } };
    const item = config.RuleItem{ .limit_type = .per_header, .source = "x-api-key", .keys = &.{}, .models = &models };
    try testing.expect(applies(&item, .{ .name = "gpt-4o" }, &steps));
    try testing.expect(!applies(&item, .{ .name = "gpt-4o-mini" }, &steps));
    try testing.expect(!applies(&item, .{ .name = "GPT-4O" }, &steps)); // no case folding
    try testing.expect(!applies(&item, .none, &steps));
    const plain = config.RuleItem{ .limit_type = .per_header, .source = "x-api-key", .keys = &.{} };
    try testing.expect(applies(&plain, .none, &steps));
    try testing.expect(!plain.modelAware());
    try testing.expect(item.modelAware());
}

test "model: limit_by_model shares the key's budget, per_model splits by model" {
    const keys = [_]config.LimitKey{.{ .text = "*", .matcher = .any, .limits = .{} }};
    const shared = config.RuleItem{ .limit_type = .model, .source = "", .keys = &keys };
    try testing.expectEqualStrings("*", budgetValue(&shared, &keys[0], "gpt-4o"));
    const quota = config.RuleItem{ .limit_type = .per_model, .source = "", .keys = &keys };
    try testing.expectEqualStrings("gpt-4o", budgetValue(&quota, &keys[0], "gpt-4o"));
    var hashed: counter.HashedValue = undefined;
    const per_key = config.RuleItem{ .limit_type = .per_header, .source = "x-api-key", .keys = &keys, .per_model = true };
    try testing.expectEqualStrings("gpt-4o", segment(&per_key, .{ .name = "gpt-4o" }, &hashed).?);
    try testing.expectEqualStrings("", segment(&per_key, .none, &hashed).?);
    try testing.expectEqual(@as(usize, 32), segment(&per_key, .{ .name = "org/model:latest" }, &hashed).?.len);
    try testing.expectEqual(@as(?[]const u8, null), segment(&quota, .{ .name = "gpt-4o" }, &hashed));
}

test "model: the first matching price entry prices a request; no model takes `*` only" {
    const prices = [_]config.PriceEntry{
        .{ .text = "gpt-4o-mini", .matcher = .{ .literal = "gpt-4o-mini" }, .price = .{ .input = 150_000 } },
        .{ .text = "gpt-4o", .matcher = .{ .literal = "gpt-4o" }, .price = .{ .input = 2_500_000 } },
        .{ .text = "*", .matcher = .any, .price = .{ .input = 9 } },
    };
    const rule = config.Rule{ .name = "r", .items = &.{}, .prices = &prices };
    try testing.expectEqual(@as(u64, 2_500_000), priceOf(&rule, .{ .name = "gpt-4o" }).?.input);
    try testing.expectEqual(@as(u64, 150_000), priceOf(&rule, .{ .name = "gpt-4o-mini" }).?.input);
    try testing.expectEqual(@as(u64, 9), priceOf(&rule, .{ .name = "o1" }).?.input);
    try testing.expectEqual(@as(u64, 9), priceOf(&rule, .none).?.input);
    const strict = config.Rule{ .name = "r", .items = &.{}, .prices = prices[0..2] };
    try testing.expectEqual(@as(?config.Price, null), priceOf(&strict, .{ .name = "o1" }));
    try testing.expectEqual(@as(?config.Price, null), priceOf(&strict, .none));
}
