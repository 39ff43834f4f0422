"""The Redis store, driven through the real modules in the test host, with real Redis:

- tokenlimit.wasm's proxy_http_call goes to the real bridge (a `tokenlimit.bridge` process);
- tokenlimit-higress.wasm's proxy_redis_call goes straight to the real redis-server.

Separate hosts with separate shared data stand for separate gateways: only Redis joins them.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.proxywasm_host import Clock, Host, HttpCall, LogLevel
from support.redis_server import RedisServer, free_port
from support.redis_wire import redis_wire

BRIDGE_CLUSTER = "tokenlimit-bridge"


def rule(**extra: object) -> dict:
    return {
        "rule_name": "shared",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 100}],
            }
        ],
        "redis": {"service_name": BRIDGE_CLUSTER, "timeout": 500},
        **extra,
    }


class Bridge:
    """A `tokenlimit bridge` process in front of a Redis URL."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        # The bridge takes the password from the environment only (never argv, which ps shows).
        parts = urllib.parse.urlsplit(redis_url)
        env = dict(os.environ, TOKENLIMIT_REDIS_PASSWORD=parts.password or "")
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            user = f"{parts.username}@" if parts.username else ""
            redis_url = urllib.parse.urlunsplit(parts._replace(netloc=user + host))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenlimit.bridge",
                "--redis",
                redis_url,
                "--listen",
                str(self.port),
                "--timeout-ms",
                "300",
                "--insecure",  # loopback, no token: the tests call it as the filter would
            ],
            stdout=subprocess.PIPE,
            env=env,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        self.output: list[str] = []
        for line in self.process.stdout:  # warnings may come first
            self.output.append(line)
            if "listening" in line or len(self.output) > 20:
                break
        if "listening" not in self.output[-1]:
            self.stop()
            pytest.fail("bridge did not start:\n" + "".join(self.output))
        # Keep reading so the bridge never blocks on a full pipe.
        threading.Thread(
            target=lambda: self.output.extend(self.process.stdout), daemon=True
        ).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def handler(self, call: HttpCall):
        """Envoy's side of proxy_http_call: POST to the bridge, hand back its answer."""
        assert call.upstream == BRIDGE_CLUSTER
        headers = {k: v for k, v in call.headers if not k.startswith(":")}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{call.header(':path')}",
            data=call.body,
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                status, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, body = error.code, error.headers, error.read()
        except OSError:
            return None  # no answer: the test fails the call, as Envoy does for a dead bridge
        pairs = [(":status", str(status))] + [(k.lower(), v) for k, v in answer.items()]
        return pairs, body


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def bridge(redis_server: RedisServer) -> Iterator[Bridge]:
    b = Bridge(redis_server.url)
    yield b
    b.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


GATEWAY_SEEDS = itertools.count(1)


def gateway(filter_wasm: Path, bridge: Bridge, clock: Clock, **extra: object) -> Host:
    # Separate gateways draw separate randomness (it names their requests in Redis).
    seed = next(GATEWAY_SEEDS)
    host = Host(filter_wasm, clock=clock, http_call_handler=bridge.handler, seed=seed)
    assert host.configure(rule(**extra)), host.log_messages()
    return host


def ask(host: Host, api_key: str, prompt: int = 10, completion: int = 30, *, settle: bool = True):
    """One request through `host`; returns the stream (local_response set when refused)."""
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "x",
        "content-type": "application/json",
        "x-api-key": api_key,
    }
    body = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    stream = host.http_stream()
    stream.complete(
        headers,
        {":status": "200", "content-type": "application/json"},
        [body.encode()] if settle else [],
    )
    flush_settlements(host)
    return stream


def flush_settlements(host: Host) -> None:
    """The worker's tick passes: its queued settlements go to Redis (one settle_batch call)."""
    host.tick()
    host.run_pending()


def refused(stream) -> bool:
    return stream.local_response is not None and stream.local_response.status == 429


