//! Root of `zig build test`: the modules whose logic makes no host calls, tested natively.
//! (filter.zig and main.zig need the host; the Python suite drives them inside the real .wasm.)
test {
    _ = @import("src/config.zig");
    _ = @import("src/host.zig");
    _ = @import("src/ip.zig");
    _ = @import("src/match.zig");
    _ = @import("src/regex.zig");
    _ = @import("src/response.zig");
    _ = @import("src/usage.zig");
    _ = @import("src/budget.zig");
    _ = @import("src/json_scan.zig");
    _ = @import("src/request.zig");
    _ = @import("src/message.zig");
    _ = @import("src/json_tree.zig");
    _ = @import("src/sha256.zig");
}
