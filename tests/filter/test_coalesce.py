"""Admission coalescing (issue 17, store/coalesce.zig), through the real modules and a real
redis-server: while a rule's admission call is in flight, the worker's further admissions of
that rule wait, and the next call (budget.lua `admit_many`) carries all of them (32 at most),
so N concurrent requests make far fewer than N script calls. Each request keeps its own
verdict (in order, as sequential admits give), its own marker and its own deadline; a failed
call fails each carried request as a failed call of its own would.

The Higress build's proxy_redis_call goes straight to Redis (support.redis_wire); the stock
build goes through the real bridge (test_filter_redis.Bridge)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from support.proxywasm_host import Clock, Host, HttpStream
from support.redis_rules import avoid_minute_end, loaded_redis, per_key_rule
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from test_filter_redis import Bridge

PROMPT, COMPLETION = 30, 10


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with loaded_redis() as server:
        yield server


def rule(requests: int, **extra: object) -> dict[str, object]:
    """`requests` a minute (and a roomy token budget) per API key, in Redis."""
    config = per_key_rule("co", 100_000)
    config.update(extra)
    items: list[dict[str, list[dict[str, object]]]] = config["rule_items"]  # type: ignore[assignment]
    items[0]["limit_keys"][0]["request_per_minute"] = requests
    return config


def counted(server: RedisServer, unit: str) -> int:
    """What the rule's counters of one unit (requests or tokens) hold now."""
    client = redis.Redis.from_url(server.url)
    keys = [k for k in client.keys("tokenlimit:{co}:per_header:*") if f":{unit}:".encode() in k]
    return sum(int(client.hget(key, "u") or 0) for key in keys)


def script_calls(host: Host, operation: str) -> int:
    """Calls of one budget.lua operation, by either transport."""
    name = f"${len(operation)}\r\n{operation}\r\n".encode()
    queries = [call.query for call in host.redis_calls] + [
        call.body for call in host.http_calls if call.body
    ]
    return sum(1 for query in queries if name in query)


def start(host: Host, key: str = "k") -> HttpStream:
    """A request whose admission is asked (on its headers) and left waiting."""
    stream = host.http_stream()
    headers = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
    stream.request_headers({**headers, "x-api-key": key}, end_of_stream=True)
    return stream


