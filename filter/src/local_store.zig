//! The local budget store: Envoy shared data, one record per counter, shared by every worker
//! thread (each worker runs its own VM; shared data is per VM id, so all of them see it).
//! Updates are compare-and-swap loops, so concurrent charges from several workers all land.
const std = @import("std");
const host = @import("host.zig");
const window = @import("window.zig");

/// Bound on compare-and-swap attempts: contention on one key from N workers resolves in at
/// most N rounds; hitting this bound means something else is wrong, and it is logged.
pub const cas_attempts_max = 32;

pub const Error = error{ StoreUnavailable, Contended };

/// The counter's current record, or null when it was never written.
pub fn read(key: []const u8) Error!?window.Record {
    var shared = (host.getSharedData(key) catch return error.StoreUnavailable) orelse return null;
    defer shared.value.deinit();
    return window.Record.decode(shared.value.bytes);
}

/// Creates the counter when it does not exist yet. Done at admission, long before any charge
/// for it can arrive: shared data ignores `cas` when inserting, so two first writers race, and
/// racing zero records are harmless where racing charges would lose one.
pub fn ensure(key: []const u8, now_ms: u64, w: window.Window) Error!void {
    if (host.getSharedData(key) catch return error.StoreUnavailable) |existing| {
        var value = existing.value;
        value.deinit();
        return;
    }
    const empty = window.Record{ .window_start_ms = window.windowStartMs(now_ms, w), .used = 0 };
    host.setSharedData(key, &empty.encode(), 0) catch return error.StoreUnavailable;
}

/// Adds `tokens` to the counter's current window. Returns the usage after the charge.
pub fn charge(key: []const u8, now_ms: u64, w: window.Window, tokens: u64) Error!u64 {
    var attempt: usize = 0;
    while (attempt < cas_attempts_max) : (attempt += 1) {
        const current = host.getSharedData(key) catch return error.StoreUnavailable;
        var record = window.Record{ .window_start_ms = 0, .used = 0 };
        var cas: u32 = 0;
        if (current) |shared| {
            var value = shared.value;
            defer value.deinit();
            if (window.Record.decode(value.bytes)) |decoded| record = decoded;
            cas = shared.cas;
        }
        const next = record.charged(now_ms, w, tokens);
        host.setSharedData(key, &next.encode(), cas) catch |err| switch (err) {
            error.CasMismatch => continue, // another worker charged first; re-read and retry
            else => return error.StoreUnavailable,
        };
        return next.used;
    }
    return error.Contended;
}
