//! The response cache in a request's life (issue 15, docs/cache.md). The pieces are pure or
//! store-only (cache/key.zig, entry.zig, store_local.zig, store_redis.zig); this file is where
//! context.zig and response_phase.zig call them:
//!
//! 1. Request headers: `Cache-Control: no-store` or `no-cache` bypasses the cache (no lookup,
//!    nothing stored); a body the cache cannot key (unknown length, over the body bound, not
//!    JSON) bypasses it too. Otherwise the key waits for the whole body.
//! 2. Before admission (`lookup`): the local ring answers at once, Redis later (phase
//!    `awaiting_cache`). A miss goes on to admission as today.
//! 3. A hit (`onHit`) is admitted against the rule's request counters only (a hit still counts
//!    for `request_per_*`, and is charged 0 tokens and no money), then answered by the filter:
//!    the stored status, content type and body (an event stream replayed as the same bytes),
//!    with `x-tokenlimit-cache: hit` and `Age`. A budget refusal still refuses it.
//! 4. A miss's answer is kept as the client receives it (`capture`) and stored when it ends
//!    with 2xx, usage reported by the upstream, and at most `max_entry_bytes`; never an
//!    aborted stream, an error, or an answer whose usage had to be estimated.
//!
//! Shadow mode (`shadow: true`) changes no traffic: lookups and stores run, hits are counted and
//! logged (`tokenlimit_cache: hit`), but every request goes upstream and is charged as usual.
const std = @import("std");
const config = @import("../config/config.zig");
const context = @import("context.zig");
const entry_zig = @import("../cache/entry.zig");
const header_map = @import("../abi/header_map.zig");
const host = @import("../abi/host.zig");
const key = @import("../cache/key.zig");
const metrics = @import("../abi/metrics.zig");
const redis = @import("../store/redis.zig");
const request = @import("../usage/request.zig");
const sha256 = @import("../match/sha256.zig");
const store = @import("../store/store.zig");
const store_local = @import("../cache/store_local.zig");

const allocator = host.allocator;
const HttpContext = context.HttpContext;
const setProperty = context.setProperty;

pub const Status = enum { off, bypass, miss, hit };

pub const State = struct {
    status: Status = .off,
    /// The key is known (the whole request was read).
    keyed: bool = false,
    digest: key.Digest = undefined,
    /// A hit's entry bytes (owned) and the entry read from them, until it is served.
    hit: ?[]u8 = null,
    entry: ?entry_zig.Entry = null,
    /// What admission needs after a Redis lookup missed.
    info: request.RequestInfo = .{},
    body_bytes: u64 = 0,
    /// A miss's answer as the client receives it, while it may still be stored.
    capture: std.ArrayList(u8) = .empty,
    capturing: bool = false,
    response_status: u16 = 0,
    content_type: [entry_zig.content_type_bytes_max]u8 = undefined,
    content_type_len: usize = 0,
    /// Settlement's charge: stored with the entry (the tokens a later hit saves).
    tokens: u64 = 0,
    usage_reported: bool = false,
    /// The hit was answered by a local reply; its headers pass this filter next.
    served: bool = false,

    pub fn deinit(self: *State) void {
        if (self.hit) |bytes| allocator.free(bytes);
        self.capture.deinit(allocator);
        self.* = undefined;
    }

    fn contentType(self: *const State) []const u8 {
        return self.content_type[0..self.content_type_len];
    }
};

/// Request headers, for a rule that caches: bypass, key a body-less request now, or say that
/// the key needs the whole body (the caller waits for it).
pub fn onRequestHeaders(self: *HttpContext, rule: *const config.Rule, end_of_stream: bool, body_readable: bool) bool {
    if (rule.cache == null) return false;
    if (noCacheAsked()) {
        bypass(self);
        return false;
    }
    self.cache.status = .miss;
    if (end_of_stream) {
        keyFromBody(self, "");
        return false;
    }
    if (!body_readable) bypass(self);
    return body_readable;
}

fn bypass(self: *HttpContext) void {
    self.cache.status = .bypass;
    host.incrementMetric(metrics.plugin.cache_bypasses, 1);
    setProperty("tokenlimit_cache", "bypass");
}