def test_two_gateways_share_one_budget_through_redis(filter_wasm, bridge, clock, redis_server):
    first, second = gateway(filter_wasm, bridge, clock), gateway(filter_wasm, bridge, clock)
    outcomes = [refused(ask(host, "team-a", 10, 30)) for host in (first, second, first)]
    assert outcomes == [False, False, False]  # 120 tokens spent across both gateways
    assert refused(ask(second, "team-a")) and refused(ask(first, "team-a"))
    assert not refused(ask(second, "team-b"))
    # Counters live in Redis, under the rule's hash tag, with the key value hashed.
    keys = [k.decode() for k in redis.Redis.from_url(redis_server.url).keys("tokenlimit:*")]
    keys = [k for k in keys if not k.startswith("tokenlimit:{shared}:req:")]  # request markers
    assert keys and all(
        k.startswith("tokenlimit:{shared}:per_header:x-api-key:tokens:60:") for k in keys
    )
    assert not any("team-a" in k for k in keys)


def test_reservations_are_seen_by_every_gateway_at_once(filter_wasm, bridge, clock):
    first = gateway(filter_wasm, bridge, clock, admission="reserve", default_output_tokens=60)
    second = gateway(filter_wasm, bridge, clock, admission="reserve", default_output_tokens=60)
    # Both admitted before either answers: the second reservation does not fit.
    in_flight = first.http_stream()
    in_flight.request_headers(
        {":method": "GET", ":path": "/v1/models", ":authority": "x", "x-api-key": "r"},
        end_of_stream=True,
    )
    first.run_pending()
    assert in_flight.local_response is None
    assert refused(ask(second, "r", settle=False))


def test_redis_down_fails_open_and_the_circuit_stops_calling(
    filter_wasm, bridge, clock, redis_server
):
    host = gateway(filter_wasm, bridge, clock)
    assert not refused(ask(host, "k"))
    redis_server.kill()
    calls_before = len(host.http_calls)
    for _ in range(6):
        stream = ask(host, "k", 1000, 1000)
        assert stream.local_response is None  # failure_mode open: admitted
    # Three failures open the circuit; later requests do not call Redis at all.
    assert len(host.http_calls) - calls_before == 3
    warnings = [m for m in host.log_messages(LogLevel.WARN) if "redis store unavailable" in m]
    assert len(warnings) == 1 and "Redis is unreachable" in warnings[0]
    assert host.metrics["tokenlimit.redis_circuit_open"] == 1
    # Redis returns; after the back-off one probe goes through and the circuit closes. The
    # bridge reconnects in real time, so on a loaded machine the first probe may still fail:
    # then the back-off (at most 30 s) is waited out again, a bounded number of times.
    redis_server.restart()
    clock.advance(1.5)
    for _ in range(20):
        assert not refused(ask(host, "k"))  # open: admitted whether or not the probe worked
        if host.metrics["tokenlimit.redis_circuit_open"] == 0:
            break
        time.sleep(0.25)
        clock.advance(31)
    assert any("redis store recovered" in m for m in host.log_messages())
    assert host.metrics["tokenlimit.redis_circuit_open"] == 0


def test_failure_mode_closed_rejects_with_503(filter_wasm, bridge, clock, redis_server):
    host = gateway(filter_wasm, bridge, clock, failure_mode="closed")
    redis_server.kill()
    rejection = ask(host, "k").local_response
    assert rejection is not None and rejection.status == 503
    assert rejection.body == b"Token budget store unavailable"


def test_failure_mode_local_enforces_the_local_budget(filter_wasm, bridge, clock, redis_server):
    host = gateway(filter_wasm, bridge, clock, failure_mode="local")
    redis_server.kill()
    assert not refused(ask(host, "k", 60, 40))
    assert refused(ask(host, "k"))


