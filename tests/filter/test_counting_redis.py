"""Counting through the Redis store when the network misbehaves (issue 9): a settlement that
stalls and is retried charges once; an admission that lands after its request gave up is
released. The Higress build's proxy_redis_call reaches a real redis-server (support.redis_wire);
a wrapper around it plays the faulty network."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.proxywasm_host import Clock, Host
from support.redis_rules import loaded_redis, per_key_rule, used_tokens
from support.redis_server import RedisServer
from support.redis_wire import redis_wire

Wire = Callable[[bytes], bytes | None]


# The script the filter sends: calendar.lua, then budget.lua (calendar.lua says why).


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with loaded_redis() as server:
        yield server


def config(**extra: object) -> dict[str, object]:
    return per_key_rule("stall", **extra)


def used(server: RedisServer) -> int:
    return used_tokens(server, "stall")


def ask(host: Host, prompt: int, completion: int, body: bytes | None = None) -> None:
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": "k",
    }
    if body is not None:
        headers["content-length"] = str(len(body))
    answer = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    host.http_stream().complete(headers, 200, [answer.encode()], body)


def test_a_settlement_retried_after_a_stall_charges_once(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    wire = redis_wire(redis_server)
    stalls = {"left": 5}

    def stalling(query: bytes) -> bytes | None:
        reply = wire(query)  # Redis runs it ...
        # Settlement calls only (settle, settle_batch): a settlement that rides with an
        # admission (batch_admit) stalls with it, as an admission (the next test).
        if b"settle" in query and b"batch_admit" not in query and stalls["left"] > 0:
            stalls["left"] -= 1
            return None  # ... but the answer never arrives: the filter retries
        return reply

    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=stalling)
    assert host.configure(config())
    for _ in range(5):
        ask(host, 30, 10)
    for _ in range(10):
        clock.advance(1.5)
        host.tick()
        host.run_pending()
    assert stalls["left"] == 0
    assert used(redis_server) == 200  # 5 x 40, not 440


def test_an_admission_that_lands_after_its_request_gave_up_is_released(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    wire = redis_wire(redis_server)
    late: list[bytes] = []

    def slow_admissions(query: bytes) -> bytes | None:
        if b"admit" in query and not late:
            late.append(query)  # stuck in the network; the filter times out
            return None
        return wire(query)

    clock = Clock()
    host = Host(higress_wasm, clock=clock, redis_handler=slow_admissions)
    assert host.configure(config(admission="reserve", default_output_tokens=1000))
    body = json.dumps({"model": "m", "messages": [{"content": "x" * 80}]}).encode()
    ask(host, 30, 10, body)  # failure_mode open: admitted, uncounted in Redis
    for _ in range(3):
        clock.advance(1.5)
        host.tick()
        host.run_pending()
    wire(late[0])  # the admission finally runs on Redis
    assert used(redis_server) == 0  # ... and reserves nothing: its request gave up on it

    # An admission that ran but whose answer was lost is given back too.
    def lost_answers(query: bytes) -> bytes | None:
        reply = wire(query)
        return None if b"admit" in query else reply

    other = Host(higress_wasm, clock=clock, redis_handler=lost_answers, seed=2)
    assert other.configure(config(admission="reserve", default_output_tokens=1000))
    ask(other, 30, 10, body)
    for _ in range(3):
        clock.advance(1.5)
        other.tick()
        other.run_pending()
    assert used(redis_server) == 0


# ---- 7. reply sizes are bounded ----------------------------------------------------------------

HUGE = 16 * 1024 * 1024


def test_an_oversized_bridge_or_redis_reply_is_not_read_whole(
    filter_wasm: Path, higress_wasm: Path
) -> None:
    """A reply past the largest one the script returns is a bad reply, read only up to that
    bound: a hostile or broken peer cannot make the filter copy megabytes into its memory."""
    huge = b"-ERR " + b"x" * HUGE + b"\r\n"
    for wasm in (filter_wasm, higress_wasm):
        host = Host(wasm, clock=Clock())
        assert host.configure(config(redis={"service_name": "tokenlimit-bridge", "timeout": 500}))
        before = host.memory_bytes_used()
        stream = host.http_stream()
        headers = {":method": "GET", ":path": "/", ":authority": "x", "x-api-key": "k"}
        stream.request_headers(headers, end_of_stream=True)
        if wasm == filter_wasm:
            (call_id,) = host.pending_http_calls()
            host.respond_http_call(call_id, 200, huge)
        else:
            (call_id,) = host.pending_redis_calls()
            host.respond_redis_call(call_id, huge)
        assert stream.local_response is None  # failure_mode open: admitted
        assert not stream.request_paused
        assert host.memory_bytes_used() - before < 1024 * 1024, wasm.name
        assert host.trap is None
