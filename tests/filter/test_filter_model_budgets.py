"""Model-aware budgets (issue 12) through the real filter in the test host: the request's model
read from the body, Azure's and Gemini's paths or a header; `models`, `limit_by_model`,
`limit_by_per_model` and `per_model`; odd or long model names refused, never an escape.
The local store here; the same counters in Redis at the end (tokenlimit-higress.wasm).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.proxywasm_host import Action, Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

JSON_RESPONSE = {":status": "200", "content-type": "application/json"}


def answer(prompt: int, completion: int) -> bytes:
    return json.dumps(
        {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    ).encode()


def ask(
    host: Host,
    model: str | None,
    api_key: str = "alice",
    *,
    path: str = "/v1/chat/completions",
    prompt: int = 10,
    completion: int = 30,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
):
    request = {
        ":method": "POST",
        ":path": path,
        ":authority": "llm.example.com",
        "content-type": "application/json",
        "x-api-key": api_key,
        **(headers or {}),
    }
    body = raw_body
    if body is None:
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
        if model is not None:
            payload["model"] = model
        body = json.dumps(payload).encode()
    request["content-length"] = str(len(body))
    stream = host.http_stream()
    return stream.complete(request, JSON_RESPONSE, [answer(prompt, completion)], request_body=body)


def status(stream) -> int:
    return stream.local_response.status if stream.local_response else 200


def statuses(host: Host, model: str | None, api_key: str, n: int, **kwargs: Any) -> list[int]:
    return [status(ask(host, model, api_key, **kwargs)) for _ in range(n)]


@pytest.fixture
def clock() -> Clock:
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)


def configured(make_host, clock: Clock, rule: dict[str, Any]) -> Host:
    host = make_host(clock=clock)
    assert host.configure({"rule_name": "models", **rule}), host.log_messages()
    return host


PROVIDER_QUOTA = {
    "rule_items": [
        {
            "limit_by_per_model": "",
            "limit_keys": [
                {"key": "gpt-4o", "token_per_minute": 100},
                {"key": "regexp:^gpt-4o-mini", "token_per_minute": 1000},
            ],
        }
    ]
}


def test_a_per_model_provider_quota_is_shared_by_every_caller(make_host, clock):
    host = configured(make_host, clock, PROVIDER_QUOTA)
    # 40 tokens a request: alice and bob together spend gpt-4o's 100 on the third request.
    assert status(ask(host, "gpt-4o", "alice")) == 200
    assert status(ask(host, "gpt-4o", "bob")) == 200
    assert status(ask(host, "gpt-4o", "alice")) == 200
    assert status(ask(host, "gpt-4o", "bob")) == 429
    assert status(ask(host, "gpt-4o", "carol")) == 429
    # Other models have budgets of their own, or none.
    assert status(ask(host, "gpt-4o-mini", "bob")) == 200
    assert status(ask(host, "o1", "bob")) == 200
    assert status(ask(host, None, "bob")) == 200


def test_an_escaped_model_name_is_the_same_model(make_host, clock):
    host = configured(make_host, clock, PROVIDER_QUOTA)
    escaped = b'{"model":"\\u0067pt-4o","messages":[]}'
    assert statuses(host, None, "alice", 3, raw_body=escaped) == [200, 200, 200]
    assert status(ask(host, "gpt-4o", "bob")) == 429


def test_odd_and_overlong_models_are_refused_not_let_through(make_host, clock):
    host = configured(make_host, clock, PROVIDER_QUOTA)
    lone_surrogate = b'{"model":"gpt-4o\\ud800","messages":[]}'
    refused = ask(host, None, raw_body=lone_surrogate)
    assert status(refused) == 400
    assert status(ask(host, "g" * 257)) == 400
    assert any("longer than 256 bytes" in m for m in host.log_messages())
    assert status(ask(host, "g" * 256)) == 200  # at the bound: a model like any other
    assert host.metrics["tokenlimit.requests_rejected"] == 2


def test_key_by_model_budgets_with_per_model(make_host, clock):
    host = configured(
        make_host,
        clock,
        {
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "per_model": True,
                    "limit_keys": [{"key": "*", "token_per_minute": 80}],
                }
            ]
        },
    )
    # Each (key, model) pair has 80 tokens: two requests each.
    assert statuses(host, "gpt-4o", "alice", 3) == [200, 200, 429]
    assert statuses(host, "gpt-4o-mini", "alice", 3) == [200, 200, 429]
    assert statuses(host, "gpt-4o", "bob", 3) == [200, 200, 429]
    # Requests without a model share one budget per key, never none.
    assert statuses(host, None, "alice", 3) == [200, 200, 429]


def test_models_condition_limits_only_the_named_models(make_host, clock):
    host = configured(
        make_host,
        clock,
        {
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "models": ["gpt-4o", "regexp:^o[0-9]"],
                    "limit_keys": [{"key": "*", "token_per_minute": 80}],
                }
            ]
        },
    )
    # gpt-4o and o1 share alice's 80 tokens; other models and requests without one are free.
    assert statuses(host, "gpt-4o", "alice", 2) == [200, 200]
    assert status(ask(host, "o1", "alice")) == 429
    assert statuses(host, "gpt-4o-mini", "alice", 3) == [200, 200, 200]
    assert statuses(host, None, "alice", 3) == [200, 200, 200]


def test_limit_by_model_shares_the_keys_budget_across_its_models(make_host, clock):
    host = configured(
        make_host,
        clock,
        {
            "rule_items": [
                {
                    "limit_by_model": "",
                    "limit_keys": [{"key": "regexp:^claude-", "token_per_minute": 100}],
                }
            ]
        },
    )
    assert status(ask(host, "claude-3-haiku", "alice")) == 200
    assert status(ask(host, "claude-3-opus", "bob")) == 200
    assert status(ask(host, "claude-3-opus", "bob")) == 200
    assert status(ask(host, "claude-3-haiku", "carol")) == 429
    assert status(ask(host, "gpt-4o", "carol")) == 200


def test_the_model_comes_from_the_header_then_azure_then_gemini_paths(make_host, clock):
    host = configured(make_host, clock, {**PROVIDER_QUOTA, "model_header": "X-Model"})
    # A Higress model router's header wins over the body.
    assert statuses(host, "o1", "a", 3, headers={"x-model": "gpt-4o"}) == [200, 200, 200]
    assert status(ask(host, "gpt-4o", "b")) == 429
    # Azure: the deployment is the model, whatever the body says.
    azure = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
    assert status(ask(host, "o1", "c", path=azure)) == 429
    gemini = "/v1beta/models/gpt-4o:generateContent"
    assert status(ask(host, None, "d", path=gemini)) == 429


def test_only_rules_with_model_conditions_hold_the_body(make_host, clock):
    plain = {
        "limit_by_per_header": "x-api-key",
        "limit_keys": [{"key": "*", "token_per_minute": 80}],
    }
    request = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "x-api-key": "a",
    }
    for item, held in ((plain, False), ({**plain, "per_model": True}, True)):
        host = configured(make_host, clock, {"rule_items": [item]})
        stream = host.http_stream()
        assert stream.request_headers({**request, "content-length": "2"}) == Action.CONTINUE
        assert stream.request_body(b"{", False) == (Action.PAUSE if held else Action.CONTINUE)
        assert stream.request_body(b"}", True) == Action.CONTINUE


# ---- the same counters in Redis ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def test_per_model_quota_and_key_by_model_in_redis(higress_wasm: Path, server: RedisServer):
    client = redis.Redis.from_url(server.url)
    client.flushall()
    rule = {
        "rule_name": "models",
        "redis": {"service_name": "redis.default.svc.cluster.local", "service_port": 6379},
        "rule_items": [
            *PROVIDER_QUOTA["rule_items"],
            {
                "limit_by_per_header": "x-api-key",
                "per_model": True,
                "limit_keys": [{"key": "*", "token_per_minute": 1000}],
            },
        ],
    }
    gateways = [Host(higress_wasm, redis_handler=redis_wire(server), seed=n) for n in (1, 2)]
    for gateway in gateways:
        assert gateway.configure(rule), gateway.log_messages()
    assert status(ask(gateways[0], "gpt-4o", "alice")) == 200
    assert status(ask(gateways[1], "gpt-4o", "bob")) == 200
    assert status(ask(gateways[0], "gpt-4o", "bob")) == 200
    for gateway in gateways:  # each worker's tick passes: the settlements it queued land
        gateway.tick()
        gateway.run_pending()
    assert status(ask(gateways[1], "gpt-4o", "alice")) == 429
    keys = sorted(k.decode() for k in client.keys("tokenlimit:{models}:per_*"))
    assert "tokenlimit:{models}:per_model:tokens:60:gpt-4o" in keys
    assert any(k.endswith(":m=gpt-4o") and ":per_header:x-api-key:" in k for k in keys)
