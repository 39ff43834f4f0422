"""tokenlimit bridge: RESP over HTTP to Redis, for stock Envoy.

Why it exists: stock Envoy's proxy-wasm ABI has no Redis client (Higress adds
``proxy_redis_*``; Envoy does not), but every filter can make ``proxy_http_call``. The
``tokenlimit.wasm`` filter therefore sends its Redis commands, already encoded as RESP, in an
HTTP body to this service, which forwards them to Redis and returns Redis' reply bytes
untouched. The filter keeps one RESP codec for both transports, and the bridge stays a dumb,
fast, bounded pipe with a command allowlist (DESIGN.md §2).

Protocol (the filter depends on this exactly)
---------------------------------------------
``POST /v1/resp``
    Body: one or more RESP arrays of bulk strings (a pipeline), at most 64 commands and
    1 MiB; each command at most 1024 arguments of at most 512 KiB (see
    :func:`tokenlimit.resp.split_commands`; inline commands are refused). Every command is
    validated before anything is sent; the whole body then goes to Redis as one pipeline on one
    pooled connection. Allowed commands (case-insensitive): ``EVALSHA``, ``EVAL``,
    ``SCRIPT LOAD``, ``SCRIPT EXISTS``, ``PING``, ``TIME``.

    ``200``, ``content-type: application/x-redis-resp``: the RESP replies concatenated in
    order, byte for byte as Redis sent them. Redis error replies (``-NOSCRIPT ...``,
    ``-ERR ...``) are replies, so they are passed through inside the 200.

    Otherwise a one-line ``text/plain`` body and ``x-tokenlimit-bridge-error``:

    ====  =========================  ========================================================
    401   ``unauthorized``           a token is configured and ``authorization: Bearer <token>``
                                     is missing or wrong (constant-time compare)
    403   ``command-not-allowed``    some command is not in the allowlist; the body names it;
                                     nothing was sent to Redis
    400   ``bad-request``            malformed RESP, more than 64 commands, a bound exceeded,
                                     or a bad ``x-tokenlimit-timeout-ms``
    413   ``bad-request``            body larger than 1 MiB
    503   ``redis-unreachable``      connect refused, DNS failure, host down (connect did not
                                     complete in time)
    503   ``redis-auth-failed``      WRONGPASS / NOAUTH / invalid password (on connect or in a
                                     reply); answered at once, never after a hang
    503   ``redis-timeout``          no complete reply within the deadline
    503   ``redis-error``            anything else (connection reset mid-reply, bad SELECT...)
    ====  =========================  ========================================================

    The 503 body is one line of details (never the password).

    Deadline: ``--timeout-ms`` (default 500) covers getting a connection, sending and reading
    every reply; a request header ``x-tokenlimit-timeout-ms: N`` lowers it for that request
    (never raises it). A caller never waits longer than the deadline plus scheduling slack.
    After a failed connect, new connects back off (25 ms doubling to 1 s) and callers get the
    last connect error at once instead of waiting, so an outage costs the filter nothing.

``GET /healthz``  200 while the process runs.
``GET /readyz``   200 when a Redis ``PING`` through the pool succeeds within the timeout, else
                  503 with the same ``x-tokenlimit-bridge-error`` values.
``GET /metrics``  Prometheus text: ``tokenlimit_bridge_requests_total{outcome}``,
                  ``tokenlimit_bridge_commands_total{command}``,
                  ``tokenlimit_bridge_request_seconds`` (histogram, /v1/resp only) and
                  ``tokenlimit_bridge_pool_connections{state="idle|busy"}``.
``/healthz``, ``/readyz`` and ``/metrics`` need no token (probes and scrapers).

Security note: ``EVAL`` runs arbitrary Lua, which may call any Redis command, so the allowlist
stops accidents and casual misuse, not a hostile caller. The bearer token (and binding to
loopback or a private network) is the real boundary. Secrets are taken by reference only:
``--token-file`` or ``TOKENLIMIT_BRIDGE_TOKEN``, ``--redis-password-file`` (or the URL).

Connections: a pool of up to ``--pool-size`` persistent Redis connections, opened lazily
(AUTH / SELECT / PING on connect). Each connection pipelines: requests from many HTTP callers
are written back to back and matched to replies in FIFO order by a per-connection reader task;
a request goes to an idle connection if there is one, otherwise to the least-loaded one while
the pool grows in the background. A connection that breaks, or on which a request timed out
(its late replies would be out of step), takes no new work and is closed -- never reused.
One log line per Redis state change (connected / unreachable / auth failed / timeout /
error / recovered), never per request.

Run::

    python -m tokenlimit.bridge --redis redis://[user[:password]@]host:port[/db] --listen PORT \\
        [--host 127.0.0.1] [--token-file F] [--redis-password-file F] [--pool-size 8] \\
        [--timeout-ms 500]

It prints ``tokenlimit bridge listening on http://HOST:PORT → redis HOST:PORT/DB`` (flushed)
once it accepts connections and stops cleanly on SIGINT / SIGTERM. In-process:
``bridge = await start(BridgeConfig(...))`` (``.url``, ``.port``, ``await bridge.stop()``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import hmac
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from tokenlimit.resp import ProtocolError, Reply, ReplyParser, encode_command, split_commands

log = logging.getLogger("tokenlimit.bridge")

RESP_CONTENT_TYPE = "application/x-redis-resp"
ERROR_HEADER = "x-tokenlimit-bridge-error"
TIMEOUT_HEADER = "x-tokenlimit-timeout-ms"
TOKEN_ENV = "TOKENLIMIT_BRIDGE_TOKEN"

MAX_COMMANDS = 64
MAX_BODY = 1024 * 1024

# Allowed commands -> metric label. SCRIPT is allowed only with these subcommands.
_COMMANDS = {b"EVALSHA": "evalsha", b"EVAL": "eval", b"PING": "ping", b"TIME": "time"}
_SCRIPT_SUBCOMMANDS = {b"LOAD": "script_load", b"EXISTS": "script_exists"}
COMMAND_LABELS = ("evalsha", "eval", "script_load", "script_exists", "ping", "time")

OUTCOMES = (
    "ok",
    "unauthorized",
    "forbidden",
    "bad_request",
    "redis_unreachable",
    "redis_auth_failed",
    "redis_timeout",
    "redis_error",
)
HISTOGRAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_BACKOFF_FIRST = 0.025
_BATCH_MAX = 128  # HTTP requests coalesced into one write to Redis
_AUTH_ERRORS = (b"-NOAUTH", b"-WRONGPASS")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect; parsed from ``redis://[user[:password]@]host:port[/db]``."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> RedisTarget:
        """``password`` (from a file) overrides one in the URL."""
        if "://" not in url:
            url = "redis://" + url
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (use redis://)")
        try:
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"invalid port in Redis URL: {e}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"Redis URL database must be a number, got {path!r}")
        user = unquote(parts.username) if parts.username else None
        url_password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=int(path or 0),
            username=user,
            password=password if password is not None else url_password,
        )

    def describe(self) -> str:
        """``host:port/db`` -- never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.db}"


