"""The Redis store's Lua script against the shared budget vectors (contract/budget.json),
on a real redis-server. budget.zig passes the same vectors in `zig build test`, so the local and
the Redis store count alike.

A `peek` step is the script's read-only operation (what `tokenlimit usage` runs): budget.zig
checks it as an admit of nothing, which must report the same numbers; here it must also leave
the record and its expiry exactly as they were."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
# As the filter sends it: calendar.lua first (budget.lua calls its calendar_bounds), minified
# (contract/min/, tokenlimit.contract_min).
SCRIPT = (ROOT / "contract" / "min" / "calendar.lua").read_text() + (
    ROOT / "contract" / "min" / "budget.lua"
).read_text()
VECTORS = json.loads((ROOT / "contract" / "budget.json").read_text())
ALGORITHMS = {"fixed": 0, "sliding": 1, "token_bucket": 2}
# Calendar windows reach the script as codes, and the zone table as the call's last argument.
CALENDAR_CODES = {"hour": -1, "day": -2, "week": -3, "month": -4}
UTC_TABLE = [[946_684_800_000, 0]]


def window_argument(scenario: dict[str, Any]) -> tuple[int, list[str]]:
    """The window argument of a scenario's counter, and the zone argument that ends a call."""
    window = scenario.get("window")
    table = scenario.get("calendar")
    if window in ("week", "month") or (table is not None and window in CALENDAR_CODES):
        zone = ",".join(f"{from_ms}:{offset_s}" for from_ms, offset_s in table or UTC_TABLE)
        return CALENDAR_CODES[window], [zone]
    return scenario["window_ms"], []


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        yield redis.Redis.from_url(server.url)


Counter = tuple[int, ...]


def run(client: redis.Redis, keys: list[str], args: Sequence[int | str]) -> Any:
    return client.eval(SCRIPT, len(keys), *keys, *args)


def run_admit(
    client: redis.Redis,
    keys: list[str],
    now_ms: int,
    force: bool,
    counters: list[Counter],
    zone: Sequence[str] = (),
) -> list[int]:
    args: list[int | str] = ["admit", now_ms, int(force)]
    for algorithm, window_ms, limit, amount in counters:
        args += [algorithm, window_ms, limit, amount]
    reply: list[int] = run(client, keys, [*args, *zone])
    return reply


def run_settle(
    client: redis.Redis,
    keys: list[str],
    now_ms: int,
    counters: list[Counter],
    admitted_at_ms: int,
    zone: Sequence[str] = (),
) -> int:
    args: list[int | str] = ["settle", now_ms]
    for algorithm, window_ms, limit, reserved, actual in counters:
        args += [algorithm, window_ms, limit, reserved, actual]
    args.append(admitted_at_ms)
    changed: int = run(client, keys, [*args, *zone])
    return changed


def batch_entries(
    key: str,
    name: str,
    step: dict[str, Any],
    counter_of: Callable[[int, int], Counter],
    zone: Sequence[str],
) -> tuple[list[str], list[int | str]]:
    """The keys and arguments of a step's settlements as settle_batch and batch_admit take
    them: the count, then per settlement its op, counter count, admission time, zone and
    counter; each with its own marker under the counter's hash tag."""
    keys: list[str] = []
    args: list[int | str] = [len(step["settlements"])]
    for j, entry in enumerate(step["settlements"]):
        keys += [key, f"tokenlimit:{{vectors}}:req:{name}:{j}"]
        args += ["settle", 1, entry["admitted_at_ms"], zone[0] if zone else ""]
        args += counter_of(entry["reserved"], entry["actual"])
    return keys, args


def run_settle_batch(
    client: redis.Redis,
    key: str,
    name: str,
    step: dict[str, Any],
    counter_of: Callable[[int, int], Counter],
    zone: Sequence[str],
) -> None:
    """A `settle_batch` step: every settlement of the step in one call, applied in order as
    one `settle` each would be."""
    keys, args = batch_entries(key, name, step, counter_of, zone)
    assert len(run(client, keys, ["settle_batch", step["at_ms"], *args])) == len(
        step["settlements"]
    )


def run_peek(
    client: redis.Redis,
    keys: list[str],
    now_ms: int,
    counters: list[Counter],
    zone: Sequence[str] = (),
) -> list[int]:
    args: list[int | str] = ["peek", now_ms]
    for algorithm, window_ms, limit in counters:
        args += [algorithm, window_ms, limit]
    reply: list[int] = run(client, keys, [*args, *zone])
    return reply


def assert_untouched(client: redis.Redis, key: str, before: tuple[object, int]) -> None:
    """A read-only operation leaves the record as it was and never extends its expiry (a write
    would set the whole TTL again)."""
    record, ttl_ms = snapshot(client, key)
    assert record == before[0]
    assert ttl_ms <= before[1]


def snapshot(client: redis.Redis, key: str) -> tuple[object, int]:
    """A record as stored, with its remaining time to live."""
    ttl_ms: int = client.pttl(key)
    return client.hgetall(key), ttl_ms