def finish(stream: HttpStream) -> None:
    """The upstream answers an admitted request with its usage; the stream ends."""
    usage = {"usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION}}
    stream.response_headers({":status": "200", "content-type": "application/json"})
    stream.response_body(json.dumps(usage).encode(), True)
    stream.log()
    stream.done()


def status(stream: HttpStream) -> int:
    if stream.local_response is not None:
        return stream.local_response.status
    assert not stream.request_paused, f"stream {stream.id} still waits"
    return 200


def higress(server: RedisServer, clock: Clock, wasm: Path, config: dict[str, object]) -> Host:
    host = Host(wasm, clock=clock, redis_handler=redis_wire(server))
    assert host.configure(config), host.log_messages()
    return host


@pytest.fixture(params=["higress", "bridge"])
def gateway(
    request: pytest.FixtureRequest, redis_server: RedisServer, filter_wasm: Path, higress_wasm: Path
) -> Iterator[Callable[[dict[str, object]], Host]]:
    """A gateway factory for each transport: the Higress build on Redis, the stock build on
    the bridge. Both go through the same store code."""
    clock = Clock()
    if request.param == "higress":
        yield lambda config: higress(redis_server, clock, higress_wasm, config)
        return
    bridge = Bridge(redis_server.url)
    try:

        def stock(config: dict[str, object]) -> Host:
            host = Host(filter_wasm, clock=clock, http_call_handler=bridge.handler)
            config = {**config, "redis": {"service_name": "tokenlimit-bridge", "timeout": 500}}
            assert host.configure(config), host.log_messages()
            return host

        yield stock
    finally:
        bridge.stop()


def test_concurrent_admissions_of_a_rule_share_calls_and_get_sequential_verdicts(
    gateway: Callable[[dict[str, object]], Host], redis_server: RedisServer
) -> None:
    avoid_minute_end(redis_server)
    host = gateway(rule(requests=25))
    streams = [start(host) for _ in range(40)]  # 40 requests waiting at once, one rule
    host.run_pending()
    # The first asked alone (nothing was in flight: no delay); the 39 that came while its call
    # was out went in the next calls, 32 at most each: 3 calls instead of 40.
    assert script_calls(host, "admit") == 1
    assert script_calls(host, "admit_many") == 2
    assert host.metrics["tokenlimit.redis_admissions_coalesced"] == 39
    # In order, as 40 sequential admits: the first 25 fit, the rest are refused with 429.
    assert [status(s) for s in streams] == [200] * 25 + [429] * 15
    assert counted(redis_server, "requests") == 25
    for stream in streams[:25]:
        finish(stream)
    host.tick()
    host.run_pending()
    assert counted(redis_server, "tokens") == 25 * (PROMPT + COMPLETION)  # each charge once
    assert counted(redis_server, "requests") == 25


def test_a_quiet_rule_never_waits(higress_wasm: Path, redis_server: RedisServer) -> None:
    """One request at a time: each sends its own admission at once, as before coalescing."""
    host = higress(redis_server, Clock(), higress_wasm, rule(requests=100))
    for asked in range(1, 4):
        stream = start(host)
        # Asked at once, no timer (a queued settlement may ride along: batch_admit).
        assert script_calls(host, "admit") + script_calls(host, "batch_admit") == asked
        host.run_pending()
        assert status(stream) == 200
        finish(stream)
    assert script_calls(host, "admit_many") == 0
    assert host.metrics.get("tokenlimit.redis_admissions_coalesced", 0) == 0


def test_a_failed_call_fails_each_carried_request_and_releases_what_it_reserved(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    """The coalesced call's reply is lost after Redis ran it: each request it carried gets its
    rule's failure_mode (closed: 503), and each one's release gives back what Redis reserved,
    once (its own marker), so nothing stays charged for requests that never went on."""
    avoid_minute_end(redis_server)
    clock = Clock()
    host = Host(higress_wasm, clock=clock)  # calls are answered by hand here
    assert host.configure(rule(requests=100, failure_mode="closed"))
    wire = redis_wire(redis_server)
    streams = [start(host, key="k") for _ in range(5)]
    (lead,) = host.pending_redis_calls()
    host.respond_redis_call(lead, wire(host.redis_calls[0].query))
    assert status(streams[0]) == 200
    (coalesced,) = host.pending_redis_calls()
    call = next(c for c in host.redis_calls if c.callout_id == coalesced)
    assert b"admit_many" in call.query
    wire(call.query)  # Redis runs it ...
    assert counted(redis_server, "requests") == 5
    host.respond_redis_call(coalesced, None)  # ... and the reply is lost
    assert [status(s) for s in streams[1:]] == [503] * 4
    clock.advance(0.05)
    host.redis_handler = wire
    host.tick()  # the releases go out with the retry tick
    host.run_pending()
    assert counted(redis_server, "requests") == 1  # only the admitted request still counts
    host.tick()
    host.run_pending()
    assert counted(redis_server, "requests") == 1  # released once, never twice


def test_a_waiting_request_keeps_its_own_deadline(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    """A call in flight that never answers cannot hold the requests waiting behind it past
    their own redis.timeout: the tick fails them (failure_mode open: allowed uncounted), and
    Redis never saw them."""
    clock = Clock()
    host = Host(higress_wasm, clock=clock)  # nothing answers
    assert host.configure(rule(requests=100, failure_mode="open"))
    streams = [start(host) for _ in range(3)]
    clock.advance(0.3)
    host.tick()
    assert all(s.request_paused for s in streams)  # within their 500 ms: still waiting
    clock.advance(0.25)
    host.tick()
    assert [status(s) for s in streams[1:]] == [200, 200]  # failed open at their deadline
    assert streams[0].request_paused  # the lead's own call is the host's to time out
    assert len(host.redis_calls) == 1
    assert counted(redis_server, "requests") == 0


def test_a_carried_request_keeps_its_deadline_while_its_call_is_out(
    higress_wasm: Path, redis_server: RedisServer
) -> None:
    """proxy_redis_call has one timeout per upstream, so the worker's tick ends a coalesced
    call's requests at their own deadlines (failure_mode closed: 503), and their releases make
    the call reserve nothing for them when it runs late."""
    avoid_minute_end(redis_server)
    clock = Clock()
    host = Host(higress_wasm, clock=clock)  # calls are answered by hand here
    assert host.configure(rule(requests=100, failure_mode="closed"))
    wire = redis_wire(redis_server)
    streams = [start(host) for _ in range(3)]
    clock.advance(0.2)  # the first call takes 200 ms
    (lead,) = host.pending_redis_calls()
    host.respond_redis_call(lead, wire(host.redis_calls[0].query))
    (coalesced,) = host.pending_redis_calls()  # carries the two that waited; never answered
    clock.advance(0.31)  # past 500 ms after they arrived
    host.tick()
    assert [status(s) for s in streams] == [200, 503, 503]
    releases = [c for c in host.redis_calls if c.state == "pending" and b"release" in c.query]
    assert len(releases) == 2  # one each, sent by the same tick
    for release in releases:  # they reach Redis first ...
        host.respond_redis_call(release.callout_id, wire(release.query))
    call = next(c for c in host.redis_calls if c.callout_id == coalesced)
    host.respond_redis_call(coalesced, wire(call.query))  # ... the call runs late: too late
    assert counted(redis_server, "requests") == 1
    assert [status(s) for s in streams] == [200, 503, 503]
