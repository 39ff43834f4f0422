"""Dollar budgets (issue 12) through the real filter in the test host: `prices` (USD per 1M
tokens) price each request by its model, `cost_per_*` limits count micro-dollars, `reserve`
reserves the estimated cost, the x-ratelimit-*-cost headers report it in dollars, and a model
without a price is refused (never free). The local store, then Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.proxywasm_host import Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

PRICES = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.6},
    "gpt-4o": {"input": 2.5, "output": 10, "cached": 1.25},
}


def rule(**extra: Any) -> dict[str, Any]:
    return {
        "rule_name": "dollars",
        "prices": PRICES,
        "show_limit_headers": True,
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "cost_per_minute": 0.001}],  # 1,000 micro-USD
            }
        ],
        **extra,
    }


def request(model: str, api_key: str = "alice", **body: Any) -> tuple[dict[str, str], bytes]:
    data = json.dumps({"model": model, "messages": [], **body}).encode()
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "content-length": str(len(data)),
        "x-api-key": api_key,
    }
    return headers, data


def ask(host: Host, model: str, prompt: int = 100, completion: int = 50, api_key: str = "alice"):
    headers, data = request(model, api_key)
    answer = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    return host.http_stream().complete(
        headers, {":status": "200", "content-type": "application/json"}, [answer.encode()], data
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)


def test_a_dollar_budget_is_spent_at_the_models_price(make_host, clock) -> None:
    host = make_host(clock=clock)
    assert host.configure(rule()), host.log_messages()
    # gpt-4o: 100 x $2.50 + 50 x $10 per 1M = 750 micro-USD a request.
    first = ask(host, "gpt-4o")
    assert first.local_response is None
    assert first.response_header_map["x-ratelimit-limit-cost"] == "0.001000"
    assert ask(host, "gpt-4o").local_response is None  # 750 < 1,000: postpaid admits
    refused = ask(host, "gpt-4o").local_response
    assert refused is not None and refused.status == 429
    headers = dict(refused.headers)
    assert headers["x-ratelimit-limit-cost"] == "0.001000"
    assert headers["x-ratelimit-remaining-cost"] == "0.000000"
    assert headers["retry-after"] == "50"
    # The same tokens on gpt-4o-mini cost 45 micro-USD: bob's 23rd request passes 1,000.
    statuses = [ask(host, "gpt-4o-mini", api_key="bob").local_response for _ in range(24)]
    assert statuses[:23] == [None] * 23 and statuses[23] is not None


def test_a_model_without_a_price_is_refused_unless_a_star_entry_prices_it(make_host, clock):
    host = make_host(clock=clock)
    assert host.configure(rule()), host.log_messages()
    refused = ask(host, "o1").local_response
    assert refused is not None and refused.status == 429
    assert any("model o1 has no price in rule dollars" in m for m in host.log_messages())
    priced = rule(prices={**PRICES, "*": {"input": 100, "output": 100}})
    assert host.configure(priced)
    # 150 tokens at $100 per 1M: 15,000 micro-USD, past the budget at once (postpaid).
    assert ask(host, "o1").local_response is None
    assert ask(host, "o1").local_response is not None


def test_reserve_holds_the_estimated_cost_of_requests_in_flight(make_host, clock):
    host = make_host(clock=clock)
    limits = {"key": "*", "cost_per_minute": 0.01}  # 10,000 micro-USD
    reserve = rule(admission="reserve")
    reserve["rule_items"][0]["limit_keys"] = [limits]
    assert host.configure(reserve), host.log_messages()
    # max_tokens 600 at $10 per 1M output: 6,000 micro-USD reserved (plus the prompt).
    first = host.http_stream()
    headers, data = request("gpt-4o", max_tokens=600)
    first.request_headers(headers)
    first.request_body(data, True)
    assert first.local_response is None
    second = host.http_stream()
    second.request_headers(headers)
    second.request_body(data, True)
    assert second.local_response is not None and second.local_response.status == 429


def test_prices_and_cost_limits_are_checked(make_host):
    host = make_host()
    bad_price = rule(prices={"gpt-4o": {"input": 2.1234567}})
    assert not host.configure(bad_price)
    assert any(
        "prices.gpt-4o.input: must be a number of US dollars with at most 6 decimals" in m
        for m in host.log_messages()
    )
    zero = rule()
    zero["rule_items"][0]["limit_keys"][0]["cost_per_minute"] = 0
    assert not host.configure(zero)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def test_a_dollar_budget_in_redis(higress_wasm: Path, server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()
    gateways = [Host(higress_wasm, redis_handler=redis_wire(server), seed=n) for n in (1, 2)]
    for gateway in gateways:
        config = rule(redis={"service_name": "redis.default.svc.cluster.local"})
        assert gateway.configure(config), gateway.log_messages()
    assert ask(gateways[0], "gpt-4o").local_response is None
    assert ask(gateways[1], "gpt-4o").local_response is None
    refused = ask(gateways[0], "gpt-4o").local_response
    assert refused is not None and refused.status == 429
    client = redis.Redis.from_url(server.url)
    (key,) = client.keys("tokenlimit:{dollars}:per_header:x-api-key:cost:60:*")
    assert int(client.hget(key, "u")) == 1500
