"""The response cache (issue 15) end to end: a real Envoy running tokenlimit.wasm in front of
the mock LLM. A repeated question never reaches the upstream (the mock counts what it gets):
JSON and event streams are served by the filter, per caller unless the rule shares them, until
the TTL; Cache-Control bypasses it; with Redis two gateways share one cache."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config

QUESTION = {"model": "m", "messages": [{"role": "user", "content": "last quarter's results?"}]}


def config(redis: bool = False, **cache: Any) -> FilterConfig:
    document: dict[str, Any] = {
        "rule_name": "faq",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 100_000}],
            }
        ],
        "cache": {"ttl_seconds": 60, **cache},
    }
    if redis:
        document["redis"] = {"service_name": "placeholder", "timeout": 500}
    return parse_filter_config(document)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def post(gw: Gateway, api_key: str = "alice", body: Any = None, **headers: str) -> Answer:
    payload = json.dumps(QUESTION if body is None else body).encode()
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=payload,
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": "40",
            "x-mock-completion-tokens": "60",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as refused:
        return Answer(refused.code, refused.headers, refused.read())


def upstream_requests(gw: Gateway) -> int:
    with urllib.request.urlopen(gw.upstream_url + "/mock/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predicate()


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    with Gateway(config(), wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def test_a_json_answer_is_served_from_the_cache(gateway: Gateway) -> None:
    body = {**QUESTION, "n": 1}
    before = upstream_requests(gateway)
    first = post(gateway, body=body)
    assert first.status == 200 and first.headers["x-tokenlimit-cache"] == "miss"
    # The same question spelled differently (member order): served by the filter.
    again = post(gateway, body=dict(reversed(list(body.items()))))
    assert again.status == 200 and again.body == first.body
    assert again.headers["x-tokenlimit-cache"] == "hit"
    assert again.headers.get_all("content-type") == ["application/json"]
    assert int(again.headers["age"]) >= 0
    assert upstream_requests(gateway) == before + 1
    wait_for(lambda: "decision=cached" in gateway.logs().stdout)
    assert "cache=hit" in gateway.logs().stdout
    assert gateway.stats()["wasmcustom.tokenlimit.cache_hits"] >= 1


def test_an_event_stream_is_replayed_byte_for_byte(gateway: Gateway) -> None:
    body = {**QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    before = upstream_requests(gateway)
    first = post(gateway, body=body)
    assert first.headers["content-type"].startswith("text/event-stream")
    assert first.body.rstrip().endswith(b"data: [DONE]")
    hit = post(gateway, body=body)
    assert hit.headers["x-tokenlimit-cache"] == "hit"
    assert hit.headers.get_all("content-type") == [first.headers["content-type"]]
    assert hit.body == first.body
    assert upstream_requests(gateway) == before + 1


def test_another_caller_misses_and_cache_control_bypasses(gateway: Gateway) -> None:
    body = {**QUESTION, "n": 2}
    post(gateway, "carol", body)
    before = upstream_requests(gateway)
    assert post(gateway, "dave", body).headers["x-tokenlimit-cache"] == "miss"
    bypassed = post(gateway, "carol", body, **{"cache-control": "no-cache"})
    assert bypassed.headers["x-tokenlimit-cache"] == "bypass"
    assert upstream_requests(gateway) == before + 2


def test_scope_rule_shares_and_the_ttl_expires(filter_wasm: Path) -> None:
    with Gateway(config(scope="rule", ttl_seconds=2), wasm_path=filter_wasm) as gw:
        post(gw, "erin")
        assert post(gw, "frank").headers["x-tokenlimit-cache"] == "hit"
        time.sleep(2.1)
        assert post(gw, "frank").headers["x-tokenlimit-cache"] == "miss"
        assert upstream_requests(gw) == 2


def test_two_gateways_share_one_cache_in_redis(filter_wasm: Path) -> None:
    with (
        RedisServer() as redis_server,
        Gateway(config(redis=True), wasm_path=filter_wasm, redis=redis_server.url) as a,
        Gateway(config(redis=True), wasm_path=filter_wasm, redis=redis_server.url) as b,
    ):
        # A fleet behind one name: the host is part of the key, the listen ports differ here.
        host = {"host": "llm.example.com"}
        first = post(a, body={**QUESTION, "n": 3}, **host)
        assert first.headers["x-tokenlimit-cache"] == "miss"
        # The answer is stored after it was sent: wait for the entry to land in Redis.
        client = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: bool(client.keys("tokenlimit:cache:*")))
        hit = post(b, body={**QUESTION, "n": 3}, **host)
        assert hit.headers["x-tokenlimit-cache"] == "hit" and hit.body == first.body
        assert upstream_requests(b) == 0