def test_failure_mode_local_enforces_this_gateways_share(filter_wasm, bridge, clock, redis_server):
    # Four gateways share 100 tokens a minute; alone, each may spend a quarter of it.
    host = gateway(filter_wasm, bridge, clock, failure_mode="local", local_share=0.25)
    redis_server.kill()
    assert not refused(ask(host, "k", 20, 5))
    rejection = ask(host, "k").local_response
    assert rejection is not None and dict(rejection.headers)["x-ratelimit-limit-tokens"] == "25"


def test_charges_made_during_an_outage_land_after_recovery(
    filter_wasm, bridge, clock, redis_server
):
    host = gateway(filter_wasm, bridge, clock)
    stream = host.http_stream()
    stream.request_headers(
        {":method": "GET", ":path": "/", ":authority": "x", "x-api-key": "late"}, end_of_stream=True
    )
    host.run_pending()  # admitted by Redis
    redis_server.kill()
    stream.response_headers({":status": "200", "content-type": "application/json"})
    stream.response_body(b'{"usage":{"prompt_tokens":70,"completion_tokens":30}}', True)
    stream.log()
    stream.done()
    host.run_pending()  # the settlement fails and is queued
    assert host.metrics["tokenlimit.redis_settle_retries_queued"] >= 1
    redis_server.restart()  # empty: no persistence in tests
    client = redis.Redis.from_url(redis_server.url)
    for _ in range(50):  # the bridge reconnects with its own short back-off
        clock.advance(2)
        host.tick()
        host.run_pending()
        if client.keys("tokenlimit:{shared}:*"):
            break
        time.sleep(0.1)
    assert refused(ask(gateway(filter_wasm, bridge, clock), "late"))  # the 100 tokens landed


def test_wrong_redis_password_is_named_in_one_log_line(filter_wasm, clock):
    with RedisServer(password="right") as server:
        wrong = (
            server.url.replace("redis://", "redis://:wrong@")
            if "@" not in server.url
            else server.url
        )
        bridge = Bridge(wrong)
        try:
            host = gateway(filter_wasm, bridge, clock)
            for _ in range(4):
                assert ask(host, "k").local_response is None
        finally:
            bridge.stop()
    lines = [m for m in host.log_messages(LogLevel.WARN) if "redis store unavailable" in m]
    assert len(lines) == 1 and "refused the credentials" in lines[0]


def test_unreachable_redis_is_named(filter_wasm, clock):
    bridge = Bridge(f"redis://127.0.0.1:{free_port()}")
    try:
        host = gateway(filter_wasm, bridge, clock)
        for _ in range(3):
            ask(host, "k")
    finally:
        bridge.stop()
    assert any("Redis is unreachable" in m for m in host.log_messages())


def test_a_dead_bridge_is_named_and_never_hangs_a_request(filter_wasm, clock):
    host = Host(filter_wasm, clock=clock, http_call_handler=lambda call: None)
    assert host.configure(rule())
    for _ in range(3):
        stream = host.http_stream()
        stream.request_headers(
            {":method": "GET", ":path": "/", ":authority": "x", "x-api-key": "k"},
            end_of_stream=True,
        )
        (call_id,) = host.pending_http_calls()
        assert host.http_call(call_id).timeout_ms == 500  # Envoy ends the call by then
        host.fail_http_call(call_id)
        assert stream.local_response is None and not stream.request_paused
    assert any("bridge is unreachable" in m for m in host.log_messages())
    # A failed call has no response headers: the filter does not ask for them.
    assert not host.abi_warnings
    assert host.metrics["tokenlimit.host_call_failures"] == 0


# ---- the Higress build, with Higress's Redis ABI wired to the real Redis ----------------------


