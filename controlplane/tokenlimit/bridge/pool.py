"""The bridge's Redis connections: up to ``size`` pipelined connections, opened lazily.

Each connection pipelines: requests from many HTTP callers are written back to back (one
write per loop iteration) and matched to replies in FIFO order as they arrive (each connection
is an asyncio.Protocol); a request goes to an idle connection if there is one, otherwise to the
least-loaded one while the pool grows in the background. A connection that breaks, or on which
a request timed out (its late replies would be out of step), takes no new work and is closed --
never reused.
After a failed connect, new connects back off (25 ms doubling to ``backoff_max``) and callers
get the last connect error at once instead of waiting. One log line per Redis state change.

Why hand-written and not redis.asyncio (+ hiredis 3.5, redis-py 8.2): measured with
``bench/bridge.py --pools hand,redis-py`` (one run, same 2-core machine, 32 clients, 5 s per
phase, pool 8; the redis-py variant is bench/_redispy_pool.py, the same server with this class
swapped out):

====================  =======  ======  ======  ====================  ===================
pool                  req/s    p50 ms  p99 ms  bridge CPU / request  of which RESP/Redis
====================  =======  ======  ======  ====================  ===================
this one              5,073    5.91    13.36   120 us                ~59 us
redis.asyncio         3,497    8.95    22.74   159 us                ~107 us
====================  =======  ======  ======  ====================  ===================

Re-measured after issue 17's fast path (connections as asyncio.Protocols, frame.py, submit;
bench/README.md, ``bridge.py``): 32 us of bridge CPU per call with this pool, 103 us with
redis.asyncio in the same server.

redis.asyncio also cannot keep the protocol: it decodes replies, so they must be re-encoded
and a simple string (``+OK``) would come back as a bulk string, while the filter is promised
Redis' bytes unchanged; and it holds a connection per request, where this pool lets concurrent
callers share one pipelined write and one read.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import cast

from tokenlimit.bridge.config import RedisTarget
from tokenlimit.bridge.frame import ReplyFramer
from tokenlimit.bridge.resp import ProtocolError, encode_command

log = logging.getLogger("tokenlimit.bridge")

_BACKOFF_FIRST = 0.025
_BATCH_MAX = 128  # HTTP requests coalesced into one write to Redis
_AUTH_ERRORS = (b"-NOAUTH", b"-WRONGPASS")


class RedisFault(Exception):
    """A Redis-side failure, classified for the ``x-tokenlimit-bridge-error`` header."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code  # redis-unreachable | redis-auth-failed | redis-timeout | redis-error
        self.detail = detail

    @property
    def outcome(self) -> str:
        return self.code.replace("-", "_")


Outcome = list[bytes] | RedisFault  # what submit() hands its callback


class _Pending:
    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[bytes]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[bytes] = []


