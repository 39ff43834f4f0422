"""The bridge when Redis misbehaves: a wrong password, nothing listening, silence, a reset
mid-reply, a busy server, a kill and restart under load. Real redis-server processes, or a tiny
asyncio TCP server for the faults Redis will not produce on demand. The deadlines asserted are
the point: whatever Redis does, a caller gets an answer within the timeout plus a little slack.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from support.bridge_harness import SLACK, Answer, async_test, bridge_client, fake_redis
from support.redis_server import RedisServer, free_port
from tokenlimit.bridge.resp import encode_command

# --------------------------------------------------------------------------- Redis faults


@async_test
async def test_redis_password(redis_with_password: RedisServer) -> None:
    server = redis_with_password
    async with bridge_client(server.url, redis_password="s3cret-pass") as c:
        assert (await c.run(("PING",))).body == b"+PONG\r\n"
    with_url = server.url.replace("redis://", "redis://:s3cret-pass@")
    async with bridge_client(with_url) as c:
        assert (await c.run(("PING",))).body == b"+PONG\r\n"
    for password in ["wrong-pass", None]:
        async with bridge_client(server.url, redis_password=password, timeout_ms=3000) as c:
            for _ in range(3):
                a = await c.run(("EVAL", "return 1", 0))
                assert a.status == 503, a
                assert a.error == "redis-auth-failed", a
                assert a.elapsed < 0.5, a  # answered at once, not after the 3 s timeout
                assert b"wrong-pass" not in a.body and b"s3cret" not in a.body
                assert a.body.count(b"\n") == 1
            r = await c.get("/readyz")
            assert r.status == 503 and r.error == "redis-auth-failed"


@async_test
async def test_unreachable_redis() -> None:
    port = free_port()  # nothing listens here
    async with bridge_client(f"redis://127.0.0.1:{port}/0", timeout_ms=300) as c:
        for _ in range(3):
            a = await c.run(("PING",))
            assert a.status == 503 and a.error == "redis-unreachable", a
            assert a.elapsed < 0.3 + SLACK, a
            assert f"127.0.0.1:{port}".encode() in a.body
        r = await c.get("/readyz")
        assert r.status == 503 and r.error == "redis-unreachable"
        assert (await c.get("/healthz")).status == 200
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="redis_unreachable"}'] == 3
    async with bridge_client("redis://no-such-host.invalid:6379/0", timeout_ms=300) as c:
        a = await c.run(("PING",))
        assert a.status == 503 and a.error == "redis-unreachable", a
        assert a.elapsed < 0.3 + SLACK, a


@async_test
async def test_silent_redis_times_out() -> None:
    async with (
        fake_redis() as port,
        bridge_client(f"redis://127.0.0.1:{port}/0", timeout_ms=200) as c,
    ):
        a = await c.run(("PING",))
        assert a.status == 503 and a.error == "redis-timeout", a
        assert 0.15 < a.elapsed < 0.2 + SLACK, a
        # during the connect back-off that follows, callers get the same answer at once
        a = await c.run(("PING",))
        assert a.status == 503 and a.error == "redis-timeout", a
        assert a.elapsed < 0.2 + SLACK, a
        r = await c.get("/readyz")
        assert r.status == 503 and r.error == "redis-timeout"


@async_test
async def test_timeout_header_lowers_deadline() -> None:
    def answer_ping_only(data: bytes, writer: asyncio.StreamWriter) -> None:
        if b"PING" in data:  # the connect handshake succeeds, commands never get answers
            writer.write(b"+PONG\r\n")

    async with (
        fake_redis(answer_ping_only) as port,
        bridge_client(f"redis://127.0.0.1:{port}/0", timeout_ms=800) as c,
    ):
        await c.run(("PING",))  # connect
        a = await c.run(("EVAL", "return 1", 0), headers={"x-tokenlimit-timeout-ms": "100"})
        assert a.status == 503 and a.error == "redis-timeout", a
        assert a.elapsed < 0.1 + SLACK, a
        # a header can lower the deadline, never raise it
        a = await c.run(("EVAL", "return 1", 0), headers={"x-tokenlimit-timeout-ms": "99999"})
        assert a.status == 503 and a.error == "redis-timeout", a
        assert 0.75 < a.elapsed < 0.8 + SLACK, a


@async_test
async def test_connection_reset_mid_reply_is_redis_error() -> None:
    def half_reply(data: bytes, writer: asyncio.StreamWriter) -> None:
        if data.endswith(b"PING\r\n"):
            writer.write(b"+PONG\r\n")
        else:
            writer.write(b"$10\r\nabc")
            writer.transport.abort()

    async with (
        fake_redis(half_reply) as port,
        bridge_client(f"redis://127.0.0.1:{port}/0", timeout_ms=1000) as c,
    ):
        for _ in range(2):  # the broken connection is dropped; the next gets a fresh one
            a = await c.run(("EVAL", "return 1", 0))
            assert a.status == 503 and a.error == "redis-error", a
            assert a.elapsed < 0.5, a
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="redis_error"}'] == 2
        assert m['tokenlimit_bridge_pool_connections{state="busy"}'] == 0


@async_test
async def test_busy_redis_times_out_then_replies_stay_in_step(own_redis: RedisServer) -> None:
    async with bridge_client(own_redis.url, timeout_ms=150, pool_size=1) as c:
        assert (await c.run(("PING",))).status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", own_redis.port)
        writer.write(encode_command("DEBUG", "SLEEP", "0.5"))  # Redis is single-threaded
        await writer.drain()
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        late = await asyncio.gather(
            *(c.run(("EVAL", "return ARGV[1]", 0, f"late{i}")) for i in range(5))
        )
        for a in late:
            assert a.status == 503 and a.error == "redis-timeout", a
            assert a.elapsed < 0.15 + SLACK, a
        assert await reader.readexactly(5) == b"+OK\r\n"
        writer.close()
        assert time.monotonic() - t0 < 0.6
        # the late replies went to a dropped connection, never to a new caller
        for i in range(5):
            a = await c.run(("EVAL", "return ARGV[1]", 0, f"new{i}"))
            assert a.status == 200 and a.body == b"$4\r\nnew%d\r\n" % i, a


@async_test
async def test_redis_killed_mid_load_then_restarted(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenlimit.bridge")
    timeout = 0.3
    results: list[tuple[float, Answer, bytes]] = []
    stop = asyncio.Event()

    async with bridge_client(own_redis.url, timeout_ms=int(timeout * 1000), pool_size=4) as c:

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                tag = f"w{w}-{n}".encode()
                t = time.monotonic()
                a = await c.run(("EVAL", "return ARGV[1]", 0, tag))
                results.append((t, a, tag))

        workers = [asyncio.create_task(worker(w)) for w in range(8)]
        await asyncio.sleep(0.4)
        await asyncio.to_thread(own_redis.kill)
        killed = time.monotonic()
        await asyncio.sleep(0.6)
        await asyncio.to_thread(own_redis.restart)
        restarted = time.monotonic()
        await asyncio.sleep(1.6)  # connect back-off is capped at 1 s
        stop.set()
        await asyncio.gather(*workers)
        ready = await c.get("/readyz")
        assert ready.status == 200, ready

    assert len(results) > 100
    outage_errors = set()
    for _t, a, tag in results:
        assert a.elapsed < timeout + SLACK, a
        if a.status == 200:
            assert a.body == b"$%d\r\n%s\r\n" % (len(tag), tag), a
        else:
            assert a.status == 503, a
            assert a.error in {"redis-unreachable", "redis-error", "redis-timeout"}, a
            outage_errors.add(a.error)
    assert "redis-unreachable" in outage_errors
    before = [a for t, a, _ in results if t < killed - 0.05]
    assert before and all(a.status == 200 for a in before)
    during = [a for t, a, _ in results if killed + 0.05 < t < restarted - 0.05]
    assert during and all(a.status == 503 for a in during)
    # recovered on its own: everything in the last half second succeeded
    tail = [a for t, a, _ in results if t > restarted + 1.1]
    assert tail and all(a.status == 200 for a in tail), tail[:3]
    # one log line per state change, not one per failed request
    lines = [r.getMessage() for r in caplog.records if r.name == "tokenlimit.bridge"]
    assert lines[0].startswith("redis connected") and lines[-1].startswith("redis recovered")
    assert any(line.startswith("redis unreachable") for line in lines)
    assert len(lines) <= 6, lines