@pytest.mark.parametrize("scenario", VECTORS, ids=[v["name"] for v in VECTORS])
def test_lua_scripts_follow_the_shared_vectors(
    client: redis.Redis, scenario: dict[str, Any]
) -> None:
    key = "tokenlimit:{vectors}:global:tokens:0:" + scenario["name"]
    client.delete(key)
    algorithm = ALGORITHMS[scenario["algorithm"]]
    (window_ms, zone), limit = window_argument(scenario), scenario["limit"]

    def counter_of(reserved: int, actual: int) -> Counter:
        return (algorithm, window_ms, limit, reserved, actual)

    for index, step in enumerate(scenario["steps"]):
        if step["op"] == "settle":
            counter = (algorithm, window_ms, limit, step["reserved"], step["actual"])
            run_settle(client, [key], step["at_ms"], [counter], step["admitted_at_ms"], zone)
            continue
        if step["op"] == "settle_batch":
            run_settle_batch(client, key, f"{scenario['name']}:{index}", step, counter_of, zone)
            continue
        if step["op"] == "peek":
            before = snapshot(client, key)
            now_ms, used, remaining, reset_ms = run_peek(
                client, [key], step["at_ms"], [(algorithm, window_ms, limit)], zone
            )
            assert_untouched(client, key, before)
            assert now_ms == step["at_ms"] and remaining == max(limit - used, 0)
            got = {"refused": remaining == 0, "used": used, "reset_ms": reset_ms}
            assert got == step["expect"], f"step {index}"
            continue
        if step["op"] == "lease":  # leases for hot keys (issue 17): test_leases_script.py
            run_lease_step(client, key, f"{scenario['name']}:{index}", step, algorithm, limit)
            continue
        asked = (algorithm, window_ms, limit, step["amount"])
        if step["op"] == "batch_admit" or step.get("settlements"):  # admit_many too
            batch = batch_entries(key, f"{scenario['name']}:{index}", step, counter_of, zone)
            keys, args = batch[0] + [key], ["batch_admit", step["at_ms"], *batch[1]]
            args += [int(step.get("force", False)), *asked, *zone]
            reply = run(client, keys, args)
        else:
            reply = run_admit(client, [key], step["at_ms"], step.get("force", False), [asked], zone)
        refused, now_ms, used, reported_limit, reset_ms = reply
        assert now_ms == step["at_ms"]
        assert reported_limit == limit
        got = {"refused": refused != 0, "used": used, "reset_ms": reset_ms}
        assert got == step["expect"], f"step {index}"


def run_lease_step(
    client: redis.Redis, key: str, name: str, step: dict[str, Any], algorithm: int, limit: int
) -> None:
    """A `lease` step: carries applied, then a slice granted (or all refused)."""
    marker = f"tokenlimit:{{vectors}}:req:{name}"
    client.delete(marker)
    args = ["lease", step["at_ms"], algorithm, 60_000, limit, step["want"], step["amount"]]
    reply = run(client, [key, marker], [*args, step["carry"], step["carry_end_ms"]])
    refused, now_ms, used, reported_limit, reset_ms, granted = reply
    assert now_ms == step["at_ms"] and reported_limit == limit
    got = {"refused": refused != 0, "used": used, "reset_ms": reset_ms, "granted": granted}
    assert got == step["expect"], name


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
    assert client.hmget(keys[0], "u") == [b"50"] and client.hmget(keys[1], "u") == [b"50"]


def test_server_time_is_used_when_no_clock_is_given(client: redis.Redis) -> None:
    key = "tokenlimit:{clock}:g"
    client.delete(key)
    server_ms = int(client.time()[0]) * 1000
    reply = run_admit(client, [key], 0, False, [(0, 60_000, 10, 1)])
    assert abs(reply[1] - server_ms) < 5000
    assert 0 < client.pttl(key) <= 60_000  # records expire with their window


def test_peek_reads_several_counters_on_server_time_and_creates_nothing(
    client: redis.Redis,
) -> None:
    keys = ["tokenlimit:{peek}:a", "tokenlimit:{peek}:b"]
    client.delete(*keys)
    run_admit(client, keys[:1], 0, False, [(2, 3_600_000, 1000, 500)])
    server_ms = int(client.time()[0]) * 1000
    reply = run_peek(client, keys, 0, [(2, 3_600_000, 1000), (0, 60_000, 40)])
    assert abs(reply[0] - server_ms) < 5000
    assert reply[1:3] == [500, 500]  # a bucket refills 1 token per 3.6 s: nothing yet
    assert reply[4:6] == [0, 40] and 0 < reply[6] <= 60_000
    assert client.exists(keys[1]) == 0  # an unused counter stays absent


def test_an_unknown_operation_is_an_error_reply(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="unknown operation"):
        run(client, [], ["refund", 0])


def test_a_request_marker_applies_each_settlement_once(client: redis.Redis) -> None:
    """With the request's marker key after the counters, a retried settle changes nothing, and
    a release that arrives before its admission makes that admission reserve nothing."""
    key, marker = "tokenlimit:{once}:g", "tokenlimit:{once}:req:r1"
    client.delete(key, marker)
    now = 1_699_999_980_000 + 1000
    run_admit(client, [key, marker], now, False, [(0, 60_000, 1000, 100)])
    counter = (0, 60_000, 1000, 100, 140)
    assert run_settle(client, [key, marker], now + 1, [counter], now) == 1
    assert run_settle(client, [key, marker], now + 2, [counter], now) == -1  # a retry
    assert client.hget(key, "u") == b"140"
    assert 600_000 - 5000 < client.pttl(marker) <= 600_000  # at least 10 minutes

    late = "tokenlimit:{once}:req:r2"
    released = (0, 60_000, 1000, 100, 0)
    args: list[int | str] = ["release", now + 3, *released, now]
    assert run(client, [key, late], args) == 0  # nothing reserved yet: a tombstone
    run_admit(client, [key, late], now + 4, False, [(0, 60_000, 1000, 100)])
    assert client.hget(key, "u") == b"140"  # the admission landed after its request gave up
