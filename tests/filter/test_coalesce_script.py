"""budget.lua's `admit_many` (admission coalescing, issue 17) on a real redis-server: several
requests' admissions of one rule in one call, queued settlements first.

The shared vectors (contract/budget.json) write such a call as consecutive `admit_many` steps
with one `at_ms`, the first carrying the call's settlements. budget.zig and
test_budget_vectors.py run those steps as one admit each, in order; here each group goes to
Redis as the single call the filter sends, and every admission must get the verdict and the
numbers sequential admits give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "contract" / "calendar.lua").read_text() + (
    ROOT / "contract" / "budget.lua"
).read_text()
VECTORS = json.loads((ROOT / "contract" / "budget.json").read_text())
ALGORITHMS = {"fixed": 0, "sliding": 1, "token_bucket": 2}
COALESCED = [v for v in VECTORS if any(s["op"] == "admit_many" for s in v["steps"])]


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        yield redis.Redis.from_url(server.url)


def run(client: redis.Redis, keys: list[str], args: list[int | str]) -> Any:
    return client.eval(SCRIPT, len(keys), *keys, *args)


def groups(steps: list[dict[str, Any]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """The steps as calls: each non-admit_many step alone, consecutive admit_many steps with
    one at_ms together."""
    group: list[tuple[int, dict[str, Any]]] = []
    for index, step in enumerate(steps):
        joins = group and step["op"] == "admit_many" and group[0][1]["at_ms"] == step["at_ms"]
        if group and not joins:
            yield group
            group = []
        group.append((index, step))
        if step["op"] != "admit_many":
            yield group
            group = []
    if group:
        yield group


def admit_many_call(
    key: str, name: str, group: list[tuple[int, dict[str, Any]]], counter: tuple[int, int, int]
) -> tuple[list[str], list[int | str]]:
    """One admit_many call for a group: its settlements, then each step's admission with its
    own marker."""
    algorithm, window_ms, limit = counter
    settlements = group[0][1].get("settlements", [])
    assert all("settlements" not in step for _, step in group[1:]), "only the first settles"
    keys: list[str] = []
    args: list[int | str] = ["admit_many", group[0][1]["at_ms"], len(settlements)]
    for j, entry in enumerate(settlements):
        keys += [key, f"tokenlimit:{{vectors}}:req:{name}:s{j}"]
        args += ["settle", 1, entry["admitted_at_ms"], ""]
        args += [algorithm, window_ms, limit, entry["reserved"], entry["actual"]]
    args.append(len(group))
    for index, step in group:
        keys += [key, f"tokenlimit:{{vectors}}:req:{name}:a{index}"]
        args += [1, int(step.get("force", False)), algorithm, window_ms, limit, step["amount"], ""]
    return keys, args


@pytest.mark.parametrize("scenario", COALESCED, ids=[v["name"][:60] for v in COALESCED])
def test_admit_many_follows_the_shared_vectors(
    client: redis.Redis, scenario: dict[str, Any]
) -> None:
    key = "tokenlimit:{vectors}:global:tokens:0:" + scenario["name"]
    client.delete(key)
    client.delete(*(client.keys("tokenlimit:{vectors}:req:*") or ["none"]))
    counter = (ALGORITHMS[scenario["algorithm"]], scenario["window_ms"], scenario["limit"])
    calls = 0
    for group in groups(scenario["steps"]):
        first = group[0][1]
        if first["op"] == "admit":
            amount = first["amount"]
            reply = run(client, [key], ["admit", first["at_ms"], 0, *counter, amount])
            assert reply[0] == 0 and reply[2] == first["expect"]["used"]
            continue
        assert first["op"] == "admit_many", "the coalesced scenarios use admit and admit_many"
        keys, args = admit_many_call(key, f"{scenario['name'][:20]}:{calls}", group, counter)
        calls += 1
        reply = run(client, keys, args)
        assert len(reply) == 5 * len(group)  # one admit reply (2 + 3 x 1 counter) each
        for (index, step), at in zip(group, range(0, len(reply), 5), strict=True):
            refused, now_ms, used, limit, reset_ms = reply[at : at + 5]
            assert now_ms == step["at_ms"] and limit == scenario["limit"]
            got = {"refused": refused != 0, "used": used, "reset_ms": reset_ms}
            assert got == step["expect"], f"step {index}"
    assert calls >= 1


def test_each_admission_keeps_its_marker(client: redis.Redis) -> None:
    """A request that gave up before its coalesced call ran (its release left a tombstone)
    reserves nothing; the others of the call are admitted and marked as their own admit
    would mark them."""
    key = "tokenlimit:{many}:g"
    markers = [f"tokenlimit:{{many}}:req:r{i}" for i in range(3)]
    client.delete(key, *markers)
    now = 1_699_999_980_000 + 1000
    released = run(client, [key, markers[1]], ["release", now, 0, 60_000, 100, 10, 0, now])
    assert released == 0  # not admitted yet: a tombstone
    keys = [key, markers[0], key, markers[1], key, markers[2]]
    args: list[int | str] = ["admit_many", now + 1, 0, 3]
    for _ in markers:
        args += [1, 0, 0, 60_000, 100, 10, ""]
    reply = run(client, keys, args)
    assert [reply[0], reply[5], reply[10]] == [0, 0, 0]
    assert client.hget(key, "u") == b"20"  # the released one reserved nothing
    assert client.get(markers[0]) == client.get(markers[2]) == f"a:{now + 1}".encode()
    assert client.get(markers[1]) == b"r"


def test_arguments_that_do_not_add_up_change_nothing(client: redis.Redis) -> None:
    key, marker = "tokenlimit:{many}:bad", "tokenlimit:{many}:req:bad"
    client.delete(key, marker)
    settle: list[int | str] = ["settle", 1, 1_700_000_000_000, "", 0, 60_000, 100, 0, 50]
    good: list[int | str] = [1, 0, 0, 60_000, 100, 10, ""]
    cases: list[list[int | str]] = [
        ["admit_many", 0, 1, *settle, 2, *good],  # two admissions announced, one sent
        ["admit_many", 0, 1, *settle, 1, *good, "extra"],
        ["admit_many", 0, 1, *settle, 0],
    ]
    for args in cases:
        keys = [key, marker, key, marker] if args[-1] != 0 else [key, marker]
        with pytest.raises(redis.ResponseError, match="do not add up"):
            run(client, keys, args)
    assert client.exists(key, marker) == 0  # the settlement was not applied either
