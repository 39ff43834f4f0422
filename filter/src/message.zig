//! Transitional: config.zig and unit_tests.zig still import this path; the formatter moved to
//! abi/message.zig. Delete once their imports name the new path (issue 18 merge).
const moved = @import("abi/message.zig");
pub const print = moved.print;
pub const Arg = moved.Arg;

test {
    _ = moved;
}
