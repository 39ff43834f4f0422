//! Transitional: config.zig and unit_tests.zig still import this path; usage reading moved to
//! usage/usage.zig. Delete once their imports name the new path (issue 18 merge).
const moved = @import("usage/usage.zig");
pub const Weights = moved.Weights;

test {
    _ = moved;
}
