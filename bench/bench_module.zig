//! What the bench's reference filters share (trivial_filter.zig, floor_filter.zig): the ABI
//! version, host allocations from a fixed ring (nothing here keeps them past the callback),
//! and the callbacks neither does anything in. A filter pulls these exports in with
//! `comptime { _ = @import("bench_module.zig"); }` and exports its own request callbacks.

var ring: [1024 * 1024]u8 = undefined;
var used: usize = 0;

export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    if (size > ring.len) return null;
    if (used + size > ring.len) used = 0;
    const start = used;
    used += size;
    return ring[start..].ptr;
}

export fn proxy_on_vm_start(_: u32, _: u32) u32 {
    return 1;
}
export fn proxy_on_configure(_: u32, _: u32) u32 {
    return 1;
}
export fn proxy_on_context_create(_: u32, _: u32) void {}
export fn proxy_on_response_headers(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_log(_: u32) void {}
export fn proxy_on_done(_: u32) u32 {
    return 1;
}
export fn proxy_on_delete(_: u32) void {}
