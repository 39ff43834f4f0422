//! A proxy-wasm filter that does nothing (issue 17's "trivial filter"): every callback returns
//! at once, no host call. `bench/overhead.py --trivial` builds it and runs it beside the real
//! filter, so "the filter's throughput ÷ a trivial filter's" and "Envoy's RSS over a loaded
//! module" have their floor measured in the same rounds. Host allocations come from a fixed
//! ring: nothing here keeps them.

var ring: [64 * 1024]u8 = undefined;
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
export fn proxy_on_request_headers(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_request_body(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_response_headers(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_response_body(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_log(_: u32) void {}
export fn proxy_on_done(_: u32) u32 {
    return 1;
}
export fn proxy_on_delete(_: u32) void {}
