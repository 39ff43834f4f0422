"""Call-outs: proxy_http_call and Higress's proxy_redis_call. Nothing is asynchronous: the host
records each call and the test (or a handler) answers it through respond_*/flush_*/fail_*."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support.proxywasm_host.abi import ROOT_CONTEXT_ID, HostError, Status, hostcall, text_of
from support.proxywasm_host.maps import HeaderInput, HeaderMap, response_headers_of
from support.proxywasm_host.vm import VmBase


@dataclass
class HttpCall:
    call_id: int
    upstream: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    timeout_ms: int
    context_id: int  # the context that was current/effective when the call was made
    state: str = "pending"  # pending | answered | failed
    handler_declined: bool = False
    response: tuple[list[tuple[str, str]], bytes, list[tuple[str, str]]] | None = None

    def header(self, name: str) -> str | None:
        return HeaderMap(self.headers).get(name)


@dataclass
class RedisInit:
    upstream: str
    username: str
    password: str
    timeout_ms: int
    status: Status


@dataclass
class RedisCall:
    callout_id: int
    upstream: str
    query: bytes
    context_id: int
    state: str = "pending"  # pending | answered | failed
    reply: bytes | None = None


HttpCallResult = tuple[Any, ...]  # (status | headers, body[, trailers])
HttpCallHandler = Callable[[HttpCall], HttpCallResult | None]
RedisHandler = Callable[[bytes], bytes | None]


class CallOuts(VmBase):
    """Records http and redis calls, answers them on the root context (id 1)."""

    clusters: set[str] | None
    http_call_handler: HttpCallHandler | None
    redis_handler: RedisHandler | None
    http_calls: list[HttpCall]
    redis_inits: list[RedisInit]
    redis_calls: list[RedisCall]
    _http_response: tuple[HeaderMap, bytes, HeaderMap] | None
    _call_status: tuple[int, str]
    _redis_reply: bytes | None
    _redis_upstreams: set[str]
    _next_http_call_id: int
    _next_redis_call_id: int

    # -- what the test does: answer, fail, flush -----------------------------------------------
    def respond_http_call(
        self,
        call_id: int,
        headers: int | HeaderInput = 200,
        body: bytes = b"",
        trailers: HeaderInput | None = None,
    ) -> None:
        """Answers a pending proxy_http_call: proxy_on_http_call_response(1, id, ...), with the
        headers (map 6), body (buffer 4) and trailers (map 7) readable during the callback."""
        call = self._pending_http(call_id)
        response = (response_headers_of(headers), bytes(body), HeaderMap(trailers))
        call.state = "answered"
        call.response = (response[0].items(), response[1], response[2].items())
        self._http_response = response
        self._call_status = (0, "")
        try:
            self._call(
                "proxy_on_http_call_response",
                ROOT_CONTEXT_ID,
                call_id,
                len(response[0]),
                len(response[1]),
                len(response[2]),
                drain=False,
            )
        finally:
            self._http_response = None  # Envoy drops the response before deferred actions
        self._drain()

    def fail_http_call(self, call_id: int) -> None:
        """Envoy's onHttpCallFailure (a reset): callback with 0 headers, 0 body, 0 trailers and
        proxy_get_status = (BROKEN_CONNECTION, "reset")."""
        call = self._pending_http(call_id)
        call.state = "failed"
        self._call_status = (int(Status.BROKEN_CONNECTION), "reset")
        try:
            self._call(
                "proxy_on_http_call_response", ROOT_CONTEXT_ID, call_id, 0, 0, 0, drain=False
            )
        finally:
            self._call_status = (0, "")
        self._drain()

    def timeout_http_call(self, call_id: int) -> None:
        """What Envoy really does when an http_call times out: a 504 response from its router."""
        self.respond_http_call(
            call_id,
            [(":status", "504"), ("content-length", "24"), ("content-type", "text/plain")],
            b"upstream request timeout",
        )

    def flush_http_calls(self) -> int:
        """Answers pending http calls through ``http_call_handler``; returns how many."""
        if self.http_call_handler is None:
            return 0
        delivered = 0
        for call in [c for c in self.http_calls if c.state == "pending" and not c.handler_declined]:
            result = self.http_call_handler(call)
            if result is None:
                call.handler_declined = True  # a timeout: the test decides (fail/timeout_...)
                continue
            if not isinstance(result, tuple) or not 2 <= len(result) <= 3:
                raise HostError(
                    f"http_call_handler must return None or (status|headers, body[, trailers]),"
                    f" got {result!r}"
                )
            self.respond_http_call(call.call_id, *result)
            delivered += 1
        return delivered

    def respond_redis_call(
        self, callout_id: int, reply: bytes | None, status: int | None = None
    ) -> None:
        """proxy_on_redis_call_response(1, id, status, size) with the RESP reply as buffer 9;
        ``reply=None`` is a failure (status 1 unless given)."""
        call = next((c for c in self.redis_calls if c.callout_id == callout_id), None)
        if call is None or call.state != "pending":
            raise HostError(f"no pending redis call {callout_id}")
        failed = reply is None
        call.state = "failed" if failed else "answered"
        call.reply = reply
        code = (1 if failed else 0) if status is None else status
        self._redis_reply = b"" if reply is None else bytes(reply)
        try:
            self._call(
                "proxy_on_redis_call_response",
                ROOT_CONTEXT_ID,
                callout_id,
                code,
                len(self._redis_reply),
                drain=False,
            )
        finally:
            self._redis_reply = None
        self._drain()

    def flush_redis(self) -> int:
        """Runs pending redis calls through ``redis_handler`` in call order; returns how many."""
        if self.redis_handler is None:
            return 0
        delivered = 0
        for call in [c for c in self.redis_calls if c.state == "pending"]:
            self.respond_redis_call(call.callout_id, self.redis_handler(call.query))
            delivered += 1
        return delivered

    def pending_http_calls(self) -> list[int]:
        return [c.call_id for c in self.http_calls if c.state == "pending"]

    def pending_redis_calls(self) -> list[int]:
        return [c.callout_id for c in self.redis_calls if c.state == "pending"]

    def http_call(self, call_id: int) -> HttpCall:
        for call in self.http_calls:
            if call.call_id == call_id:
                return call
        raise KeyError(call_id)

    # -- mechanics -----------------------------------------------------------------------------
    def _pending_http(self, call_id: int) -> HttpCall:
        call = next((c for c in self.http_calls if c.call_id == call_id), None)
        if call is None or call.state != "pending":
            raise HostError(
                f"no pending http call {call_id} (pending: {self.pending_http_calls()})"
            )
        return call

    def _known_cluster(self, upstream: str) -> bool:
        return self.clusters is None or upstream.split("?", 1)[0] in self.clusters

    # -- host functions ------------------------------------------------------------------------
    @hostcall("proxy_http_call", "iiiiiiiiii")
    def _proxy_http_call(
        self,
        uptr: int,
        ulen: int,
        hptr: int,
        hlen: int,
        bptr: int,
        blen: int,
        tptr: int,
        tlen: int,
        timeout: int,
        ret_id: int,
    ) -> int:
        upstream = text_of(self._read(uptr, ulen))
        headers = self._decode_pairs("proxy_http_call headers", self._read(hptr, hlen))
        body = self._read(bptr, blen)
        trailers = self._decode_pairs("proxy_http_call trailers", self._read(tptr, tlen))
        self._write_u32(ret_id, 0)
        timeout_ms = timeout - (1 << 32) if timeout & 0x80000000 else timeout
        if timeout_ms < 0:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_http_call timeout {timeout_ms}")
        if not self._known_cluster(upstream):
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_http_call to unknown cluster {upstream!r}"
            )
        names = {k.lower() for k, _ in headers}
        missing = [h for h in (":method", ":path", ":authority") if h not in names]
        if missing:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_http_call without {', '.join(missing)}")
        self._next_http_call_id += 4
        call_id = self._next_http_call_id
        self.http_calls.append(
            HttpCall(call_id, upstream, headers, body, trailers, timeout_ms, self._ctx().id)
        )
        self._write_u32(ret_id, call_id)
        return Status.OK

    @hostcall("proxy_redis_init", "iiiiiii")
    def _proxy_redis_init(
        self, uptr: int, ulen: int, nptr: int, nlen: int, pptr: int, plen: int, timeout: int
    ) -> int:
        upstream = text_of(self._read(uptr, ulen))
        username, password = text_of(self._read(nptr, nlen)), text_of(self._read(pptr, plen))
        status = Status.OK if self._known_cluster(upstream) else Status.BAD_ARGUMENT
        self.redis_inits.append(RedisInit(upstream, username, password, timeout, status))
        if status != Status.OK:
            return self._warn(status, f"proxy_redis_init to unknown cluster {upstream!r}")
        self._redis_upstreams.add(upstream.split("?", 1)[0])
        return Status.OK

    @hostcall("proxy_redis_call", "iiiii")
    def _proxy_redis_call(self, uptr: int, ulen: int, qptr: int, qlen: int, ret_id: int) -> int:
        upstream = text_of(self._read(uptr, ulen))
        query = self._read(qptr, qlen)
        self._write_u32(ret_id, 0)
        if upstream.split("?", 1)[0] not in self._redis_upstreams:
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_redis_call to {upstream!r} before proxy_redis_init"
            )
        self._next_redis_call_id += 4
        callout_id = self._next_redis_call_id
        self.redis_calls.append(RedisCall(callout_id, upstream, query, self._ctx().id))
        self._write_u32(ret_id, callout_id)
        return Status.OK
