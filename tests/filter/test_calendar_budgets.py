"""Week and month budgets and a rule's time zone (issue 12) through the real filter in the test
host: a monthly budget in Asia/Tokyo resets at local midnight on the 1st, and Retry-After and
x-ratelimit-reset-tokens count to that instant; the same through Redis (budget.lua joined with
calendar.lua). The zone reaches the filter as the `calendar` table the control plane renders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from support.proxywasm_host import Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from tokenlimit.model.calendar import render_table


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


TOKYO = render_table("Asia/Tokyo", ms("2026-01-01T00:00:00+00:00"), ms("2028-01-01T00:00:00+00:00"))
BERLIN = render_table(
    "Europe/Berlin", ms("2026-01-01T00:00:00+00:00"), ms("2028-01-01T00:00:00+00:00")
)


def monthly(table: Any, **extra: Any) -> dict[str, Any]:
    return {
        "rule_name": "monthly",
        "time_zone": table.zone,
        "calendar": {"zone": table.zone, "transitions": table.transitions},
        "show_limit_headers": True,
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_month": 100}],
            }
        ],
        **extra,
    }


def ask(host: Host, api_key: str = "alice", prompt: int = 30, completion: int = 20):
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": api_key,
    }
    body = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    return host.http_stream().complete(
        headers, {":status": "200", "content-type": "application/json"}, [body.encode()]
    )


def at(text: str) -> Clock:
    return Clock(now_ns=ms(text) * 1_000_000)


def test_a_monthly_budget_in_tokyo_resets_on_the_first_local_midnight(make_host) -> None:
    # 2026-11-30 20:00 UTC is already December 1st, 05:00, in Tokyo.
    clock = at("2026-11-30T10:00:00+00:00")  # 19:00 in Tokyo, 5 h before December
    host = make_host(clock=clock)
    assert host.configure(monthly(TOKYO)), host.log_messages()
    assert [ask(host).local_response for _ in range(2)] == [None, None]
    refused = ask(host).local_response
    assert refused is not None and refused.status == 429
    headers = dict(refused.headers)
    assert headers["retry-after"] == str(5 * 3600)
    assert headers["x-ratelimit-reset-tokens"] == "5h0m0s"
    clock.advance(5 * 3600)  # 2026-12-01T00:00 in Tokyo (still November 30 in UTC)
    assert ask(host).local_response is None


def test_admitted_responses_count_down_to_the_first_of_the_month_in_berlin(make_host) -> None:
    clock = at("2026-10-31T23:00:00+01:00")  # an hour before November in Berlin
    host = make_host(clock=clock)
    assert host.configure(monthly(BERLIN)), host.log_messages()
    stream = ask(host, prompt=100, completion=0)
    assert stream.response_header_map["x-ratelimit-reset-tokens"] == "1h0m0s"
    clock.advance(3600)
    stream = ask(host, prompt=1, completion=0)
    assert stream.local_response is None  # November: a fresh budget
    # November in Berlin has 30 days, all at +01:00.
    reset = stream.response_header_map["x-ratelimit-reset-tokens"]
    assert reset == "720h0m0s"


def test_week_limits_are_accepted_and_a_bad_calendar_is_refused(make_host) -> None:
    host = make_host(clock=at("2026-12-02T12:00:00+00:00"))  # a Wednesday
    weekly = monthly(TOKYO)
    del weekly["calendar"], weekly["time_zone"]
    weekly["rule_items"][0]["limit_keys"][0] = {"key": "*", "request_per_week": 1}
    assert host.configure(weekly), host.log_messages()
    assert ask(host).local_response is None
    refused = ask(host).local_response
    assert refused is not None
    # UTC without a zone: the week ends on Monday 00:00 UTC, 4.5 days away.
    assert dict(refused.headers)["retry-after"] == str(4 * 86400 + 12 * 3600)
    broken = monthly(TOKYO)
    broken["calendar"]["transitions"] = [[2, 0], [1, 3600]]
    assert not host.configure(broken)
    assert any(
        "calendar.transitions: must be in strictly increasing" in m for m in host.log_messages()
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def test_a_monthly_budget_in_tokyo_through_redis(higress_wasm: Path, server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()
    # Redis decides the window from its own clock (now = 0): the test host's clock is not
    # Redis's, so the expected reset is computed from the real time, in Tokyo.
    host = Host(higress_wasm, redis_handler=redis_wire(server))
    rule = monthly(TOKYO, redis={"service_name": "redis.default.svc.cluster.local"})
    assert host.configure(rule), host.log_messages()
    before = datetime.now().timestamp()
    assert ask(host, prompt=100, completion=0).local_response is None
    refused = ask(host).local_response
    assert refused is not None and refused.status == 429
    retry_after = int(dict(refused.headers)["retry-after"])
    local = datetime.fromtimestamp(before, ZoneInfo("Asia/Tokyo"))
    first = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=local.tzinfo)
    expected = first.timestamp() - before
    assert expected - 5 <= retry_after <= expected + 5


def test_the_bridge_runs_the_joined_script_for_calendar_windows(
    filter_wasm: Path, server: RedisServer
) -> None:
    # The Envoy build reaches Redis through the bridge, which runs only tokenlimit's scripts by
    # SHA: calendar.lua + budget.lua, as the filter sends them, must be one of them.
    from test_filter_redis import BRIDGE_CLUSTER, Bridge

    redis.Redis.from_url(server.url).flushall()
    bridge = Bridge(server.url)
    try:
        host = Host(filter_wasm, http_call_handler=bridge.handler)
        assert host.configure(monthly(TOKYO, redis={"service_name": BRIDGE_CLUSTER})), (
            host.log_messages()
        )
        assert ask(host, prompt=100, completion=0).local_response is None
        refused = ask(host).local_response
        assert refused is not None and refused.status == 429, host.log_messages()
        assert not any("script not allowed" in line for line in bridge.output)
    finally:
        bridge.stop()
