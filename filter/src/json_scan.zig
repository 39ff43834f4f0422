//! Transitional: unit_tests.zig still names this path; the file moved to usage/json_scan.zig.
//! Delete once unit_tests.zig is generated from the tree (issue 18, item 6).
test {
    _ = @import("usage/json_scan.zig");
}
