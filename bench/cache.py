"""What does the response cache (issue 15) save, and what does it cost a miss?

Two real Envoys (the dev gateway: Envoy + tokenlimit.wasm + the mock LLM), one rule each with
the same per-key budget; one rule caches (`cache: {ttl_seconds: 3600}`), the other does not.

1. **Workload** (`--requests`, default 400): 90 % repeated questions -- `requests / 10` distinct
   questions, each asked 10 times in a shuffled order, the mock answering after `--model-ms`
   (default 50 ms, a fast model). Reported per gateway: requests that reached the upstream
   (the mock counts them), tokens charged and saved (the filter's metrics), and latency.
2. **Miss cost** (`--misses`, default 300): only new questions, the mock answering at once, the
   two gateways asked alternately: the added latency of a miss is the cached gateway's latency
   minus the other's (median, p90). A miss pays for the key (canonical JSON + SHA-256), the
   lookup, and keeping the answer to store it.

Markdown to stdout, progress to stderr:
    .venv/bin/python bench/cache.py > cache.md
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import _harness as h
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config
from tokenlimit.wasm import filter_path

PROMPT_TOKENS = 400
COMPLETION_TOKENS = 200


def config(cached: bool) -> FilterConfig:
    document: dict[str, Any] = {
        "rule_name": "bench",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 10**12}],
            }
        ],
    }
    if cached:
        document["cache"] = {"ttl_seconds": 3600}
    return parse_filter_config(document)


def ask(gw: Gateway, question: str, model_ms: int) -> float:
    """One chat completion; returns its latency in ms."""
    body = {"model": "m", "messages": [{"role": "user", "content": question}], "max_tokens": 200}
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": "bench",
            "x-mock-prompt-tokens": str(PROMPT_TOKENS),
            "x-mock-completion-tokens": str(COMPLETION_TOKENS),
            "x-mock-delay-ms": str(model_ms),
        },
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def upstream_requests(gw: Gateway) -> int:
    with urllib.request.urlopen(gw.upstream_url + "/mock/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def metric(gw: Gateway, name: str) -> int:
    return int(gw.stats().get(f"wasmcustom.tokenlimit.{name}", 0))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def workload(gw: Gateway, questions: list[str], model_ms: int) -> dict[str, Any]:
    before = upstream_requests(gw)
    latencies = [ask(gw, q, model_ms) for q in questions]
    return {
        "upstream": upstream_requests(gw) - before,
        "charged": metric(gw, "tokens_charged"),
        "saved": metric(gw, "cache_tokens_saved"),
        "hits": metric(gw, "cache_hits"),
        "p50": statistics.median(latencies),
        "p90": percentile(latencies, 0.9),
        "total_s": sum(latencies) / 1000,
    }


def run(args: argparse.Namespace) -> str:
    wasm = Path(filter_path())
    rng = random.Random(15)
    distinct = max(1, args.requests // 10)
    questions = [f"question {i}: what were last quarter's results?" for i in range(distinct)]
    stream = [q for q in questions for _ in range(10)][: args.requests]
    rng.shuffle(stream)
    misses: list[tuple[float, float]] = []
    with (
        Gateway(config(True), wasm_path=wasm) as cached,
        Gateway(config(False), wasm_path=wasm) as plain,
    ):
        log(f"workload: {len(stream)} requests, {distinct} distinct, model {args.model_ms} ms")
        with_cache = workload(cached, stream, args.model_ms)
        without = workload(plain, stream, args.model_ms)
        log(f"miss cost: {args.misses} new questions on each gateway, alternately")
        for i in range(args.misses):
            question = f"new question {i} {rng.random()}"
            misses.append((ask(cached, question, 0), ask(plain, question, 0)))
    added = [c - p for c, p in misses]
    rows = [
        ["requests sent", len(stream), len(stream)],
        ["reached the upstream", with_cache["upstream"], without["upstream"]],
        ["served from the cache", with_cache["hits"], 0],
        ["tokens charged", with_cache["charged"], without["charged"]],
        ["tokens saved", with_cache["saved"], 0],
        ["latency p50 (ms)", f"{with_cache['p50']:.1f}", f"{without['p50']:.1f}"],
        ["latency p90 (ms)", f"{with_cache['p90']:.1f}", f"{without['p90']:.1f}"],
        ["wall time (s)", f"{with_cache['total_s']:.1f}", f"{without['total_s']:.1f}"],
    ]
    miss_rows = [
        ["cache on, miss", f"{statistics.median(c for c, _ in misses):.2f}",
         f"{percentile([c for c, _ in misses], 0.9):.2f}"],
        ["cache off", f"{statistics.median(p for _, p in misses):.2f}",
         f"{percentile([p for _, p in misses], 0.9):.2f}"],
        ["added by a miss", f"{statistics.median(added):+.2f}", f"{percentile(added, 0.9):+.2f}"],
    ]  # fmt: skip
    return "\n".join(
        [
            "# Response cache: a 90 %-repeated workload",
            "",
            h.machine_summary(),
            "",
            f"{len(stream)} chat completions ({PROMPT_TOKENS} + {COMPLETION_TOKENS} tokens each), "
            f"{distinct} distinct questions asked 10 times each in a shuffled order; the mock "
            f"model answers after {args.model_ms} ms.",
            "",
            h.markdown_table(["", "cache on", "cache off"], rows),
            "",
            f"## The added latency of a miss ({args.misses} new questions each, model 0 ms)",
            "",
            h.markdown_table(["", "p50 (ms)", "p90 (ms)"], miss_rows),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--misses", type=int, default=300)
    parser.add_argument("--model-ms", type=int, default=50)
    print(run(parser.parse_args()))


if __name__ == "__main__":
    main()
