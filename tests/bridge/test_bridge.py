"""Tests for the RESP-over-HTTP bridge (tokenlimit.bridge), against real redis-server processes.

Nothing is mocked: every test talks HTTP over real sockets to an in-process bridge, which talks
to a real Redis (tests/redis_server.py) -- or, to produce faults Redis will not produce on
demand, to a tiny asyncio TCP server that accepts and then stays silent or hangs up mid-reply.
The deadlines asserted are the point: whatever Redis does, a caller gets an answer within the
timeout plus a little scheduling slack.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_py
from support.redis_server import RedisServer, free_port
from tokenlimit.bridge.config import BridgeConfig
from tokenlimit.bridge.resp import (
    Reply,
    ReplyParser,
    encode_command,
    encode_commands,
    parse_replies,
)
from tokenlimit.bridge.server import Bridge, start

ROOT = Path(__file__).resolve().parents[2]
SLACK = 0.15  # seconds allowed beyond a deadline for scheduling on a busy CI machine
ERR = "x-tokenlimit-bridge-error"


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test on a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return wrapper


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_with_password() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret-pass") as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for tests that kill it or make it sleep."""
    with RedisServer(debug_command=True) as server:
        yield server


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes, elapsed: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    @property
    def error(self) -> str | None:
        value = self.headers.get(ERR)
        return None if value is None else str(value)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.error}, {self.body[:200]!r}, {self.elapsed:.3f}s)"


class Client:
    def __init__(self, bridge: Bridge, session: aiohttp.ClientSession) -> None:
        self.bridge = bridge
        self.session = session

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/resp"
    ) -> Answer:
        t0 = time.monotonic()
        async with self.session.post(self.bridge.url + path, data=body, headers=headers) as r:
            data = await r.read()
            return Answer(r.status, r.headers, data, time.monotonic() - t0)

    async def run(self, *commands: tuple[Any, ...], **kw: Any) -> Answer:
        return await self.post(encode_commands(commands), **kw)

    async def get(self, path: str) -> Answer:
        t0 = time.monotonic()
        async with self.session.get(self.bridge.url + path) as r:
            data = await r.read()
            return Answer(r.status, r.headers, data, time.monotonic() - t0)

    async def metrics(self) -> dict[str, float]:
        text = (await self.get("/metrics")).body.decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


# The bridge runs only scripts it knows (tests/bridge/test_bridge_guard.py); these tests
# exercise the pipe itself with scripts of their own, added to what the bridge allows.
NEVER_LOADED = "return 'known, never loaded'"
TEST_SCRIPTS = tuple(
    s.encode()
    for s in (
        "return {1, 'two', ARGV[1], {KEYS[1], false}, redis.status_reply('ok')}",
        NEVER_LOADED,
        "return redis.error_reply('MYERR custom')",
        "return nil",
        "return string.rep('x', 100000)",
        "return 7",
        "return tonumber(ARGV[1]) * 2",
        "return redis.call('SET', KEYS[1], 'v')",
        "return ARGV[1]",
        "return redis.call('SET', KEYS[1], '1')",
        "return 1",
        "return 2",
    )
)


@asynccontextmanager
async def bridge_client(redis: str, **config: Any) -> AsyncIterator[Client]:
    config.setdefault("extra_scripts", TEST_SCRIPTS)
    config.setdefault("insecure", "token" not in config)  # in-process, on loopback
    bridge = await start(BridgeConfig(redis=redis, **config))
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(bridge, session)
    finally:
        await bridge.stop()


def direct(server: RedisServer, body: bytes, count: int) -> bytes:
    """The same pipeline sent straight to Redis over a socket: the bytes the bridge must return."""
    parser = ReplyParser()
    replies: list[Reply] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(body)
        while len(replies) < count:
            replies += parser.feed(s.recv(65536))
    return b"".join(r.raw for r in replies)


