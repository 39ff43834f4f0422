//! A proxy-wasm filter that does nothing (issue 17's "trivial filter"): every callback returns
//! at once, no host call. `bench/overhead.py --trivial` builds it and runs it beside the real
//! filter, so "the filter's throughput ÷ a trivial filter's" and "Envoy's RSS over a loaded
//! module" have their floor measured in the same rounds. The callbacks it shares with the
//! floor filter are in bench_module.zig.

comptime {
    _ = @import("bench_module.zig");
}

export fn proxy_on_request_headers(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_request_body(_: u32, _: u32, _: u32) u32 {
    return 0;
}
export fn proxy_on_response_body(_: u32, _: u32, _: u32) u32 {
    return 0;
}
