"""Worst-case regexp work per request (issue 10 item 4): hostile `regexp:` keys that the config
loader accepts, against the longest value the filter matches (4,096 bytes).

Runs the real tokenlimit.wasm in wasmtime (tests/support/proxywasm_host), not in Envoy: the
question is the filter's own CPU time in the request-header phase, and wasmtime's compiled code
times it without a network in between. (Before the bound, four `.{1000}Z` keys took 258 ms
here and 254 ms in Envoy's V8: the two engines agree on this work.) Each hostile config is
timed against a baseline of the same shape (items, keys, value) whose patterns fail at their
first instruction, so the difference is the regexp work alone. The fastest of `--runs` requests:
the filter's own cost, without the other processes of a shared machine in it.

    .venv/bin/python bench/regexp.py > result.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "controlplane")]

from _harness import machine_summary, markdown_table  # noqa: E402
from support.proxywasm_host import Host  # noqa: E402

WASM = ROOT / "controlplane" / "tokenlimit" / "wasm" / "tokenlimit.wasm"
VALUE_BYTES = 4096
HOSTILE = [
    ".{1000}Z",
    "a.{1000}Z",
    "(.{100}){9}Z",
    "(a|b|c|d|e|f|g|h|aa|bb|cc|dd|ee|ff|gg|hh){15}Z",
    "\\w{500}\\d{500}Z",
    "(a*)*(b*)*(a|aa)*c",
]
# Non-ASCII: every step decodes a character and searches a class's ranges.
UNICODE = "[\\p{Latin}\\p{Greek}\\p{Cyrillic}\\p{Han}]{1000}Z"
E_ACUTE = "\u00e9"
# (label, patterns per item, items, value)
CASES = [
    *((f"4 x `{p}`".replace("|", "\\|"), [p] * 4, 1, "a" * VALUE_BYTES) for p in HOSTILE),
    ("4 x `" + UNICODE + "` over 2,048 x é", [UNICODE] * 4, 1, E_ACUTE * (VALUE_BYTES // 2)),
    ("32 items x 63 keys, all of the above", HOSTILE * 11, 32, "ab" * (VALUE_BYTES // 2)),
]


def request_ms(patterns: list[str], items: int, value: str, runs: int) -> float:
    host = Host(WASM)
    keys = [{"key": f"regexp:{p}", "token_per_minute": 10**12} for p in patterns[:63]]
    keys.append({"key": "*", "token_per_minute": 10**12})
    item = {"limit_by_per_header": "x-api-key", "limit_keys": keys}
    if not host.configure({"rule_name": "bench", "rule_items": [item] * items}):
        raise SystemExit(f"config refused: {host.log_messages()}")
    request = {":method": "GET", ":path": "/v1/models", ":authority": "x", "x-api-key": value}
    times = []
    for _ in range(runs):
        stream = host.http_stream()
        start = time.perf_counter()
        stream.request_headers(request, end_of_stream=True)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    rows = []
    for label, patterns, items, value in CASES:
        print(f"timing {label}", file=sys.stderr)
        baseline = request_ms([], items, value, args.runs)
        hostile = request_ms(patterns, items, value, args.runs)
        rows.append([label, f"{baseline:.3f}", f"{hostile:.3f}", f"{hostile - baseline:.3f}"])
    print(f"{machine_summary()}\n")
    headers = ["config (value: 4,096 bytes)", "baseline ms", "hostile ms", "regexp work ms"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