@asynccontextmanager
async def fake_redis(
    on_data: Callable[[bytes, asyncio.StreamWriter], None] | None = None,
) -> AsyncIterator[int]:
    """A TCP server on a free port that reads forever; ``on_data`` may answer or hang up.
    Without it the server accepts and never says a word."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                if on_data is not None:
                    on_data(data, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in writers:
            w.transport.abort()
        server.close()


# --------------------------------------------------------------------------- round trips

SCRIPT = "return {1, 'two', ARGV[1], {KEYS[1], false}, redis.status_reply('ok')}"


@async_test
async def test_eval_evalsha_byte_exact(redis_server: RedisServer) -> None:
    sha = parse_replies(redis_server.command("SCRIPT", "LOAD", SCRIPT))[0].value
    assert isinstance(sha, bytes)
    body = encode_commands(
        [
            ("EVAL", SCRIPT, 1, "{k}", "arg"),
            ("evalsha", sha, 1, "{k}", "arg\r\nwith crlf"),
            ("EVALSHA", hashlib.sha1(NEVER_LOADED.encode()).hexdigest(), 0),  # NOSCRIPT: a reply
            ("EVAL", "return redis.error_reply('MYERR custom')", 0),
            ("EVAL", "return nil", 0),
            ("EVAL", "return string.rep('x', 100000)", 0),
            ("SCRIPT", "EXISTS", sha, "0" * 40),
            ("script", "load", "return 7"),
            ("PING",),
            ("PING", "hello"),
        ]
    )
    async with bridge_client(redis_server.url) as c:
        a = await c.post(body)
    assert a.status == 200, a
    assert a.headers["content-type"] == "application/x-redis-resp"
    assert a.body == direct(redis_server, body, 10)
    replies = parse_replies(a.body)
    assert len(replies) == 10
    assert replies[0].to_python() == [1, b"two", b"arg", [b"{k}", None], "ok"]
    assert replies[2].raw == b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    assert replies[3].raw == b"-MYERR custom\r\n"
    assert replies[4].raw == b"$-1\r\n"
    assert replies[6].to_python() == [1, 0]
    assert replies[8].raw == b"+PONG\r\n"


@async_test
async def test_pipeline_order_and_time(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        a = await c.run(*[("EVAL", "return tonumber(ARGV[1]) * 2", 0, i) for i in range(64)])
        assert a.status == 200, a
        assert [r.to_python() for r in parse_replies(a.body)] == [i * 2 for i in range(64)]
        t = await c.run(("TIME",))
        time_reply = parse_replies(t.body)[0].to_python()
        assert isinstance(time_reply, list)
        seconds, micros = time_reply
        assert abs(int(seconds) - time.time()) < 5 and 0 <= int(micros) < 1_000_000


@async_test
async def test_selects_database(redis_server: RedisServer) -> None:
    key = "{tl}:db-test"
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    async with bridge_client(url) as c:
        a = await c.run(("EVAL", "return redis.call('SET', KEYS[1], 'v')", 1, key))
        assert a.body == b"+OK\r\n"
    client = redis_py.Redis(port=redis_server.port, db=3)
    try:
        assert client.get(key) == b"v"
        assert redis_py.Redis(port=redis_server.port, db=0).get(key) is None
    finally:
        client.delete(key)


@async_test
async def test_many_concurrent_callers_share_pipelined_connections(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url, pool_size=2) as c:

        async def one(i: int) -> None:
            if i % 3 == 0:  # some callers send a two-command pipeline
                a = await c.run(("EVAL", "return ARGV[1]", 0, f"a{i}"), ("PING", f"p{i}"))
                assert a.body == f"$%d\r\na{i}\r\n$%d\r\np{i}\r\n".encode() % (
                    len(str(i)) + 1,
                    len(str(i)) + 1,
                ), a
            else:
                a = await c.run(("EVAL", "return ARGV[1]", 0, f"v{i}"))
                assert a.body == b"$%d\r\nv%d\r\n" % (len(str(i)) + 1, i), a

        await asyncio.gather(*(one(i) for i in range(400)))
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="ok"}'] == 400
        idle = m['tokenlimit_bridge_pool_connections{state="idle"}']
        busy = m['tokenlimit_bridge_pool_connections{state="busy"}']
        assert 1 <= idle + busy <= 2


# --------------------------------------------------------------------------- refusals


@async_test
async def test_disallowed_commands_are_403_and_nothing_runs(redis_server: RedisServer) -> None:
    key = "{tl}:must-not-exist"
    async with bridge_client(redis_server.url) as c:
        for command, name in [
            (("SET", "a", "b"), "SET"),
            (("flushall",), "flushall"),
            (("SCRIPT", "FLUSH"), "SCRIPT FLUSH"),
            (("SCRIPT",), "SCRIPT"),
            (("CONFIG", "SET", "requirepass", "x"), "CONFIG"),
            (("DEBUG", "SLEEP", "1"), "DEBUG"),
            (("HELLO", "3"), "HELLO"),
            (("x" * 100,), "x" * 64 + "..."),
        ]:
            a = await c.run(command)
            assert a.status == 403, a
            assert a.error == "command-not-allowed"
            assert a.body.decode() == f"command not allowed: {name}\n"
        # one bad command refuses the whole pipeline before anything is sent
        a = await c.run(
            ("EVAL", "return redis.call('SET', KEYS[1], '1')", 1, key), ("SET", key, "2")
        )
        assert a.status == 403 and a.error == "command-not-allowed"
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="forbidden"}'] == 9
        assert m['tokenlimit_bridge_commands_total{command="eval"}'] == 0
    assert redis_server.command("EXISTS", key) == b":0\r\n"


@async_test
async def test_malformed_requests_are_400(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url, max_body=4096) as c:
        for body in [
            b"",
            b"PING\r\n",
            b"*1\r\n$4\r\nPING",
            b"*1\r\n$5\r\nPING\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$4\r\nPING\r\ngarbage",
            encode_command("PING") * 65,
            b"GET / HTTP/1.1\r\n\r\n",
        ]:
            a = await c.post(body)
            assert a.status == 400, (body, a)
            assert a.error == "bad-request"
            assert a.body.startswith(b"bad RESP: ")
        a = await c.post(encode_command("EVAL", "x" * 5000, 0))
        assert a.status == 413 and a.error == "bad-request", a
        a = await c.run(("PING",), headers={"x-tokenlimit-timeout-ms": "soon"})
        assert a.status == 400 and a.error == "bad-request", a
        assert (await c.get("/v1/resp")).status == 405
        assert (await c.get("/nope")).status == 404
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="bad_request"}'] == 10
        # the bridge is still fine
        assert (await c.run(("PING",))).body == b"+PONG\r\n"


@async_test
async def test_bearer_token(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url, token="t0k3n-value") as c:
        for headers in [None, {"authorization": "Bearer wrong"}, {"authorization": "t0k3n-value"}]:
            a = await c.run(("PING",), headers=headers)
            assert a.status == 401 and a.error == "unauthorized", a
            assert b"t0k3n" not in a.body
        a = await c.run(("PING",), headers={"authorization": "Bearer t0k3n-value"})
        assert a.status == 200 and a.body == b"+PONG\r\n"
        assert (await c.get("/healthz")).status == 200  # probes need no token
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="unauthorized"}'] == 3


def test_token_and_password_come_from_files_or_env(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    pw_file = tmp_path / "pw"
    pw_file.write_text("pw-from-file\n")
    config = BridgeConfig.from_options(
        redis="redis://u@h:1/2",
        port=0,
        token_file=token_file,
        redis_password_file=pw_file,
        environ={"TOKENLIMIT_BRIDGE_TOKEN": "from-env"},
    )
    assert config.token == "from-file"
    target = config.target()
    assert (target.host, target.port, target.db, target.username) == ("h", 1, 2, "u")
    assert target.password == "pw-from-file"
    assert "pw-from-file" not in repr(config) and "from-file" not in repr(target)
    env_config = BridgeConfig.from_options(
        redis="redis://h:1", port=0, environ={"TOKENLIMIT_BRIDGE_TOKEN": "from-env"}
    )
    assert env_config.token == "from-env"
    assert env_config.target().password is None
    with pytest.raises(ValueError, match="no token"):
        BridgeConfig.from_options(redis="redis://h", port=0, environ={})
    with pytest.raises(ValueError):
        BridgeConfig(redis="rediss://h:1", token="t")
    with pytest.raises(ValueError):
        BridgeConfig(redis="redis://h:1/x", token="t")


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


# --------------------------------------------------------------------------- probes, metrics


@async_test
async def test_readyz_and_metrics(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        assert (await c.get("/healthz")).status == 200
        ready = await c.get("/readyz")
        assert ready.status == 200 and ready.body == b"ready\n"
        sha = parse_replies((await c.run(("SCRIPT", "LOAD", "return 1"))).body)[0].value
        for _ in range(3):
            await c.run(("EVALSHA", sha, 0), ("EVAL", "return 2", 0))
        await c.run(("SET", "k", "v"))
        m = await c.get("/metrics")
        assert m.status == 200
        assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = m.body.decode()
        for outcome in ["ok", "unauthorized", "forbidden", "bad_request", "redis_unreachable",
                        "redis_auth_failed", "redis_timeout", "redis_error"]:  # fmt: skip
            assert f'tokenlimit_bridge_requests_total{{outcome="{outcome}"}} ' in text
        assert "# TYPE tokenlimit_bridge_request_seconds histogram" in text
        values = await c.metrics()
        assert values['tokenlimit_bridge_requests_total{outcome="ok"}'] == 4
        assert values['tokenlimit_bridge_requests_total{outcome="forbidden"}'] == 1
        assert values['tokenlimit_bridge_commands_total{command="evalsha"}'] == 3
        assert values['tokenlimit_bridge_commands_total{command="eval"}'] == 3
        assert values['tokenlimit_bridge_commands_total{command="script_load"}'] == 1
        assert values["tokenlimit_bridge_request_seconds_count"] == 5
        assert values['tokenlimit_bridge_request_seconds_bucket{le="+Inf"}'] == 5
        buckets = [
            v for k, v in values.items() if k.startswith("tokenlimit_bridge_request_seconds_bucket")
        ]
        assert buckets == sorted(buckets)
        assert values['tokenlimit_bridge_pool_connections{state="idle"}'] >= 1
        assert values['tokenlimit_bridge_pool_connections{state="busy"}'] == 0


# --------------------------------------------------------------------------- the command


def test_command_line(redis_server: RedisServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret-token\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "controlplane"), PYTHONUNBUFFERED="1")
    env.pop("TOKENLIMIT_BRIDGE_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenlimit.bridge", "--redis", redis_server.url,
         "--listen", "0", "--token-file", str(token_file), "--timeout-ms", "400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.fullmatch(
            r"tokenlimit bridge listening on http://127\.0\.0\.1:(\d+) → redis "
            r"127\.0\.0\.1:(\d+)/0\n",
            line,
        )
        assert m, line
        assert int(m.group(2)) == redis_server.port

        async def call() -> tuple[int, bytes, int]:
            url = f"http://127.0.0.1:{m.group(1)}/v1/resp"
            async with aiohttp.ClientSession() as s:
                async with s.post(url, data=encode_command("PING")) as r:
                    denied = r.status
                async with s.post(
                    url,
                    data=encode_command("PING"),
                    headers={"authorization": "Bearer cli-secret-token"},
                ) as r:
                    return r.status, await r.read(), denied

        status, body, denied = asyncio.run(call())
        assert (status, body, denied) == (200, b"+PONG\r\n", 401)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert "redis connected" in err
        assert "cli-secret-token" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
