"""The "my usage" endpoint (issue 16) through the real filter in the test host: `GET
/tokenlimit/v1/usage` answered by the filter for the caller's own identity, with each matching
budget's limit, used, remaining and reset; never another caller's, never charged. Both builds,
the local store and real Redis (the Higress build through its Redis ABI, the Envoy build through
a bridge call answered by the same Redis)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.filter_requests import JSON_RESPONSE, chat_request, openai_body
from support.proxywasm_host import Clock, Host, HttpCall
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

BUILDS = ["tokenlimit.wasm", "tokenlimit-higress.wasm"]
BRIDGE = "tokenlimit-bridge"


def rule(**extra: Any) -> dict[str, Any]:
    return {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 100, "request_per_hour": 10}],
            }
        ],
        **extra,
    }


@pytest.fixture(params=BUILDS)
def build(request: pytest.FixtureRequest, filter_wasm: Path, higress_wasm: Path) -> Path:
    return filter_wasm if request.param == BUILDS[0] else higress_wasm


@pytest.fixture
def clock() -> Clock:
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)  # 10 s into a minute


def spend(host: Host, api_key: str, prompt: int = 10, completion: int = 30) -> None:
    stream = host.http_stream().complete(
        chat_request(api_key), JSON_RESPONSE, [openai_body(prompt, completion)]
    )
    assert stream.local_response is None


def usage(host: Host, api_key: str | None, path: str = "/tokenlimit/v1/usage", method: str = "GET"):
    headers = {":method": method, ":path": path, ":authority": "gw"}
    if api_key is not None:
        headers["x-api-key"] = api_key
    stream = host.http_stream().complete(headers)
    assert stream.local_response is not None, "the filter did not answer the usage request"
    return stream.local_response


def budgets(reply: Any) -> dict[str, dict[str, Any]]:
    assert reply.status == 200, reply.body
    document = json.loads(reply.body)
    assert document["truncated"] is False
    return {f"{b['unit']}/{b['window']}": b for b in document["budgets"]}


def check_own_usage(host: Host) -> None:
    spend(host, "sk-alice")  # 40 tokens, 1 request
    spend(host, "sk-alice", 20, 20)  # 40 more
    spend(host, "sk-bob")
    mine = budgets(usage(host, "sk-alice"))
    assert mine["tokens/minute"] == {
        "limit_by": "per_header:x-api-key",
        "unit": "tokens",
        "window": "minute",
        "window_seconds": 60,
        "model": None,
        "limit": 100,
        "used": 80,
        "remaining": 20,
        "reset_seconds": 50,
    }
    assert mine["requests/hour"]["used"] == 2 and mine["requests/hour"]["remaining"] == 8
    # Bob sees his own budget, not Alice's; asking again charged nothing.
    assert budgets(usage(host, "sk-bob"))["tokens/minute"]["used"] == 40
    assert budgets(usage(host, "sk-alice"))["requests/hour"]["used"] == 2
    # A caller no item keys on (no key header) has no budgets here.
    assert json.loads(usage(host, None).body)["budgets"] == []
    assert "sk-alice" not in usage(host, "sk-alice").body.decode()


def test_local_store_answers_the_callers_own_usage(build: Path, clock: Clock) -> None:
    host = Host(build, clock=clock)
    assert host.configure(rule()), host.log_messages()
    check_own_usage(host)


def test_the_path_is_configurable_and_other_methods_are_refused(build: Path, clock: Clock) -> None:
    host = Host(build, clock=clock)
    assert host.configure(rule(usage_path="/me")), host.log_messages()
    assert budgets(usage(host, "k", "/me?model=x"))["tokens/minute"]["used"] == 0
    assert usage(host, "k", "/me", method="POST").status == 405
    # The default path is now an ordinary request (counted, sent upstream).
    stream = host.http_stream().complete(
        {":method": "GET", ":path": "/tokenlimit/v1/usage", ":authority": "gw", "x-api-key": "k"}
    )
    assert stream.local_response is None
    assert host.configure(rule(usage_path="")), host.log_messages()
    stream = host.http_stream().complete(
        {":method": "GET", ":path": "/tokenlimit/v1/usage", ":authority": "gw", "x-api-key": "k"}
    )
    assert stream.local_response is None


def test_per_model_budgets_are_reported_for_the_model_asked_about(clock: Clock, filter_wasm: Path):
    host = Host(filter_wasm, clock=clock)
    config = {
        "rule_name": "m",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "per_model": True,
                "limit_keys": [{"key": "*", "token_per_minute": 500}],
            }
        ],
    }
    assert host.configure(config), host.log_messages()
    request = json.dumps({"model": "gpt-4o", "messages": []}).encode()
    host.http_stream().complete(
        chat_request("k", **{"content-length": str(len(request))}),
        JSON_RESPONSE,
        [openai_body(10, 30)],
        request,
    )
    asked = budgets(usage(host, "k", "/tokenlimit/v1/usage?model=gpt-4o"))["tokens/minute"]
    assert asked["model"] == "gpt-4o" and asked["used"] == 40
    # Without a model: the budget of requests that name none, untouched.
    assert budgets(usage(host, "k"))["tokens/minute"]["used"] == 0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def bridge_handler(server: RedisServer) -> Callable[[HttpCall], Any]:
    """Envoy's side of the bridge call, answered by Redis itself (the bridge forwards the RESP
    bytes as they are: tests/bridge covers it)."""
    wire = redis_wire(server)

    def handle(call: HttpCall) -> Any:
        assert call.upstream == BRIDGE
        answer = wire(call.body)
        return None if answer is None else ([(":status", "200")], answer)

    return handle


def test_redis_store_answers_after_the_peek(
    build: Path, clock: Clock, redis_server: RedisServer
) -> None:
    if build.name == BUILDS[0]:
        host = Host(build, clock=clock, http_call_handler=bridge_handler(redis_server))
    else:
        host = Host(build, clock=clock, redis_handler=redis_wire(redis_server))
    assert host.configure(rule(redis={"service_name": BRIDGE, "timeout": 500}))
    # Redis windows follow Redis's clock: spend and read within one minute of it.
    check_redis = host.http_stream()
    check_redis.complete(chat_request("sk-carol"), JSON_RESPONSE, [openai_body(10, 30)])
    mine = budgets(usage(host, "sk-carol"))
    assert mine["tokens/minute"]["used"] in (0, 40)  # 0 only if Redis's minute just turned
    assert mine["requests/hour"]["used"] == 1
    assert budgets(usage(host, "sk-dave"))["requests/hour"]["used"] == 0
    assert budgets(usage(host, "sk-carol"))["requests/hour"]["used"] == 1  # a peek charges none


def test_redis_unreachable_answers_503(build: Path, clock: Clock) -> None:
    host = Host(
        build,
        clock=clock,
        http_call_handler=lambda call: ([(":status", "503")], b""),  # the bridge is down
        redis_handler=lambda query: None,  # Redis does not answer
    )
    assert host.configure(rule(redis={"service_name": BRIDGE, "timeout": 500}))
    assert usage(host, "k").status == 503
