"""The response cache (issue 15) in Redis, through the real modules in the test host and a
real Redis: tokenlimit.wasm through the real bridge (whose guard must allow contract/cache.lua),
tokenlimit-higress.wasm through Higress's Redis ABI. Separate hosts stand for separate gateways:
an answer one stored is served by the other, with its TTL kept by Redis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.proxywasm_host import Clock, Host
from support.proxywasm_host.stream import HttpStream
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from test_filter_redis import BRIDGE_CLUSTER, Bridge

QUESTION = json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}]}).encode()
ANSWER = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 20}})


def rule(redis_config: dict[str, Any], **cache: Any) -> dict[str, Any]:
    return {
        "rule_name": "faq",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 1000}],
            }
        ],
        "redis": redis_config,
        "cache": {"ttl_seconds": 60, **cache},
    }


def ask(host: Host, api_key: str = "alice") -> HttpStream:
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "content-length": str(len(QUESTION)),
        "x-api-key": api_key,
    }
    response = {":status": "200", "content-type": "application/json"}
    return host.http_stream().complete(headers, response, [ANSWER.encode()], QUESTION)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def bridge(redis_server: RedisServer) -> Iterator[Bridge]:
    b = Bridge(redis_server.url)
    yield b
    b.stop()


def test_gateways_share_answers_through_the_bridge(
    filter_wasm: Path, bridge: Bridge, redis_server: RedisServer
) -> None:
    config = rule({"service_name": BRIDGE_CLUSTER, "timeout": 500}, ttl_seconds=30)
    hosts = [
        Host(filter_wasm, clock=Clock(), http_call_handler=bridge.handler, seed=seed)
        for seed in (1, 2)
    ]
    for host in hosts:
        assert host.configure(config), host.log_messages()
    first = ask(hosts[0])
    assert first.local_response is None
    assert first.response_header_map.get("x-tokenlimit-cache") == "miss"
    hit = ask(hosts[1]).local_response
    assert hit is not None and hit.status == 200 and hit.body == ANSWER.encode()
    assert hosts[1].metrics["tokenlimit.cache_tokens_saved"] == 25
    assert hosts[1].metrics["tokenlimit.cache_store_errors"] == 0
    # One key, hash-tagged by its digest, with the TTL in Redis.
    client = redis.Redis.from_url(redis_server.url)
    names = client.keys("tokenlimit:cache:*")
    assert len(names) == 1
    name = names[0]
    assert isinstance(name, bytes)
    assert name.startswith(b"tokenlimit:cache:{") and name.endswith(b"}")
    assert 29_000 < client.pttl(name) <= 30_000
    # Another caller's identical question is a miss; once Redis drops the entry, so is ours.
    assert ask(hosts[1], "bob").local_response is None
    client.delete(name)
    assert ask(hosts[0]).local_response is None


def test_the_higress_build_caches_through_its_redis_abi(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    redis.Redis.from_url(redis_server.url).script_flush()  # the first call falls back to EVAL
    config = rule({"service_name": "redis.default.svc.cluster.local", "timeout": 500})
    hosts = [
        Host(higress_wasm, clock=Clock(), redis_handler=redis_wire(redis_server), seed=seed)
        for seed in (1, 2)
    ]
    for host in hosts:
        assert host.configure(config), host.log_messages()
    assert ask(hosts[0]).local_response is None
    hit = ask(hosts[1]).local_response
    assert hit is not None and hit.body == ANSWER.encode()
    queries = [c.query for c in hosts[0].redis_calls]
    assert any(b"$3\r\nget\r\n" in q for q in queries) and any(
        b"$3\r\nset\r\n" in q for q in queries
    )


def test_redis_down_serves_misses_and_never_hangs(
    filter_wasm: Path, bridge: Bridge, redis_server: RedisServer
) -> None:
    host = Host(filter_wasm, clock=Clock(), http_call_handler=bridge.handler, seed=3)
    assert host.configure(rule({"service_name": BRIDGE_CLUSTER, "timeout": 300})), (
        host.log_messages()
    )
    redis_server.kill()
    stream = ask(host)
    assert stream.local_response is None  # failure_mode open: a miss, admitted
    assert stream.response_header_map.get("x-tokenlimit-cache") == "miss"
    assert host.metrics["tokenlimit.cache_store_errors"] >= 1


def test_the_bridge_guard_allows_the_cache_script_by_its_sha() -> None:
    from tokenlimit.bridge.guard import Scripts, contract_scripts

    source = (Path(__file__).resolve().parents[2] / "contract" / "min" / "cache.lua").read_bytes()
    sha = hashlib.sha1(source).hexdigest().encode()
    scripts = Scripts(contract_scripts())
    assert scripts.refusal([b"EVALSHA", sha, b"1", b"k", b"get"]) is None
    assert scripts.refusal([b"EVAL", source, b"1", b"k", b"get"]) is None
    assert scripts.refusal([b"EVAL", source + b" ", b"0"]) is not None


def test_a_hit_waits_for_its_request_budget_in_redis(filter_wasm: Path, bridge: Bridge) -> None:
    config = rule({"service_name": BRIDGE_CLUSTER, "timeout": 500})
    config["rule_items"][0]["limit_keys"][0]["request_per_minute"] = 2
    host = Host(filter_wasm, clock=Clock(), http_call_handler=bridge.handler, seed=4)
    assert host.configure(config), host.log_messages()
    assert ask(host).local_response is None
    hit = ask(host).local_response  # lookup, then admission: both answered by Redis
    assert hit is not None and hit.status == 200 and hit.body == ANSWER.encode()
    refused = ask(host).local_response  # a third request: the request budget is spent
    assert refused is not None and refused.status == 429