def read_secret(path: str | os.PathLike[str]) -> str:
    """A secret from a file, surrounding whitespace (the usual trailing newline) removed."""
    value = Path(path).read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


@dataclass
class BridgeConfig:
    """Everything the bridge needs. Secrets are values here; take them from files or the
    environment with :meth:`from_options`, never from a command line."""

    redis: str = "redis://127.0.0.1:6379/0"
    port: int = 0  # 0: any free port (see Bridge.port)
    host: str = "127.0.0.1"
    token: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)
    pool_size: int = 8
    timeout_ms: int = 500
    max_commands: int = MAX_COMMANDS
    max_body: int = MAX_BODY
    reconnect_max_ms: int = 1000

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.timeout_ms < 1:
            raise ValueError("timeout_ms must be at least 1")
        self.target()  # validates the URL early

    def target(self) -> RedisTarget:
        return RedisTarget.parse(self.redis, self.redis_password)

    @classmethod
    def from_options(
        cls,
        *,
        redis: str,
        port: int,
        host: str = "127.0.0.1",
        token_file: str | os.PathLike[str] | None = None,
        redis_password_file: str | os.PathLike[str] | None = None,
        pool_size: int = 8,
        timeout_ms: int = 500,
        environ: Mapping[str, str] | None = None,
    ) -> BridgeConfig:
        """Resolves secret references: the token from ``token_file``, else from
        ``$TOKENLIMIT_BRIDGE_TOKEN``; the Redis password from ``redis_password_file``, else
        from the URL."""
        env = os.environ if environ is None else environ
        token = read_secret(token_file) if token_file else (env.get(TOKEN_ENV) or None)
        password = read_secret(redis_password_file) if redis_password_file else None
        return cls(
            redis=redis,
            port=port,
            host=host,
            token=token,
            redis_password=password,
            pool_size=pool_size,
            timeout_ms=timeout_ms,
        )


