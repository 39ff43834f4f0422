"""One HTTP stream as Envoy's wasm Context drives it: header/body/trailer events, pausing and
continuing, local replies, and what the test can read back."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from support.proxywasm_host.abi import (
    ROOT_CONTEXT_ID,
    Action,
    HostError,
    StreamType,
    bytes_of,
)
from support.proxywasm_host.maps import HeaderInput, HeaderMap, response_headers_of

if TYPE_CHECKING:
    from support.proxywasm_host.host import Host

PropertyValue = bytes | str | int | float | bool


@dataclass
class LocalResponse:
    status: int
    details: str
    body: bytes
    headers: list[tuple[str, str]]
    grpc_status: int  # -1: none


def property_bytes(value: PropertyValue) -> bytes:
    """Envoy serializes strings raw, integers as 8-byte little-endian, bools as one byte."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return bytes_of(value)
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    raise TypeError(f"unsupported property value {value!r}")


class _Side:
    """One direction (request or response) of an HTTP stream, as Envoy's Context sees it."""

    def __init__(self, request: bool) -> None:
        self.name = "request" if request else "response"  # names the proxy_on_<name>_* exports
        self.headers: HeaderMap | None = None
        self.trailers: HeaderMap | None = None
        self.headers_live = False
        self.trailers_live = False
        self.body: bytearray | None = None  # the buffer the module can read/modify right now
        self.body_eos = False
        self.buffering = False  # the last body callback paused: new data is appended
        self.paused_in: str | None = None  # headers | body | trailers
        # Paused in headers as StopAllIteration (the host holds body and trailers), not as
        # StopIteration (they still reach the module; Continue from them releases the headers).
        self.stopped_all = False
        self.held = bytearray()  # data that arrived while paused in headers
        self.held_eos = False
        self.held_trailers: HeaderMap | None = None
        self.forwarded: list[bytes] = []
        self.last_body: bytes | None = None
        self.started = False
        self.terminated = False  # no more events are delivered (local reply / reset)

    def forget_live(self) -> None:
        self.headers_live = False
        self.trailers_live = False
        self.body = None


