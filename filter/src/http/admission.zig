//! Admission, pure given a store's answer: what each counter asks for, what the answer means
//! for the request (`judge`), and the local shares of `failure_mode: local`. No host calls:
//! context.zig carries a verdict out (properties, metrics, logs, replies).
const std = @import("std");
const config = @import("../config/config.zig");
const store = @import("../store/store.zig");

/// Sets what each counter asks room for: 1 for request counters; for token and cost counters
/// the estimate under `reserve` admission, 0 under `postpaid` (room means "not spent").
pub fn prepare(counters: []store.Counter, admission: config.Admission, estimate: Estimate, now_ms: u64) void {
    for (counters) |*counter| {
        counter.admitted_at_ms = now_ms;
        counter.admit_amount = switch (counter.unit) {
            .requests => 1,
            .tokens => if (admission == .reserve) estimate.tokens else 0,
            .cost => if (admission == .reserve) estimate.cost else 0,
        };
    }
}

/// What a request may use, for a reservation: tokens, and their cost (micro-USD) at its price.
pub const Estimate = struct { tokens: u64, cost: u64 = 0 };

/// What happens to the request.
pub const Verdict = union(enum) {
    /// Every counter had room: the request goes on, counted.
    allowed,
    /// Shadow mode: the counter at this index refused, the request goes on anyway (counted).
    shadow_rejected: usize,
    /// The counter at this index refused: the client gets the rule's rejection.
    rejected: usize,
    /// The store answers later: the request waits, paused.
    wait,
    /// The local store failed (host trouble in this process): the request goes on uncounted;
    /// a gateway that stops serving over its own bookkeeping helps no one.
    uncounted: store.Failure,
    /// The Redis store could not be asked; the rule's failure_mode decides:
    /// open: the request goes on uncounted (as Higress does).
    fail_open: store.Failure,
    /// closed: the client gets a 503.
    fail_closed: store.Failure,
    /// local: the request is judged again by the local store against this gateway's share.
    fail_local: store.Failure,
};

pub fn judge(shadow: bool, failure_mode: config.FailureMode, admission: store.Admission) Verdict {
    return switch (admission) {
        .pending => .wait,
        .decided => |refused| if (refused) |index|
            (if (shadow) .{ .shadow_rejected = index } else .{ .rejected = index })
        else
            .allowed,
        .failed => |failure| if (failure.isLocal()) .{ .uncounted = failure } else switch (failure_mode) {
            .open => .{ .fail_open = failure },
            .closed => .{ .fail_closed = failure },
            .local => .{ .fail_local = failure },
        },
    };
}

/// `failure_mode: local`: each gateway enforces its configured share (thousandths) of every
/// limit on its own, at least 1.
pub fn shareLimits(counters: []store.Counter, local_share_milli: u32) void {
    std.debug.assert(local_share_milli >= 1 and local_share_milli <= 1000);
    for (counters) |*counter| {
        const shared = @as(u128, counter.budget.limit) * local_share_milli / 1000;
        counter.budget.limit = @max(1, @as(u64, @intCast(shared)));
    }
}

/// "per_header:x-api-key:tokens:60:<hash>" out of a counter key, for the access log.
pub fn counterIdentity(key: []const u8) []const u8 {
    const tag_end = std.mem.indexOf(u8, key, "}:") orelse return key;
    return key[tag_end + 2 ..];
}

const testing = std.testing;

fn testCounter(unit: config.Unit, limit: u64) store.Counter {
    return .{ .key = .{}, .budget = .{ .algorithm = .fixed, .window = .minute, .limit = limit }, .unit = unit };
}

test "admission: request counters ask for one, token counters for the estimate only under reserve" {
    var counters = [_]store.Counter{ testCounter(.requests, 10), testCounter(.tokens, 1000) };
    prepare(&counters, .reserve, .{ .tokens = 250 }, 42);
    try testing.expectEqual(@as(u64, 1), counters[0].admit_amount);
    try testing.expectEqual(@as(u64, 250), counters[1].admit_amount);
    try testing.expectEqual(@as(u64, 42), counters[1].admitted_at_ms);
    prepare(&counters, .postpaid, .{ .tokens = 250 }, 43);
    try testing.expectEqual(@as(u64, 0), counters[1].admit_amount);
}

test "admission: a refusal rejects, or only logs in shadow mode" {
    try testing.expectEqual(Verdict.allowed, judge(false, .open, .{ .decided = null }));
    try testing.expectEqual(Verdict{ .rejected = 1 }, judge(false, .open, .{ .decided = 1 }));
    try testing.expectEqual(Verdict{ .shadow_rejected = 0 }, judge(true, .closed, .{ .decided = 0 }));
    try testing.expectEqual(Verdict.wait, judge(false, .closed, .pending));
}

test "admission: an unavailable Redis store follows failure_mode" {
    try testing.expectEqual(Verdict{ .fail_open = .timeout }, judge(false, .open, .{ .failed = .timeout }));
    try testing.expectEqual(Verdict{ .fail_closed = .circuit_open }, judge(false, .closed, .{ .failed = .circuit_open }));
    try testing.expectEqual(Verdict{ .fail_local = .bad_reply }, judge(true, .local, .{ .failed = .bad_reply }));
}

test "admission: a failing local store admits uncounted whatever failure_mode says" {
    try testing.expectEqual(Verdict{ .uncounted = .local_contended }, judge(false, .closed, .{ .failed = .local_contended }));
    try testing.expectEqual(Verdict{ .uncounted = .local_unavailable }, judge(false, .local, .{ .failed = .local_unavailable }));
}

test "admission: local shares scale every limit and never reach zero" {
    var counters = [_]store.Counter{ testCounter(.tokens, 1000), testCounter(.requests, 3) };
    shareLimits(&counters, 250);
    try testing.expectEqual(@as(u64, 250), counters[0].budget.limit);
    try testing.expectEqual(@as(u64, 1), counters[1].budget.limit);
}

test "admission: the access log names the counter without its hash tag" {
    try testing.expectEqualStrings("per_header:x-api-key:tokens:60:ab", counterIdentity("tokenlimit:{r}:per_header:x-api-key:tokens:60:ab"));
    try testing.expectEqualStrings("plain", counterIdentity("plain"));
}
