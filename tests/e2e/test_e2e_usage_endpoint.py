"""End to end, the "my usage" endpoint (issue 16): real Envoy running the real filter in front of
the mock LLM. `GET /tokenlimit/v1/usage` is answered by the filter with the caller's own
budgets (never sent upstream, never charged); a second key cannot see the first's usage. The
local store, then Redis through the tokenlimit bridge (the filter waits for budget.lua's peek)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config
from tokenlimit.render.envoy.common import UPSTREAM_CLUSTER


def config(redis: bool) -> FilterConfig:
    document: dict[str, Any] = {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 1000, "request_per_day": 50}],
            }
        ],
    }
    if redis:
        document["redis"] = {"service_name": "placeholder", "timeout": 1000}
    return parse_filter_config(document)


def post(gw: Gateway, api_key: str) -> int:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": []}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": "40",
            "x-mock-completion-tokens": "60",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return int(response.status)


def usage(gw: Gateway, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        gw.listen_url + "/tokenlimit/v1/usage", headers={"x-api-key": api_key}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return int(response.status), json.loads(response.read()), headers
    except urllib.error.HTTPError as refused:
        return refused.code, {}, {}


def by_window(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{b['unit']}/{b['window']}": b for b in document["budgets"]}


def avoid_minute_boundary(seconds_needed: float = 10.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


def check_usage(gw: Gateway, key: str, other_key: str) -> None:
    upstream_before = mock_requests(gw)
    avoid_minute_boundary()
    assert [post(gw, key) for _ in range(3)] == [200] * 3
    # Postpaid charges land just after each answer: wait for the third.
    deadline = time.monotonic() + 5
    while True:
        status, document, headers = usage(gw, key)
        assert status == 200, document
        mine = by_window(document)
        if mine["tokens/minute"]["used"] == 300 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert headers["content-type"] == "application/json"
    assert document["rule"] == "chat"
    assert mine["tokens/minute"]["limit"] == 1000
    assert mine["tokens/minute"]["used"] == 300
    assert mine["tokens/minute"]["remaining"] == 700
    assert 0 < mine["tokens/minute"]["reset_seconds"] <= 60
    assert mine["requests/day"]["used"] == 3
    assert key not in json.dumps(document)
    # The second key sees its own (empty) budgets, never the first's.
    status, theirs, _ = usage(gw, other_key)
    assert status == 200
    assert {b["used"] for b in theirs["budgets"]} == {0}
    # Asking charged nothing and reached no upstream.
    assert by_window(usage(gw, key)[1])["requests/day"]["used"] == 3
    assert mock_requests(gw) - upstream_before == 3


def mock_requests(gw: Gateway) -> int:
    """Requests the upstream received (the gateway's upstream cluster stats)."""
    return int(gw.stats().get(f"cluster.{UPSTREAM_CLUSTER}.upstream_rq_total", 0))


@pytest.fixture(scope="module")
def local_gateway(filter_wasm: Path) -> Iterator[Gateway]:
    with Gateway(config(redis=False), wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def test_the_local_store_answers_each_caller_with_its_own_usage(local_gateway: Gateway) -> None:
    check_usage(local_gateway, "sk-local-alice", "sk-local-bob")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_the_redis_store_answers_after_its_peek(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    with Gateway(
        config(redis=True), wasm_path=filter_wasm, concurrency=2, redis=redis_server.url
    ) as gw:
        check_usage(gw, "sk-redis-alice", "sk-redis-bob")
