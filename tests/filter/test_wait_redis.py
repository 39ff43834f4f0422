"""`when_exhausted: wait` with the Redis store (issue 13): the tick re-checks a held request
against Redis (the Higress build's proxy_redis_call, wired to a real redis-server), the entry
keeps its place while the answer is on its way, and each re-check is its own admission (the
script ignores an admit whose marker it has seen, a refused one included)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.proxywasm_host import Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

HEADERS = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
USAGE = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 0}}).encode()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def rule(limit: dict[str, Any], **when: Any) -> dict[str, Any]:
    return {
        "rule_name": "near",
        "algorithm": "token_bucket",
        "rule_items": [{"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", **limit}]}],
        "redis": {"service_name": "redis.dns", "timeout": 1000},
        "when_exhausted": {"action": "wait", "max_wait_ms": 3000, **when},
    }


def start(host: Host) -> Any:
    stream = host.http_stream()
    stream.request_headers({**HEADERS, "x-api-key": "alice"}, end_of_stream=True)
    host.run_pending()
    return stream


def pass_time(host: Host, clock: Clock, seconds: float) -> None:
    """Real time for Redis (its windows use its own clock), host time for the filter."""
    time.sleep(seconds)
    clock.advance(seconds)
    host.tick()
    host.run_pending()


def test_a_held_request_is_rechecked_against_redis_and_admitted_once_there_is_room(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    assert host.configure(rule({"request_per_second": 2})), host.log_messages()
    first, second = start(host), start(host)
    assert not first.request_paused and not second.request_paused
    third = start(host)
    assert third.request_paused and third.local_response is None
    for _ in range(40):
        pass_time(host, clock, 0.05)
        if not third.request_paused:
            break
    assert not third.request_paused and third.local_response is None
    assert third.properties_set["tokenlimit_decision"] == b"waited"
    third.response_headers({":status": "200", "content-type": "application/json"})
    third.response_body(USAGE, True)
    third.log()
    third.done()
    # The admitted re-check was counted (one under a marker Redis had seen would reserve
    # nothing, and the next request would find room): the bucket is full again.
    fourth = start(host)
    assert fourth.request_paused


def test_past_max_wait_ms_redis_refusals_end_in_todays_429(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    limit = {"request_per_minute": 1}
    assert host.configure({**rule(limit, max_wait_ms=200), "algorithm": "fixed"})
    start(host)
    held = start(host)
    assert held.request_paused
    for _ in range(10):
        pass_time(host, clock, 0.05)
        if held.local_response is not None:
            break
    reply = held.local_response
    assert reply is not None and reply.status == 429
    assert 0 < int(dict(reply.headers)["retry-after"]) <= 60
    assert host.metrics["tokenlimit.wait_timeouts"] == 1
