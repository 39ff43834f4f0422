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
import functools
import logging
import os
import socket
import time
from collections.abc import Callable

from tokenlimit.bridge.config import RedisTarget
from tokenlimit.bridge.connection import Connection, Outcome, RedisFault, error_text
from tokenlimit.bridge.resp import encode_command

log = logging.getLogger("tokenlimit.bridge")

_BACKOFF_FIRST = 0.025
_BATCH_MAX = 128  # HTTP requests coalesced into one write to Redis
_AUTH_ERRORS = (b"-NOAUTH", b"-WRONGPASS")


class RedisPool:
    """Up to ``size`` pipelined connections, opened lazily, with connect back-off."""

    def __init__(self, target: RedisTarget, size: int, timeout: float, backoff_max: float):
        self.target = target
        self.size = size
        self.timeout = timeout
        self.backoff_max = max(backoff_max, _BACKOFF_FIRST)
        self._conns: list[Connection] = []
        self._connecting: asyncio.Task[Connection] | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_fault: RedisFault | None = None
        self._state: str | None = None  # None until the first connect attempt ends
        self._closed = False
        self._connect_phase = ""  # "tcp" or "handshake" while a connect is in progress
        self._batching: Connection | None = None  # connection whose outbox is not yet flushed

    # ---- public

    async def execute(self, payload: bytes, count: int, timeout: float) -> list[bytes]:
        """Sends ``count`` already-validated commands; returns their replies, each as Redis'
        wire bytes.

        Raises :class:`RedisFault`; never waits longer than ``timeout`` seconds.
        """
        conn: Connection | None = None
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
        conn: Connection,
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
        conn: Connection,
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

    def _pick(self) -> Connection | None:
        batching = self._batching
        if (
            batching is not None
            and batching.alive
            and not batching.draining
            and len(batching.outbox) < _BATCH_MAX
        ):
            return batching  # join the pipeline being collected in this loop iteration
        best: Connection | None = None
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

    async def _wait_for_connection(self) -> Connection:
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

    def _spawn_connect(self) -> asyncio.Task[Connection]:
        if self._closed:
            raise RedisFault("redis-error", "bridge shutting down")
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connecting = task
        task.add_done_callback(self._connect_done)
        return task

    def _connect_done(self, task: asyncio.Task[Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here; waiters get it through their shield

    async def _connect(self) -> Connection:
        t = self.target
        where = f"redis {t.describe()}"
        self._connect_phase = "tcp"
        loop = asyncio.get_running_loop()
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    _, conn = await loop.create_connection(lambda: Connection(self), t.host, t.port)
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

    async def _handshake(self, conn: Connection, where: str) -> None:
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

    def _forget(self, conn: Connection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