class _Conn(asyncio.Protocol):
    """One Redis connection: writes pipelines as they come; replies are framed as they arrive
    (frame.py: their ends only, the bytes kept) and matched to callers in FIFO order.

    An asyncio.Protocol, not a StreamReader and a reader task: the replies are matched in the
    transport's own callback, without a task switch per read (bench/README.md, bridge.py)."""

    __slots__ = (
        "_loop",
        "alive",
        "draining",
        "framer",
        "handshaking",
        "outbox",
        "pending",
        "pool",
        "transport",
    )

    def __init__(self, pool: RedisPool) -> None:
        self.pool = pool
        self.framer = ReplyFramer()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.outbox: list[bytes] = []
        self.alive = True
        self.draining = False
        self.handshaking = True  # faults are worded as the connect's until it is in the pool
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[bytes]]:
        """Queues a pipeline; the bytes go out at the end of this loop iteration together with
        those of every other caller that picked this connection meanwhile (one syscall here,
        one read for Redis, one read for the replies)."""
        future: asyncio.Future[list[bytes]] = self._loop.create_future()
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
        if self.alive and out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
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

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.alive:
            return
        pending = self.pending
        try:
            for reply in self.framer.feed(data):
                if not pending:
                    raise ProtocolError("reply without a request")
                head = pending[0]
                head.replies.append(reply)
                if len(head.replies) == head.count:
                    pending.popleft()
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except ProtocolError as e:
            where = self._where()
            if self.handshaking:
                detail = f"{where} sent an unparseable reply: {e}"
            else:
                detail = f"unparseable reply from {where}: {e}"
            self.close(RedisFault("redis-error", detail))
            return
        if self.draining:
            self._close_if_drained()

    def eof_received(self) -> bool:
        self.close(RedisFault("redis-error", f"{self._where()} closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            fault = RedisFault("redis-error", f"{self._where()} closed the connection")
        else:
            errno = getattr(exc, "errno", None)
            reason = os.strerror(errno) if errno else str(exc)
            if self.handshaking:
                fault = RedisFault("redis-error", f"{self._where()}: {reason}")
            else:
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
        if waiting and fault is not None and not self.handshaking:
            self.pool._note_fault(fault)
        for p in waiting:
            p.future.set_exception(fault or RedisFault("redis-error", "connection closed"))
            p.future.exception()  # a caller may have gone already: mark retrieved
        if self.transport is not None:
            self.transport.abort()


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

    async def execute(self, payload: bytes, count: int, timeout: float) -> list[bytes]:
        """Sends ``count`` already-validated commands; returns their replies, each as Redis'
        wire bytes.

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
            if reply.startswith(_AUTH_ERRORS):
                fault = RedisFault("redis-auth-failed", error_text(reply))
                conn.close(fault)
                self._note_fault(fault)
                raise fault
        if self._state != "ok":
            self._set_state("ok", "")
        return replies

    def submit(
        self, payload: bytes, count: int, timeout: float, done: Callable[[Outcome], None]
    ) -> bool:
        """:meth:`execute` without a task, when a connection is at hand: sends at once and
        calls ``done`` once, from the loop, with the replies or the :class:`RedisFault` that
        execute would have returned or raised. Returns False, sending nothing, when no
        connection is open (the caller then awaits execute, which waits for one).

        Why: a task and an ``asyncio.timeout`` per call cost ~8 us of the ~40 us a call costs
        the bridge (bench/bridge.py, py-spy); a future callback and one timer do the same."""
        conn = self._pick()
        if conn is None:
            return False
        future = conn.send(payload, count)
        loop = conn._loop
        timer = loop.call_later(timeout, self._expired, conn, future, timeout, done)
        future.add_done_callback(functools.partial(self._answered, conn, timer, done))
        return True

    def _answered(
        self,
        conn: _Conn,
        timer: asyncio.TimerHandle,
        done: Callable[[Outcome], None],
        future: asyncio.Future[list[bytes]],
    ) -> None:
        if future.cancelled():
            return  # timed out: _expired answered
        timer.cancel()
        error = future.exception()
        if error is not None:
            done(error if isinstance(error, RedisFault) else RedisFault("redis-error", str(error)))
            return
        replies = future.result()
        for reply in replies:
            if reply.startswith(_AUTH_ERRORS):
                fault = RedisFault("redis-auth-failed", error_text(reply))
                conn.close(fault)
                self._note_fault(fault)
                done(fault)
                return
        if self._state != "ok":
            self._set_state("ok", "")
        done(replies)

    def _expired(
        self,
        conn: _Conn,
        future: asyncio.Future[list[bytes]],
        timeout: float,
        done: Callable[[Outcome], None],
    ) -> None:
        if future.done():
            return
        future.cancel()
        conn.abandon()
        where, ms = self.target.describe(), f"{timeout * 1000:.0f} ms"
        fault = RedisFault("redis-timeout", f"no reply from redis {where} within {ms}")
        self._note_fault(fault)
        done(fault)

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
        loop = asyncio.get_running_loop()
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    _, conn = await loop.create_connection(lambda: _Conn(self), t.host, t.port)
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
                await self._handshake(conn, where)
            except BaseException:
                conn.close(None)
                raise
        except RedisFault as fault:
            self._connect_failed(fault)
            raise
        finally:
            self._connect_phase = ""
        conn.handshaking = False
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

    async def _handshake(self, conn: _Conn, where: str) -> None:
        t = self.target
        steps: list[tuple[str, bytes]] = []
        if t.password is not None:
            auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
            steps.append(("AUTH", encode_command(*auth)))
        if t.db:
            steps.append((f"SELECT {t.db}", encode_command("SELECT", t.db)))
        steps.append(("PING", encode_command("PING")))
        future = conn.send(b"".join(data for _, data in steps), len(steps))
        try:
            async with asyncio.timeout(self.timeout):
                replies = await future
        except TimeoutError:
            raise RedisFault(
                "redis-timeout",
                f"{where} accepted the connection but did not answer within "
                f"{self.timeout * 1000:.0f} ms",
            ) from None
        for (step, _), reply in zip(steps, replies, strict=False):
            if not reply.startswith(b"-"):
                continue
            text = error_text(reply)
            upper = text.upper()
            if step == "AUTH" or upper.startswith(("NOAUTH", "WRONGPASS")) or ("PASSWORD" in upper):
                raise RedisFault("redis-auth-failed", f"{where}: {step}: {text}")
            raise RedisFault("redis-error", f"{where}: {step}: {text}")

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


def error_text(reply: bytes) -> str:
    """The text of an error reply (``-ERR text\\r\\n`` -> ``ERR text``), else ""."""
    if not reply.startswith(b"-"):
        return ""
    return reply[1:-2].decode("utf-8", "replace")
