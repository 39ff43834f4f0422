//! Transitional: unit_tests.zig still names this path; the file moved to abi/host.zig.
//! Until unit_tests.zig is generated from the tree (issue 18, item 6), this shim also reaches
//! every file under the new folders, so their tests run. Delete it then.
test {
    _ = @import("abi/header_map.zig");
    _ = @import("abi/host.zig");
    _ = @import("abi/message.zig");
    _ = @import("abi/metrics.zig");
    _ = @import("store/circuit.zig");
    _ = @import("store/local.zig");
    _ = @import("store/redis.zig");
    _ = @import("store/resp.zig");
    _ = @import("store/retry_queue.zig");
    _ = @import("store/script.zig");
    _ = @import("store/store.zig");
    _ = @import("store/transport_higress.zig");
    _ = @import("store/transport_http.zig");
    _ = @import("http/admission.zig");
    _ = @import("http/context.zig");
    _ = @import("http/rewrite.zig");
    _ = @import("http/root.zig");
    _ = @import("http/select.zig");
    _ = @import("http/settle.zig");
    _ = @import("usage/json_scan.zig");
    _ = @import("usage/request.zig");
    _ = @import("usage/usage.zig");
    _ = @import("meter/budget.zig");
    _ = @import("meter/counter.zig");
    _ = @import("respond/response.zig");
    _ = @import("match/match.zig");
    _ = @import("match/sha256.zig");
}