/// `Cache-Control: no-store` or `no-cache` (any case, among other directives).
fn noCacheAsked() bool {
    var value = (host.getHeader(.request_headers, "cache-control") catch null) orelse return false;
    defer value.deinit();
    var directives = std.mem.tokenizeAny(u8, value.bytes, ", \t");
    while (directives.next()) |directive| {
        if (std.ascii.eqlIgnoreCase(directive, "no-store") or std.ascii.eqlIgnoreCase(directive, "no-cache")) return true;
    }
    return false;
}

/// The request's key, from its whole body as the client sent it (before include_usage).
pub fn keyFromBody(self: *HttpContext, body: []const u8) void {
    if (self.cache.status != .miss) return;
    const rule = self.rule.?;
    var identity: std.ArrayList(u8) = .empty;
    defer identity.deinit(allocator);
    scopeIdentity(self, rule, &identity) catch return bypass(self);
    var method = headerOrEmpty(":method");
    defer method.deinit();
    var authority = headerOrEmpty(":authority");
    defer authority.deinit();
    var path = headerOrEmpty(":path");
    defer path.deinit();
    const model = if (self.requested_model == .name) self.requested_model.name else "";
    const parts: key.Parts = .{ .method = method.bytes, .authority = authority.bytes, .path = path.bytes, .model = model, .scope = identity.items };
    self.cache.digest = key.digest(allocator, parts, body) catch |err| {
        host.logf(.debug, "rule {s}: request not cached ({s})", .{ rule.name, @errorName(err) });
        return bypass(self);
    };
    self.cache.keyed = true;
}

/// `scope: rule`: the rule's name. `scope: key`: the caller as the rule's counters name it
/// (their keys carry each item's key value, credentials hashed), plus a hash of the
/// Authorization header, so two callers never share an answer even under a global budget.
fn scopeIdentity(self: *HttpContext, rule: *const config.Rule, out: *std.ArrayList(u8)) !void {
    try out.appendSlice(allocator, rule.name);
    if (rule.cache.?.scope == .rule) return;
    for (self.counters.items) |counter| {
        try out.append(allocator, 0);
        try out.appendSlice(allocator, counter.key.slice());
    }
    var authorization = headerOrEmpty("authorization");
    defer authorization.deinit();
    try out.append(allocator, 0);
    try out.appendSlice(allocator, &sha256.hash(authorization.bytes));
}

fn headerOrEmpty(name: []const u8) host.HostBytes {
    return (host.getHeader(.request_headers, name) catch null) orelse host.HostBytes{ .bytes = &.{} };
}

/// Before admission: answers a hit, or waits for Redis (`pause`); null goes on to admission.
pub fn lookup(self: *HttpContext, info: request.RequestInfo, body_bytes: u64) ?host.Action {
    if (self.cache.status != .miss) return null;
    if (!self.cache.keyed) {
        bypass(self); // the body could not be read after all
        return null;
    }
    const rule = self.rule.?;
    switch (store.Store.of(rule)) {
        .local => {
            const found = store_local.get(allocator, self.cache.digest) catch |err| blk: {
                host.incrementMetric(metrics.plugin.cache_store_errors, 1);
                host.logf(.warn, "rule {s}: cache lookup failed ({s}); served as a miss", .{ rule.name, @errorName(err) });
                break :blk null;
            };
            if (found) |bytes| return onFound(self, bytes);
            return missed(self);
        },
        .redis => |remote| {
            if (!redis.available(host.nowMs())) return missed(self);
            redis.cacheGet(remote.settings.*, self.cache.digest, self.caller()) catch |err| {
                host.incrementMetric(metrics.plugin.cache_store_errors, 1);
                host.logf(.warn, "rule {s}: could not ask redis for the cache ({s}); served as a miss", .{ rule.name, @errorName(err) });
                return missed(self);
            };
            self.cache.info = info;
            self.cache.body_bytes = body_bytes;
            self.enter(.awaiting_cache);
            return .pause;
        },
    }
}

