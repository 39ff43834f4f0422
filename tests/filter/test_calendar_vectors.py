"""The Redis store's calendar math (contract/calendar.lua) against the shared vectors
(contract/calendar.json), on a real redis-server. calendar.zig and tokenlimit.model.calendar
pass the same vectors, so the filter, the script and the control plane agree on every window.

calendar.lua is included in budget.lua's script by concatenation (its header says why); these
tests run it the same way: the file first, then a few lines that call it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
CALENDAR = (ROOT / "contract" / "min" / "calendar.lua").read_text()  # as the filter sends it
BUDGET = (ROOT / "contract" / "min" / "budget.lua").read_text()
DOCUMENT = json.loads((ROOT / "contract" / "calendar.json").read_text())
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
DAY_MS = 86_400_000
# ARGV: now, window, then from_ms, offset_s pairs: the shape budget.lua will pass a table in.
CALL = """
local froms, offsets = {}, {}
for i = 3, #ARGV, 2 do
  froms[#froms + 1] = tonumber(ARGV[i])
  offsets[#offsets + 1] = tonumber(ARGV[i + 1])
end
local start, finish = calendar_bounds(tonumber(ARGV[1]), ARGV[2], froms, offsets)
return {start, finish}
"""


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        yield redis.Redis.from_url(server.url)


def bounds(
    client: redis.Redis, now_ms: int, window: str, transitions: list[list[int]]
) -> tuple[int, int]:
    args: list[int | str] = [now_ms, window, *(value for pair in transitions for value in pair)]
    start, end = client.eval(CALENDAR + CALL, 0, *args)
    return int(start), int(end)


def around(transitions: list[list[int]], now_ms: int, margin_ms: int) -> list[list[int]]:
    """calendar.zig's Table.around: the entries the filter sends with a call."""

    def segment(at_ms: int) -> int:
        return max([0] + [i for i, (from_ms, _) in enumerate(transitions) if from_ms <= at_ms])

    return transitions[segment(now_ms - margin_ms) : segment(now_ms + margin_ms) + 1]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_calendar_lua_follows_the_shared_vectors(
    client: redis.Redis, vector: dict[str, Any]
) -> None:
    transitions = DOCUMENT["zones"][vector["zone"]]["transitions"]
    expected = (vector["start_ms"], vector["end_ms"])
    assert bounds(client, vector["now_ms"], vector["window"], transitions) == expected
    # The few entries the filter will send decide the same window as the whole table.
    sliced = around(transitions, vector["now_ms"], 40 * DAY_MS)
    assert len(sliced) <= 4
    assert bounds(client, vector["now_ms"], vector["window"], sliced) == expected


def test_an_unknown_window_fails_the_call(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="calendar: unknown window fortnight"):
        bounds(client, 1_700_000_000_000, "fortnight", [[0, 0]])


def test_calendar_lua_and_budget_lua_concatenate_into_one_script(client: redis.Redis) -> None:
    """The inclusion budget.lua will use: the joined file loads and budget.lua's operations run
    as before (a peek of an absent counter: nothing used, a whole window left)."""
    script = CALENDAR + BUDGET
    key = "tokenlimit:{calendar}:global:tokens:60:global"
    now_ms, used, remaining, reset_ms = client.eval(
        script, 1, key, "peek", 1_700_000_010_000, 0, 60_000, 100
    )
    assert (now_ms, used, remaining, reset_ms) == (1_700_000_010_000, 0, 100, 30_000)
