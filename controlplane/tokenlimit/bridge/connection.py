"""One pipelined Redis connection of the bridge's pool (pool.py), and how Redis faults are told.

Split from pool.py along the seam between the wire (one connection: writes as they come,
replies framed and matched to callers in order, its own close) and the pool (how many, which
one, connecting, backing off, the Redis state log lines).
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import TYPE_CHECKING, cast

from tokenlimit.bridge.frame import ReplyFramer
from tokenlimit.bridge.resp import ProtocolError

if TYPE_CHECKING:
    from tokenlimit.bridge.pool import RedisPool


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


class Connection(asyncio.Protocol):
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


def error_text(reply: bytes) -> str:
    """The text of an error reply (``-ERR text\\r\\n`` -> ``ERR text``), else ""."""
    if not reply.startswith(b"-"):
        return ""
    return reply[1:-2].decode("utf-8", "replace")