fn missed(self: *HttpContext) ?host.Action {
    self.cache.status = .miss;
    host.incrementMetric(metrics.plugin.cache_misses, 1);
    setProperty("tokenlimit_cache", "miss");
    return null;
}

/// Redis answered the lookup (or failed: a miss). Goes on as `lookup` would have.
pub fn onLookupReply(self: *HttpContext, outcome: redis.Outcome) void {
    std.debug.assert(self.phase == .awaiting_cache);
    self.enter(.idle);
    var action: ?host.Action = null;
    switch (outcome) {
        .cached => |found| if (found) |bytes| {
            if (allocator.dupe(u8, bytes)) |owned| {
                action = onFound(self, owned);
            } else |_| action = missed(self);
        } else {
            action = missed(self);
        },
        .failed => |failure| {
            host.incrementMetric(metrics.plugin.cache_store_errors, 1);
            host.logf(.warn, "rule {s}: cache lookup failed ({s}); served as a miss", .{ self.rule.?.name, failure.describe() });
            action = missed(self);
        },
        else => action = missed(self),
    }
    const next = action orelse afterAdmission(self, self.decide(self.cache.info, self.cache.body_bytes));
    if (next == .@"continue") host.continueRequest() catch |err| {
        host.logf(.err, "could not resume the request: {s}", .{@errorName(err)});
    };
}

/// An entry came back (owned bytes): a hit if it is this request's and fresh, else a miss.
fn onFound(self: *HttpContext, bytes: []u8) ?host.Action {
    const found = entry_zig.Entry.decode(bytes, self.cache.digest, host.nowMs()) orelse {
        allocator.free(bytes);
        return missed(self);
    };
    self.cache.status = .hit;
    host.incrementMetric(metrics.plugin.cache_hits, 1);
    setProperty("tokenlimit_cache", "hit");
    const rule = self.rule.?;
    if (rule.shadow) {
        // Shadow: report the hit, change nothing (the request goes upstream as usual).
        host.logf(.debug, "shadow: cache hit rule={s} age={d}s", .{ rule.name, found.ageSeconds(host.nowMs()) });
        allocator.free(bytes);
        return null;
    }
    self.cache.hit = bytes;
    self.cache.entry = found;
    // A hit counts as a request (request_per_*), never in tokens or money.
    var kept: usize = 0;
    for (self.counters.items) |counter| {
        if (counter.unit != .requests) continue;
        self.counters.items[kept] = counter;
        kept += 1;
    }
    self.counters.shrinkRetainingCapacity(kept);
    self.price = null;
    if (kept == 0) {
        if (self.phase != .idle) self.enter(.idle);
        return serve(self);
    }
    return afterAdmission(self, self.decide(.{}, 0));
}

/// After admission of a hit: serve it when admitted (settling 0 tokens at once). Any other
/// action (a refusal, a wait for Redis) is returned as it is.
pub fn afterAdmission(self: *HttpContext, action: host.Action) host.Action {
    if (self.cache.hit == null or action != .@"continue" or self.cache.served) return action;
    if (self.phase == .admitted) {
        self.enter(.settled);
        self.store.settle(self.caller(), self.counters.items, host.nowMs(), 0) catch |err| {
            host.incrementMetric(metrics.plugin.store_errors, 1);
            host.logf(.err, "rule {s}: settling a cache hit failed: {s}", .{ self.rule.?.name, @errorName(err) });
        };
    }
    return serve(self);
}

/// Answers the request with the stored entry.
fn serve(self: *HttpContext) host.Action {
    const found = self.cache.entry.?;
    const now_ms = host.nowMs();
    var age: [24]u8 = undefined;
    var headers: header_map.HeaderMapWriter(3) = .{};
    headers.add("x-tokenlimit-cache", "hit");
    headers.add("age", std.fmt.bufPrint(&age, "{d}", .{found.ageSeconds(now_ms)}) catch "0");
    headers.add("content-type", found.content_type);
    var serialized: [1024]u8 = undefined;
    const header_bytes = headers.write(&serialized) catch unreachable; // content type <= 256 bytes
    @memcpy(self.cache.content_type[0..found.content_type.len], found.content_type);
    self.cache.content_type_len = found.content_type.len;
    self.cache.served = true;
    self.countOutcome(.cached);
    setProperty("tokenlimit_decision", "cached");
    setProperty("tokenlimit_tokens", "0");
    host.incrementMetric(metrics.plugin.cache_tokens_saved, @intCast(@min(found.tokens, std.math.maxInt(i64))));
    host.sendLocalResponse(found.status, "tokenlimit_cache_hit", found.body, header_bytes) catch |err| {
        host.logf(.err, "could not answer from the cache: {s}", .{@errorName(err)});
        return .@"continue";
    };
    return .pause;
}

