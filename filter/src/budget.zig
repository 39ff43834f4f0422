//! Transitional: config.zig and unit_tests.zig still import this path; the budget math moved to
//! meter/budget.zig. Delete once their imports name the new path (issue 18 merge).
const moved = @import("meter/budget.zig");
pub const Window = moved.Window;
pub const Algorithm = moved.Algorithm;
pub const limit_max = moved.limit_max;

test {
    _ = moved;
}
