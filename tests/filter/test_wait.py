"""Near the limit (issue 13) through the real filter in the test host: `when_exhausted: wait`
holds a request whose budget is spent and admits it on the root context's tick once there is
room, first in, first out per budget; a client that leaves is dropped; at `max_wait_ms` the
request gets today's 429 with an honest Retry-After; `max_queued` bounds the queue."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from support.proxywasm_host import Clock, Host

HEADERS = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
OK = {":status": "200", "content-type": "application/json"}
USAGE = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 0}}).encode()


def wait_rule(**when: Any) -> dict[str, Any]:
    """Two requests per second per key (a token bucket), spent ones wait."""
    return {
        "rule_name": "near",
        "algorithm": "token_bucket",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "request_per_second": 2}],
            }
        ],
        "when_exhausted": {"action": "wait", "max_wait_ms": 2000, **when},
    }


def start(host: Host, key: str = "alice", extra: dict[str, str] | None = None) -> Any:
    stream = host.http_stream()
    stream.request_headers({**HEADERS, "x-api-key": key, **(extra or {})}, end_of_stream=True)
    return stream


def finish(stream: Any) -> None:
    stream.response_headers(OK)
    stream.response_body(USAGE, True)
    stream.log()
    stream.done()


def tick(host: Host, clock: Clock, ms: int) -> None:
    clock.advance(ms / 1000)
    host.tick()


def test_a_spent_budget_waits_for_room_instead_of_a_429(
    make_any_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_any_host(clock=clock)
    assert host.configure(wait_rule()), host.log_messages()
    first, second = start(host), start(host)
    assert not first.request_paused and not second.request_paused
    third = start(host)
    assert third.request_paused and third.local_response is None
    assert host.tick_period_ms == 10  # the tick re-checks held requests
    tick(host, clock, 100)
    assert third.request_paused  # the bucket has not refilled a request yet
    tick(host, clock, 450)  # 500 ms: one request's refill
    assert not third.request_paused and third.local_response is None
    finish(third)
    assert third.properties_set["tokenlimit_decision"] == b"waited"
    assert third.properties_set["tokenlimit_wait_ms"] == b"550"
    assert host.metrics["tokenlimit.requests_waited"] == 1
    assert host.metrics.get("tokenlimit.requests_rejected", 0) == 0
    # Nothing held any more: the tick goes back to the Redis store's period (settle batches
    # and retries, store/batch.zig flush_period_ms).
    assert host.tick_period_ms == 50
    assert host.metrics["tokenlimit.wait_queued"] == 0


def test_waiting_requests_of_one_budget_are_released_first_in_first_out(
    make_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_host(clock=clock)
    assert host.configure(wait_rule()), host.log_messages()
    start(host), start(host)
    held = [start(host) for _ in range(3)]
    other = start(host, "bob")  # another budget does not wait behind alice's
    assert not other.request_paused
    released: list[int] = []
    for _ in range(200):
        tick(host, clock, 10)
        for index, stream in enumerate(held):
            if not stream.request_paused and index not in released:
                released.append(index)
        if len(released) == 3:
            break
    assert released == [0, 1, 2]


def test_past_max_wait_ms_the_request_gets_todays_429_with_an_honest_retry_after(
    make_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_host(clock=clock)
    rule = wait_rule(max_wait_ms=300)
    rule["rule_items"][0]["limit_keys"][0] = {"key": "*", "request_per_minute": 1}
    rule["algorithm"] = "fixed"
    assert host.configure(rule), host.log_messages()
    start(host)
    held = start(host)
    assert held.request_paused
    tick(host, clock, 200)
    assert held.request_paused and held.local_response is None
    tick(host, clock, 150)
    reply = held.local_response
    assert reply is not None and reply.status == 429
    # The clock fixture is 10 s into a minute: 49.65 s of the window were left.
    assert dict(reply.headers)["retry-after"] == "50"
    assert held.properties_set["tokenlimit_decision"] == b"rejected"
    assert held.properties_set["tokenlimit_wait_ms"] == b"350"
    assert host.metrics["tokenlimit.wait_timeouts"] == 1


def test_a_client_that_leaves_is_dropped_from_the_queue(
    make_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_host(clock=clock)
    assert host.configure(wait_rule()), host.log_messages()
    start(host), start(host)
    gone, stays = start(host), start(host)
    assert gone.request_paused and stays.request_paused
    gone.log()
    assert gone.done()  # deleted at once: nothing waits for it
    tick(host, clock, 500)
    # The one that left does not use the room: the next in line gets it.
    assert not stays.request_paused
    assert host.metrics["tokenlimit.requests_waited"] == 1


def test_max_queued_rejects_at_once_past_the_bound(
    make_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_host(clock=clock)
    assert host.configure(wait_rule(max_queued=2)), host.log_messages()
    start(host), start(host)
    held = [start(host) for _ in range(2)]
    assert all(s.request_paused for s in held)
    over = start(host)
    assert over.local_response is not None and over.local_response.status == 429
    assert host.metrics["tokenlimit.wait_overflows"] == 1


def test_shadow_mode_reports_the_wait_it_would_have_made(
    make_host: Callable[..., Host], clock: Clock
) -> None:
    host = make_host(clock=clock)
    assert host.configure({**wait_rule(), "shadow": True}), host.log_messages()
    start(host), start(host)
    third = start(host)
    assert not third.request_paused
    assert third.properties_set["tokenlimit_decision"] == b"shadow_waited"


def test_the_config_names_a_bad_field(make_host: Callable[..., Host]) -> None:
    host = make_host()
    assert not host.configure(wait_rule(max_wait_ms=0))
    assert any("when_exhausted.max_wait_ms" in m for m in host.log_messages())
    assert not host.configure(wait_rule(action="downgrade"))
    assert any("when_exhausted.model: is required" in m for m in host.log_messages())
    assert not host.configure(wait_rule(colour="red"))
    assert any("when_exhausted" in m and "colour" in m for m in host.log_messages())
