"""`tokenlimit usage` reads what the filter wrote to Redis, and finds a caller by key value."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner, Result
from support.proxywasm_host import Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from tokenlimit.cli import main
from tokenlimit.loader import policy_from_data
from tokenlimit.model.calendar import render_current
from tokenlimit.usage import (
    Budget,
    BudgetKey,
    budgets_of,
    counter_key,
    hash_value,
    parse_counter_key,
    read_usage,
    table_rows,
)


def test_hash_matches_the_filters_pinned_vector() -> None:
    # The same vector is pinned in filter/src/match.zig.
    assert hash_value("Bearer sk-secret") == "afa6f8ec47e70b6579157f844acfdd33"
    assert hash_value("x") == hashlib.sha256(b"x").hexdigest()[:32]


def test_counter_keys_parse_with_and_without_a_source() -> None:
    header = parse_counter_key("tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + "a" * 32)
    assert header is not None
    assert (header.rule, header.limit_type, header.source, header.unit, header.window_s) == (
        "chat",
        "per_header",
        "x-api-key",
        "tokens",
        60,
    )
    assert header.hashed
    ip = parse_counter_key("tokenlimit:{chat}:per_ip:from-remote-addr:requests:3600:10.0.0.1")
    assert ip is not None and ip.identity == "10.0.0.1" and not ip.hashed
    glob = parse_counter_key("tokenlimit:{g}:global:tokens:86400:global")
    assert glob is not None and glob.source == "" and glob.identity == "global"
    assert parse_counter_key("tokenlimit:{g}:global:bytes:1:x") is None
    assert parse_counter_key("other:key") is None


def test_usage_rows_come_from_redis_and_a_key_is_found_by_its_value() -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        seconds, micros = client.time()
        now_ms = seconds * 1000 + int(micros) // 1000
        start = now_ms - now_ms % 60_000
        alice = "tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + hash_value("alice-key")
        bob = "tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + hash_value("bob-key")
        stale = "tokenlimit:{chat}:per_ip:from-remote-addr:tokens:60:10.0.0.9"
        client.hset(alice, mapping={"s": start, "u": 250, "p": 0})
        client.hset(bob, mapping={"s": start, "u": 10, "p": 0})
        client.hset(stale, mapping={"s": start - 60_000, "u": 999, "p": 0})
        shared = "tokenlimit:{chat}:global:tokens:60:global"
        client.hset(shared, mapping={"s": start, "u": 260, "p": 0})
        rows = read_usage(client)
        assert {r.counter.key: r.used for r in rows} == {alice: 250, bob: 10, stale: 0, shared: 260}
        (only,) = read_usage(client, key_value="alice-key")  # not the budget everyone shares
        assert only.counter.key == alice and only.used == 250
        assert read_usage(client, rule="other") == []
        cells = table_rows([only])[0]
        assert (
            cells[0] == "chat"
            and cells[1] == "per_header x-api-key"
            and cells[3] == ""
            and cells[5] == "250"
        )
        assert "alice-key" not in " ".join(cells)


# ---- counters the real filter wrote: every algorithm, read through budget.lua's peek ---------


def policy_file(tmp_path: Path, **rule: object) -> tuple[dict[str, Any], Path]:
    """A filter config (what `tokenlimit usage --policy` reads) with the Higress Redis store."""
    config: dict[str, Any] = {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_day": 1000}],
            }
        ],
        "redis": {"service_name": "redis.default.svc.cluster.local", "service_port": 6379},
        **rule,
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(config))
    return config, path


def spend(host: Host, api_key: str, prompt: int, completion: int) -> None:
    """One chat request through the filter, answered with this much usage."""
    body = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    stream = host.http_stream().complete(
        {
            ":method": "POST",
            ":path": "/v1/chat/completions",
            ":authority": "x",
            "x-api-key": api_key,
        },
        {":status": "200", "content-type": "application/json"},
        [body.encode()],
    )
    assert stream.local_response is None, host.log_messages()


def usage_after_spending(
    wasm: Path, config: dict[str, Any], api_key: str, tokens: tuple[int, int], *args: str
) -> tuple[Result, int]:
    """`tokenlimit usage --redis URL *args` after one request of `api_key` spent `tokens`
    (prompt, completion) through the real filter; also the Redis server's clock (s) then."""
    with RedisServer() as server:
        host = Host(wasm, redis_handler=redis_wire(server))
        assert host.configure(config), host.log_messages()
        spend(host, api_key, *tokens)
        seconds, _ = redis.Redis.from_url(server.url).time()
        result = CliRunner().invoke(main, ["usage", "--redis", server.url, *args])
    assert result.exit_code == 0, result.output
    return result, seconds


