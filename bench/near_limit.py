"""Near the limit (issue 13), measured in real Envoy with the real tokenlimit.wasm in front of the
mock LLM (`tokenlimit.dev.gateway.Gateway`, local store):

1. **wait**: clients burst at 3x a token bucket's rate with `when_exhausted: wait`. Do they see
   any 429 while the wait fits in `max_wait_ms`? Do the tokens admitted stay within 1.05x what the
   bucket allows (its capacity plus its rate over the run)?
2. **pace_above**: sequential requests past the threshold. Does the latency pacing adds match the
   spacing the filter computes (the bucket's natural rate: window x request size / limit)?
3. **memory**: 10,000 requests held at once on one worker. What does each cost Envoy (RSS), next
   to the filter's documented bound (docs/near-limit.md)? Do clients that leave leave the queue?

    .venv/bin/python bench/near_limit.py > near-limit.md     # about a minute

Markdown goes to stdout, progress to stderr. Every loop is bounded; the gateway and its
children are stopped by pid when the script ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config

COMPLETION = 50  # tokens each answer reports; the prompt is the mock's ceil(body bytes / 4)
FILTER_BOUND_BYTES = 8192  # docs/near-limit.md: a held request's cost to the filter, at most


def body() -> bytes:
    # max_tokens = what the mock answers: the reservation is the request's real cost.
    return json.dumps(
        {"model": "m", "max_tokens": COMPLETION, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


TOKENS_PER_REQUEST = math.ceil(len(body()) / 4) + COMPLETION


def rule(name: str, limit: dict[str, int], **fields: Any) -> dict[str, Any]:
    return {
        "rule_name": name,
        "admission": "reserve",
        "algorithm": "token_bucket",
        "rule_items": [{"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", **limit}]}],
        **fields,
    }


async def post(
    session: aiohttp.ClientSession, url: str, key: str, extra: dict[str, str] | None = None
) -> tuple[int, float, float]:
    """Status, seconds taken, and when (monotonic) the answer arrived."""
    started = time.monotonic()
    headers = {
        "content-type": "application/json",
        "x-api-key": key,
        "x-mock-completion-tokens": str(COMPLETION),
        **(extra or {}),
    }
    async with session.post(url, data=body(), headers=headers) as response:
        await response.read()
        return response.status, time.monotonic() - started, time.monotonic()


# --- 1. wait -----------------------------------------------------------------------------------


async def burst(gw: Gateway, seconds: int, limit_per_s: int, max_wait_ms: int) -> list[list[str]]:
    config = rule(
        "burst",
        {"token_per_second": limit_per_s},
        when_exhausted={"action": "wait", "max_wait_ms": max_wait_ms},
    )
    gw.update_policy(parse_filter_config(config))
    rate = limit_per_s / TOKENS_PER_REQUEST  # requests a second the bucket refills
    per_second = max(1, round(3 * rate))  # offered: three times that, in one burst a second
    url = gw.listen_url + "/v1/chat/completions"
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = []
        for second in range(seconds):
            tasks += [asyncio.create_task(post(session, url, "burst")) for _ in range(per_second)]
            await asyncio.sleep(max(0.0, started + second + 1 - time.monotonic()))
        answers = await asyncio.gather(*tasks)
    admitted = [a for a in answers if a[0] == 200]
    last = max(arrived for _, _, arrived in admitted) - started
    allowed = limit_per_s + limit_per_s * last  # the full bucket, then its refill
    admitted_tokens = len(admitted) * TOKENS_PER_REQUEST
    longest = max(taken for _, taken, _ in answers)
    return [
        [
            f"{limit_per_s} tokens/s ({rate:.1f} requests/s)",
            f"{per_second * seconds} in {seconds} s ({per_second}/s)",
            str(sum(1 for a in answers if a[0] == 429)),
            f"{longest * 1000:.0f} ms (max_wait_ms {max_wait_ms})",
            f"{admitted_tokens} / {allowed:.0f} = {admitted_tokens / allowed:.3f}",
        ]
    ]


# --- 2. pace_above -----------------------------------------------------------------------------


async def pacing(gw: Gateway, limit_per_minute: int, requests: int) -> list[list[str]]:
    config = rule(
        "pace",
        {"token_per_minute": limit_per_minute},
        pace_above=0.5,
        when_exhausted={"max_wait_ms": 10000},
    )
    gw.update_policy(parse_filter_config(config))
    spacing_ms = 60_000 * TOKENS_PER_REQUEST / limit_per_minute  # the bucket's natural rate
    url = gw.listen_url + "/v1/chat/completions"
    taken: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            status, seconds, _ = await post(session, url, "pace")
            assert status == 200, status
            taken.append(seconds * 1000)
    half = limit_per_minute // 2 // TOKENS_PER_REQUEST  # requests admitted before the threshold
    baseline = statistics.median(taken[:half])
    added = [t - baseline for t in taken[half + 1 :]]
    return [
        [
            f"{limit_per_minute} tokens/min, pace_above 0.5",
            f"{TOKENS_PER_REQUEST}",
            f"{spacing_ms:.0f} ms",
            f"{statistics.median(added):.0f} ms (min {min(added):.0f}, max {max(added):.0f})",
            f"{baseline:.1f} ms",
        ]
    ]


# --- 3. memory ---------------------------------------------------------------------------------


async def rss_per_request(by: str, count: int) -> tuple[float, int, int]:
    """A fresh gateway (1 worker); `count` requests held at once, by the filter's wait queue
    (`filter`) or by an upstream that answers after 60 s with the budget open (`upstream`).
    Returns Envoy's RSS grown per request, how many were held, and how many the queue still
    held once the clients left."""
    held_rule = rule(
        "memory",
        {"request_per_minute": 1},
        when_exhausted={"action": "wait", "max_wait_ms": 60000, "max_queued": count},
    )
    open_budget = {"rule_name": "open", "global_threshold": {"token_per_minute": 10**12}}
    gauge = "wasmcustom.tokenlimit.wait_queued"
    active = gauge if by == "filter" else "cluster.upstream.upstream_rq_active"
    with Gateway(parse_filter_config(held_rule if by == "filter" else open_budget)) as gw:
        pid = gw_pid(gw)
        url = gw.listen_url + "/v1/chat/completions"
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=90)
        delay = {} if by == "filter" else {"x-mock-delay-ms": "60000"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await post(session, url, "memory")  # spends the budget (filter), warms up (both)
            before = h.rss_bytes(pid)
            tasks = [asyncio.create_task(post(session, url, "memory", delay)) for _ in range(count)]
            held = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and held < count:
                await asyncio.sleep(0.5)
                held = gw.stats().get(active, 0)
                print(f"{by}: {held} held", file=sys.stderr)
            await asyncio.sleep(1)
            grown = h.rss_bytes(pid) - before
            for task in tasks:
                task.cancel()  # the clients leave
            await asyncio.gather(*tasks, return_exceptions=True)
        left = held if by == "filter" else 0
        deadline = time.monotonic() + 10
        while left > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            left = gw.stats().get(gauge, 0)
    return grown / max(held, 1), held, left


def gw_pid(gw: Gateway) -> int:
    proc = gw._envoy
    assert proc is not None
    return proc.pid


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=10_000, help="requests held at once")
    args = parser.parse_args()
    placeholder = {"rule_name": "placeholder", "global_threshold": {"token_per_minute": 10**6}}
    with Gateway(parse_filter_config(placeholder), concurrency=1) as gw:
        print("wait ...", file=sys.stderr)
        waited = await burst(gw, seconds=4, limit_per_s=10 * TOKENS_PER_REQUEST, max_wait_ms=10000)
        print("pace_above ...", file=sys.stderr)
        paced = await pacing(gw, limit_per_minute=60 * TOKENS_PER_REQUEST, requests=40)
    print("memory ...", file=sys.stderr)
    per_held, held, left = await rss_per_request("filter", args.held)
    # Envoy's default circuit breakers allow 1024 upstream requests: compare at 1000 each.
    per_filter_1k, _, _ = await rss_per_request("filter", 1000)
    per_upstream_1k, upstream_held, _ = await rss_per_request("upstream", 1000)
    print("# Near the limit (bench/near_limit.py)\n")
    print(h.machine_summary() + "\n")
    print("## wait: a burst at 3x a token bucket's rate\n")
    headers = ["bucket", "offered", "429s", "longest wait", "admitted / allowed tokens"]
    print(h.markdown_table(headers, waited) + "\n")
    print("## pace_above: added latency against the computed spacing\n")
    headers = ["budget", "tokens a request", "spacing", "added latency", "unpaced latency"]
    print(h.markdown_table(headers, paced) + "\n")
    print("## memory: requests held at once (1 worker, a fresh gateway each)\n")
    headers = ["held by", "requests", "Envoy RSS grown per request", "held after clients left"]
    rows = [
        ["the wait queue", str(held), f"{per_held / 1024:.1f} KiB", str(left)],
        ["the wait queue", "1000", f"{per_filter_1k / 1024:.1f} KiB", "-"],
        [
            "the upstream (60 s answer)",
            str(upstream_held),
            f"{per_upstream_1k / 1024:.1f} KiB",
            "-",
        ],
    ]
    print(h.markdown_table(headers, rows) + "\n")
    print(
        f"The filter's own share of a held request is under {FILTER_BOUND_BYTES // 1024} KiB of "
        "its Wasm memory (docs/near-limit.md, measured by tests/filter/test_wait_pace_priority.py)."
    )


if __name__ == "__main__":
    asyncio.run(main())