def test_higress_build_uses_proxy_redis_and_shares_the_budget(higress_wasm, redis_server, clock):
    redis.Redis.from_url(redis_server.url).script_flush()  # first call must fall back to EVAL
    config = rule(
        redis={
            "service_name": "redis.default.svc.cluster.local",
            "service_port": 6379,
            "password": "",
            "timeout": 500,
        }
    )
    hosts = [
        Host(higress_wasm, clock=clock, redis_handler=redis_wire(redis_server), seed=seed)
        for seed in (1, 2)
    ]
    for host in hosts:
        assert host.configure(config), host.log_messages()
        assert host.redis_inits[-1].upstream == "outbound|6379||redis.default.svc.cluster.local"
    assert not refused(ask(hosts[0], "h", 50, 50))
    assert refused(ask(hosts[1], "h"))
    queries = [c.query for c in hosts[0].redis_calls]
    assert queries[0].startswith(b"*") and b"EVALSHA" in queries[0] and b"EVAL\r\n" in queries[1]
    # Once Redis has the script, the built-in digests hit: no more EVAL for admissions.
    (refusal,) = [c.query for c in hosts[1].redis_calls]  # refused: nothing to settle
    assert b"$7\r\nEVALSHA\r\n" in refusal and b"$4\r\nEVAL\r\n" not in refusal


def test_a_client_gone_while_redis_answers_gets_its_reservation_back(
    filter_wasm, bridge, clock, redis_server
):
    host = gateway(filter_wasm, bridge, clock, admission="reserve", default_output_tokens=80)
    stream = host.http_stream()
    headers = {":method": "GET", ":path": "/v1/models", ":authority": "x", "x-api-key": "gone"}
    stream.request_headers(headers, end_of_stream=True)  # paused: the admission is with Redis
    stream.log()
    assert stream.done() is False  # kept until Redis answers ...
    host.run_pending()  # ... which reserves 80, then the filter gives it back and lets go
    assert stream.deleted
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.keys("tokenlimit:{shared}:per_*")  # the counter (not the request marker)
    deadline = time.monotonic() + 5
    while int(client.hget(key, "u")) != 0 and time.monotonic() < deadline:
        host.run_pending()
        time.sleep(0.05)
    assert int(client.hget(key, "u")) == 0


def test_an_out_of_range_refused_index_is_a_bad_reply_not_a_rejection(
    higress_wasm: Path, clock: Clock
) -> None:
    # budget.lua answers (refused index, server time, used, limit, reset) for the one counter.
    # An index past 2^32 once wrapped to 1 in the 32-bit module and rejected the request; it is
    # a reply of the wrong shape, so failure_mode (open here) decides.
    reply = b"*5\r\n:4294967297\r\n:1700000000000\r\n:0\r\n:100\r\n:1000\r\n"
    host = Host(higress_wasm, clock=clock, redis_handler=lambda query: reply)
    assert host.configure(rule(redis={"service_name": "redis.dns", "timeout": 500}))
    stream = ask(host, "h")
    assert stream.local_response is None, stream.local_response
    assert host.metrics["tokenlimit.store_fallbacks"] == 1


def test_a_failing_host_call_is_logged_once_and_counted_every_time(
    filter_wasm: Path, clock: Clock
) -> None:
    # Envoy refuses proxy_http_call to a cluster it does not know (BAD_ARGUMENT): one log line
    # says so, the metric counts every refusal, and failure_mode (open) admits the requests.
    host = Host(filter_wasm, clock=clock, clusters={"some-other-cluster"})
    assert host.configure(rule(redis={"service_name": "no-such-bridge", "timeout": 500}))
    for _ in range(3):
        assert ask(host, "k").local_response is None
    lines = [m for m in host.log_messages() if "host call proxy_http_call failed" in m]
    assert len(lines) == 1 and "status 2" in lines[0], host.log_messages()
    assert host.metrics["tokenlimit.host_call_failures"] == 3


def test_access_log_fields_are_set_when_redis_settles(
    filter_wasm: Path, bridge: Bridge, clock: Clock
) -> None:
    # Settling sends its Redis call from the root context; the request's own access-log fields
    # must still land on the request, not on the root context (where Envoy refuses them).
    stream = ask(gateway(filter_wasm, bridge, clock), "logged", 10, 30)
    assert stream.properties_set["tokenlimit_tokens"] == b"40"
    assert stream.properties_set["tokenlimit_usage"] == b"reported"
