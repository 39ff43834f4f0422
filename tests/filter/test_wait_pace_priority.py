"""Near the limit (issue 13) in the test host: `pace_above` holds an admitted request for the
interval that spreads the rest of the budget over the rest of the window (spaced after the
previous one of the same budget, never beyond max_wait_ms); `priority` lanes see a smaller
budget and waiting requests are released high first; 10,000 held requests stay within the
memory bound docs/config.md states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.proxywasm_host import Clock, Host

HEADERS = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
# docs/config.md ("Near the limit"): what one held request costs the filter at most, and what
# holding it adds to the context every request in flight has.
HELD_REQUEST_BYTES_MAX = 10240  # docs/near-limit.md "Memory bound"
QUEUE_PLACE_BYTES_MAX = 256


def per_key(limit: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "rule_name": "near",
        "rule_items": [{"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", **limit}]}],
        **fields,
    }


def start(host: Host, lane: str | None = None, key: str = "alice") -> Any:
    stream = host.http_stream()
    lane_header = {"x-priority": lane} if lane else {}
    stream.request_headers({**HEADERS, "x-api-key": key, **lane_header}, end_of_stream=True)
    return stream


def tick(host: Host, clock: Clock, ms: int) -> None:
    clock.advance(ms / 1000)
    host.tick()


def test_pace_above_spaces_admissions_over_the_rest_of_the_window(
    make_any_host: Callable[..., Host],
) -> None:
    clock = Clock(now_ns=(1_767_225_600 + 10) * 10**9)  # 50 s of the minute left
    host = make_any_host(clock=clock)
    rule = per_key({"request_per_minute": 100}, pace_above=0.5)
    assert host.configure(rule), host.log_messages()
    burst = [start(host) for _ in range(51)]
    assert not any(s.request_paused for s in burst)  # at most half spent before each
    # 51 spent: 49 left for 50 s, one every 1020 ms; the next is spaced after it (48 left).
    first, second = start(host), start(host)
    assert first.request_paused and second.request_paused
    tick(host, clock, 1010)
    assert first.request_paused
    tick(host, clock, 10)
    assert not first.request_paused and second.request_paused
    assert first.properties_set["tokenlimit_wait_ms"] == b"1020"
    tick(host, clock, 1030)
    assert second.request_paused  # 1020 + 1041 ms
    tick(host, clock, 20)
    assert not second.request_paused
    assert second.properties_set["tokenlimit_wait_ms"] == b"2070"
    assert host.metrics["tokenlimit.requests_paced"] == 2


def test_pace_above_never_holds_beyond_max_wait_ms(make_host: Callable[..., Host]) -> None:
    clock = Clock(now_ns=(1_767_225_600 + 10) * 10**9)
    host = make_host(clock=clock)
    rule = per_key(
        {"request_per_minute": 4},
        pace_above=0.5,
        when_exhausted={"action": "reject", "max_wait_ms": 300},
    )
    assert host.configure(rule), host.log_messages()
    assert not any(start(host).request_paused for _ in range(3))  # at most half spent before
    held = start(host)  # 3 of 4 spent: the last one would be spaced 50 s
    assert held.request_paused
    tick(host, clock, 290)
    assert held.request_paused
    tick(host, clock, 10)
    assert not held.request_paused
    assert held.properties_set["tokenlimit_wait_ms"] == b"300"


def test_a_lower_lane_sees_the_budget_less_the_reserved_shares(
    make_host: Callable[..., Host],
) -> None:
    host = make_host()
    rule = per_key(
        {"request_per_minute": 10},
        priority={"header": "x-priority", "reserved": {"high": 0.2, "normal": 0.1}},
    )
    assert host.configure(rule), host.log_messages()
    admitted = [start(host, "low").local_response is None for _ in range(8)]
    assert admitted == [True] * 7 + [False]  # low sees 70 %
    assert start(host).local_response is None  # normal (no header) sees 80 %
    assert start(host, "normal").local_response is not None
    assert start(host, "high").local_response is None  # high sees all of it
    assert start(host, "HIGH").local_response is None
    assert start(host, "high").local_response is not None


def test_waiting_requests_are_released_high_first(make_host: Callable[..., Host]) -> None:
    clock = Clock()
    host = make_host(clock=clock)
    rule = per_key(
        {"request_per_second": 2},
        algorithm="token_bucket",
        priority={"header": "x-priority"},
        when_exhausted={"action": "wait", "max_wait_ms": 5000},
    )
    assert host.configure(rule), host.log_messages()
    start(host), start(host)
    low, normal, high = start(host, "low"), start(host), start(host, "high")
    assert low.request_paused and normal.request_paused and high.request_paused
    order: list[str] = []
    for _ in range(300):
        tick(host, clock, 10)
        for name, stream in (("low", low), ("normal", normal), ("high", high)):
            if not stream.request_paused and name not in order:
                order.append(name)
    assert order == ["high", "normal", "low"]


def memory_per_request(host: Host, count: int) -> float:
    """Linear memory grown per request started (after 100 that warm the allocator up)."""
    for _ in range(100):
        start(host)
    before = host.memory_bytes_used()
    for _ in range(count):
        start(host)
    return (host.memory_bytes_used() - before) / count


def test_ten_thousand_held_requests_stay_within_the_documented_bound(
    make_host: Callable[..., Host],
) -> None:
    when = {"action": "wait", "max_wait_ms": 60000, "max_queued": 10000}
    host = make_host()
    assert host.configure(per_key({"request_per_minute": 1}, when_exhausted=when))
    start(host)
    held = memory_per_request(host, 9900)
    assert host.metrics["tokenlimit.wait_queued"] == 10000
    assert held <= HELD_REQUEST_BYTES_MAX, held
    # What holding adds to what any request in flight costs (its context): its queue place.
    in_flight = make_host()
    assert in_flight.configure(per_key({"request_per_minute": 10**6}, when_exhausted=when))
    assert held - memory_per_request(in_flight, 3000) <= QUEUE_PLACE_BYTES_MAX
    over = start(host)
    assert over.local_response is not None  # max_queued
    host.tick()  # one walk over all of them: nothing has room, nothing breaks
    assert host.metrics["tokenlimit.wait_queued"] == 10000
