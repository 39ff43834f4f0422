"""Benchmark: the Wasm instructions the filter executes per request, by callback (issue 17).

What it answers: how much work the filter's own code does on a request, apart from Envoy and
from the machine. It runs the real module in the test host (tests/support/proxywasm_host, on
wasmtime) with instruction counting on (wasmtime fuel: one unit per Wasm operator executed), so
the figure is exact and the same on every run and machine for a given module: a before/after
of two builds needs one run, not interleaved rounds on a quiet box. It does not weigh
operators by cost, nor count the host calls' work on Envoy's side (bench/overhead.py measures
that, in Envoy); it pins down the part a change to the filter's code moves.

Variants: the plain rule on the chat POST (bench/overhead.py's request and 925-byte answer),
the same on a GET (no body), a rule that matches nothing (the floor: callbacks that find no
rule), each feature of bench/overhead.py's `--features` switched on, and a streamed answer
(the same request with `"stream": true` and no `stream_options`, so the gateway asks for usage
and hides the usage-only event from the client: OpenAI's chunk stream in STREAM_CHUNKS).

    PYTHONPATH=$PWD/controlplane .venv/bin/python bench/instructions.py [--wasm PATH]
        [--baseline-wasm PATH] [--requests 50]

Prints a Markdown report on stdout. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import _harness as h
from _overhead_setup import (
    FEATURES,
    KEYS,
    REQUEST_BODY,
    RESPONSE_BODY,
    STREAM_BODY,
    STREAM_REQUEST_BODY,
    filter_config,
)
from support.filter_requests import JSON_RESPONSE, chat_request
from support.proxywasm_host import Clock, Host, LogLevel
from tokenlimit.model import filter_json
from tokenlimit.wasm import filter_path

# 10 s into a minute (nothing here depends on the window, but the clock must be fixed).
CLOCK_NS = (1_767_225_600 + 10) * 10**9
WARM_REQUESTS = 16  # first uses: metric names defined, slots claimed, memo filled

SSE_RESPONSE = {":status": "200", "content-type": "text/event-stream; charset=utf-8"}
STREAM_USAGE_EVENT = STREAM_BODY[STREAM_BODY.rindex(b"data: {") : STREAM_BODY.rindex(b"data: [")]
# Where the upstream's writes end: at odd offsets, mid-event and mid-token, as a network splits.
STREAM_SPLITS = (397, 1203, 2011, 2999, 3457, 4801, 5555)
STREAM_CHUNKS = [
    STREAM_BODY[a:b]
    for a, b in zip((0, *STREAM_SPLITS), (*STREAM_SPLITS, len(STREAM_BODY)), strict=True)
]
# As OpenAI's servers flush it: one event a write.
STREAM_EVENT_CHUNKS = [event + b"\n\n" for event in STREAM_BODY.split(b"\n\n")[:-1]]


class CountingHost(Host):
    """The test host, adding up the instructions of each callback the host makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.by_callback: Counter[str] = Counter()
        super().__init__(*args, **kwargs)

    def _call(self, export: str, *args: int, **kwargs: Any) -> int:
        before = self.instructions()
        try:
            return super()._call(export, *args, **kwargs)
        finally:
            self.by_callback[export] += self.instructions() - before


def variants() -> dict[str, tuple[str, str]]:
    """name -> (filter config as JSON, request: POST, GET, or STREAM / STREAM_EVENTS: the
    streamed POST, its answer split mid-event or one event a chunk)."""
    plain = filter_json(filter_config("postpaid"))
    out = {
        "plain rule, POST chat": (plain, "POST"),
        "plain rule, GET": (plain, "GET"),
        "no rule matches, POST chat": (filter_json(filter_config("postpaid", idle=True)), "POST"),
    }
    for name in FEATURES:
        out[f"plain + {name}, POST chat"] = (
            filter_json(filter_config("postpaid", feature=name)),
            "POST",
        )
    out[f"plain rule, POST chat streamed ({len(STREAM_CHUNKS)} chunks)"] = (plain, "STREAM")
    out["plain rule, POST chat streamed (an event a chunk)"] = (plain, "STREAM_EVENTS")
    return out


