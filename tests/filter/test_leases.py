"""Leases for hot keys (issue 17, docs/redis.md "Leases"), through the real module and a real
redis-server: a worker takes a slice of a key's budget in one `lease` call and admits against
it locally, so a hot key costs a small fraction of a Redis call per request; the slices never
sum past the limit, charges are neither lost nor doubled, and a lease whose answer is lost is
given back once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.proxywasm_host import Clock, Host, HttpStream
from support.redis_rules import loaded_redis, used_tokens
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

LIMIT = 100_000
COST = 40  # each request's tokens (30 prompt + 10 completion)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with loaded_redis() as server:
        yield server


def config(limit: int = LIMIT, fraction: float = 0.05, **extra: object) -> dict[str, object]:
    return {
        "rule_name": "hot",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_day": limit}],
            }
        ],
        "redis": {"service_name": "redis.dns", "timeout": 500},
        "lease": {"fraction": fraction},
        **extra,
    }


def used(server: RedisServer) -> int:
    return used_tokens(server, "hot")


def ask(host: Host, key: str = "k") -> HttpStream:
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": key,
    }
    answer = json.dumps({"usage": {"prompt_tokens": 30, "completion_tokens": 10}})
    return host.http_stream().complete(headers, 200, [answer.encode()])


def script_calls(host: Host, operation: str) -> int:
    name = f"${len(operation)}\r\n{operation}\r\n".encode()
    return sum(1 for call in host.redis_calls if name in call.query)


def tick(host: Host, clock: Clock, seconds: float = 0.05) -> None:
    clock.advance(seconds)
    host.tick()
    host.run_pending()


def new_host(
    wasm: Path,
    handler: Callable[[bytes], bytes | None],
    clock: Clock,
    seed: int = 0,
    **extra: object,
) -> Host:
    # Each gateway its own seed: its own worker nonce, so request ids (and markers) differ.
    host = Host(wasm, clock=clock, redis_handler=handler, seed=seed)
    assert host.configure(config(**extra)), host.log_messages()
    return host


def test_a_hot_key_costs_under_a_tenth_of_a_redis_call_per_request(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = new_host(higress_wasm, redis_wire(redis_server), clock)
    requests = 1000
    for _ in range(requests):
        assert ask(host).local_response is None
    tick(host, clock)
    slice_tokens = LIMIT // 20
    # One lease per slice (5,000 tokens: 125 requests), nothing else.
    assert script_calls(host, "lease") == -(-requests * COST // slice_tokens)
    assert len(host.redis_calls) / requests <= 0.1
    # Redis counts what the worker took; the worker holds the rest of its last slice unspent.
    held = used(redis_server) - requests * COST
    assert 0 <= held < slice_tokens


def test_the_slices_never_sum_past_the_limit_across_gateways(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    limit = 10_000
    clock = Clock()
    gateways = [
        new_host(higress_wasm, redis_wire(redis_server), clock, seed, limit=limit, fraction=0.1)
        for seed in range(3)
    ]
    admitted = 0
    for _ in range(200):
        for host in gateways:
            if ask(host).local_response is None:
                admitted += 1
    for host in gateways:
        tick(host, clock)
    # Postpaid: a request is admitted while its worker's slice has anything left, as without
    # leases while Redis's count is under the limit; at most one request a worker runs over.
    assert limit <= admitted * COST <= limit + len(gateways) * COST
    assert admitted * COST <= limit * 1.05
    # Every charge reached Redis or came out of a slice Redis had counted: none lost.
    assert used(redis_server) >= admitted * COST
    refused = ask(gateways[0]).local_response
    assert refused is not None and refused.status == 429


def test_reserve_refunds_return_to_the_slice_and_the_remainder_goes_back_on_renewal(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = new_host(
        higress_wasm, redis_wire(redis_server), clock, admission="reserve", fraction=0.5
    )
    for _ in range(200):
        assert ask(host).local_response is None
    tick(host, clock)
    # Each request reserved far more than its 40 tokens; the difference went back to the
    # slice, so 200 requests fit in one or two slices, and Redis holds them plus what is
    # unspent of the last slice (at most one slice).
    assert script_calls(host, "lease") <= 2
    assert 200 * COST <= used(redis_server) <= 200 * COST + LIMIT // 2


def test_a_lease_whose_answer_is_lost_is_given_back_once(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    wire = redis_wire(redis_server)
    lost: list[bytes] = []

    def losing_the_first_lease(query: bytes) -> bytes | None:
        reply = wire(query)  # Redis grants the slice ...
        if b"$5\r\nlease\r\n" in query and not lost:
            lost.append(query)
            return None  # ... and the answer never arrives
        return reply

    clock = Clock()
    host = new_host(higress_wasm, losing_the_first_lease, clock)
    ask(host)  # failure_mode open: admitted uncounted
    assert len(lost) == 1
    for _ in range(3):
        tick(host, clock, 1.5)
    assert script_calls(host, "lease_return") == 1
    assert used(redis_server) == 0  # the slice granted went back, once
    assert ask(host).local_response is None  # and the next request leases again
    tick(host, clock)
    assert used(redis_server) == LIMIT // 20


def test_without_a_lease_block_nothing_changes(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server))
    document = config()
    del document["lease"]
    assert host.configure(document)
    for _ in range(5):
        ask(host)
    assert script_calls(host, "lease") == 0
