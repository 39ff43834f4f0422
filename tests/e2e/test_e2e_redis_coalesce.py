"""End to end, admission coalescing (issue 17, filter/src/store/coalesce.zig): a real Envoy
with its tokenlimit bridge in front of a real redis-server, and many clients at once. While
a rule's admission call is in flight, the worker's further admissions of that rule wait and go
together in the next call, so the bridge forwards far fewer budget-script calls than there are
requests, and the budget still holds exactly: each admission is judged in order in Redis."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer
from test_e2e_redis import avoid_minute_boundary, post
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config

REQUESTS_ALLOWED = 150


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def config() -> FilterConfig:
    """One rule, one key: REQUESTS_ALLOWED requests a minute (tokens roomy), in Redis."""
    limits = {"key": "*", "request_per_minute": REQUESTS_ALLOWED, "token_per_minute": 10**9}
    return parse_filter_config(
        {
            "rule_name": "burst",
            "rule_items": [{"limit_by_per_header": "x-api-key", "limit_keys": [limits]}],
            "failure_mode": "closed",
            "redis": {"service_name": "placeholder", "timeout": 1000},
        }
    )


def script_calls(gw: Gateway) -> int:
    """Budget-script calls the bridge forwarded (EVALSHA, and EVAL after NOSCRIPT)."""
    assert gw.bridge_url is not None
    with urllib.request.urlopen(gw.bridge_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = r'^tokenlimit_bridge_commands_total\{command="(evalsha|eval)"\} (\S+)$'
    return sum(int(float(value)) for _, value in re.findall(pattern, text, re.MULTILINE))


def counted_requests(server: RedisServer) -> int:
    client = redis.Redis.from_url(server.url)
    keys = [k for k in client.keys("tokenlimit:{burst}:*") if b":requests:" in k]
    return sum(int(client.hget(key, "u") or 0) for key in keys)


def test_concurrent_clients_share_admission_calls_and_the_budget_holds_exactly(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    with Gateway(config(), wasm_path=filter_wasm, concurrency=1, redis=redis_server.url) as gw:
        avoid_minute_boundary()
        before = script_calls(gw)
        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(lambda _: post(gw, "shared")[0], range(2 * REQUESTS_ALLOWED)))
        time.sleep(0.3)  # past the settle delay: the worker's tick has run
        made = script_calls(gw) - before
        stats = gw.stats()
    # Exactly the budget, however the admissions were grouped into calls.
    assert statuses.count(200) == REQUESTS_ALLOWED, statuses
    assert statuses.count(429) == REQUESTS_ALLOWED
    assert counted_requests(redis_server) == REQUESTS_ALLOWED
    # Fewer calls than admitted requests (one each before coalescing; the refusals after the
    # budget ran out are answered from the worker's cache, without a call).
    assert made < REQUESTS_ALLOWED * 0.8, made
    assert stats["wasmcustom.tokenlimit.redis_admissions_coalesced"] >= REQUESTS_ALLOWED * 0.2
    assert stats.get("wasmcustom.tokenlimit.redis_failures", 0) == 0
