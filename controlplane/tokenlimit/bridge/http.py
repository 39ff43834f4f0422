"""The bridge's HTTP/1.1 server: one asyncio.Protocol per connection, httptools for parsing.

Why not aiohttp's server (which the bridge used before): the bridge answers one small POST per
call and needs none of a web framework; measured with bench/bridge.py (GET /healthz, no
Redis), aiohttp's request and response objects, router and middleware machinery cost 48-61 us
of CPU per request, about half of what a whole call cost the bridge. This protocol parses the
head with httptools (llhttp in C, uvicorn's parser), keeps only the four headers the bridge
reads, and writes each answer as one pre-framed bytes object: 11 us for the same GET
(bench/README.md, ``bridge.py``, has the before/after figures).

What it keeps from the server it replaces, because the protocol and guard depend on it:
keep-alive and pipelining (answers in request order; past ``PIPELINE_MAX`` answers owed, or
while the client does not read, the connection is not read), ``Expect: 100-continue``, chunked
bodies, HEAD, a bounded head (``MAX_HEAD_BYTES``, else 400 and closed), idle keep-alive
connections closed after ``KEEPALIVE_S`` (aiohttp's default), and the guard's read deadline: a
request head must arrive within ``read_timeout`` of its first byte (or of connecting), else the
connection is dropped; a body must arrive within ``read_timeout`` of its head, else 408. Timers
are armed only when a head or body is left incomplete at the end of a read, so a request that
arrives in one segment (every call from Envoy) arms none.

The application is a :class:`Handler`: ``head()`` may answer as soon as the head is in (the
bridge refuses a bad token or a too-large ``content-length`` before reading any body),
``handle()`` answers a complete request, at once or as an awaitable.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from email.utils import formatdate
from typing import Any, Protocol, cast

import httptools

log = logging.getLogger("tokenlimit.bridge")

MAX_HEAD_BYTES = 65536  # request line plus headers (aiohttp allowed 8190 per line)
KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this (aiohttp's default)
#: Answers owed on one connection before it is read no further (a client that pipelines and
#: never reads would otherwise grow the bridge's memory); reading resumes below half of it.
PIPELINE_MAX = 32

#: The headers the bridge reads; every other header is parsed and dropped.
WANTED = frozenset((b"authorization", b"x-tokenlimit-timeout-ms", b"content-length", b"expect"))

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Request Entity Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_IDLE, _HEAD, _BODY = 0, 1, 2
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT = b"text/plain; charset=utf-8"

_date_second = -1
_date_header = b""


def _date() -> bytes:
    """The Date header, formatted once a second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = formatdate(now, usegmt=True).encode("ascii")
    return _date_header


class Answer:
    """One response: status, body, content type and extra headers, pre-framed by the
    connection (which knows about HEAD and keep-alive)."""

    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = _TEXT,
        headers: bytes = b"",
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers  # extra header lines, each ending in CRLF
        self.close = close


def text(status: int, message: str, error: str | None = None, close: bool = False) -> Answer:
    """A one-line text/plain answer, with ``x-tokenlimit-bridge-error`` when ``error``."""
    extra = b"x-tokenlimit-bridge-error: %s\r\n" % error.encode("ascii") if error else b""
    return Answer(status, (message + "\n").encode("utf-8"), headers=extra, close=close)


def frame(answer: Answer, head_only: bool, keep_alive: bool) -> bytes:
    body = answer.body
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ndate: %s\r\n%s%s\r\n"
            % (
                answer.status,
                _REASONS.get(answer.status, b"Unknown"),
                answer.content_type,
                len(body),
                _date(),
                answer.headers,
                b"" if keep_alive else b"connection: close\r\n",
            ),
            b"" if head_only else body,
        )
    )


class Request:
    """What the bridge reads of one request. ``headers`` holds the first value of each
    :data:`WANTED` header (lower-case names, values stripped)."""

    __slots__ = ("_parts", "_size", "body", "headers", "keep_alive", "method", "path", "started")

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.keep_alive = True
        self.started = 0.0  # time.perf_counter() when the head was complete
        self._parts: list[bytes] = []
        self._size = 0


#: An answer now, later (a future the handler resolves), or from a coroutine (run as a task).
Result = Answer | asyncio.Future[Answer] | Coroutine[Any, Any, Answer]


class Handler(Protocol):
    max_body: int

    def head(self, request: Request) -> Answer | None:
        """An answer as soon as the head is in (the body is then discarded), or None."""

    def handle(self, request: Request) -> Result:
        """The answer to a complete request."""

    def body_too_large(self, request: Request) -> Answer: ...

    def body_too_slow(self, request: Request) -> Answer: ...


class _Slot:
    """An answer owed, in request order."""

    __slots__ = ("close", "data", "head_only", "keep_alive")

    def __init__(self, head_only: bool = False, keep_alive: bool = False) -> None:
        self.data: bytes | None = None
        self.close = False
        self.head_only = head_only  # a HEAD request: the answer's headers only
        self.keep_alive = keep_alive


