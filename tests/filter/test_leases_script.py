"""budget.lua's `lease` and `lease_return` (issue 17) on a real redis-server, beyond the shared
vectors: each applies once under the request's marker, whichever of the two runs first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "min"  # as the filter sends it
SCRIPT = (CONTRACT / "calendar.lua").read_text() + (CONTRACT / "budget.lua").read_text()
NOW = 1_699_999_981_000  # 1 s into a minute window that ends at END
END = 1_700_000_040_000
KEY = "tokenlimit:{lease}:global:tokens:60:global"


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        yield redis.Redis.from_url(server.url)


def call(
    client: redis.Redis, op: str, marker: str, want: int, need: int, carry: int, at: int = NOW
) -> object:
    args = [op, at, 0, 60_000, 1000, want, need, carry, END if carry > 0 else 0]
    return client.eval(SCRIPT, 2, KEY, f"tokenlimit:{{lease}}:req:{marker}", *args)


def used(client: redis.Redis) -> int:
    return int(client.hget(KEY, "u") or 0)


@pytest.fixture(autouse=True)
def empty(client: redis.Redis) -> None:
    client.flushall()


def test_a_lease_returned_after_it_ran_gives_its_grant_back_once(client: redis.Redis) -> None:
    assert call(client, "lease", "a", 100, 10, 0) == [0, NOW, 100, 1000, 59_000, 100]
    assert call(client, "lease_return", "a", 100, 10, 0, NOW + 5) == 1
    assert used(client) == 0
    assert call(client, "lease_return", "a", 100, 10, 0, NOW + 6) == -1  # a retry: nothing
    assert used(client) == 0


def test_a_lease_returned_before_it_ran_applies_its_carry_and_then_grants_nothing(
    client: redis.Redis,
) -> None:
    call(client, "lease", "first", 300, 10, 0)
    # A worker's next lease carries 50 unspent tokens back; its answer is lost, and the
    # lease_return reaches Redis first: the carry lands once, the late lease is refused.
    assert call(client, "lease_return", "second", 100, 10, 50) == 1
    assert used(client) == 250
    with pytest.raises(redis.ResponseError, match="already applied"):
        call(client, "lease", "second", 100, 10, 50)
    assert used(client) == 250


def test_a_lease_refused_still_brings_its_carry_back(client: redis.Redis) -> None:
    call(client, "lease", "all", 1000, 10, 0)
    reply = call(client, "lease", "more", 100, 10, 30)  # 30 back, then 10 needed: fits
    assert reply == [0, NOW, 1000, 1000, 59_000, 30]
    reply = call(client, "lease", "none", 100, 10, 5)  # 5 back: 10 does not fit
    assert reply == [1, NOW, 995, 1000, 59_000, 0]


def test_leases_refuse_windows_they_cannot_slice(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="fixed windows"):
        client.eval(SCRIPT, 2, KEY, "m", "lease", NOW, 1, 60_000, 1000, 100, 10, 0, 0)
    with pytest.raises(redis.ResponseError, match="do not add up"):
        client.eval(SCRIPT, 2, KEY, "m", "lease", NOW, 0, 60_000, 1000, 100)
