//! "My usage" (issue 16): `GET <usage_path>` (default /tokenlimit/v1/usage) answered by the
//! filter itself, for the caller's own identity. The request is judged like any other, so its
//! counters are exactly the budgets this caller would be charged against (the same headers,
//! parameters, cookies, consumer or address the rule keys on): another caller's budgets cannot
//! be named. Each is read without a charge (local.peek, or budget.lua's `peek` on Redis, whose
//! answer arrives later: the request waits paused, as an admission does) and reported as JSON:
//! limit, used, remaining and reset per window, with its unit and model. Counter keys and the
//! caller's own values are never echoed. The reply has a fixed bound (`reply_bytes_max`); past
//! it the list ends with `"truncated": true`.
const std = @import("std");
const budget = @import("../meter/budget.zig");
const config = @import("../config/config.zig");
const context = @import("context.zig");
const header_map = @import("../abi/header_map.zig");
const host = @import("../abi/host.zig");
const local = @import("../store/local.zig");
const model = @import("model.zig");
const redis = @import("../store/redis.zig");
const response = @import("../respond/response.zig");
const script = @import("../store/script.zig");
const store = @import("../store/store.zig");

const HttpContext = context.HttpContext;

/// The default `usage_path`: a rule without the field answers here ("" turns it off).
pub const default_path = config.usage_path_default;
/// The longest reply body; the budgets past it are left out (`truncated`).
pub const reply_bytes_max = 16 * 1024;

/// Whether this request asks for the rule's usage endpoint (its path, query string aside).
pub fn isUsageRequest(rule: *const config.Rule, path: ?[]const u8) bool {
    if (rule.usage_path.len == 0) return false;
    return std.mem.eql(u8, pathOnly(path orelse return false), rule.usage_path);
}

pub fn pathOnly(path: []const u8) []const u8 {
    return path[0 .. std.mem.indexOfAny(u8, path, "?#") orelse path.len];
}

/// The `model` query parameter, if any (plain: no escapes are decoded, so only what a model
/// name holds literally is accepted; anything else reads as no model).
pub fn modelParameter(path: []const u8, out: *model.Buffer) model.Requested {
    const query_at = std.mem.indexOfScalar(u8, path, '?') orelse return .none;
    var pairs = std.mem.splitScalar(u8, path[query_at + 1 ..], '&');
    while (pairs.next()) |pair| {
        if (!std.mem.startsWith(u8, pair, "model=")) continue;
        const value = pair["model=".len..];
        if (std.mem.indexOfAny(u8, value, "%+#") != null) return .none;
        return model.fromHeaderValue(value, out);
    }
    return .none;
}

/// Answers the usage request: at once for the local store, after Redis's reply otherwise.
/// `self.counters` holds the caller's counters (select.collectCounters).
pub fn answer(self: *HttpContext, current: *config.Config, rule: *const config.Rule) host.Action {
    var method = (host.getHeader(.request_headers, ":method") catch null) orelse host.HostBytes{ .bytes = &.{} };
    defer method.deinit();
    if (!std.mem.eql(u8, method.bytes, "GET")) return reply(405, "{\"error\":\"the usage endpoint answers GET only\"}");
    self.requested_model = requestedModel(rule, &self.model_buffer);
    if (rule.modelAware()) model.resolve(&self.counters, rule, self.requested_model) catch {
        self.counters.clearRetainingCapacity();
    };
    const now_ms = host.nowMs();
    for (self.counters.items) |*counter| {
        counter.budget.zone = rule.calendar;
        counter.admitted_at_ms = now_ms; // the zone table is sent for now
    }
    if (self.counters.items.len == 0) return sendBudgets(self, rule);
    switch (store.Store.of(rule)) {
        .local => {
            local.peek(self.counters.items, now_ms) catch return reply(503, "{\"error\":\"the budget store is unavailable\"}");
            return sendBudgets(self, rule);
        },
        .redis => |remote| {
            if (remote.compat != .none) return reply(501, "{\"error\":\"the usage endpoint does not read compat budgets (Higress's own keys)\"}");
            if (!redis.available(now_ms)) return reply(503, "{\"error\":\"the budget store is unavailable\"}");
            const caller = store.Caller{ .rule_name = rule.name, .http_context_id = self.id, .root_context_id = self.root_id };
            redis.peek(remote.settings.*, self.counters.items, caller) catch return reply(503, "{\"error\":\"the budget store is unavailable\"}");
            self.config = current.retain();
            self.rule = rule;
            self.usage_request = true;
            self.enter(.awaiting_store);
            return .pause;
        },
    }
}

