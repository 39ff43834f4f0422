"""The two reference filters `bench/overhead.py` measures the real one against (issue 17) do
what their names promise, so the floors quoted in bench/README.md mean what they say: the
trivial filter makes no host call, and the floor filter exactly the calls a token limiter
cannot do without (the key header, the budget's shared data read at admission and read and
compare-and-swapped at settlement, the request body and the answer read) -- and counts."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.filter_requests import JSON_RESPONSE, chat_request, openai_body
from support.proxywasm_host import Host

BENCH = Path(__file__).resolve().parents[2] / "bench"
Build = Callable[[str], Path]
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    sys.path.insert(0, str(BENCH))
    try:
        from _overhead_setup import build_bench_filter

        work = tmp_path_factory.mktemp("bench_filters")
        yield lambda name: build_bench_filter(work, name)
    finally:
        sys.path.remove(str(BENCH))


def exchange(host: Host) -> list[str]:
    """One chat request and its JSON answer; the host calls made, by name."""
    host.call_names = []
    stream = host.http_stream()
    headers = chat_request("k", **{"content-length": str(len(BODY))})
    stream.complete(headers, JSON_RESPONSE, [openai_body(1, 2)], request_body=BODY)
    calls, host.call_names = host.call_names, None
    assert calls is not None and stream.local_response is None
    return [name.split(" ", 1)[0] for name in calls]


def test_the_trivial_filter_makes_no_host_call(build: Build) -> None:
    host = Host(build("trivial_filter"))
    assert host.configure({})
    assert exchange(host) == []


def test_the_floor_filter_makes_only_the_calls_a_limiter_needs(build: Build) -> None:
    host = Host(build("floor_filter"))
    assert host.configure({})
    calls = exchange(host)
    assert calls == [
        "proxy_get_header_map_value",
        "proxy_get_shared_data",
        "proxy_get_buffer_bytes",
        "proxy_get_buffer_bytes",
        "proxy_get_shared_data",
        "proxy_set_shared_data",
    ]
    assert exchange(host) == calls
    entry = host.shared_data.get("floor:budget")
    assert entry is not None and entry[0][0] == 2  # each request charged once


def test_the_zig_tests_scan_the_bodies_the_bench_sends() -> None:
    # filter/src/usage/bench_bodies.zig holds the scanners' tests to the bench's bodies.
    sys.path.insert(0, str(BENCH))
    try:
        from _overhead_setup import REQUEST_BODY, RESPONSE_BODY
    finally:
        sys.path.remove(str(BENCH))
    zig = (BENCH.parent / "filter" / "src" / "usage" / "bench_bodies.zig").read_text()
    literals = {
        name: re.sub(r"\\(.)", r"\1", text)
        for name, text in re.findall(r'pub const (\w+) = "((?:[^"\\]|\\.)*)";', zig)
    }
    assert literals == {"request_body": REQUEST_BODY, "response_body": RESPONSE_BODY}