class HttpStream:
    """One HTTP context (fresh id, parent = root context 1)."""

    def __init__(
        self, host: Host, context_id: int, properties: Mapping[str, PropertyValue]
    ) -> None:
        self.host = host
        self.id = context_id
        self.properties: dict[str, bytes] = {k: property_bytes(v) for k, v in properties.items()}
        self.properties_set: dict[str, bytes] = {}
        self.local_responses: list[LocalResponse] = []
        self.continued: list[StreamType] = []
        self.closed: list[StreamType] = []
        self.actions: list[tuple[str, Action]] = []
        self.done_result: bool | None = None
        self.deleted = False
        self._req = _Side(True)
        self._resp = _Side(False)
        self._log_phase = False
        self._local_reply_delivered = False
        self._last_raw = 0  # what the last callback returned, before the host maps it

    # -- what the test reads -------------------------------------------------------------------
    @property
    def request_header_map(self) -> HeaderMap:
        return self._req.headers if self._req.headers is not None else HeaderMap()

    @property
    def response_header_map(self) -> HeaderMap:
        return self._resp.headers if self._resp.headers is not None else HeaderMap()

    @property
    def request_trailer_map(self) -> HeaderMap:
        return self._req.trailers if self._req.trailers is not None else HeaderMap()

    @property
    def response_trailer_map(self) -> HeaderMap:
        return self._resp.trailers if self._resp.trailers is not None else HeaderMap()

    @property
    def last_request_body(self) -> bytes | None:
        return self._req.last_body

    @property
    def last_response_body(self) -> bytes | None:
        return self._resp.last_body

    @property
    def request_body_chunks_forwarded(self) -> list[bytes]:
        return self._req.forwarded

    @property
    def response_body_chunks_forwarded(self) -> list[bytes]:
        return self._resp.forwarded

    @property
    def forwarded_response_body(self) -> bytes:
        """Everything forwarded downstream so far."""
        return b"".join(self._resp.forwarded)

    @property
    def local_response(self) -> LocalResponse | None:
        return self.local_responses[0] if self.local_responses else None

    @property
    def request_paused(self) -> bool:
        return self._req.paused_in is not None

    @property
    def response_paused(self) -> bool:
        return self._resp.paused_in is not None

    # -- events --------------------------------------------------------------------------------
    def request_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action:
        return self._headers(self._req, headers, end_of_stream)

    def request_body(self, data: bytes, end_of_stream: bool) -> Action:
        return self._data(self._req, data, end_of_stream)

    def request_trailers(self, trailers: HeaderInput) -> Action:
        return self._trailers(self._req, trailers)

    def response_headers(self, headers: int | HeaderInput, end_of_stream: bool = False) -> Action:
        return self._headers(self._resp, response_headers_of(headers), end_of_stream)

    def response_body(self, data: bytes, end_of_stream: bool) -> Action:
        return self._data(self._resp, data, end_of_stream)

    def response_trailers(self, trailers: HeaderInput) -> Action:
        return self._trailers(self._resp, trailers)

    def log(self) -> None:
        """proxy_on_log, with the final maps readable (Envoy's access-log phase)."""
        self._log_phase = True
        try:
            self.host._call("proxy_on_log", self.id, ctx=self.id)
        finally:
            self._log_phase = False

    def done(self) -> bool:
        """proxy_on_done, then proxy_on_delete when it returns true."""
        if self.deleted:
            raise HostError(f"context {self.id} was already deleted")
        self.done_result = bool(self.host._call("proxy_on_done", self.id, ctx=self.id, default=1))
        if self.done_result:
            self.host._delete_context(self)
        else:
            self.host._pending_done.add(self.id)
        return self.done_result

    def complete(
        self,
        request_headers: HeaderInput,
        response_headers: int | HeaderInput = 200,
        response_body_chunks: Iterable[bytes] = (),
        request_body: bytes | None = None,
        *,
        response_trailers: HeaderInput | None = None,
        flush: bool = True,
    ) -> HttpStream:
        """Drives a whole exchange: request, response (unless a local response was sent), log,
        done. With ``flush`` the host answers pending call-outs through its handlers after each
        step (``Host.run_pending``); a request still paused after that is an error."""
        self.request_headers(request_headers, end_of_stream=request_body is None)
        self._settle(flush)
        if request_body is not None and not self._req.terminated:
            self.request_body(request_body, True)
            self._settle(flush)
        if self.local_response is None:
            if self.request_paused:
                raise HostError(
                    f"stream {self.id}: request still paused in {self._req.paused_in}; pending "
                    f"http calls {self.host.pending_http_calls()}, redis calls "
                    f"{self.host.pending_redis_calls()}"
                )
            chunks = list(response_body_chunks)
            last = response_trailers is None
            self.response_headers(response_headers, end_of_stream=not chunks and last)
            self._settle(flush)
            for i, chunk in enumerate(chunks):
                if self._resp.terminated:
                    break
                self.response_body(chunk, end_of_stream=last and i == len(chunks) - 1)
                self._settle(flush)
            if response_trailers is not None and not self._resp.terminated:
                self.response_trailers(response_trailers)
                self._settle(flush)
        self.log()
        self.done()
        return self

    # -- mechanics -----------------------------------------------------------------------------
    def _settle(self, flush: bool) -> None:
        if flush:
            self.host.run_pending()

    def _invoke(self, side: _Side, event: str, *args: int) -> Action:
        export = f"proxy_on_{side.name}_{event}"
        raw = self.host._call(export, self.id, *args, ctx=self.id, drain=False)
        self._last_raw = raw
        action = Action.PAUSE if (raw != 0 or self.host._last_call_stopped) else Action.CONTINUE
        self.actions.append((export, action))
        return action

    def _headers(self, side: _Side, headers: HeaderInput, end_of_stream: bool) -> Action:
        if side.terminated:
            return Action.PAUSE
        side.started = True
        side.headers = HeaderMap(headers)
        side.headers_live = True
        action = self._invoke(side, "headers", len(side.headers), int(end_of_stream))
        if action == Action.CONTINUE:
            side.headers_live = False
        else:
            side.paused_in = "headers"
            # Envoy keeps a plain pause (1) as StopIteration only when allowed to; a stop after
            # a local reply, or any other value, is StopAllIteration.
            side.stopped_all = not (
                self.host.allow_on_headers_stop_iteration
                and self._last_raw == 1
                and not self.host._last_call_stopped
            )
        self.host._drain()
        return action

    def _data(self, side: _Side, data: bytes, end_of_stream: bool) -> Action:
        if side.terminated:
            return Action.PAUSE
        if side.paused_in == "headers" and side.stopped_all:  # the host holds the data
            side.held += data
            side.held_eos = side.held_eos or end_of_stream
            return Action.PAUSE
        if side.buffering and side.body is not None:
            side.body += data
        else:
            side.body = bytearray(data)
        side.body_eos = end_of_stream
        action = self._invoke(side, "body", len(side.body), int(end_of_stream))
        side.last_body = bytes(side.body) if side.body is not None else b""
        if action == Action.CONTINUE:
            side.forwarded.append(side.last_body)
            side.body = None
            side.buffering = False
            side.paused_in = None
        else:
            side.buffering = not self.host._last_call_stopped
            side.paused_in = "body"
        self.host._drain()
        return action

    def _trailers(self, side: _Side, trailers: HeaderInput) -> Action:
        if side.terminated:
            return Action.PAUSE
        if side.paused_in == "headers" and side.stopped_all:
            side.held_trailers = HeaderMap(trailers)
            return Action.PAUSE
        side.trailers = HeaderMap(trailers)
        side.trailers_live = True
        action = self._invoke(side, "trailers", len(side.trailers))
        if action == Action.CONTINUE:
            side.trailers_live = False
        else:
            side.paused_in = "trailers"
        self.host._drain()
        return action

    def _continue(self, side: _Side) -> None:
        """Deferred effect of proxy_continue_stream (Envoy's continueDecoding/Encoding)."""
        paused_in, side.paused_in = side.paused_in, None
        if paused_in == "headers":
            if side.held or side.held_eos:
                data, eos = bytes(side.held), side.held_eos
                side.held, side.held_eos = bytearray(), False
                self._data(side, data, eos)
            if side.held_trailers is not None and side.paused_in is None:
                trailers, side.held_trailers = side.held_trailers, None
                self._trailers(side, trailers)
        elif paused_in == "body":
            # Envoy forwards what it buffered, as the module left it.
            side.buffering = False
            side.forwarded.append(
                bytes(side.body) if side.body is not None else side.last_body or b""
            )
            side.body = None

    def _deliver_local_reply(self) -> None:
        """Envoy sends a local reply through the encoder filters, this one included."""
        reply = self.local_response
        if reply is None or self._local_reply_delivered:
            return
        self._local_reply_delivered = True
        self._req.terminated = True
        self._req.paused_in = None
        if self._resp.started:
            self._resp.terminated = True
            return
        headers = HeaderMap([(":status", str(reply.status))])
        if reply.body:
            headers.add("content-length", str(len(reply.body)))
            headers.add("content-type", "text/plain")
        for key, value in reply.headers:
            headers.add(key, value)
        self._headers(self._resp, headers, end_of_stream=not reply.body)
        if reply.body:
            self._data(self._resp, reply.body, True)
        self._resp.terminated = True

    def __repr__(self) -> str:
        return f"HttpStream(id={self.id})"


class RootContext:
    """The plugin's root context: the host needs only its id."""

    id = ROOT_CONTEXT_ID


Context = HttpStream | RootContext
