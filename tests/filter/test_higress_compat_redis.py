"""`compat: higress` / `compat: higress-1.0`: a rolling upgrade shares one budget (issue 11).

The real tokenlimit-higress.wasm in the test host, its proxy_redis_call wired to a real
redis-server. After a request sequence, Redis holds exactly the keys and values Higress's own
scripts would have left, and counters an old Higress plugin left are honoured.

Expectations are derived from Higress's source, plugins/wasm-go/extensions/ai-token-ratelimit/
main.go of 2.0.1 (higress-group/higress, commit 8e4041c: AiTokenGlobalRateLimitFormat,
AiTokenRateLimitFormat, MultiKeyRequestPhaseScript, MultiKeyResponsePhaseScript) and 1.0.x
(alibaba/higress, commit 4e0d691: the same formats without the `{}` hash tag,
RequestPhaseFixedWindowScript, ResponsePhaseFixedWindowScript):
- key `higress-token-ratelimit:{<rule_name>}:global_threshold:<window s>` and
  `higress-token-ratelimit:{<rule_name>}:<limit_by_*>:<window s>:<limit_by value as written>:
  <request value>`; the value is a plain integer string (INCRBY);
- request phase: refuse when `current > threshold` (read-only GET/TTL);
- response phase: while `current <= threshold`, INCRBY input + output tokens; EXPIRE window on
  the first charge (the window opens then).
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

REDIS = {"service_name": "redis.default.svc.cluster.local", "service_port": 6379, "timeout": 500}
# Higress 2.0.1's hybrid: one route-wide budget and a budget per API key, both apply.
RULE: dict[str, Any] = {
    "rule_name": "shared",
    "global_threshold": {"token_per_minute": 80},
    "rule_items": [
        {"limit_by_per_header": "X-Api-Key", "limit_keys": [{"key": "*", "token_per_hour": 1000}]}
    ],
    "redis": REDIS,
}
# The key formats of main.go, per compat value.
TAG = {"higress": "{shared}", "higress-1.0": "shared"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


def gateway(wasm: Path, server: RedisServer, config: dict[str, Any], seed: int = 1) -> Host:
    host = Host(wasm, clock=Clock(), redis_handler=redis_wire(server), seed=seed)
    assert host.configure(config), host.log_messages()
    return host


def ask(host: Host, api_key: str, prompt: int = 10, completion: int = 30):  # type: ignore[no-untyped-def]
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": api_key,
    }
    body = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    return host.http_stream().complete(
        headers, {":status": "200", "content-type": "application/json"}, [body.encode()]
    )


def status(stream) -> int:  # type: ignore[no-untyped-def]
    return 200 if stream.local_response is None else int(stream.local_response.status)


def everything(client: redis.Redis) -> dict[str, str]:
    return {key: client.get(key) for key in client.keys("*")}  # type: ignore[misc]


@pytest.mark.parametrize("compat", ["higress", "higress-1.0"])
def test_redis_holds_what_higress_scripts_would_leave(
    higress_wasm: Path, redis_server: RedisServer, client: redis.Redis, compat: str
) -> None:
    host = gateway(higress_wasm, redis_server, {**RULE, "compat": compat})
    # 40 tokens each (10 prompt + 30 completion). Global threshold 80: Higress refuses only
    # once the count is MORE than 80, so the third request (count exactly 80) still passes
    # and is charged (80 <= 80), the fourth (120 > 80) is refused and charges nothing.
    statuses = [status(ask(host, key)) for key in ("sk-a", "sk-b", "sk-c", "sk-d")]
    assert statuses == [200, 200, 200, 429]
    tag = TAG[compat]
    assert everything(client) == {
        f"higress-token-ratelimit:{tag}:global_threshold:60": "120",
        f"higress-token-ratelimit:{tag}:limit_by_per_header:3600:X-Api-Key:sk-a": "40",
        f"higress-token-ratelimit:{tag}:limit_by_per_header:3600:X-Api-Key:sk-b": "40",
        f"higress-token-ratelimit:{tag}:limit_by_per_header:3600:X-Api-Key:sk-c": "40",
    }
    # EXPIRE <window> at the first charge: the window opened then, not on the clock.
    assert 55 <= client.ttl(f"higress-token-ratelimit:{tag}:global_threshold:60") <= 60
    per_key = f"higress-token-ratelimit:{tag}:limit_by_per_header:3600:X-Api-Key:sk-a"
    assert 3595 <= client.ttl(per_key) <= 3600
    # The refusal is Higress's: its status, body, reset header (the refusing key's TTL).
    refusal = ask(host, "sk-e").local_response
    assert refusal is not None and refusal.details == "ai-token-ratelimit.rejected"
    assert 55 <= int(dict(refusal.headers)["x-tokenratelimit-reset"]) <= 60


def test_counters_an_old_higress_plugin_left_are_one_budget_with_tokenlimit(
    higress_wasm: Path, redis_server: RedisServer, client: redis.Redis
) -> None:
    # What Higress 2.0.1 leaves after charging (INCRBY, then EXPIRE on the first charge).
    old = "higress-token-ratelimit:{shared}:limit_by_per_header:3600:X-Api-Key:"
    client.set(old + "spent", 1001, ex=3000)  # over its 1000: Higress refuses it
    client.set(old + "at-limit", 1000, ex=2000)  # exactly at it: Higress still admits it
    client.set("higress-token-ratelimit:{shared}:global_threshold:60", 10, ex=50)
    host = gateway(higress_wasm, redis_server, {**RULE, "compat": "higress"})

    refused = ask(host, "spent").local_response
    assert refused is not None and refused.status == 429
    # Higress's reset header is the refusing key's TTL: the window the old plugin opened.
    assert 2995 <= int(dict(refused.headers)["x-tokenratelimit-reset"]) <= 3000
    assert client.get(old + "spent") == "1001"  # a refused request charges nothing

    assert status(ask(host, "at-limit")) == 200
    # Charged into the old plugin's counters and windows: no new window was opened.
    assert client.get(old + "at-limit") == "1040"
    assert 1995 <= client.ttl(old + "at-limit") <= 2000
    assert client.get("higress-token-ratelimit:{shared}:global_threshold:60") == "50"
    assert 45 <= client.ttl("higress-token-ratelimit:{shared}:global_threshold:60") <= 50
    # And now the old plugin would refuse this caller too (1040 > 1000): one budget.
    assert status(ask(host, "at-limit")) == 429
    assert not client.keys("tokenlimit:*")  # nothing kept on tokenlimit's own keys


def test_a_response_without_tokens_opens_no_window(
    higress_wasm: Path, redis_server: RedisServer, client: redis.Redis
) -> None:
    # Higress charges only when usage was reported with input + output > 0; INCRBY 0 on an
    # absent key would create it and open a window Higress never opens.
    host = gateway(higress_wasm, redis_server, {**RULE, "compat": "higress"})
    assert status(ask(host, "none", 0, 0)) == 200
    assert everything(client) == {}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"compat": "higress", "redis": None}, "needs redis"),
        ({"compat": "higress", "algorithm": "sliding"}, "needs algorithm fixed"),
        ({"compat": "higress", "admission": "reserve"}, "needs admission postpaid"),
        ({"compat": "higress", "weights": {"output": 2}}, "weights"),
        ({"compat": "Higress"}, 'must be one of "", "higress", "higress-1.0"'),
    ],
)
def test_what_higress_keys_cannot_hold_is_refused_with_the_reason(
    higress_wasm: Path, extra: dict[str, Any], reason: str
) -> None:
    config = {k: v for k, v in {**RULE, **extra}.items() if v is not None}
    host = Host(higress_wasm, clock=Clock())
    assert not host.configure(config)
    assert any("compat" in m and reason in m for m in host.log_messages()), host.log_messages()


def test_request_limits_are_refused_under_compat(higress_wasm: Path) -> None:
    config = {
        **RULE,
        "compat": "higress",
        "global_threshold": {"token_per_minute": 80, "request_per_minute": 5},
    }
    host = Host(higress_wasm, clock=Clock())
    assert not host.configure(config)
    assert any("request_per_*" in m for m in host.log_messages()), host.log_messages()


def test_the_envoy_build_shares_the_budget_through_the_bridge(
    filter_wasm: Path, redis_server: RedisServer, client: redis.Redis
) -> None:
    # The bridge runs only tokenlimit's own scripts (bridge/guard.py): every contract/*.lua,
    # higress_compat.lua included, so the stock-Envoy build can keep Higress's budgets too.
    from test_filter_redis import BRIDGE_CLUSTER, Bridge

    bridge = Bridge(redis_server.url)
    try:
        host = Host(filter_wasm, clock=Clock(), http_call_handler=bridge.handler, seed=3)
        config = {**RULE, "compat": "higress", "redis": {"service_name": BRIDGE_CLUSTER}}
        assert host.configure(config), host.log_messages()
        assert [status(ask(host, key)) for key in ("sk-a", "sk-b", "sk-c", "sk-d")] == [
            200,
            200,
            200,
            429,
        ]
    finally:
        bridge.stop()
    assert everything(client) == {
        "higress-token-ratelimit:{shared}:global_threshold:60": "120",
        "higress-token-ratelimit:{shared}:limit_by_per_header:3600:X-Api-Key:sk-a": "40",
        "higress-token-ratelimit:{shared}:limit_by_per_header:3600:X-Api-Key:sk-b": "40",
        "higress-token-ratelimit:{shared}:limit_by_per_header:3600:X-Api-Key:sk-c": "40",
    }
