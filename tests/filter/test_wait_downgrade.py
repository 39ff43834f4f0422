"""`when_exhausted: downgrade` (issue 13) through the real filter in the test host: when the
requested model's budget is spent the body's `model` is rewritten to the cheaper one, the
request is charged to that model's budget, the response names the model that served it, and
when that budget is spent too the request waits (max_wait_ms written) or is rejected."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.proxywasm_host import Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

USAGE = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 5}}).encode()


def rule(**when: Any) -> dict[str, Any]:
    """One request a minute of gpt-4o and two of gpt-4o-mini, shared by every caller."""
    return {
        "rule_name": "models",
        "rule_items": [
            {
                "limit_by_per_model": "",
                "limit_keys": [
                    {"key": "gpt-4o", "request_per_minute": 1},
                    {"key": "gpt-4o-mini", "request_per_minute": 2},
                ],
            }
        ],
        "when_exhausted": {"action": "downgrade", "model": "gpt-4o-mini", **when},
    }


def ask(host: Host, model: str = "gpt-4o") -> Any:
    body = json.dumps({"model": model, "messages": []}).encode()
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "content-length": str(len(body)),
    }
    stream = host.http_stream()
    stream.request_headers(headers, end_of_stream=False)
    host.run_pending()
    stream.request_body(body, True)
    host.run_pending()
    return stream


def answer(stream: Any) -> None:
    stream.response_headers({":status": "200", "content-type": "application/json"})
    stream.response_body(USAGE, True)
    stream.log()
    stream.done()


def sent_model(stream: Any) -> str:
    return str(json.loads(b"".join(stream.request_body_chunks_forwarded))["model"])


def test_a_spent_model_is_downgraded_and_charged_to_the_cheaper_one(
    make_any_host: Callable[..., Host],
) -> None:
    host = make_any_host()
    assert host.configure(rule()), host.log_messages()
    first = ask(host)
    answer(first)
    assert sent_model(first) == "gpt-4o"
    assert first.response_header_map.get("x-tokenlimit-served-model") is None
    downgraded = [ask(host) for _ in range(2)]
    for stream in downgraded:
        assert stream.local_response is None and not stream.request_paused
        answer(stream)
        assert sent_model(stream) == "gpt-4o-mini"
        assert stream.response_header_map.get("x-tokenlimit-served-model") == "gpt-4o-mini"
        assert stream.properties_set["tokenlimit_decision"] == b"downgraded"
        assert stream.properties_set["tokenlimit_served_model"] == b"gpt-4o-mini"
    assert host.metrics["tokenlimit.requests_downgraded"] == 2
    # gpt-4o-mini's two are spent too: without max_wait_ms, today's 429.
    spent = ask(host)
    assert spent.local_response is not None and spent.local_response.status == 429


def test_when_the_cheaper_model_is_spent_too_it_waits_if_max_wait_ms_is_written(
    make_host: Callable[..., Host],
) -> None:
    clock = Clock(now_ns=(1_767_225_600 + 59) * 10**9)  # a second before the minute rolls
    host = make_host(clock=clock)
    assert host.configure(rule(max_wait_ms=2000)), host.log_messages()
    for _ in range(3):
        answer(ask(host))
    held = ask(host)
    assert held.request_paused and held.local_response is None
    clock.advance(1.0)
    host.tick()
    assert not held.request_paused
    answer(held)
    assert sent_model(held) == "gpt-4o-mini"
    assert held.properties_set["tokenlimit_decision"] == b"waited"


def test_shadow_mode_reports_the_downgrade_it_would_have_made(
    make_host: Callable[..., Host],
) -> None:
    host = make_host()
    assert host.configure({**rule(), "shadow": True}), host.log_messages()
    answer(ask(host))
    would = ask(host)
    answer(would)
    assert sent_model(would) == "gpt-4o"
    assert would.properties_set["tokenlimit_decision"] == b"shadow_downgraded"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_downgrade_decided_by_redis(higress_wasm: Path, redis_server: RedisServer) -> None:
    host = Host(higress_wasm, redis_handler=redis_wire(redis_server))
    config = {**rule(), "redis": {"service_name": "redis.dns", "timeout": 1000}}
    assert host.configure(config), host.log_messages()
    answer(ask(host))
    downgraded = ask(host)
    assert not downgraded.request_paused and downgraded.local_response is None
    answer(downgraded)
    assert sent_model(downgraded) == "gpt-4o-mini"
    assert downgraded.response_header_map.get("x-tokenlimit-served-model") == "gpt-4o-mini"
