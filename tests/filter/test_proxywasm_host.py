"""Tests of the proxy-wasm test host (tests/support/proxywasm_host/) against a real Zig module.

The module is tests/support/abi_probe.zig, built once per session into pytest's tmp dir. Each
request picks one capability with the `x-probe` header and reports back through headers, logs,
metrics or shared data, so every test asserts what the host observably did.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from support.proxywasm_host import (
    Action,
    Clock,
    HeaderMap,
    Host,
    HostError,
    LogLevel,
    MetricType,
    SharedData,
    Status,
    StreamType,
    WasmTrap,
    deserialize_header_map,
    load_module,
    serialize_header_map,
)

PROBE_SOURCE = Path(__file__).resolve().parents[1] / "support" / "abi_probe.zig"
REDIS_UPSTREAM = "outbound|6379||redis.local"
GET_PROBE = b"*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n"


@pytest.fixture(scope="session")
def probe_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("ziglang") is None:
        pytest.fail(
            "the Zig compiler is missing: install it with "
            "`/work/main/.venv/bin/pip install ziglang==0.17.1` (or `pip install -e .[dev]`)"
        )
    out = tmp_path_factory.mktemp("abi_probe") / "abi_probe.wasm"
    cmd = [
        sys.executable, "-m", "ziglang", "build-exe", str(PROBE_SOURCE),
        "-target", "wasm32-freestanding", "-fno-entry", "-rdynamic", "-O", "ReleaseSmall",
        f"-femit-bin={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"building the probe failed:\n{proc.stdout}\n{proc.stderr}")
    return out


@pytest.fixture
def host(probe_wasm: Path) -> Host:
    h = Host(probe_wasm)
    assert h.configure({"probe": True})
    return h


def probe_request(mode: str, **extra: str) -> dict[str, str]:
    return {":method": "POST", ":path": "/v1/chat", ":authority": "llm", "x-probe": mode, **extra}


# ---------------------------------------------------------------------------------------------
# Serialization and module plumbing
# ---------------------------------------------------------------------------------------------
def test_header_map_serialization_matches_the_abi_byte_layout() -> None:
    expected = bytes(
        [
            0x02, 0x00, 0x00, 0x00,  # two pairs
            0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,  # len("a") = 1, len("1") = 1
            0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,  # len("b") = 1, len("22") = 2
            0x61, 0x00, 0x31, 0x00,  # "a\0" "1\0"
            0x62, 0x00, 0x32, 0x32, 0x00,  # "b\0" "22\0"
        ]
    )  # fmt: skip
    assert serialize_header_map([("a", "1"), ("b", "22")]) == expected
    assert deserialize_header_map(expected) == [("a", "1"), ("b", "22")]
    assert serialize_header_map([]) == b"\x00\x00\x00\x00"
    assert deserialize_header_map(b"") == []
    # Envoy treats any malformed map (here: a missing NUL, trailing garbage) as empty.
    assert deserialize_header_map(expected[:-1]) is None
    assert deserialize_header_map(expected + b"x") is None


def test_header_map_keeps_lower_case_keys_duplicates_and_pseudo_headers_first() -> None:
    m = HeaderMap([("X-A", "1"), ("x-a", "2"), (":path", "/p")])
    assert m.items() == [(":path", "/p"), ("x-a", "1"), ("x-a", "2")]
    m.replace("X-A", "3")
    assert m.get_all("x-a") == ["3"]
    m.remove("x-a")
    assert "x-a" not in m
    assert m == {":path": "/p"}


def test_module_is_compiled_once_per_path(probe_wasm: Path) -> None:
    assert load_module(probe_wasm) is load_module(str(probe_wasm))
    assert Host(probe_wasm).module is Host(probe_wasm).module


def test_import_the_host_lacks_is_named_at_instantiation(tmp_path: Path) -> None:
    import wasmtime  # importable whenever proxywasm_host is

    wasm = tmp_path / "needs_grpc.wasm"
    wasm.write_bytes(
        wasmtime.wat2wasm(
            """(module
                 (import "env" "proxy_grpc_call" (func (param i32 i32) (result i32)))
                 (import "env" "proxy_log" (func (param i32 i32) (result i32)))
                 (memory (export "memory") 1))"""
        )
    )
    with pytest.raises(HostError) as err:
        Host(wasm)
    assert "env.proxy_grpc_call" in str(err.value)
    assert "env.proxy_log with signature" in str(err.value)  # wrong arity is named too


# ---------------------------------------------------------------------------------------------
# Lifecycle, configuration, logging, tick
# ---------------------------------------------------------------------------------------------
def test_vm_start_and_configure_read_their_configuration_buffers(probe_wasm: Path) -> None:
    h = Host(probe_wasm, vm_config=b"vm-cfg")
    assert h.vm_started
    assert "probe: vm start config=vm-cfg" in h.log_messages()
    assert h.configure({"rule_name": "r"}) is True
    assert 'probe: configure status=0 config={"rule_name": "r"}' in h.log_messages()
    assert h.configure("reject") is False


def test_configure_sets_the_tick_period_and_tick_calls_on_tick(host: Host) -> None:
    assert host.tick_period_ms == 1000
    host.tick()
    host.tick()
    assert host.log_messages()[-1] == "probe: tick 2 on context 1"


def test_logs_carry_levels_and_stdout_stderr_are_captured(host: Host) -> None:
    host.log_level = LogLevel.DEBUG
    host.http_stream().request_headers(probe_request("log"), end_of_stream=True)
    assert (LogLevel.DEBUG, "probe: log level=1") in host.logs
    assert (LogLevel.INFO, "probe stdout line") in host.logs
    assert (LogLevel.ERROR, "probe stderr line") in host.logs


def test_trap_surfaces_as_exception_naming_the_callback(host: Host) -> None:
    with pytest.raises(WasmTrap) as err:
        host.http_stream().request_headers(probe_request("trap"))
    assert err.value.function == "proxy_on_request_headers"
    assert host.trap is err.value
    with pytest.raises(HostError):
        host.tick()  # the VM is dead, as in Envoy


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------
def test_filter_gets_adds_replaces_removes_headers_and_reads_pairs(host: Host) -> None:
    stream = host.http_stream()
    headers = probe_request("headers", **{"x-in": "hello", "x-replace": "old", "X-Remove": "x"})
    assert stream.request_headers(headers) == Action.CONTINUE
    req = stream.request_header_map
    assert req["x-added"] == "hello"
    assert req.get_all("x-replace") == ["replaced"]
    assert "x-remove" not in req
    assert req["x-pairs"] == "7"  # 7 given - 1 removed + 1 added, seen after the edits
    assert req["x-path-from-pairs"] == "/v1/chat"

    assert stream.response_headers(200, end_of_stream=True) == Action.CONTINUE
    resp = stream.response_header_map
    assert resp["x-probe-response"] == "1"
    # Envoy forgets request headers once they were continued: reading them later is refused.
    assert resp["x-late-request-header-status"] == str(int(Status.BAD_ARGUMENT))


def test_on_log_reads_the_final_maps(host: Host) -> None:
    stream = host.http_stream().complete(
        {":path": "/log-me", "x-probe": "none"}, {":status": "201"}, [b"ok"]
    )
    assert f"probe: on_log ctx={stream.id} path=/log-me (0) status=201 (0)" in host.log_messages()
    assert stream.deleted


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("body_replace", b"REPLACED"),
        ("body_prepend", b"PRE-hello"),
        ("body_append", b"hello-POST"),
        ("none", b"hello"),
    ],
)
def test_set_buffer_bytes_replaces_prepends_and_appends_like_envoy(
    host: Host, mode: str, expected: bytes
) -> None:
    stream = host.http_stream()
    stream.request_headers(probe_request(mode))
    assert stream.request_body(b"hello", True) == Action.CONTINUE
    assert stream.last_request_body == expected
    stream.response_headers(200)
    stream.response_body(b"hello", False)
    stream.response_body(b"hello", True)
    assert stream.last_response_body == expected
    assert stream.request_body_chunks_forwarded == [expected]
    assert stream.response_body_chunks_forwarded == [expected, expected]


def test_paused_body_accumulates_until_the_filter_continues(host: Host) -> None:
    stream = host.http_stream()
    stream.request_headers(probe_request("body_buffer"))
    assert stream.request_body(b"ab", False) == Action.PAUSE
    assert stream.request_body_chunks_forwarded == []
    assert stream.request_body(b"cd", True) == Action.CONTINUE
    assert stream.request_body_chunks_forwarded == [b"abcd"]
    assert "probe: buffered body kind=0 size=4 data=abcd" in host.log_messages()


# ---------------------------------------------------------------------------------------------
# Shared data
# ---------------------------------------------------------------------------------------------
def test_shared_data_semantics_match_envoy() -> None:
    shared = SharedData()
    assert shared.get("k") is None
    assert shared.set("k", b"v", cas=42) == Status.OK  # a missing key ignores the cas
    assert shared.get("k") == (b"v", 1)  # the cas counter starts at 1
    assert shared.set("k", b"w", cas=7) == Status.CAS_MISMATCH
    assert shared.set("k", b"w", cas=1) == Status.OK
    assert shared.set(b"other", b"x") == Status.OK
    assert shared.get("k") == (b"w", 2)
    assert shared.get(b"other") == (b"x", 3)  # one counter for all keys


def test_shared_data_get_and_cas_set_from_the_module(host: Host) -> None:
    for expected in ("1", "2"):
        stream = host.http_stream()
        stream.request_headers(probe_request("shared_data"))
        assert stream.request_header_map["x-shared-value"] == expected
        assert stream.request_header_map["x-shared-status"] == "0"
        assert stream.request_header_map["x-shared-attempts"] == "1"
    assert host.shared_data.get("probe-counter") == (b"2", 2)


def test_hosts_sharing_shared_data_act_like_envoy_workers(probe_wasm: Path) -> None:
    shared = SharedData()
    workers = [Host(probe_wasm, shared_data=shared) for _ in range(2)]
    for i in range(6):
        workers[i % 2].http_stream().request_headers(probe_request("shared_data"))
    assert shared.get("probe-counter") == (b"6", 6)


def test_injected_cas_mismatch_drives_the_retry_loop(host: Host) -> None:
    host.shared_data.set("probe-counter", b"10")
    host.shared_data.inject_cas_mismatch(times=2)
    stream = host.http_stream()
    stream.request_headers(probe_request("shared_data"))
    assert stream.request_header_map["x-shared-attempts"] == "3"
    assert stream.request_header_map["x-shared-value"] == "11"
    assert host.shared_data.get("probe-counter")[0] == b"11"


def test_before_set_hook_simulates_a_concurrent_writer(host: Host) -> None:
    seen: list[tuple[bytes, bytes, int]] = []

    def other_worker(key: bytes, value: bytes, cas: int) -> None:
        seen.append((key, value, cas))
        if len(seen) == 1:
            host.shared_data.set(key, b"20")

    host.shared_data.set("my-key", b"5")
    host.shared_data.before_set = other_worker
    stream = host.http_stream()
    stream.request_headers(probe_request("shared_data", **{"x-key": "my-key"}))
    assert seen[0] == (b"my-key", b"6", 1)
    assert stream.request_header_map["x-shared-value"] == "21"
    assert stream.request_header_map["x-shared-attempts"] == "2"


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
def test_properties_resolve_nul_separated_paths_with_stream_overrides(probe_wasm: Path) -> None:
    h = Host(probe_wasm, properties={"source.address": "10.0.0.7:5555", "xds.route_name": "a"})
    h.configure("{}")
    found = h.http_stream(properties={"xds.route_name": "b"})
    found.request_headers(probe_request("property", **{"x-property": "xds.route_name"}))
    assert found.request_header_map["x-property-status"] == "0"
    assert found.request_header_map["x-property-value"] == "b"
    assert found.properties_set == {"probe_decision": b"allowed"}
    assert found.request_header_map["x-set-property-status"] == "0"

    default = h.http_stream()
    default.request_headers(probe_request("property", **{"x-property": "source.address"}))
    assert default.request_header_map["x-property-value"] == "10.0.0.7:5555"

    missing = h.http_stream()
    missing.request_headers(probe_request("property", **{"x-property": "no.such"}))
    assert missing.request_header_map["x-property-status"] == str(int(Status.NOT_FOUND))


def test_set_property_on_the_root_context_is_recorded_but_refused_like_envoy(host: Host) -> None:
    assert host.properties_set == {"probe_root": b"root"}
    assert "probe: redis_init status=0 root set_property status=1" in host.log_messages()


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def test_metrics_counters_gauges_histograms_with_i64_deltas(host: Host) -> None:
    assert host.metric_types == {
        "probe.requests_total": MetricType.COUNTER,
        "probe.inflight": MetricType.GAUGE,
        "probe.latency_ms": MetricType.HISTOGRAM,
    }
    streams = [host.http_stream() for _ in range(2)]
    for stream in streams:
        stream.request_headers(probe_request("metrics"))
    assert host.metrics["probe.requests_total"] == 2
    assert host.metrics["probe.inflight"] == 6  # +5 then -2 per request
    assert host.histograms["probe.latency_ms"] == [42, 42]
    assert streams[1].request_header_map["x-metric-requests"] == "2"
    # Envoy refuses a zero (or negative) increment of a counter.
    assert streams[1].request_header_map["x-metric-zero-increment-status"] == "2"


# ---------------------------------------------------------------------------------------------
# Local responses
# ---------------------------------------------------------------------------------------------
def test_local_response_is_captured_and_passes_through_the_filters_response_path(
    host: Host,
) -> None:
    stream = host.http_stream()
    # The probe returns CONTINUE; Envoy stops iteration after a local response regardless.
    assert stream.request_headers(probe_request("local_response")) == Action.PAUSE
    reply = stream.local_response
    assert reply is not None
    assert (reply.status, reply.details, reply.body, reply.grpc_status) == (
        429,
        "probe_limited",
        b"limited\n",
        -1,
    )
    assert reply.headers == [("retry-after", "7"), ("x-probe-reason", "budget")]
    resp = stream.response_header_map
    assert resp[":status"] == "429"
    assert resp["retry-after"] == "7"
    assert resp["x-probe-saw-local-reply"] == "429"
    assert stream.response_body_chunks_forwarded == [b"limited\n"]
    # Further request events are not delivered to the filter.
    assert stream.request_body(b"late", True) == Action.PAUSE
    assert stream.request_body_chunks_forwarded == []


def test_complete_skips_the_upstream_after_a_local_response(host: Host) -> None:
    stream = host.http_stream().complete(probe_request("local_response"), 200, [b"upstream"])
    assert stream.response_header_map[":status"] == "429"
    assert stream.forwarded_response_body == b"limited\n"


# ---------------------------------------------------------------------------------------------
# HTTP calls
# ---------------------------------------------------------------------------------------------
def test_http_call_is_recorded_and_answered_on_the_root_context(host: Host) -> None:
    stream = host.http_stream()
    assert stream.request_headers(probe_request("http_call")) == Action.PAUSE
    (call,) = host.http_calls
    assert call.upstream == "probe_cluster"
    assert call.header(":authority") == "bridge"
    assert call.header("x-probe-ctx") == str(stream.id)
    assert (call.body, call.timeout_ms, call.context_id) == (b"ping", 500, stream.id)
    assert call.call_id % 4 == 0  # Envoy's http call ids carry callout type 0 in the low bits

    # Body arriving while the headers are paused is held, not shown to the filter.
    assert stream.request_body(b"payload", True) == Action.PAUSE
    assert stream.last_request_body is None

    host.respond_http_call(call.call_id, 200, b"pong")
    assert f"probe: http call response root=1 id={call.call_id} headers=1 body=4 trailers=0" in (
        host.log_messages()
    )
    assert stream.request_header_map["x-call-status"] == "200"
    assert stream.request_header_map["x-call-body"] == "pong"
    assert stream.continued == [StreamType.HTTP_REQUEST]
    assert not stream.request_paused
    assert stream.request_body_chunks_forwarded == [b"payload"]  # delivered after continue
    assert host.pending_http_calls() == []


def test_failed_http_call_reaches_the_filter_with_no_headers(host: Host) -> None:
    stream = host.http_stream()
    stream.request_headers(probe_request("http_call"))
    host.fail_http_call(host.http_calls[0].call_id)
    assert stream.local_response is not None
    assert stream.local_response.status == 503
    assert stream.response_header_map[":status"] == "503"


def test_http_call_handler_answers_during_complete_and_none_means_timeout(host: Host) -> None:
    host.http_call_handler = lambda call: (200, b"from-handler")
    stream = host.http_stream().complete(probe_request("http_call"), 200, [b"ok"])
    assert stream.request_header_map["x-call-body"] == "from-handler"
    assert stream.forwarded_response_body == b"ok"

    host.http_call_handler = lambda call: None
    stuck = host.http_stream()
    stuck.request_headers(probe_request("http_call"))
    assert host.run_pending() == 0
    assert stuck.request_paused
    host.timeout_http_call(host.pending_http_calls()[0])  # Envoy answers a timeout with 504
    assert stuck.request_header_map["x-call-status"] == "504"
    assert not stuck.request_paused


def test_http_call_to_an_unknown_cluster_is_a_bad_argument(probe_wasm: Path) -> None:
    h = Host(probe_wasm, clusters={"some_other_cluster"})
    h.configure("{}")
    stream = h.http_stream()
    assert stream.request_headers(probe_request("http_call")) == Action.CONTINUE
    assert stream.request_header_map["x-call-dispatch-status"] == str(int(Status.BAD_ARGUMENT))
    assert h.http_calls == []


# ---------------------------------------------------------------------------------------------
# Higress Redis ABI
# ---------------------------------------------------------------------------------------------
def test_redis_init_and_call_are_recorded_and_flushed_in_order(host: Host) -> None:
    (init,) = host.redis_inits
    assert (init.upstream, init.username, init.password, init.timeout_ms) == (
        REDIS_UPSTREAM,
        "probe",
        "secret",
        1000,
    )
    queries: list[bytes] = []

    def redis(query: bytes) -> bytes:
        queries.append(query)
        return f"$5\r\nval-{len(queries)}\r\n".encode()

    host.redis_handler = redis
    first, second = host.http_stream(), host.http_stream()
    assert first.request_headers(probe_request("redis")) == Action.PAUSE
    assert second.request_headers(probe_request("redis")) == Action.PAUSE
    assert [c.callout_id % 4 for c in host.redis_calls] == [3, 3]  # Higress: type 3 ids
    assert queries == []  # nothing runs until the test flushes
    assert host.flush_redis() == 2
    assert queries == [GET_PROBE, GET_PROBE]
    assert first.request_header_map["x-redis-reply"] == "$5||val-1||"
    assert second.request_header_map["x-redis-reply"] == "$5||val-2||"
    assert first.continued == second.continued == [StreamType.HTTP_REQUEST]


def test_redis_failure_reaches_the_filter_as_a_non_zero_status(host: Host) -> None:
    host.redis_handler = lambda query: None
    stream = host.http_stream()
    stream.request_headers(probe_request("redis"))
    host.flush_redis()
    assert stream.request_header_map["x-redis-status"] == "1"


def test_redis_call_before_init_is_refused(probe_wasm: Path) -> None:
    h = Host(probe_wasm)  # not configured, so the probe never called proxy_redis_init
    stream = h.http_stream()
    assert stream.request_headers(probe_request("redis")) == Action.CONTINUE
    assert stream.request_header_map["x-redis-dispatch-status"] == str(int(Status.BAD_ARGUMENT))


# ---------------------------------------------------------------------------------------------
# Time and memory
# ---------------------------------------------------------------------------------------------
def test_wasi_clock_reads_the_fake_clock(probe_wasm: Path) -> None:
    clock = Clock(now_ns=1_000)
    h = Host(probe_wasm, clock=clock)
    clock.advance(1.5)
    stream = h.http_stream()
    stream.request_headers(probe_request("clock"))
    assert stream.request_header_map["x-realtime-ns"] == "1500001000"
    assert stream.request_header_map["x-monotonic-ns"] == "1500001000"


def test_memory_stays_flat_across_thousands_of_requests(host: Host) -> None:
    def one() -> None:
        host.http_stream().complete(
            probe_request("headers", **{"x-in": "v" * 200}),
            200,
            [b"chunk-1", b"chunk-2"],
            request_body=b"x" * 4096,
        )

    for _ in range(200):
        one()
    before = host.memory_bytes_used()
    for _ in range(2000):
        one()
    assert host.memory_bytes_used() == before
    assert len(host._contexts) == 1  # every stream context was deleted