def usage_cells(output: str, rule: str = "chat") -> list[str]:
    """The used, limit and left cells of the one table row of `rule`."""
    (row,) = [cells for cells in map(str.split, output.splitlines()) if cells[:1] == [rule]]
    return row[-4:-1]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding", "fixed"])
def test_usage_shows_what_a_counter_used_in_every_algorithm(
    higress_wasm: Path, tmp_path: Path, algorithm: str
) -> None:
    # A day's bucket refills one token every 86.4 s: the 500 spent are all still used when read.
    config, path = policy_file(tmp_path, algorithm=algorithm)
    result, _ = usage_after_spending(
        higress_wasm, config, "alice-key", (300, 200), "--policy", str(path), "--key", "alice-key"
    )
    assert usage_cells(result.output) == ["500", "1000", "500"], result.output
    assert "read as fixed windows" not in result.output


def test_without_the_policy_a_counter_reads_as_a_fixed_window_and_says_so(
    higress_wasm: Path, tmp_path: Path
) -> None:
    config, _ = policy_file(tmp_path)
    result, _ = usage_after_spending(higress_wasm, config, "bob-key", (20, 5))
    assert usage_cells(result.output) == ["25", "?", "?"], result.output
    assert "counters no --policy names are read as fixed windows" in result.output


def test_a_refused_policy_is_named_before_redis_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"rule_name": "chat"}')
    result = CliRunner().invoke(
        main, ["usage", "--redis", "redis://127.0.0.1:1/0", "--policy", str(path)]
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"{path}: ")


# ---- which limit a counter has: the policy's entries, resolved as the filter matches ---------


def budget_of(items: list[dict[str, Any]], algorithm: str = "fixed") -> dict[BudgetKey, Budget]:
    loaded = policy_from_data(
        {"rule_name": "r", "algorithm": algorithm, "rule_items": items}, "test"
    )
    return budgets_of(loaded.config)


def test_a_literal_key_has_its_own_limit_and_a_hashed_regexp_caller_may_have_several() -> None:
    budgets = budget_of(
        [
            {
                "limit_by_header": "X-Team",
                "limit_keys": [
                    {"key": "red", "token_per_minute": 10},
                    {"key": "blue", "token_per_minute": 20},
                ],
            },
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [
                    {"key": "regexp:^vip-", "token_per_minute": 1000},
                    {"key": "*", "token_per_minute": 10},
                ],
            },
            {
                "limit_by_per_consumer": "",
                "limit_keys": [{"key": "*", "request_per_hour": 5}],
            },
        ]
    )

    def limit(limit_type: str, source: str, unit: str, window_s: int, value: str) -> int | None:
        key = counter_key("r", limit_type, source, unit, window_s, value)
        counter = parse_counter_key(key)
        assert counter is not None
        return budgets[
            (counter.rule, counter.limit_type, counter.source, unit, window_s)
        ].limit_for(counter)

    assert limit("header", "X-Team", "tokens", 60, "blue") == 20
    assert limit("header", "X-Team", "tokens", 60, "red") == 10
    assert limit("per_header", "x-api-key", "tokens", 60, "vip-1") is None  # 1000 or 10
    assert limit("per_consumer", "", "requests", 3600, "alice") == 5


def test_a_token_bucket_of_unknown_limit_is_shown_unknown_not_guessed(tmp_path: Path) -> None:
    budgets = budget_of(
        [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [
                    {"key": "regexp:^vip-", "token_per_day": 1000},
                    {"key": "*", "token_per_day": 10},
                ],
            }
        ],
        algorithm="token_bucket",
    )
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        key = counter_key("r", "per_header", "x-api-key", "tokens", 86400, "vip-1")
        client.hset(key, mapping={"s": 1, "u": 7, "p": 0})
        (row,) = read_usage(client, budgets)
    assert (row.algorithm, row.limit, row.used, row.remaining) == ("token_bucket", None, None, None)
    assert table_rows([row])[0][5:] == ("?", "?", "?", "?")


# ---- model budgets: the model, tokens, dollars and the limit --------------------------------


