"""The Redis store off the request's critical path (issue 17), through the real modules and a
real redis-server:

- settlements are queued per worker and reach Redis in one `settle_batch` call per rule on the
  root tick (the first one after a quiet period goes at once), so a busy worker makes about one
  script call per admitted request; a batch retried after a lost reply charges once;
- a counter known to be exhausted refuses without any Redis call until its reset, with the 429
  and headers Redis' own refusal gives; shadow mode always asks Redis.

The Higress build's proxy_redis_call goes straight to Redis (support.redis_wire); the stock
build goes through the real bridge (test_filter_redis.Bridge)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.proxywasm_host import Clock, Host, HttpStream
from support.redis_rules import avoid_minute_end, loaded_redis, per_key_rule, used_tokens
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from test_filter_redis import BRIDGE_CLUSTER, Bridge


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with loaded_redis() as server:
        yield server


def config(**extra: object) -> dict[str, object]:
    return per_key_rule("fast", **extra)


def used(server: RedisServer) -> int:
    return used_tokens(server, "fast")


def ask(host: Host, key: str = "k", prompt: int = 30, completion: int = 10) -> HttpStream:
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": key,
    }
    answer = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    return host.http_stream().complete(headers, 200, [answer.encode()])


def script_calls(host: Host, operation: str) -> int:
    """Calls of one budget.lua operation (admit, batch_admit, settle, settle_batch...)."""
    name = f"${len(operation)}\r\n{operation}\r\n".encode()
    return sum(1 for call in host.redis_calls if name in call.query)


def admissions(host: Host) -> int:
    return script_calls(host, "admit") + script_calls(host, "batch_admit")


def tick(host: Host, clock: Clock, seconds: float = 0.05) -> None:
    clock.advance(seconds)
    host.tick()
    host.run_pending()


def test_a_busy_worker_makes_one_script_call_per_request_and_batches_its_settlements(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    assert host.configure(config())
    assert host.tick_period_ms == 50  # the settle delay's bound (store/batch.zig)
    for _ in range(40):  # 40 requests within one tick period
        assert ask(host).local_response is None
    # The first settlement went at once (the rule was quiet); each later one rode with the
    # next admission (batch_admit), which saw it; the last one waits for the tick.
    assert used(redis_server) == 39 * 40
    assert script_calls(host, "admit") == 2 and script_calls(host, "batch_admit") == 38
    assert script_calls(host, "settle_batch") == 1
    tick(host, clock)
    assert used(redis_server) == 40 * 40  # every charge landed, once
    assert script_calls(host, "settle_batch") == 2
    assert len(host.redis_calls) == 42  # 1.05 script calls per request
    assert host.metrics["tokenlimit.redis_settles_batched"] == 40
    assert host.metrics["tokenlimit.redis_settle_batches"] == 2
    tick(host, clock)  # nothing queued: the tick sends nothing
    assert len(host.redis_calls) == 42


def test_two_rules_batch_apart_so_every_call_stays_on_one_cluster_slot(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    route_rules = [{"_match_route_": [route], **per_key_rule(route)} for route in ("alpha", "beta")]
    assert host.configure({"_rules_": route_rules}), host.log_messages()
    for route in ("alpha", "beta", "alpha", "beta", "alpha"):
        host.properties["route_name"] = route.encode()
        assert ask(host).local_response is None
    tick(host, clock)
    # Per rule: the first settlement at once, then one riding with an admission (alpha), then
    # what is left on the tick.
    batches = [call.query for call in host.redis_calls if b"batch" in call.query]
    assert len(batches) == 5
    for query in [call.query for call in host.redis_calls]:
        tags = {tag for tag in (b"{alpha}", b"{beta}") if tag in query}
        assert len(tags) == 1, query  # never two hash tags in one call
    client = redis.Redis.from_url(redis_server.url)
    for route, requests in (("alpha", 3), ("beta", 2)):
        (key,) = client.keys(f"tokenlimit:{{{route}}}:per_header:*")
        assert client.hget(key, "u") == str(40 * requests).encode()


def test_a_batch_whose_reply_is_lost_is_retried_and_charges_once(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    wire = redis_wire(redis_server)
    lost: list[bytes] = []

    def losing_batch_replies(query: bytes) -> bytes | None:
        reply = wire(query)  # Redis runs it ...
        if b"settle_batch" in query and len(lost) < 2:
            lost.append(query)
            return None  # ... the answer never arrives: the filter keeps it for retry
        return reply

    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=losing_batch_replies)
    assert host.configure(config())
    for _ in range(10):
        ask(host)
    for _ in range(10):
        tick(host, clock, 1.5)
    assert len(lost) == 2
    assert host.metrics["tokenlimit.redis_settle_retries_queued"] == 2
    assert used(redis_server) == 10 * 40  # not counted again by the retries


def exhausted_config(**extra: object) -> dict[str, object]:
    item = {
        "limit_by_per_header": "x-api-key",
        "limit_keys": [{"key": "*", "token_per_minute": 100}],
    }
    return config(rule_items=[item], **extra)


def test_an_exhausted_key_is_refused_without_calling_redis_until_its_reset(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    avoid_minute_end(redis_server)  # the refusal is trusted until the window's end
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    assert host.configure(exhausted_config())
    assert ask(host, prompt=100, completion=20).local_response is None  # 120 of 100 spent
    tick(host, clock)
    from_redis = ask(host).local_response  # Redis refuses, and says until when
    assert from_redis is not None and from_redis.status == 429
    calls = len(host.redis_calls)
    clock.advance(1)
    from_cache = [ask(host).local_response for _ in range(20)]
    assert len(host.redis_calls) == calls  # 0 calls for a key known to be over budget
    assert host.metrics["tokenlimit.redis_refused_locally"] == 20
    first = from_cache[0]
    assert first is not None
    assert (first.status, first.body) == (from_redis.status, from_redis.body)
    redis_headers, cache_headers = dict(from_redis.headers), dict(first.headers)
    assert cache_headers.keys() == redis_headers.keys()
    for name in ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"):
        assert cache_headers[name] == redis_headers[name]
    # The reset counts down on the worker's clock (1 s later: 1 s less).
    assert int(cache_headers["retry-after"]) in (
        int(redis_headers["retry-after"]) - 1,
        int(redis_headers["retry-after"]),
    )
    assert ask(host, key="other").local_response is None  # other keys still ask Redis
    # Past the reset the key is asked again (Redis has a new window by then too).
    clock.advance(61)
    before = len(host.redis_calls)
    ask(host)
    assert len(host.redis_calls) == before + 1


def test_shadow_mode_always_asks_redis(higress_wasm: Path, redis_server: RedisServer) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    assert host.configure(exhausted_config(shadow=True))
    ask(host, prompt=100, completion=20)
    tick(host, clock)
    for _ in range(3):
        assert ask(host).local_response is None  # shadow: would refuse, lets through
    tick(host, clock)
    assert admissions(host) == 4  # each one counted in Redis
    assert used(redis_server) == 120 + 3 * 40
    assert host.metrics.get("tokenlimit.redis_refused_locally", 0) == 0


def test_the_stock_build_batches_through_the_bridge(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    avoid_minute_end(redis_server)
    bridge = Bridge(redis_server.url)
    try:
        clock = Clock()
        host = Host(filter_wasm, clock=clock, http_call_handler=bridge.handler)
        redis_block = {"service_name": BRIDGE_CLUSTER, "timeout": 500}
        assert host.configure(exhausted_config(redis=redis_block))
        for _ in range(2):
            assert ask(host, prompt=30, completion=20).local_response is None
        tick(host, clock)
        assert used(redis_server) == 100
        bodies = [call.body for call in host.http_calls]
        assert sum(b"settle_batch" in body for body in bodies) == 2
        assert ask(host).local_response is not None  # refused by Redis ...
        calls = len(host.http_calls)
        assert ask(host).local_response is not None  # ... then by the worker's cache
        assert len(host.http_calls) == calls
    finally:
        bridge.stop()


@pytest.mark.parametrize("ran_on_redis", [True, False], ids=["reply-lost", "call-lost"])
def test_settlements_riding_with_a_lost_admission_are_retried_and_charge_once(
    higress_wasm: Path, redis_server: RedisServer, ran_on_redis: bool
) -> None:
    wire = redis_wire(redis_server)
    lost: list[bytes] = []

    def losing_a_carrying_admission(query: bytes) -> bytes | None:
        if b"batch_admit" in query and not lost:
            lost.append(query)
            if ran_on_redis:
                wire(query)  # Redis applies the settlement and the admission; the answer is lost
            return None  # failure_mode open: the request goes on uncounted
        return wire(query)

    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=losing_a_carrying_admission)
    assert host.configure(config())
    for _ in range(3):  # the second's settlement rides with the third's admission
        assert ask(host).local_response is None
    assert len(lost) == 1
    for _ in range(5):
        tick(host, clock, 1.5)
    # The first two charges, each once: the lost call's settlement is retried (applied then,
    # or stopped by its marker if it ran). The third request went on uncounted (failure_mode
    # open, as for any admission whose answer is lost) and its admission was released.
    assert used(redis_server) == 2 * 40
    assert host.metrics["tokenlimit.redis_settle_retries_queued"] >= 2
