"""The harness the bridge tests share: an in-process bridge, an HTTP client that times each
answer, a silent or rude fake Redis, and the same pipeline sent straight to Redis.

Why a module of its own: the bridge tests are split by behaviour (round trips, refusals, Redis
faults) into several files that all drive the bridge the same way; a conftest cannot be imported
by name, so the importable pieces live here and only the fixtures live in tests/bridge/conftest.py.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from tokenlimit.bridge.config import BridgeConfig
from tokenlimit.bridge.resp import Reply, ReplyParser, encode_commands
from tokenlimit.bridge.server import Bridge, start

from support.redis_server import RedisServer

SLACK = 0.15  # seconds allowed beyond a deadline for scheduling on a busy CI machine
ERR = "x-tokenlimit-bridge-error"


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test on a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return wrapper


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
