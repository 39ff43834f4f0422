//! The floor of a token limiter in proxy-wasm (issue 17): only the host calls any filter must
//! make to key a token budget on a header, count it in Envoy's shared data and read the usage
//! from the answer, with none of the work between them (no parsing, no names, no metrics, no
//! access-log fields, no logs). Per request: read `x-api-key`; read the budget's shared-data
//! entry; hold the chat body and read it (a streaming request must be seen to ask for usage);
//! read every answer chunk; at the end, read the entry again and write it back with its CAS.
//! `bench/overhead.py --floor` runs it beside the filter and the trivial filter: "floor minus
//! trivial" is what the issue's "filter's own work" cannot go below on this host.
//! The callbacks it shares with the trivial filter (and the host allocations' ring) are in
//! bench_module.zig.

comptime {
    _ = @import("bench_module.zig");
}

extern "env" fn proxy_get_header_map_value(map: u32, key: [*]const u8, key_len: usize, value: *[*]u8, value_len: *usize) u32;
extern "env" fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, data: *[*]u8, len: *usize) u32;
extern "env" fn proxy_get_shared_data(key: [*]const u8, key_len: usize, value: *[*]u8, value_len: *usize, cas: *u32) u32;
extern "env" fn proxy_set_shared_data(key: [*]const u8, key_len: usize, value: [*]const u8, value_len: usize, cas: u32) u32;

const request_headers = 0;
const request_body = 0;
const response_body = 1;
/// One budget entry for every caller: the bench sends one key.
const entry = "floor:budget";

export fn proxy_on_request_headers(_: u32, _: u32, _: u32) u32 {
    var value: [*]u8 = undefined;
    var len: usize = 0;
    const name = "x-api-key";
    _ = proxy_get_header_map_value(request_headers, name, name.len, &value, &len);
    var cas: u32 = 0;
    _ = proxy_get_shared_data(entry, entry.len, &value, &len, &cas);
    return 0;
}

export fn proxy_on_request_body(_: u32, size: u32, end_of_stream: u32) u32 {
    if (end_of_stream == 0) return 1; // StopIterationAndBuffer: held until complete
    var data: [*]u8 = undefined;
    var len: usize = 0;
    _ = proxy_get_buffer_bytes(request_body, 0, size, &data, &len);
    return 0;
}

export fn proxy_on_response_body(_: u32, size: u32, end_of_stream: u32) u32 {
    var data: [*]u8 = undefined;
    var len: usize = 0;
    if (size > 0) _ = proxy_get_buffer_bytes(response_body, 0, size, &data, &len);
    if (end_of_stream != 0) charge();
    return 0;
}

/// The settlement: the entry read with its CAS and written back (eight bytes of count).
fn charge() void {
    var value: [*]u8 = undefined;
    var len: usize = 0;
    var cas: u32 = 0;
    _ = proxy_get_shared_data(entry, entry.len, &value, &len, &cas);
    var count: [8]u8 = @splat(0);
    if (len == count.len) @memcpy(&count, value[0..8]);
    count[0] +%= 1;
    _ = proxy_set_shared_data(entry, entry.len, &count, count.len, cas);
}