def test_usage_shows_the_model_the_cost_in_dollars_and_the_limit() -> None:
    # Counter keys as design-model-budgets.md §3 spells them (`:m=<model>`, unit `cost` in
    # micro-USD), written the way budget.lua records them.
    budgets = budget_of(
        [
            {
                "limit_by_per_header": "x-api-key",
                "per_model": True,
                "limit_keys": [{"key": "*", "cost_per_hour": 2.5, "token_per_hour": 1000}],
            },
            {"limit_by_per_model": "", "limit_keys": [{"key": "gpt-4o", "token_per_month": 9}]},
        ]
    )
    budgets.update(
        budgets_of(
            policy_from_data(
                {
                    "rule_name": "p",
                    "prices": {"*": {"input": 1, "output": 1}},
                    "global_threshold": {"cost_per_minute": 1},
                },
                "t",
            ).config
        )
    )
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        seconds, _ = client.time()
        hour_start = seconds * 1000 - seconds * 1000 % 3_600_000
        cost = counter_key("r", "per_header", "x-api-key", "cost", 3600, "alice", "gpt-4o")
        tokens = counter_key("r", "per_header", "x-api-key", "tokens", 3600, "alice", "gpt-4o")
        month = counter_key("r", "per_model", "", "tokens", 2_629_746, "gpt-4o", "gpt-4o")
        client.hset(cost, mapping={"s": hour_start, "u": 1_250_001, "p": 0})
        client.hset(tokens, mapping={"s": hour_start, "u": 400, "p": 0})
        client.hset(month, mapping={"s": 1, "u": 5, "p": 0})
        rows = {r.counter.key: r for r in read_usage(client, budgets)}
    assert cost.endswith(":cost:3600:" + hash_value("alice") + ":m=gpt-4o")
    assert table_rows([rows[cost]])[0][3:8] == (
        "gpt-4o",
        "USD/hour",
        "$1.250001",
        "$2.500000",
        "$1.249999",
    )
    assert table_rows([rows[tokens]])[0][3:8] == ("gpt-4o", "tokens/hour", "400", "1000", "600")
    # A month is read in its calendar window (UTC here): the record from 1970 has expired.
    assert (rows[month].limit, rows[month].used, rows[month].remaining) == (9, 0, 9)
    assert table_rows([rows[month]])[0][3:8] == ("gpt-4o", "tokens/month", "0", "9", "9")
    assert budgets[("p", "global", "", "cost", 60)].entries[0].limit == 1_000_000


# ---- calendar windows: weeks, months and days in the rule's time zone ------------------------


def test_usage_reads_week_month_and_zoned_day_counters_the_filter_wrote(
    higress_wasm: Path, tmp_path: Path
) -> None:
    # Tokyo has no DST, so the next month starts at 00:00 +09:00 on the 1st: the reset the
    # table shows must count to exactly that instant (as the filter's Retry-After does).
    zone = "Asia/Tokyo"
    config, path = policy_file(
        tmp_path,
        time_zone=zone,
        calendar=render_current(zone).model_dump(mode="json"),
        rule_items=[
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [
                    {
                        "key": "*",
                        "token_per_day": 1000,
                        "token_per_week": 5000,
                        "token_per_month": 20000,
                    }
                ],
            }
        ],
    )
    result, seconds = usage_after_spending(
        higress_wasm, config, "alice-key", (300, 200), "--policy", str(path), "--key", "alice-key"
    )
    rows = {
        cells[4]: cells[5:9]
        for cells in map(str.split, result.output.splitlines())
        if cells[:1] == ["chat"]
    }
    assert rows.keys() == {"tokens/day", "tokens/week", "tokens/month"}, result.output
    assert rows["tokens/day"][:3] == ["500", "1000", "500"]
    assert rows["tokens/week"][:3] == ["500", "5000", "4500"]
    assert rows["tokens/month"][:3] == ["500", "20000", "19500"]
    local = datetime.fromtimestamp(seconds, ZoneInfo(zone))
    next_month = (local.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    expected = next_month.timestamp() - seconds
    assert abs(int(rows["tokens/month"][3].rstrip("s")) - expected) <= 2, result.output
    next_day = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(rows["tokens/day"][3].rstrip("s")) - (next_day.timestamp() - seconds)) <= 2
    assert "pass --policy" not in result.output


def test_without_the_policy_a_month_is_shown_unread_and_says_why(
    higress_wasm: Path, tmp_path: Path
) -> None:
    config, _ = policy_file(
        tmp_path,
        rule_items=[
            {"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", "token_per_month": 9}]}
        ],
    )
    result, _ = usage_after_spending(higress_wasm, config, "bob-key", (2, 1))
    assert usage_cells(result.output) == ["?", "?", "?"], result.output
    assert "week and month counters follow the rule's time zone" in result.output
