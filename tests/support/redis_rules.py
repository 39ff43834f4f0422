"""A per-key rule on a real Redis, as the Redis-store tests of the filter use it: the budget
script loaded first (as a gateway that ran before would have, so a replayed EVALSHA runs), the
rule's filter config, and the tokens its counters hold."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from support.redis_server import RedisServer

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "min"
# The script as the filter embeds it (store/script.zig `source`): calendar.lua, then budget.lua,
# minified (contract/min/, tokenlimit.contract_min).
BUDGET_SCRIPT = (CONTRACT / "calendar.lua").read_text() + (CONTRACT / "budget.lua").read_text()


@contextmanager
def loaded_redis() -> Iterator[RedisServer]:
    """A redis-server with the budget script already loaded."""
    with RedisServer() as server:
        redis.Redis.from_url(server.url).script_load(BUDGET_SCRIPT)
        yield server


def per_key_rule(rule_name: str, limit: int = 100_000, **extra: object) -> dict[str, object]:
    """A rule keyed on `x-api-key` with `limit` tokens a minute each, in Redis (`redis.dns`)."""
    return {
        "rule_name": rule_name,
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": limit}],
            }
        ],
        "redis": {"service_name": "redis.dns", "timeout": 500},
        **extra,
    }


def used_tokens(server: RedisServer, rule_name: str) -> int:
    """The tokens every per-key counter of the rule holds now."""
    client = redis.Redis.from_url(server.url)
    keys = client.keys(f"tokenlimit:{{{rule_name}}}:per_header:*")
    return sum(int(client.hget(key, "u") or 0) for key in keys)


def avoid_minute_end(server: RedisServer, margin_s: float = 5.0) -> None:
    """Sleeps into the next minute (Redis's clock, which the script windows by) when fewer than
    `margin_s` seconds of this one are left, so a test's per-minute window cannot reset midway."""
    seconds, micros = redis.Redis.from_url(server.url).time()
    into = seconds % 60 + micros / 1e6
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.2)