/// Redis answered the peek (or failed): the reply goes out now. A client that left meanwhile
/// gets nothing; its context is let go.
pub fn onPeekReply(self: *HttpContext, outcome: redis.Outcome) void {
    std.debug.assert(self.usage_request and self.phase == .awaiting_store);
    self.enter(.idle);
    if (self.abandoned) {
        host.setEffectiveContext(self.id) catch {};
        host.done() catch |err| host.logf(.warn, "proxy_done failed: {s}", .{@errorName(err)});
        return;
    }
    const read = switch (outcome) {
        .peeked => |values| script.readPeekReply(self.counters.items, values),
        else => false,
    };
    _ = if (read) sendBudgets(self, self.rule.?) else reply(503, "{\"error\":\"the budget store is unavailable\"}");
}

fn requestedModel(rule: *const config.Rule, out: *model.Buffer) model.Requested {
    var path = (host.getHeader(.request_headers, ":path") catch null) orelse return .none;
    defer path.deinit();
    const given = modelParameter(path.bytes, out);
    if (given != .none) return if (given == .refused) .none else given;
    const named = model.fromRequestHeaders(rule, out, path.bytes);
    return if (named == .refused) .none else named;
}

var reply_buffer: [reply_bytes_max]u8 = undefined;

fn sendBudgets(self: *HttpContext, rule: *const config.Rule) host.Action {
    const model_name: ?[]const u8 = if (self.requested_model == .name) self.requested_model.name else null;
    return reply(200, write(&reply_buffer, context.ruleLabel(rule), model_name, self.counters.items));
}

fn reply(status: u32, body: []const u8) host.Action {
    var headers: header_map.HeaderMapWriter(2) = .{};
    headers.add("content-type", "application/json");
    headers.add("cache-control", "no-store");
    var buffer: [96]u8 = undefined;
    const serialized = headers.write(&buffer) catch return .@"continue";
    host.sendLocalResponse(status, "tokenlimit_usage", body, serialized) catch |err| {
        host.logf(.err, "could not send the usage reply: {s}", .{@errorName(err)});
        return .@"continue";
    };
    return .pause;
}

// ---- the reply (pure) -------------------------------------------------------------------------

/// `{"rule": ..., "budgets": [...], "truncated": false}`: one entry per counter, in the order
/// the rule's items name them. Fits `out` whatever the counters (entries past it are left out).
pub fn write(out: []u8, rule_name: []const u8, model_name: ?[]const u8, counters: []const store.Counter) []const u8 {
    std.debug.assert(out.len >= 1024);
    const tail = "],\"truncated\":true}";
    var writer = std.Io.Writer.fixed(out[0 .. out.len - tail.len]);
    writer.writeAll("{\"rule\":") catch unreachable;
    writeString(&writer, rule_name[0..@min(rule_name.len, 256)]) catch unreachable;
    writer.writeAll(",\"budgets\":[") catch unreachable;
    var truncated = false;
    for (counters, 0..) |*counter, index| {
        var entry_buffer: [768]u8 = undefined;
        var entry = std.Io.Writer.fixed(&entry_buffer);
        writeEntry(&entry, counter, model_name) catch unreachable; // bounded: see writeEntry
        const separator: []const u8 = if (index > 0) "," else "";
        if (writer.buffer.len - writer.end < separator.len + entry.buffered().len + 2) {
            truncated = true;
            break;
        }
        writer.writeAll(separator) catch unreachable;
        writer.writeAll(entry.buffered()) catch unreachable;
    }
    const end = writer.buffered().len;
    const closing: []const u8 = if (truncated) tail else "],\"truncated\":false}";
    @memcpy(out[end..][0..closing.len], closing);
    return out[0 .. end + closing.len];
}

/// One budget: at most 768 bytes (its strings are bounded: a source of 128 bytes, a model of
/// 256 both escaped at most 6 times over is more; they are cut to fit first).
fn writeEntry(writer: *std.Io.Writer, counter: *const store.Counter, model_name: ?[]const u8) !void {
    const check = counter.check;
    const unit: []const u8 = switch (counter.unit) {
        .tokens => "tokens",
        .requests => "requests",
        .cost => "USD",
    };
    try writer.writeAll("{\"limit_by\":");
    try writeString(writer, limitBy(counter.key.slice(), counter.unit));
    try writer.print(",\"unit\":\"{s}\",\"window\":\"{s}\",\"window_seconds\":{d},\"model\":", .{ unit, @tagName(counter.budget.window), counter.budget.window.seconds() });
    const item_models = if (counter.item) |item| item.modelAware() else false;
    if (item_models and model_name != null) try writeString(writer, model_name.?[0..@min(model_name.?.len, 64)]) else try writer.writeAll("null");
    try writer.writeAll(",\"limit\":");
    try writeAmount(writer, counter.unit, check.limit);
    try writer.writeAll(",\"used\":");
    try writeAmount(writer, counter.unit, check.used);
    try writer.writeAll(",\"remaining\":");
    try writeAmount(writer, counter.unit, check.remaining());
    try writer.print(",\"reset_seconds\":{d}}}", .{(check.reset_in_ms + 999) / 1000});
}