def measure(
    wasm: Path, config: str, method: str, requests: int
) -> tuple[float, Counter[str], float]:
    """Instructions per request (all callbacks), per callback, and host calls per request."""
    host = CountingHost(
        wasm, clock=Clock(now_ns=CLOCK_NS), log_level=LogLevel.INFO, count_instructions=True
    )
    assert host.configure(config), host.log_messages()
    streamed = method.startswith("STREAM")
    body = STREAM_REQUEST_BODY.encode() if streamed else {"POST": REQUEST_BODY.encode()}.get(method)
    response_headers, chunks = {
        "STREAM": (SSE_RESPONSE, STREAM_CHUNKS),
        "STREAM_EVENTS": (SSE_RESPONSE, STREAM_EVENT_CHUNKS),
    }.get(method, (JSON_RESPONSE, [RESPONSE_BODY.encode()]))

    def one(i: int) -> None:
        extra = {"content-length": str(len(body))} if body is not None else {}
        headers = chat_request(KEYS[i % len(KEYS)], **extra)
        if method == "GET":
            headers = {**headers, ":method": "GET"}
            del headers["content-type"]
        stream = host.http_stream()
        stream.complete(headers, response_headers, chunks, request_body=body)
        if streamed:
            # What the bench counts is the filter at work: usage read, the usage event hidden.
            assert stream.properties_set["tokenlimit_usage"] == b"reported", stream.properties_set
            assert stream.forwarded_response_body == STREAM_BODY.replace(STREAM_USAGE_EVENT, b"")

    for i in range(WARM_REQUESTS):
        one(i)
    host.by_callback.clear()
    host.call_names = []
    start = host.instructions()
    for i in range(requests):
        one(i)
    calls = len(host.call_names) / requests
    total = (host.instructions() - start) / requests
    per = Counter({k: round(v / requests) for k, v in host.by_callback.items()})
    return total, per, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm", help="filter module (default: the one built into the package)")
    parser.add_argument("--baseline-wasm", help="another build, measured the same way beside it")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    modules = {"module": Path(args.wasm) if args.wasm else filter_path("envoy")}
    if args.baseline_wasm:
        modules = {"baseline": Path(args.baseline_wasm), **modules}
    print("### Wasm instructions per request (bench/instructions.py)\n")
    print(h.machine_summary() + "\n")
    print(
        "wasmtime fuel (one unit per Wasm operator), the test host, the bench's chat request "
        f"({len(REQUEST_BODY)}-byte body) and JSON answer ({len(RESPONSE_BODY)} bytes; streamed: "
        f"{len(STREAM_BODY):,} bytes, {STREAM_BODY.count(b'data: ')} events), after "
        f"{WARM_REQUESTS} warm-up requests; {args.requests} requests averaged. "
        + ", ".join(
            f"{k}: `{Path(v).name}` ({Path(v).stat().st_size:,} bytes)" for k, v in modules.items()
        )
        + ".\n"
    )
    rows = []
    detail = []
    for name, (config, method) in variants().items():
        row: list[object] = [name]
        for label, wasm in modules.items():
            total, per, calls = measure(wasm, config, method, args.requests)
            row += [f"{total:,.0f}", f"{calls:.0f}"]
            if label == "module":
                top = ", ".join(
                    f"{k.removeprefix('proxy_on_')} {v:,}" for k, v in per.most_common(4)
                )
                detail.append([name, top])
        rows.append(row)
    headers = ["request"]
    for label in modules:
        headers += [f"{label}: instructions", f"{label}: host calls"]
    print(h.markdown_table(headers, rows))
    print()
    print(h.markdown_table(["request", "largest callbacks (instructions)"], detail))


if __name__ == "__main__":
    main()
