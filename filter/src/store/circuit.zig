//! The Redis store's circuit breaker, pure: `step(circuit, now_ms, event)` returns the next
//! circuit, whether a call may go out, and what changed (for the caller to log and count once).
//! After `failures_to_open` consecutive failures the circuit opens for a back-off; then exactly
//! one probe goes through (half-open); its success closes the circuit, its failure reopens it
//! with the back-off doubled up to `backoff_max_ms`. So an outage costs requests nothing once
//! it is noticed.
const std = @import("std");

pub const failures_to_open = 3;
pub const backoff_initial_ms = 1000;
pub const backoff_max_ms = 30_000;
comptime {
    std.debug.assert(failures_to_open >= 1);
    std.debug.assert(backoff_initial_ms <= backoff_max_ms);
}

pub const State = enum { closed, open, half_open };

pub const Circuit = struct {
    state: State = .closed,
    consecutive_failures: u32 = 0,
    open_until_ms: u64 = 0,
    backoff_ms: u64 = backoff_initial_ms,
    probe_in_flight: bool = false,
};

pub const Event = enum {
    /// A call is about to be made: may it?
    ask,
    succeeded,
    failed,
};

/// What a step changed, for one log line and the metrics.
pub const Change = enum { none, probing, recovered, opened };

pub const Step = struct {
    circuit: Circuit,
    /// For `ask`: whether the call may go out.
    allowed: bool = false,
    change: Change = .none,
};

pub fn step(circuit: Circuit, now_ms: u64, event: Event) Step {
    var next = circuit;
    switch (event) {
        .ask => switch (circuit.state) {
            .closed => return .{ .circuit = next, .allowed = true },
            .open => {
                if (now_ms < circuit.open_until_ms) return .{ .circuit = next };
                next.state = .half_open;
                next.probe_in_flight = true;
                return .{ .circuit = next, .allowed = true, .change = .probing };
            },
            .half_open => {
                if (circuit.probe_in_flight) return .{ .circuit = next };
                next.probe_in_flight = true;
                return .{ .circuit = next, .allowed = true };
            },
        },
        .succeeded => return .{ .circuit = .{}, .change = if (circuit.state == .closed) .none else .recovered },
        .failed => {
            next.consecutive_failures +|= 1;
            next.probe_in_flight = false;
            const opening = switch (circuit.state) {
                .closed => next.consecutive_failures >= failures_to_open,
                .half_open => true,
                .open => false, // a call sent before the circuit opened: already counted for
            };
            if (!opening) return .{ .circuit = next };
            if (circuit.state == .half_open) next.backoff_ms = @min(circuit.backoff_ms * 2, backoff_max_ms);
            next.state = .open;
            next.open_until_ms = now_ms + next.backoff_ms;
            std.debug.assert(next.backoff_ms >= backoff_initial_ms and next.backoff_ms <= backoff_max_ms);
            return .{ .circuit = next, .change = .opened };
        },
    }
}

const testing = std.testing;

test "circuit: stays closed below the failure threshold, a success resets the count" {
    var circuit: Circuit = .{};
    for (0..failures_to_open - 1) |_| circuit = step(circuit, 0, .failed).circuit;
    try testing.expectEqual(State.closed, circuit.state);
    circuit = step(circuit, 0, .succeeded).circuit;
    try testing.expectEqual(@as(u32, 0), circuit.consecutive_failures);
    try testing.expect(step(circuit, 0, .ask).allowed);
}

test "circuit: opens on the third consecutive failure and refuses calls during the back-off" {
    var circuit: Circuit = .{};
    var last: Step = undefined;
    for (0..failures_to_open) |_| {
        last = step(circuit, 5_000, .failed);
        circuit = last.circuit;
    }
    try testing.expectEqual(Change.opened, last.change);
    try testing.expectEqual(@as(u64, 5_000 + backoff_initial_ms), circuit.open_until_ms);
    try testing.expect(!step(circuit, 5_999, .ask).allowed);
}

test "circuit: after the back-off exactly one probe goes through" {
    var circuit: Circuit = .{ .state = .open, .open_until_ms = 1_000 };
    const probe = step(circuit, 1_000, .ask);
    try testing.expect(probe.allowed);
    try testing.expectEqual(Change.probing, probe.change);
    circuit = probe.circuit;
    try testing.expectEqual(State.half_open, circuit.state);
    try testing.expect(!step(circuit, 1_001, .ask).allowed);
}

test "circuit: a successful probe closes it and says it recovered" {
    const circuit: Circuit = .{ .state = .half_open, .probe_in_flight = true, .backoff_ms = 8_000, .consecutive_failures = 4 };
    const closed = step(circuit, 0, .succeeded);
    try testing.expectEqual(Change.recovered, closed.change);
    try testing.expectEqual(Circuit{}, closed.circuit);
}

test "circuit: a failed probe reopens it with the back-off doubled, capped" {
    var circuit: Circuit = .{ .state = .half_open, .probe_in_flight = true, .backoff_ms = 1_000 };
    circuit = step(circuit, 10_000, .failed).circuit;
    try testing.expectEqual(State.open, circuit.state);
    try testing.expectEqual(@as(u64, 2_000), circuit.backoff_ms);
    try testing.expectEqual(@as(u64, 12_000), circuit.open_until_ms);
    circuit = .{ .state = .half_open, .backoff_ms = 20_000 };
    try testing.expectEqual(@as(u64, backoff_max_ms), step(circuit, 0, .failed).circuit.backoff_ms);
}

test "circuit: failures of calls sent before it opened do not extend the back-off" {
    const circuit: Circuit = .{ .state = .open, .open_until_ms = 3_000, .consecutive_failures = 3 };
    const later = step(circuit, 2_000, .failed);
    try testing.expectEqual(Change.none, later.change);
    try testing.expectEqual(@as(u64, 3_000), later.circuit.open_until_ms);
}