/// Response headers. True: this is a served hit's local reply (nothing more to do with it).
/// Envoy adds `text/plain` to a local reply's headers; the stored type replaces it.
pub fn onResponseHeaders(self: *HttpContext) bool {
    if (self.cache.served) {
        host.replaceHeader(.response_headers, "content-type", self.cache.contentType()) catch {};
        return true;
    }
    const shown: []const u8 = switch (self.cache.status) {
        .miss => "miss",
        .bypass => "bypass",
        .off, .hit => return false, // a shadow hit: the client gets a fresh answer, unmarked
    };
    if (!self.rule.?.shadow) host.addHeader(.response_headers, "x-tokenlimit-cache", shown) catch {};
    return false;
}

/// A 2xx answer to a miss begins: keep it while it may still be stored.
pub fn startCapture(self: *HttpContext, code: u16, content_type: []const u8) void {
    if (self.cache.status != .miss or !self.cache.keyed) return;
    if (code < 200 or code >= 300 or content_type.len > entry_zig.content_type_bytes_max) return;
    self.cache.capturing = true;
    self.cache.response_status = code;
    @memcpy(self.cache.content_type[0..content_type.len], content_type);
    self.cache.content_type_len = content_type.len;
}

/// The bytes the client receives of the answer (after the usage event filter).
pub fn capture(self: *HttpContext, bytes: []const u8) void {
    if (!self.cache.capturing) return;
    if (self.cache.capture.items.len + bytes.len > self.rule.?.cache.?.max_entry_bytes) return stopCapture(self);
    self.cache.capture.appendSlice(allocator, bytes) catch stopCapture(self);
}

fn stopCapture(self: *HttpContext) void {
    self.cache.capturing = false;
    self.cache.capture.clearAndFree(allocator);
}

/// Settlement's charge (response_phase.zig): what the answer cost, and whether usage was read.
pub fn noteCost(self: *HttpContext, tokens: u64, reported: bool) void {
    self.cache.tokens = tokens;
    self.cache.usage_reported = reported;
}

/// The answer is complete (end of stream or trailers): store it if it qualifies.
pub fn finish(self: *HttpContext) void {
    if (!self.cache.capturing) return;
    defer stopCapture(self);
    if (!self.cache.usage_reported or self.response_encoded or self.cache.capture.items.len == 0) return;
    const rule = self.rule.?;
    const cache = rule.cache.?;
    const now_ms = host.nowMs();
    const ttl_ms = @as(u64, cache.ttl_seconds) * std.time.ms_per_s;
    const stored: entry_zig.Entry = .{
        .digest = self.cache.digest,
        .stored_at_ms = now_ms,
        .expires_at_ms = now_ms + ttl_ms,
        .tokens = self.cache.tokens,
        .status = self.cache.response_status,
        .content_type = self.cache.contentType(),
        .body = self.cache.capture.items,
    };
    const bytes = stored.encode(allocator) catch return;
    defer allocator.free(bytes);
    const written = switch (store.Store.of(rule)) {
        .local => store_local.put(self.cache.digest, bytes),
        .redis => |remote| redis.cacheSet(remote.settings.*, self.cache.digest, bytes, ttl_ms, self.caller()),
    };
    written catch |err| {
        host.incrementMetric(metrics.plugin.cache_store_errors, 1);
        host.logf(.warn, "rule {s}: could not store the answer in the cache: {s}", .{ rule.name, @errorName(err) });
        return;
    };
    host.incrementMetric(metrics.plugin.cache_bytes_stored, @intCast(bytes.len));
}
