"""The Redis store's Lua script against the shared budget vectors (contract/budget.json),
on a real redis-server. budget.zig passes the same vectors in `zig build test`, so the local and
the Redis store count alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "contract" / "budget.lua").read_text()
VECTORS = json.loads((ROOT / "contract" / "budget.json").read_text())
ALGORITHMS = {"fixed": 0, "sliding": 1, "token_bucket": 2}


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        yield redis.Redis.from_url(server.url)


def run_admit(client: redis.Redis, keys: list[str], now_ms: int, force: bool, counters) -> list:
    args: list[int | str] = ["admit", now_ms, int(force)]
    for algorithm, window_ms, limit, amount in counters:
        args += [algorithm, window_ms, limit, amount]
    return client.eval(SCRIPT, len(keys), *keys, *args)


def run_settle(client, keys, now_ms, counters, admitted_at_ms) -> int:
    args: list[int | str] = ["settle", now_ms]
    for algorithm, window_ms, limit, reserved, actual in counters:
        args += [algorithm, window_ms, limit, reserved, actual]
    args.append(admitted_at_ms)
    return client.eval(SCRIPT, len(keys), *keys, *args)


@pytest.mark.parametrize("scenario", VECTORS, ids=[v["name"] for v in VECTORS])
def test_lua_scripts_follow_the_shared_vectors(client: redis.Redis, scenario: dict) -> None:
    key = "tokenlimit:{vectors}:global:tokens:0:" + scenario["name"]
    client.delete(key)
    algorithm = ALGORITHMS[scenario["algorithm"]]
    window_ms, limit = scenario["window_ms"], scenario["limit"]
    for index, step in enumerate(scenario["steps"]):
        if step["op"] == "settle":
            counter = (algorithm, window_ms, limit, step["reserved"], step["actual"])
            run_settle(client, [key], step["at_ms"], [counter], step["admitted_at_ms"])
            continue
        counter = (algorithm, window_ms, limit, step["amount"])
        reply = run_admit(client, [key], step["at_ms"], step.get("force", False), [counter])
        refused, now_ms, used, reported_limit, reset_ms = reply
        assert now_ms == step["at_ms"]
        assert reported_limit == limit
        got = {"refused": refused != 0, "used": used, "reset_ms": reset_ms}
        assert got == step["expect"], f"step {index}"


def test_admission_is_all_or_nothing_across_counters(client: redis.Redis) -> None:
    keys = ["tokenlimit:{multi}:a", "tokenlimit:{multi}:b"]
    client.delete(*keys)
    now = 1_699_999_980_000 + 1000
    run_admit(client, keys[1:], now, False, [(0, 60_000, 40, 20)])  # b: 20 of 40 used
    roomy, tight = (0, 60_000, 1000, 50), (0, 60_000, 40, 30)
    reply = run_admit(client, keys, now, False, [roomy, tight])
    assert reply[0] == 2  # the second counter refused ...
    assert client.hget(keys[0], "u") is None  # ... and the first was not charged either
    reply = run_admit(client, keys, now, True, [roomy, tight])  # shadow: charged anyway
    assert reply[0] == 2
    assert int(client.hget(keys[0], "u")) == 50 and int(client.hget(keys[1], "u")) == 50


def test_server_time_is_used_when_no_clock_is_given(client: redis.Redis) -> None:
    key = "tokenlimit:{clock}:g"
    client.delete(key)
    server_ms = int(client.time()[0]) * 1000
    reply = run_admit(client, [key], 0, False, [(0, 60_000, 10, 1)])
    assert abs(reply[1] - server_ms) < 5000
    assert 0 < client.pttl(key) <= 60_000  # records expire with their window


def test_an_unknown_operation_is_an_error_reply(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="unknown operation"):
        client.eval(SCRIPT, 0, "refund", 0)
