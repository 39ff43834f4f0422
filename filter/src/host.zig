//! Transitional: unit_tests.zig still names this path; the file moved to abi/host.zig.
//! Delete once unit_tests.zig is generated from the tree (issue 18, item 6).
test {
    _ = @import("abi/host.zig");
}