# --------------------------------------------------------------------------- Redis pool


class RedisFault(Exception):
    """A Redis-side failure, classified for the ``x-tokenlimit-bridge-error`` header."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code  # redis-unreachable | redis-auth-failed | redis-timeout | redis-error
        self.detail = detail

    @property
    def outcome(self) -> str:
        return self.code.replace("-", "_")


class _Pending:
    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Reply]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Reply] = []


class _Conn:
    """One Redis connection: writes pipelines as they come, a reader task matches replies to
    callers in FIFO order."""

    __slots__ = (
        "_loop",
        "alive",
        "draining",
        "outbox",
        "parser",
        "pending",
        "pool",
        "reader",
        "task",
        "writer",
    )

    def __init__(
        self,
        pool: RedisPool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: ReplyParser,
    ) -> None:
        self.pool = pool
        self.reader = reader
        self.writer = writer
        self.parser = parser
        self.pending: collections.deque[_Pending] = collections.deque()
        self.outbox: list[bytes] = []
        self.alive = True
        self.draining = False
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(self._read_loop())

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Reply]]:
        """Queues a pipeline; the bytes go out at the end of this loop iteration together with
        those of every other caller that picked this connection meanwhile (one syscall here,
        one read for Redis, one read for the replies)."""
        future: asyncio.Future[list[Reply]] = self._loop.create_future()
        self.pending.append(_Pending(future, count))
        out = self.outbox
        out.append(payload)
        if len(out) == 1:
            self._loop.call_soon(self._flush)
            self.pool._batching = self
        return future

    def _flush(self) -> None:
        if self.pool._batching is self:
            self.pool._batching = None
        out = self.outbox
        if self.alive and out:
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def abandon(self) -> None:
        """A caller gave up waiting: replies still due would be out of step for a new caller,
        so take no new work and close once the callers still waiting are served."""
        if not self.draining:
            self.draining = True
            self.pool._forget(self)
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.draining and all(p.future.done() for p in self.pending):
            self.close(None)

    async def _read_loop(self) -> None:
        reader, parser, pending = self.reader, self.parser, self.pending
        fault: RedisFault
        try:
            while True:
                data = await reader.read(262144)
                if not data:
                    fault = RedisFault("redis-error", f"{self._where()} closed the connection")
                    break
                for reply in parser.feed(data):
                    if not pending:
                        raise ProtocolError("reply without a request")
                    head = pending[0]
                    head.replies.append(reply)
                    if len(head.replies) == head.count:
                        pending.popleft()
                        if not head.future.done():
                            head.future.set_result(head.replies)
                if self.draining:
                    self._close_if_drained()
                    if not self.alive:
                        return
        except asyncio.CancelledError:
            return
        except ProtocolError as e:
            fault = RedisFault("redis-error", f"unparseable reply from {self._where()}: {e}")
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            fault = RedisFault("redis-error", f"connection to {self._where()} lost: {reason}")
        self.close(fault)

    def _where(self) -> str:
        return f"redis {self.pool.target.describe()}"

    def close(self, fault: RedisFault | None) -> None:
        """Closes for good; callers still waiting get ``fault``."""
        if not self.alive:
            return
        self.alive = False
        self.pool._forget(self)
        waiting = [p for p in self.pending if not p.future.done()]
        self.pending.clear()
        if waiting and fault is not None:
            self.pool._note_fault(fault)
        for p in waiting:
            p.future.set_exception(fault or RedisFault("redis-error", "connection closed"))
            p.future.exception()  # a caller may have gone already: mark retrieved
        self.writer.transport.abort()
        if self.task is not asyncio.current_task():
            self.task.cancel()


class RedisPool:
    """Up to ``size`` pipelined connections, opened lazily, with connect back-off."""

    def __init__(self, target: RedisTarget, size: int, timeout: float, backoff_max: float):
        self.target = target
        self.size = size
        self.timeout = timeout
        self.backoff_max = max(backoff_max, _BACKOFF_FIRST)
        self._conns: list[_Conn] = []
        self._connecting: asyncio.Task[_Conn] | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_fault: RedisFault | None = None
        self._state: str | None = None  # None until the first connect attempt ends
        self._closed = False
        self._connect_phase = ""  # "tcp" or "handshake" while a connect is in progress
        self._batching: _Conn | None = None  # connection whose outbox is not yet flushed

    # ---- public

    async def execute(self, payload: bytes, count: int, timeout: float) -> list[Reply]:
        """Sends ``count`` already-validated commands; returns their replies.

        Raises :class:`RedisFault`; never waits longer than ``timeout`` seconds.
        """
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = self._pick()
                if conn is None:
                    conn = await self._wait_for_connection()
                future = conn.send(payload, count)
                try:
                    replies = await future
                except asyncio.CancelledError:
                    conn.abandon()
                    raise
        except TimeoutError:
            where, ms = self.target.describe(), f"{timeout * 1000:.0f} ms"
            if conn is None and self._connect_phase == "tcp":
                # still waiting for the TCP handshake: the host is down or unroutable
                fault = RedisFault(
                    "redis-unreachable", f"connect to redis {where} did not complete within {ms}"
                )
            else:
                fault = RedisFault("redis-timeout", f"no reply from redis {where} within {ms}")
            self._note_fault(fault)
            raise fault from None
        for reply in replies:
            if reply.kind == "-" and reply.raw.startswith(_AUTH_ERRORS):
                fault = RedisFault("redis-auth-failed", _error_text(reply))
                conn.close(fault)
                self._note_fault(fault)
                raise fault
        if self._state != "ok":
            self._set_state("ok", "")
        return replies

    def counts(self) -> tuple[int, int]:
        """(idle, busy) open connections."""
        busy = sum(1 for c in self._conns if c.pending)
        return len(self._conns) - busy, busy

    def warm_up(self) -> None:
        """Starts one connect in the background (so the state log line comes early)."""
        if self._connecting is None and not self._conns:
            self._spawn_connect()

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        for conn in list(self._conns):
            conn.close(RedisFault("redis-error", "bridge shutting down"))
        await asyncio.sleep(0)

    # ---- internals

    def _pick(self) -> _Conn | None:
        batching = self._batching
        if (
            batching is not None
            and batching.alive
            and not batching.draining
            and len(batching.outbox) < _BATCH_MAX
        ):
            return batching  # join the pipeline being collected in this loop iteration
        best: _Conn | None = None
        for conn in self._conns:
            if not conn.pending:
                return conn
            if best is None or len(conn.pending) < len(best.pending):
                best = conn
        if (
            best is not None
            and len(self._conns) < self.size
            and self._connecting is None
            and time.monotonic() >= self._retry_at
        ):
            self._spawn_connect()  # grow while this request pipelines on a busy connection
        return best

    async def _wait_for_connection(self) -> _Conn:
        while True:
            conn = self._pick()
            if conn is not None:
                return conn
            task = self._connecting
            if task is None:
                wait = self._retry_at - time.monotonic()
                if wait > 0 and self._last_fault is not None:
                    last = self._last_fault
                    raise RedisFault(
                        last.code, f"{last.detail} (next connect in {wait * 1000:.0f} ms)"
                    )
                task = self._spawn_connect()
            await asyncio.shield(task)

    def _spawn_connect(self) -> asyncio.Task[_Conn]:
        if self._closed:
            raise RedisFault("redis-error", "bridge shutting down")
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connecting = task
        task.add_done_callback(self._connect_done)
        return task

    def _connect_done(self, task: asyncio.Task[_Conn]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here; waiters get it through their shield

    async def _connect(self) -> _Conn:
        t = self.target
        where = f"redis {t.describe()}"
        self._connect_phase = "tcp"
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(t.host, t.port)
            except TimeoutError:
                raise RedisFault(
                    "redis-unreachable",
                    f"connect to {where} timed out after {self.timeout * 1000:.0f} ms",
                ) from None
            except socket.gaierror as e:
                raise RedisFault(
                    "redis-unreachable", f"cannot resolve {t.host!r}: {e.strerror or e}"
                ) from None
            except OSError as e:
                reason = os.strerror(e.errno) if e.errno else str(e)
                raise RedisFault(
                    "redis-unreachable", f"cannot connect to {where}: {reason}"
                ) from None
            self._connect_phase = "handshake"
            try:
                parser = await self._handshake(reader, writer, where)
            except BaseException:
                writer.transport.abort()
                raise
        except RedisFault as fault:
            self._connect_failed(fault)
            raise
        finally:
            self._connect_phase = ""
        conn = _Conn(self, reader, writer, parser)
        if self._closed:
            conn.close(None)
            raise RedisFault("redis-error", "bridge shutting down")
        self._conns.append(conn)
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_fault = None
        if self._state != "ok":
            self._set_state("ok", "")
        return conn

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> ReplyParser:
        t = self.target
        steps: list[tuple[str, bytes]] = []
        if t.password is not None:
            auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
            steps.append(("AUTH", encode_command(*auth)))
        if t.db:
            steps.append((f"SELECT {t.db}", encode_command("SELECT", t.db)))
        steps.append(("PING", encode_command("PING")))
        writer.write(b"".join(data for _, data in steps))
        parser = ReplyParser()
        replies: list[Reply] = []
        try:
            async with asyncio.timeout(self.timeout):
                while len(replies) < len(steps):
                    data = await reader.read(65536)
                    if not data:
                        raise RedisFault("redis-error", f"{where} closed the connection")
                    replies += parser.feed(data)
        except TimeoutError:
            raise RedisFault(
                "redis-timeout",
                f"{where} accepted the connection but did not answer within "
                f"{self.timeout * 1000:.0f} ms",
            ) from None
        except ProtocolError as e:
            raise RedisFault("redis-error", f"{where} sent an unparseable reply: {e}") from None
        except OSError as e:
            raise RedisFault("redis-error", f"{where}: {e.strerror or e}") from None
        for (step, _), reply in zip(steps, replies, strict=False):
            if not reply.is_error:
                continue
            text = _error_text(reply)
            upper = text.upper()
            if step == "AUTH" or upper.startswith(("NOAUTH", "WRONGPASS")) or ("PASSWORD" in upper):
                raise RedisFault("redis-auth-failed", f"{where}: {step}: {text}")
            raise RedisFault("redis-error", f"{where}: {step}: {text}")
        return parser

    def _connect_failed(self, fault: RedisFault) -> None:
        self._backoff = min(self.backoff_max, (self._backoff * 2) or _BACKOFF_FIRST)
        self._retry_at = time.monotonic() + self._backoff
        self._last_fault = fault
        self._note_fault(fault)

    def _note_fault(self, fault: RedisFault) -> None:
        self._set_state(fault.code, fault.detail)

    def _set_state(self, state: str, detail: str) -> None:
        previous, self._state = self._state, state
        if state == previous or self._closed:
            return
        if state == "ok":
            verb = "recovered" if previous is not None else "connected"
            log.info("redis %s: %s", verb, self.target.describe())
        else:
            name = state.removeprefix("redis-").replace("-", " ")
            log.warning("redis %s: %s", name, detail)

    def _forget(self, conn: _Conn) -> None:
        if conn in self._conns:
            self._conns.remove(conn)


def _error_text(reply: Reply) -> str:
    value = reply.value if isinstance(reply.value, bytes) else b""
    return value.decode("utf-8", "replace")


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Counters and one histogram, exposed in Prometheus text format by hand."""

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.commands = dict.fromkeys(COMMAND_LABELS, 0)
        self.bucket_counts = [0] * (len(HISTOGRAM_BUCKETS) + 1)
        self.seconds_sum = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] += 1
        self.bucket_counts[bisect.bisect_left(HISTOGRAM_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds

    def render(self, pool: RedisPool) -> str:
        lines = [
            "# HELP tokenlimit_bridge_requests_total /v1/resp requests by outcome.",
            "# TYPE tokenlimit_bridge_requests_total counter",
        ]
        lines += [
            f'tokenlimit_bridge_requests_total{{outcome="{k}"}} {v}'
            for k, v in self.outcomes.items()
        ]
        lines += [
            "# HELP tokenlimit_bridge_commands_total Redis commands forwarded, by command.",
            "# TYPE tokenlimit_bridge_commands_total counter",
        ]
        lines += [
            f'tokenlimit_bridge_commands_total{{command="{k}"}} {v}'
            for k, v in self.commands.items()
        ]
        lines += [
            "# HELP tokenlimit_bridge_request_seconds Time to answer a /v1/resp request.",
            "# TYPE tokenlimit_bridge_request_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip(HISTOGRAM_BUCKETS, self.bucket_counts, strict=False):
            cumulative += n
            lines.append(f'tokenlimit_bridge_request_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self.bucket_counts[-1]
        lines.append(f'tokenlimit_bridge_request_seconds_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"tokenlimit_bridge_request_seconds_sum {self.seconds_sum:.6f}")
        lines.append(f"tokenlimit_bridge_request_seconds_count {cumulative}")
        idle, busy = pool.counts()
        lines += [
            "# HELP tokenlimit_bridge_pool_connections Open Redis connections by state.",
            "# TYPE tokenlimit_bridge_pool_connections gauge",
            f'tokenlimit_bridge_pool_connections{{state="idle"}} {idle}',
            f'tokenlimit_bridge_pool_connections{{state="busy"}} {busy}',
        ]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTTP


def command_label(command: Sequence[bytes]) -> str | None:
    """The metric label of an allowed command, or None if it is not allowed."""
    name = command[0]
    if len(name) > 16:
        return None
    name = name.upper()
    label = _COMMANDS.get(name)
    if label is None and name == b"SCRIPT" and len(command) > 1 and len(command[1]) <= 16:
        label = _SCRIPT_SUBCOMMANDS.get(command[1].upper())
    return label


def _command_name(command: Sequence[bytes]) -> str:
    words = command[:2] if command[0].upper() == b"SCRIPT" else command[:1]
    text = " ".join(w.decode("utf-8", "backslashreplace") for w in words)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:64] + ("..." if len(text) > 64 else "")


def _text(status: int, error: str | None, message: str) -> web.Response:
    headers = {ERROR_HEADER: error} if error else None
    return web.Response(status=status, text=message + "\n", headers=headers)


class Bridge:
    """A running bridge: HTTP server plus Redis pool. Create with :func:`start`."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.target = config.target()
        self.timeout = config.timeout_ms / 1000
        self.pool = RedisPool(
            self.target, config.pool_size, self.timeout, config.reconnect_max_ms / 1000
        )
        self.metrics = Metrics()
        self._auth = None if config.token is None else b"Bearer " + config.token.encode("utf-8")
        self._runner: web.ServerRunner | None = None
        self.host = config.host
        self.port = config.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def banner(self) -> str:
        return f"tokenlimit bridge listening on {self.url} → redis {self.target.describe()}"

    async def _start(self) -> None:
        server = web.Server(
            self._handle,
            request_factory=self._make_request,
            access_log=None,
        )
        runner = web.ServerRunner(server, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.pool.warm_up()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        # the low-level server's default request has a fixed 1 MiB body limit; ours is config
        loop = asyncio.get_running_loop()
        return BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=self.config.max_body
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.pool.close()

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ---- handlers

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/v1/resp":
            if request.method != "POST":
                return _text(405, "bad-request", "use POST for /v1/resp")
            return await self._resp(request)
        if request.method not in ("GET", "HEAD"):
            return _text(405, None, f"use GET for {path}")
        if path == "/healthz":
            return web.Response(text="ok\n")
        if path == "/readyz":
            return await self._readyz()
        if path == "/metrics":
            return web.Response(
                body=self.metrics.render(self.pool).encode(),
                headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"},
            )
        return _text(404, None, f"not found: {path}")

    def _refuse(
        self, start: float, status: int, error: str, outcome: str, message: str
    ) -> web.Response:
        self.metrics.observe(outcome, time.perf_counter() - start)
        return _text(status, error, message)

    async def _resp(self, request: BaseRequest) -> web.Response:
        start = time.perf_counter()
        if self._auth is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self._auth):
                return self._refuse(
                    start, 401, "unauthorized", "unauthorized", "missing or wrong bearer token"
                )
        timeout = self.timeout
        raw_timeout = request.headers.get(TIMEOUT_HEADER)
        if raw_timeout is not None:
            raw_timeout = raw_timeout.strip()
            if not (raw_timeout.isascii() and raw_timeout.isdigit()) or int(raw_timeout) < 1:
                return self._refuse(
                    start,
                    400,
                    "bad-request",
                    "bad_request",
                    f"{TIMEOUT_HEADER} must be a positive integer of milliseconds",
                )
            timeout = min(timeout, int(raw_timeout) / 1000)
        length = request.content_length
        if length is not None and length > self.config.max_body:
            return self._refuse(
                start,
                413,
                "bad-request",
                "bad_request",
                f"body of {length} bytes (at most {self.config.max_body})",
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(
                start,
                413,
                "bad-request",
                "bad_request",
                f"body larger than {self.config.max_body} bytes",
            )
        try:
            commands = split_commands(body, max_commands=self.config.max_commands)
        except ProtocolError as e:
            return self._refuse(start, 400, "bad-request", "bad_request", f"bad RESP: {e}")
        labels = []
        for command in commands:
            label = command_label(command)
            if label is None:
                return self._refuse(
                    start,
                    403,
                    "command-not-allowed",
                    "forbidden",
                    f"command not allowed: {_command_name(command)}",
                )
            labels.append(label)
        try:
            replies = await self.pool.execute(body, len(commands), timeout)
        except RedisFault as fault:
            return self._refuse(start, 503, fault.code, fault.outcome, fault.detail)
        counts = self.metrics.commands
        for label in labels:
            counts[label] += 1
        self.metrics.observe("ok", time.perf_counter() - start)
        return web.Response(
            body=replies[0].raw if len(replies) == 1 else b"".join(r.raw for r in replies),
            content_type=RESP_CONTENT_TYPE,
        )

    async def _readyz(self) -> web.Response:
        try:
            replies = await self.pool.execute(encode_command("PING"), 1, self.timeout)
        except RedisFault as fault:
            return _text(503, fault.code, fault.detail)
        if replies[0].is_error:
            return _text(503, "redis-error", f"PING: {_error_text(replies[0])}")
        return web.Response(text="ready\n")


async def start(config: BridgeConfig) -> Bridge:
    """Starts serving on the running loop; returns once the port accepts connections."""
    bridge = Bridge(config)
    await bridge._start()
    return bridge


async def _serve(config: BridgeConfig) -> None:
    bridge = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    banner = bridge.banner()
    try:
        print(banner, flush=True)
    except UnicodeEncodeError:
        print(banner.replace("→", "->"), flush=True)
    try:
        await stop.wait()
    finally:
        await bridge.stop()


def run(config: BridgeConfig) -> None:
    """Serves until SIGINT or SIGTERM, then stops cleanly."""
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    if config.token is None:
        log.warning(
            "no token configured (--token-file or $%s): any client that can reach "
            "%s:%s may run Lua on Redis",
            TOKEN_ENV,
            config.host,
            config.port,
        )
    asyncio.run(_serve(config))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tokenlimit.bridge",
        description="RESP-over-HTTP bridge from Envoy's tokenlimit filter to Redis.",
    )
    parser.add_argument("--redis", required=True, help="redis://[user[:password]@]host:port[/db]")
    parser.add_argument("--listen", type=int, required=True, metavar="PORT", help="0: any")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument(
        "--token-file", help=f"file holding the bearer token (else ${TOKEN_ENV}; else none)"
    )
    parser.add_argument(
        "--redis-password-file", help="file holding the Redis password (overrides the URL's)"
    )
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--timeout-ms", type=int, default=500)
    args = parser.parse_args(argv)
    try:
        config = BridgeConfig.from_options(
            redis=args.redis,
            port=args.listen,
            host=args.host,
            token_file=args.token_file,
            redis_password_file=args.redis_password_file,
            pool_size=args.pool_size,
            timeout_ms=args.timeout_ms,
        )
    except (OSError, ValueError) as e:
        parser.error(str(e))
    try:
        run(config)
    except OSError as e:
        print(
            f"tokenlimit bridge: cannot listen on {args.host}:{args.listen}: {e}",
            file=sys.stderr,
        )
        raise SystemExit(1) from e


if __name__ == "__main__":
    main()