/// Dollars for cost budgets (micro-USD inside), whole numbers otherwise.
fn writeAmount(writer: *std.Io.Writer, unit: config.Unit, amount: u64) !void {
    if (unit != .cost) return writer.print("{d}", .{amount});
    var dollars: [24]u8 = undefined;
    try writer.writeAll(dollars[0..response.printDollars(&dollars, amount)]);
}

/// What the budget keys on, from its counter's name (`tokenlimit:{rule}:<type>[:<source>]:<unit>:
/// ...`): `per_header:x-api-key`, `global`, ... Never the caller's identity, which follows.
pub fn limitBy(key: []const u8, unit: config.Unit) []const u8 {
    const start = (std.mem.indexOf(u8, key, "}:") orelse return "") + 2;
    var marker: [16]u8 = undefined;
    const unit_marker = std.fmt.bufPrint(&marker, ":{s}:", .{@tagName(unit)}) catch return "";
    const end = std.mem.indexOfPos(u8, key, start, unit_marker) orelse return "";
    return key[start..@min(end, start + 160)];
}

/// A JSON string: quotes, backslashes and control characters escaped (at most 6 bytes each).
fn writeString(writer: *std.Io.Writer, text: []const u8) !void {
    try writer.writeByte('"');
    for (text) |c| switch (c) {
        '"', '\\' => try writer.print("\\{c}", .{c}),
        0...0x1f, 0x7f => try writer.print("\\u{x:0>4}", .{c}),
        else => try writer.writeByte(c),
    };
    try writer.writeByte('"');
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

fn testCounter(key: []const u8, unit: config.Unit, window: budget.Window, check: budget.Check) store.Counter {
    var counter = store.Counter{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = window, .limit = check.limit }, .unit = unit, .check = check };
    @memcpy(counter.key.bytes[0..key.len], key);
    counter.key.len = key.len;
    return counter;
}

test "usage endpoint: each budget with its unit, window, limit, use and reset; no identity" {
    const counters = [_]store.Counter{
        testCounter("tokenlimit:{chat}:per_header:x-api-key:tokens:60:0123abcd", .tokens, .minute, .{ .limit = 100, .used = 40, .reset_in_ms = 30_500 }),
        testCounter("tokenlimit:{chat}:global:cost:86400:global", .cost, .day, .{ .limit = 5_000_000, .used = 1_250_000, .reset_in_ms = 1 }),
    };
    var out: [reply_bytes_max]u8 = undefined;
    const text = write(&out, "chat \"v1\"", "gpt-4o", &counters);
    try testing.expectEqualStrings(
        "{\"rule\":\"chat \\\"v1\\\"\",\"budgets\":[" ++
            "{\"limit_by\":\"per_header:x-api-key\",\"unit\":\"tokens\",\"window\":\"minute\",\"window_seconds\":60,\"model\":null,\"limit\":100,\"used\":40,\"remaining\":60,\"reset_seconds\":31}," ++
            "{\"limit_by\":\"global\",\"unit\":\"USD\",\"window\":\"day\",\"window_seconds\":86400,\"model\":null,\"limit\":5.000000,\"used\":1.250000,\"remaining\":3.750000,\"reset_seconds\":1}" ++
            "],\"truncated\":false}",
        text,
    );
    try testing.expect(std.mem.indexOf(u8, text, "0123abcd") == null);
}

test "usage endpoint: the reply is bounded, and still JSON when budgets are left out" {
    var counters: [200]store.Counter = undefined;
    for (&counters) |*counter| counter.* = testCounter("tokenlimit:{r}:per_cookie:session:requests:3600:abc", .requests, .hour, .{ .limit = 1, .used = 0, .reset_in_ms = 0 });
    var out: [4096]u8 = undefined;
    const text = write(&out, "r", null, &counters);
    try testing.expect(text.len <= out.len);
    try testing.expect(std.mem.endsWith(u8, text, "}],\"truncated\":true}"));
    const parsed = try std.json.parseFromSlice(std.json.Value, testing.allocator, text, .{});
    defer parsed.deinit();
    try testing.expect(parsed.value.object.get("budgets").?.array.items.len > 10);
}

test "usage endpoint: the path and its model parameter" {
    try testing.expectEqualStrings("/tokenlimit/v1/usage", pathOnly("/tokenlimit/v1/usage?model=gpt-4o"));
    var out: model.Buffer = undefined;
    try testing.expectEqualStrings("gpt-4o", modelParameter("/u?x=1&model=gpt-4o", &out).name);
    try testing.expect(modelParameter("/u?model=a%20b", &out) == .none);
    try testing.expect(modelParameter("/u", &out) == .none);
    try testing.expectEqualStrings("per_ip:from-remote-addr", limitBy("tokenlimit:{c}:per_ip:from-remote-addr:requests:3600:10.0.0.1", .requests));
}
