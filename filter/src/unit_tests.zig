//! Root of `zig build test`: the modules whose logic makes no host calls, tested natively.
//! (filter.zig and main.zig need the host; the Python suite drives them inside the real .wasm.)
test {
    _ = @import("config.zig");
    _ = @import("host.zig");
    _ = @import("ip.zig");
    _ = @import("match.zig");
    _ = @import("regex.zig");
    _ = @import("response.zig");
    _ = @import("usage.zig");
    _ = @import("budget.zig");
    _ = @import("json_scan.zig");
    _ = @import("request.zig");
}