class HttpConnection(asyncio.Protocol):
    """One client connection. Registered in ``registry`` while open (the guard's count)."""

    def __init__(
        self,
        handler: Handler,
        registry: dict[asyncio.BaseTransport, HttpConnection],
        read_timeout: float,
    ) -> None:
        self._handler = handler
        self._registry = registry
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._state = _IDLE
        self._request = Request()
        self._url = b""
        self._head_bytes = 0
        self._discard = False  # the current request was answered at its head
        self._slots: collections.deque[_Slot] = collections.deque()
        self._slot: _Slot | None = None  # the current request's
        self._closing = False
        self._paused = False  # reading paused: too many answers owed, or the client not reading
        self._write_blocked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for = _IDLE
        self._idle_since = 0.0

    # ---- deadlines

    def _schedule(self, phase: int, delay: float) -> None:
        if self._timer is not None:
            if self._timer_for == phase:
                return  # this phase's deadline runs from its first byte
            self._timer.cancel()
        self._timer_for = phase
        self._timer = self._loop.call_later(delay, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self._closing:
            return
        phase, state = self._timer_for, self._state
        if phase == _HEAD and (state == _HEAD or (state == _IDLE and not self._slots)):
            self._closing = True
            transport.abort()  # a head that never completed: no answer (slowloris)
        elif phase == _BODY and state == _BODY and self._discard:
            self._closing = True
            transport.close()  # answered at its head; the rest of the body never came
        elif phase == _BODY and state == _BODY:
            slot = self._slot
            answer = self._handler.body_too_slow(self._request)
            self._state = _IDLE
            self._discard = True
            if slot is not None:
                self._fill(slot, answer, close=True)
        elif phase == _IDLE and state == _IDLE and not self._slots:
            left = self._idle_since + KEEPALIVE_S - self._loop.time()
            if left <= 0:
                self._closing = True
                transport.close()
            else:
                self._schedule(_IDLE, left)

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        self._registry[transport] = self
        self._schedule(_HEAD, self._read_timeout)  # the first head is due from connecting on

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._closing = True
        if self._transport is not None:
            self._registry.pop(self._transport, None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._bad_request("malformed HTTP request")
            return
        except httptools.HttpParserUpgrade:
            self._bad_request("protocol upgrades are not supported")
            return
        state = self._state
        if state == _HEAD:
            self._schedule(_HEAD, self._read_timeout)
        elif state == _BODY:
            self._schedule(_BODY, self._read_timeout)
        elif self._timer is not None and self._timer_for != _IDLE:
            self._cancel_timer()

    # ---- httptools callbacks (must not raise: the parser would turn it into an error)

    def on_message_begin(self) -> None:
        self._state = _HEAD
        self._request = Request()
        self._url = b""
        self._head_bytes = 0
        self._discard = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ValueError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        name = name.lower()
        if name in WANTED:
            self._request.headers.setdefault(name, value.strip())

    def on_headers_complete(self) -> None:
        self._state = _BODY
        request = self._request
        request.started = time.perf_counter()
        request.method = self._parser.get_method()
        url = self._url
        cut = url.find(b"?")
        request.path = url if cut < 0 else url[:cut]
        request.keep_alive = self._parser.should_keep_alive()
        slot = self._slot = _Slot(request.method == b"HEAD", request.keep_alive)
        self._slots.append(slot)
        if len(self._slots) >= PIPELINE_MAX:
            self._reading()
        answer = self._handler.head(request)
        if answer is not None:
            self._discard = True
            self._fill(slot, answer, answer.close)
        elif request.headers.get(b"expect", b"").lower() == b"100-continue":
            assert self._transport is not None
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._discard:
            return
        request = self._request
        request._parts.append(body)
        request._size += len(body)
        if request._size > self._handler.max_body:
            self._discard = True
            request._parts.clear()
            if self._slot is not None:
                self._fill(self._slot, self._handler.body_too_large(request), close=True)

    def on_message_complete(self) -> None:
        self._state = _IDLE
        slot, self._slot = self._slot, None
        if self._discard or slot is None:
            return
        request = self._request
        parts = request._parts
        request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            result = self._handler.handle(request)
        except Exception:
            log.exception("bridge: handler failed")
            result = text(500, "internal error")
        if isinstance(result, Answer):
            self._fill(slot, result, result.close)
            return
        later = result if isinstance(result, asyncio.Future) else self._loop.create_task(result)
        later.add_done_callback(lambda f: self._done(slot, f))

    # ---- answers, in order

    def _done(self, slot: _Slot, later: asyncio.Future[Answer]) -> None:
        if later.cancelled():
            answer = text(503, "the bridge is shutting down", close=True)
        elif later.exception() is not None:
            log.error("bridge: handler failed", exc_info=later.exception())
            answer = text(500, "internal error")
        else:
            answer = later.result()
        self._fill(slot, answer, answer.close)

    def _fill(self, slot: _Slot, answer: Answer, close: bool) -> None:
        keep_alive = slot.keep_alive and not close
        slot.data = frame(answer, slot.head_only, keep_alive)
        slot.close = not keep_alive
        self._flush()

    def _reading(self) -> None:
        """Reads while fewer than PIPELINE_MAX answers are owed and the client keeps reading."""
        transport = self._transport
        if transport is None or self._closing:
            return
        stop = self._write_blocked or len(self._slots) >= PIPELINE_MAX
        if stop and not self._paused:
            self._paused = True
            transport.pause_reading()
        elif self._paused and not self._write_blocked and len(self._slots) < PIPELINE_MAX // 2:
            self._paused = False
            transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_blocked = True
        self._reading()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._reading()

    def _flush(self) -> None:
        slots, transport = self._slots, self._transport
        if transport is None:
            return
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            if not self._closing:
                transport.write(slot.data)  # type: ignore[arg-type]
            if slot.close:
                self._closing = True
                slots.clear()
                transport.close()
                return
        if self._paused:
            self._reading()
        if not slots and self._state == _IDLE:
            self._idle_since = self._loop.time()
            if self._timer is None:
                self._schedule(_IDLE, KEEPALIVE_S)

    def _bad_request(self, message: str) -> None:
        slot = self._slot
        if slot is None:
            slot = _Slot()
            self._slots.append(slot)
        self._state = _IDLE
        self._discard = True
        self._fill(slot, text(400, message), close=True)
