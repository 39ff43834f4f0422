"""A proxy-wasm (ABI 0.2.1) host for tests: runs a real .wasm in-process with wasmtime.

The host behaves like Envoy 1.40 (proxy-wasm-cpp-host + Envoy's wasm Context) wherever that is
observable by a filter, and like Higress for the Redis ABI:

* Header maps are only reachable while Envoy holds them: request headers from
  ``proxy_on_request_headers`` until the callback returns CONTINUE (or ``proxy_continue_stream``
  is called); reading them later is BAD_ARGUMENT, in ``proxy_on_log`` they are read-only.
* PAUSE from a headers callback stops *all* iteration (Envoy's StopAllIterationAndWatermark):
  body chunks that arrive meanwhile are held by the host and delivered after the stream is
  continued. PAUSE from a body callback buffers: later chunks are appended and the callback sees
  the whole buffer; on CONTINUE the whole buffer is forwarded.
* ``proxy_continue_stream`` and ``proxy_send_local_response`` take effect after the callback
  returns. A local response sent before the response started runs through the filter's own
  response callbacks, as Envoy's local replies do.
* ``proxy_http_call`` and ``proxy_redis_call`` answer on the root context (id 1); the module uses
  ``proxy_set_effective_context`` to act on the stream that made the call.
* Shared data: one CAS counter per SharedData, starting at 1 and bumped by every set.
* Metric ids encode their type in the low two bits, as Envoy's do.

Nothing here is asynchronous: call-outs are recorded and answered by the test (or by a handler)
through ``respond_*``/``flush_*``/``run_pending``, so tests decide the ordering.
"""

from __future__ import annotations

import json
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Union

try:
    import wasmtime
except ImportError as exc:  # pragma: no cover - exercised only on a broken environment
    raise ImportError(
        "the proxy-wasm test host needs the `wasmtime` package: "
        "/work/main/.venv/bin/pip install wasmtime"
    ) from exc

__all__ = [
    "Action",
    "BufferType",
    "Clock",
    "HeaderMap",
    "Host",
    "HostError",
    "HttpCall",
    "HttpStream",
    "LocalResponse",
    "LogLevel",
    "MapType",
    "MetricType",
    "ProcExit",
    "RedisCall",
    "RedisInit",
    "SharedData",
    "Status",
    "StreamType",
    "WasmTrap",
    "deserialize_header_map",
    "load_module",
    "serialize_header_map",
]

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
ROOT_CONTEXT_ID = 1


# ---------------------------------------------------------------------------------------------
# ABI enums
# ---------------------------------------------------------------------------------------------
class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class Action(IntEnum):
    CONTINUE = 0
    PAUSE = 1


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class MapType(IntEnum):
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3
    GRPC_INITIAL_METADATA = 4
    GRPC_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    REQUEST_BODY = 0
    RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8
    REDIS_CALL_RESPONSE = 9  # Higress


class StreamType(IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_MAX_BUFFERTYPE = max(BufferType)
_MAX_MAPTYPE = max(MapType)
_MAX_STREAMTYPE = max(StreamType)
_MAX_METRICTYPE = max(MetricType)


class WasiErrno(IntEnum):
    SUCCESS = 0
    BADF = 8
    FAULT = 21
    INVAL = 28
    NOTSUP = 58


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class HostError(Exception):
    """Misuse of the host, or a module the host cannot run."""


class WasmTrap(Exception):
    """A trap (or host exception) while running the module's ``function``."""

    def __init__(self, function: str, message: str, frames: list[str] | None = None) -> None:
        self.function = function
        self.message = message
        self.frames = frames or []
        where = f" (frames: {' <- '.join(self.frames)})" if self.frames else ""
        super().__init__(f"wasm trap in {function}: {message}{where}")


class ProcExit(Exception):
    """The module called WASI ``proc_exit``."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"module called proc_exit({code})")


class _MemoryFault(Exception):
    """A pointer/length outside the module's memory, or a failed allocation."""


# ---------------------------------------------------------------------------------------------
# Header maps
# ---------------------------------------------------------------------------------------------
HeaderInput = Union[Mapping[str, str], Iterable[tuple[str, str]], "HeaderMap"]


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _pairs_of(headers: HeaderInput | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, HeaderMap):
        return list(headers.items())
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def serialize_header_map(pairs: HeaderInput) -> bytes:
    """Serializes header pairs as the ABI does (an empty map is just a zero count)."""
    items = [(_raw(k), _raw(v)) for k, v in _pairs_of(pairs)]
    out = bytearray(struct.pack("<I", len(items)))
    for key, value in items:
        out += struct.pack("<II", len(key), len(value))
    for key, value in items:
        out += key + b"\0" + value + b"\0"
    return bytes(out)


def deserialize_header_map(data: bytes) -> list[tuple[str, str]] | None:
    """Parses a serialized header map; None when malformed (Envoy then uses an empty map)."""
    if len(data) == 0:
        return []
    if len(data) < 4:
        return None
    (count,) = struct.unpack_from("<I", data, 0)
    pos = 4 + 8 * count
    if pos > len(data):
        return None
    pairs: list[tuple[str, str]] = []
    for i in range(count):
        klen, vlen = struct.unpack_from("<II", data, 4 + 8 * i)
        end_key = pos + klen
        end_value = end_key + 1 + vlen
        if end_value + 1 > len(data) or data[end_key] != 0 or data[end_value] != 0:
            return None
        pairs.append((_text(data[pos:end_key]), _text(data[end_key + 1 : end_value])))
        pos = end_value + 1
    return pairs if pos == len(data) else None


class HeaderMap:
    """An ordered multi-map with lower-case keys, like Envoy's (pseudo-headers stay first)."""

    def __init__(self, headers: HeaderInput | None = None) -> None:
        self._pairs: list[tuple[str, str]] = []
        for key, value in _pairs_of(headers):
            self.add(key, value)

    def add(self, key: str, value: str) -> None:
        key = key.lower()
        at = len(self._pairs)
        if key.startswith(":"):
            at = next((i for i, (k, _) in enumerate(self._pairs) if not k.startswith(":")), at)
        self._pairs.insert(at, (key, value))

    def replace(self, key: str, value: str) -> None:
        key = key.lower()
        hits = [i for i, (k, _) in enumerate(self._pairs) if k == key]
        if not hits:
            self.add(key, value)
            return
        self._pairs[hits[0]] = (key, value)
        for i in reversed(hits[1:]):
            del self._pairs[i]

    def remove(self, key: str) -> None:
        key = key.lower()
        self._pairs = [(k, v) for k, v in self._pairs if k != key]

    def get(self, key: str, default: str | None = None) -> str | None:
        key = key.lower()
        return next((v for k, v in self._pairs if k == key), default)

    def get_all(self, key: str) -> list[str]:
        key = key.lower()
        return [v for k, v in self._pairs if k == key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def to_dict(self) -> dict[str, str]:
        """Keys to their first value."""
        out: dict[str, str] = {}
        for key, value in self._pairs:
            out.setdefault(key, value)
        return out

    def byte_size(self) -> int:
        return sum(len(_raw(k)) + len(_raw(v)) for k, v in self._pairs)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._pairs))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeaderMap):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self.to_dict() == {k.lower(): v for k, v in other.items()}
        if isinstance(other, list):
            return self._pairs == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HeaderMap({self._pairs!r})"


# ---------------------------------------------------------------------------------------------
# Shared state: clock, shared data (and queues)
# ---------------------------------------------------------------------------------------------
class Clock:
    """A fake clock; realtime and monotonic both read ``now_ns``."""

    def __init__(self, now_ns: int = 1_767_225_600 * 10**9) -> None:  # 2026-01-01T00:00:00Z
        self.now_ns = now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1_000_000_000)

    @property
    def now_s(self) -> float:
        return self.now_ns / 1e9


def _key(key: bytes | str) -> bytes:
    return _raw(key) if isinstance(key, str) else bytes(key)


class SharedData:
    """Envoy's shared key-value store for one vm_id; share one object between Host instances
    to simulate worker threads (each with its own VM) of one Envoy.

    ``before_set(key, value, cas)`` runs inside every ``proxy_set_shared_data`` before the CAS
    check: a test can write the key there (``shared.set(...)``) to simulate another worker
    winning the race. ``inject_cas_mismatch`` does exactly that for the next conditional sets.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, tuple[bytes, int]] = {}
        self._cas = 1
        self.before_set: Callable[[bytes, bytes, int], None] | None = None
        self._forced: list[list[Any]] = []  # [key | None, remaining]
        self._queues: dict[int, _Queue] = {}
        self._queue_names: dict[tuple[str, str], int] = {}

    def _next_cas(self) -> int:
        cas = self._cas
        self._cas = (self._cas + 1) & U32 or 1
        return cas

    def get(self, key: bytes | str) -> tuple[bytes, int] | None:
        """``(value, cas)`` or None when the key was never set."""
        return self._data.get(_key(key))

    def set(self, key: bytes | str, value: bytes | str, cas: int = 0) -> Status:
        """Sets ``key``; a non-zero ``cas`` must match the stored one (missing keys ignore it)."""
        k = _key(key)
        current = self._data.get(k)
        if current is not None and cas and cas != current[1]:
            return Status.CAS_MISMATCH
        self._data[k] = (_key(value), self._next_cas())
        return Status.OK

    def inject_cas_mismatch(self, times: int = 1, key: bytes | str | None = None) -> None:
        """The next ``times`` conditional sets (on ``key``, or any key) from a module lose a race:
        another writer rewrites the same value first, so their CAS no longer matches."""
        self._forced.append([None if key is None else _key(key), times])

    def _set_from_vm(self, key: bytes, value: bytes, cas: int) -> Status:
        if self.before_set is not None:
            self.before_set(key, value, cas)
        if cas:
            for entry in self._forced:
                if entry[1] > 0 and entry[0] in (None, key) and key in self._data:
                    entry[1] -= 1
                    self.set(key, self._data[key][0])
                    break
            self._forced = [e for e in self._forced if e[1] > 0]
        return self.set(key, value, cas)

    def keys(self) -> list[bytes]:
        return list(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (bytes, str)) and _key(key) in self._data

    def __len__(self) -> int:
        return len(self._data)

    # -- shared queues ----------------------------------------------------------------------
    def _register_queue(self, vm_id: str, name: str, owner: Host) -> int:
        qid = self._queue_names.get((vm_id, name))
        if qid is None:
            qid = len(self._queues) + 1
            self._queue_names[(vm_id, name)] = qid
            self._queues[qid] = _Queue(owner)
        self._queues[qid].owner = owner
        return qid


@dataclass
class _Queue:
    owner: Host
    items: deque[bytes] = field(default_factory=deque)


# ---------------------------------------------------------------------------------------------
# Records of what the module did
# ---------------------------------------------------------------------------------------------
@dataclass
class LocalResponse:
    status: int
    details: str
    body: bytes
    headers: list[tuple[str, str]]
    grpc_status: int  # -1: none


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
PropertyValue = bytes | str | int | float | bool


def _property_bytes(value: PropertyValue) -> bytes:
    """Envoy serializes strings raw, integers as 8-byte little-endian, bools as one byte."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return _raw(value)
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    raise TypeError(f"unsupported property value {value!r}")


def _response_headers(headers: int | HeaderInput) -> HeaderMap:
    if isinstance(headers, int):
        return HeaderMap([(":status", str(headers))])
    return HeaderMap(headers)


# ---------------------------------------------------------------------------------------------
# Module cache
# ---------------------------------------------------------------------------------------------
_ENGINE: wasmtime.Engine | None = None
_MODULES: dict[tuple[str, int, int], wasmtime.Module] = {}


def _engine() -> wasmtime.Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = wasmtime.Engine()
    return _ENGINE


def load_module(wasm_path: str | Path) -> wasmtime.Module:
    """Compiles ``wasm_path`` once (per path, size and mtime) and reuses it."""
    path = Path(wasm_path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    module = _MODULES.get(key)
    if module is None:
        module = wasmtime.Module.from_file(_engine(), str(path))
        _MODULES[key] = module
    return module


# ---------------------------------------------------------------------------------------------
# Host-call registry: (module, name) -> (param kinds, result kinds, method name)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Hostcall:
    params: str  # one letter per param: i = i32, I = i64
    results: str
    attr: str
    fault: int  # returned when the call touches invalid memory


_HOSTCALLS: dict[tuple[str, str], _Hostcall] = {}
_KIND = {"i": "i32", "I": "i64"}


def _hostcall(
    name: str, params: str, results: str = "i", module: str = "env"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        fault = (
            WasiErrno.FAULT if module == "wasi_snapshot_preview1" else Status.INVALID_MEMORY_ACCESS
        )
        _HOSTCALLS[(module, name)] = _Hostcall(params, results, fn.__name__, int(fault))
        return fn

    return register


def _wasi(
    name: str, params: str, results: str = "i"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _hostcall(name, params, results, module="wasi_snapshot_preview1")


# ---------------------------------------------------------------------------------------------
# HTTP stream
# ---------------------------------------------------------------------------------------------
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
        self.properties: dict[str, bytes] = {k: _property_bytes(v) for k, v in properties.items()}
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

    # -- what the test reads ----------------------------------------------------------------
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

    # -- events -----------------------------------------------------------------------------
    def request_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action:
        return self._headers(self._req, headers, end_of_stream)

    def request_body(self, data: bytes, end_of_stream: bool) -> Action:
        return self._data(self._req, data, end_of_stream)

    def request_trailers(self, trailers: HeaderInput) -> Action:
        return self._trailers(self._req, trailers)

    def response_headers(self, headers: int | HeaderInput, end_of_stream: bool = False) -> Action:
        return self._headers(self._resp, _response_headers(headers), end_of_stream)

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

    # -- mechanics --------------------------------------------------------------------------
    def _settle(self, flush: bool) -> None:
        if flush:
            self.host.run_pending()

    def _invoke(self, side: _Side, event: str, *args: int) -> Action:
        export = f"proxy_on_{side.name}_{event}"
        raw = self.host._call(export, self.id, *args, ctx=self.id, drain=False)
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
        self.host._drain()
        return action

    def _data(self, side: _Side, data: bytes, end_of_stream: bool) -> Action:
        if side.terminated:
            return Action.PAUSE
        if side.paused_in == "headers":  # StopAllIteration: the host holds the data
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
        if side.paused_in == "headers":
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


class _RootContext:
    id = ROOT_CONTEXT_ID


Context = HttpStream | _RootContext


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------
class Host:
    """One Envoy worker's VM running ``wasm_path`` with one plugin (root context 1)."""

    def __init__(
        self,
        wasm_path: str | Path,
        *,
        clock: Clock | None = None,
        vm_config: bytes | str = b"",
        shared_data: SharedData | None = None,
        properties: Mapping[str, PropertyValue] | None = None,
        metrics: dict[str, int] | None = None,
        log_level: int = LogLevel.TRACE,
        clusters: Iterable[str] | None = None,
        http_call_handler: HttpCallHandler | None = None,
        redis_handler: RedisHandler | None = None,
        vm_id: str = "",
        seed: int = 0,
    ) -> None:
        self.wasm_path = Path(wasm_path)
        self.clock = clock or Clock()
        self.vm_config = _raw(vm_config) if isinstance(vm_config, str) else bytes(vm_config)
        self.shared_data = shared_data if shared_data is not None else SharedData()
        self.properties: dict[str, bytes] = {
            k: _property_bytes(v) for k, v in (properties or {}).items()
        }
        self.properties_set: dict[str, bytes] = {}
        self.metrics: dict[str, int] = metrics if metrics is not None else {}
        self.histograms: dict[str, list[int]] = {}
        self.metric_types: dict[str, MetricType] = {}
        self.log_level = int(log_level)
        self.logs: list[tuple[int, str]] = []
        self.abi_warnings: list[str] = []  # non-OK answers caused by misuse (phase, memory, ...)
        self.clusters: set[str] | None = None if clusters is None else set(clusters)
        self.http_call_handler = http_call_handler
        self.redis_handler = redis_handler
        self.http_calls: list[HttpCall] = []
        self.redis_inits: list[RedisInit] = []
        self.redis_calls: list[RedisCall] = []
        self.tick_period_ms: int | None = None
        self.trap: WasmTrap | None = None
        self.vm_id = vm_id
        self.random = random.Random(seed)
        self.call_trace: list[tuple[str, tuple[int, ...], Any]] | None = None  # set to [] to record
        self.plugin_config: bytes | None = None

        self._contexts: dict[int, Context] = {ROOT_CONTEXT_ID: _RootContext()}
        self._next_context_id = ROOT_CONTEXT_ID + 1
        self._pending_done: set[int] = set()
        self._current_ctx = 0
        self._effective_ctx = 0
        self._stop_iteration = False
        self._last_call_stopped = False
        self._after: deque[Callable[[], None]] = deque()
        self._in_configure = False
        self._http_response: tuple[HeaderMap, bytes, HeaderMap] | None = None
        self._call_status: tuple[int, str] = (0, "")
        self._redis_reply: bytes | None = None
        self._redis_upstreams: set[str] = set()
        self._metric_ids: dict[int, tuple[MetricType, str]] = {}
        self._next_metric_id = {t: int(t) for t in MetricType}
        self._next_http_call_id = 0
        self._next_redis_call_id = 3
        self._queue_ready: deque[int] = deque()

        self.module = load_module(self.wasm_path)
        self._store = wasmtime.Store(_engine())
        instance = wasmtime.Instance(self._store, self.module, self._link())
        exports = instance.exports(self._store)
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise HostError(f"{self.wasm_path} does not export its memory as `memory`")
        self._memory = memory
        self._exports: dict[str, wasmtime.Func] = {}
        for export in self.module.exports:
            item = exports[export.name]
            if isinstance(item, wasmtime.Func):
                self._exports[export.name] = item

        if "_initialize" in self._exports:
            self._call("_initialize", ctx=0)
            if "main" in self._exports:
                self._call("main", 0, 0, ctx=0)
        elif "_start" in self._exports:
            self._call("_start", ctx=0)
        self._call("proxy_on_context_create", ROOT_CONTEXT_ID, 0)
        self.vm_started = bool(
            self._call("proxy_on_vm_start", ROOT_CONTEXT_ID, len(self.vm_config), default=1)
        )

    # =========================================================================================
    # Public API
    # =========================================================================================
    def configure(self, config: bytes | str | Mapping[str, Any]) -> bool:
        """proxy_on_configure(1, size) with the plugin configuration buffer set."""
        if isinstance(config, Mapping):
            config = json.dumps(config)
        self.plugin_config = _raw(config) if isinstance(config, str) else bytes(config)
        self._in_configure = True
        try:
            return bool(
                self._call(
                    "proxy_on_configure", ROOT_CONTEXT_ID, len(self.plugin_config), default=1
                )
            )
        finally:
            self._in_configure = False

    def http_stream(self, *, properties: Mapping[str, PropertyValue] | None = None) -> HttpStream:
        """A new HTTP context (proxy_on_context_create(id, 1))."""
        stream = HttpStream(self, self._next_context_id, properties or {})
        self._next_context_id += 1
        self._contexts[stream.id] = stream
        self._call("proxy_on_context_create", stream.id, ROOT_CONTEXT_ID, ctx=stream.id)
        return stream

    def tick(self) -> None:
        self._call("proxy_on_tick", ROOT_CONTEXT_ID)

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
        response = (_response_headers(headers), bytes(body), HeaderMap(trailers))
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

    def run_pending(self) -> int:
        """Delivers everything deliverable (http calls, redis calls, queue-ready) until quiet."""
        total = 0
        while True:
            n = self.flush_http_calls() + self.flush_redis()
            while self._queue_ready:
                self._call("proxy_on_queue_ready", ROOT_CONTEXT_ID, self._queue_ready.popleft())
                n += 1
            if n == 0:
                return total
            total += n

    def pending_http_calls(self) -> list[int]:
        return [c.call_id for c in self.http_calls if c.state == "pending"]

    def pending_redis_calls(self) -> list[int]:
        return [c.callout_id for c in self.redis_calls if c.state == "pending"]

    def http_call(self, call_id: int) -> HttpCall:
        for call in self.http_calls:
            if call.call_id == call_id:
                return call
        raise KeyError(call_id)

    def memory_bytes_used(self) -> int:
        """Size of the module's linear memory (it only grows; flat means no leak)."""
        return int(self._memory.data_len(self._store))

    def log_messages(self, min_level: int = LogLevel.TRACE) -> list[str]:
        return [msg for level, msg in self.logs if level >= min_level]

    def call_export(self, name: str, *args: int) -> int:
        """Calls any export on the root context (for odd cases the helpers do not cover)."""
        if name not in self._exports:
            raise HostError(f"module does not export {name}")
        return self._call(name, *args)

    # =========================================================================================
    # Calling into the module
    # =========================================================================================
    def _call(
        self,
        export: str,
        *args: int,
        ctx: int = ROOT_CONTEXT_ID,
        default: int = 0,
        drain: bool = True,
    ) -> int:
        fn = self._exports.get(export)
        if fn is None:
            self._last_call_stopped = False
            return default
        if self.trap is not None:
            raise HostError(f"the VM is dead: it trapped earlier ({self.trap})")
        saved = (self._current_ctx, self._effective_ctx, self._stop_iteration)
        self._current_ctx, self._effective_ctx, self._stop_iteration = ctx, 0, False
        try:
            result = fn(self._store, *args)
        except wasmtime.Trap as exc:
            frames = [f.func_name or f"<func {f.func_index}>" for f in exc.frames]
            self.trap = WasmTrap(export, exc.message, frames)
            raise self.trap from exc
        except wasmtime.WasmtimeError as exc:
            self.trap = WasmTrap(export, str(exc))
            raise self.trap from exc
        except BaseException as exc:
            self.trap = WasmTrap(export, f"host exception {exc!r}")
            raise
        finally:
            self._last_call_stopped = self._stop_iteration
            self._current_ctx, self._effective_ctx, self._stop_iteration = saved
        if drain:
            self._drain()
        return 0 if result is None else int(result) & U32

    def _drain(self) -> None:
        """Runs actions Envoy defers until the VM call returns (continue, local reply, done)."""
        while self._after:
            self._after.popleft()()

    def _link(self) -> list[wasmtime.Func]:
        externs: list[wasmtime.Func] = []
        problems: list[str] = []
        for imp in self.module.imports:
            what = f"{imp.module}.{imp.name}"
            spec = _HOSTCALLS.get((imp.module, imp.name or ""))
            ty = imp.type
            if not isinstance(ty, wasmtime.FuncType):
                problems.append(f"{what} (a non-function import)")
                continue
            if spec is None:
                problems.append(what)
                continue
            want = ([_KIND[c] for c in spec.params], [_KIND[c] for c in spec.results])
            got = ([str(p) for p in ty.params], [str(r) for r in ty.results])
            if want != got:
                problems.append(f"{what} with signature {got}, expected {want}")
                continue
            externs.append(wasmtime.Func(self._store, ty, self._adapter(what, spec)))
        if problems:
            raise HostError(
                f"{self.wasm_path.name} imports what this host does not provide: "
                + ", ".join(problems)
            )
        return externs

    def _adapter(self, what: str, spec: _Hostcall) -> Callable[..., Any]:
        impl = getattr(self, spec.attr)
        unsigned = tuple(c == "i" for c in spec.params)

        def call(*args: int) -> Any:
            args = tuple(a & U32 if u else a for a, u in zip(args, unsigned, strict=True))
            try:
                result = impl(*args)
            except _MemoryFault as exc:
                self.abi_warnings.append(f"{what}: {exc}")
                result = spec.fault
            if self.call_trace is not None:
                self.call_trace.append((what, args, result))
            return None if not spec.results else int(result)

        return call

    # -- memory -------------------------------------------------------------------------------
    def _check(self, ptr: int, size: int) -> None:
        if ptr + size > self._memory.data_len(self._store):
            raise _MemoryFault(f"[{ptr:#x}, +{size}) is outside the module's memory")

    def _read(self, ptr: int, size: int) -> bytes:
        if size == 0:
            return b""
        self._check(ptr, size)
        return bytes(self._memory.read(self._store, ptr, ptr + size))

    def _write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self._memory.write(self._store, data, ptr)

    def _write_u32(self, ptr: int, value: int) -> None:
        self._write(ptr, struct.pack("<I", value & U32))

    def _write_u64(self, ptr: int, value: int) -> None:
        self._write(ptr, struct.pack("<Q", value & U64))

    def _alloc(self, size: int) -> int:
        fn = self._exports.get("proxy_on_memory_allocate") or self._exports.get("malloc")
        if fn is None:
            raise _MemoryFault("module exports neither proxy_on_memory_allocate nor malloc")
        ptr = int(fn(self._store, size)) & U32
        if ptr == 0:
            raise _MemoryFault(f"proxy_on_memory_allocate({size}) returned 0")
        return ptr

    def _copy_out(self, data: bytes, ptr_ptr: int, size_ptr: int) -> int:
        """Envoy's copyToPointerSize: allocate in the module (nothing for empty data)."""
        ptr = 0
        if data:
            ptr = self._alloc(len(data))
            self._write(ptr, data)
        self._write_u32(ptr_ptr, ptr)
        self._write_u32(size_ptr, len(data))
        return Status.OK

    def _warn(self, status: Status, message: str) -> int:
        self.abi_warnings.append(f"{message} -> {status.name}")
        return status

    # -- contexts -----------------------------------------------------------------------------
    def _ctx(self) -> Context:
        if self._effective_ctx and self._effective_ctx in self._contexts:
            return self._contexts[self._effective_ctx]
        return self._contexts.get(self._current_ctx, self._contexts[ROOT_CONTEXT_ID])

    def _stream(self) -> HttpStream | None:
        ctx = self._ctx()
        return ctx if isinstance(ctx, HttpStream) else None

    def _delete_context(self, stream: HttpStream) -> None:
        self._call("proxy_on_delete", stream.id, ctx=stream.id)
        stream.deleted = True
        self._contexts.pop(stream.id, None)
        self._pending_done.discard(stream.id)

    def _pending_http(self, call_id: int) -> HttpCall:
        call = next((c for c in self.http_calls if c.call_id == call_id), None)
        if call is None or call.state != "pending":
            raise HostError(
                f"no pending http call {call_id} (pending: {self.pending_http_calls()})"
            )
        return call

    # =========================================================================================
    # Host functions: logging, time, tick
    # =========================================================================================
    @_hostcall("proxy_log", "iii")
    def _proxy_log(self, level: int, ptr: int, size: int) -> int:
        if level > LogLevel.CRITICAL:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_log level {level}")
        self.logs.append((level, _text(self._read(ptr, size))))
        return Status.OK

    @_hostcall("proxy_get_log_level", "i")
    def _proxy_get_log_level(self, ret: int) -> int:
        self._write_u32(ret, self.log_level)
        return Status.OK

    @_hostcall("proxy_set_tick_period_milliseconds", "i")
    def _proxy_set_tick_period_milliseconds(self, period: int) -> int:
        self.tick_period_ms = period
        return Status.OK

    @_hostcall("proxy_get_current_time_nanoseconds", "i")
    def _proxy_get_current_time_nanoseconds(self, ret: int) -> int:
        self._write_u64(ret, self.clock.now_ns)
        return Status.OK

    # =========================================================================================
    # Host functions: buffers
    # =========================================================================================
    def _buffer(self, kind: int) -> bytes | bytearray | None:
        """The buffer ``kind`` as Envoy's getBuffer sees it now (None: not available)."""
        stream = self._stream()
        if kind in (BufferType.REQUEST_BODY, BufferType.RESPONSE_BODY):
            if stream is None:
                return b""
            side = stream._req if kind == BufferType.REQUEST_BODY else stream._resp
            return side.body if side.body is not None else b""
        if kind in (BufferType.DOWNSTREAM_DATA, BufferType.UPSTREAM_DATA):
            return b""
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
            return None if self._http_response is None else self._http_response[1]
        if kind == BufferType.VM_CONFIGURATION:
            return self.vm_config
        if kind == BufferType.PLUGIN_CONFIGURATION:
            return self.plugin_config if self._in_configure else None
        if kind == BufferType.REDIS_CALL_RESPONSE:
            return self._redis_reply
        return None

    @_hostcall("proxy_get_buffer_bytes", "iiiii")
    def _proxy_get_buffer_bytes(
        self, kind: int, start: int, size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        if kind > _MAX_BUFFERTYPE:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_get_buffer_bytes type {kind}")
        buffer = self._buffer(kind)
        if buffer is None:
            return self._warn(
                Status.NOT_FOUND, f"proxy_get_buffer_bytes({BufferType(kind).name}) unavailable"
            )
        return self._copy_out(bytes(buffer[start : start + size]), ptr_ptr, size_ptr)

    @_hostcall("proxy_get_buffer_status", "iii")
    def _proxy_get_buffer_status(self, kind: int, size_ptr: int, flags_ptr: int) -> int:
        if kind > _MAX_BUFFERTYPE:
            return Status.BAD_ARGUMENT
        buffer = self._buffer(kind)
        if buffer is None:
            return Status.NOT_FOUND
        self._write_u32(size_ptr, len(buffer))
        self._write_u32(flags_ptr, 0)
        return Status.OK

    @_hostcall("proxy_set_buffer_bytes", "iiiii")
    def _proxy_set_buffer_bytes(
        self, kind: int, start: int, size: int, ptr: int, length: int
    ) -> int:
        """Envoy's Buffer::copyFrom: start=0 drains ``size`` bytes then prepends; start at/after
        the end appends; anything else is BAD_ARGUMENT. Other buffers are read-only."""
        if kind > _MAX_BUFFERTYPE:
            return Status.BAD_ARGUMENT
        data = self._read(ptr, length)
        buffer = self._buffer(kind)
        if not isinstance(buffer, bytearray):
            if kind in (BufferType.REQUEST_BODY, BufferType.RESPONSE_BODY):
                return self._warn(
                    Status.NOT_FOUND,
                    f"proxy_set_buffer_bytes({BufferType(kind).name}) outside a body callback",
                )
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_set_buffer_bytes({kind}) on a read-only buffer"
            )
        if start == 0:
            del buffer[:size]
            buffer[0:0] = data
        elif start >= len(buffer):
            buffer += data
        else:
            return self._warn(
                Status.BAD_ARGUMENT,
                f"proxy_set_buffer_bytes start={start} size={size} inside the buffer",
            )
        return Status.OK

    # =========================================================================================
    # Host functions: header maps
    # =========================================================================================
    def _map(self, kind: int, mutable: bool) -> HeaderMap | None:
        """Envoy's getMap (mutable) / getConstMap: None when the map is not reachable now."""
        if kind in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
            if mutable or self._http_response is None:
                return None
            return self._http_response[0 if kind == MapType.HTTP_CALL_RESPONSE_HEADERS else 2]
        stream = self._stream()
        if stream is None or kind > MapType.RESPONSE_TRAILERS:
            return None
        side = (
            stream._req
            if kind in (MapType.REQUEST_HEADERS, MapType.REQUEST_TRAILERS)
            else stream._resp
        )
        headers = kind in (MapType.REQUEST_HEADERS, MapType.RESPONSE_HEADERS)
        if not mutable and stream._log_phase:
            if kind == MapType.REQUEST_TRAILERS:
                return None
            return side.headers if headers else side.trailers
        if headers:
            return side.headers if side.headers_live else None
        if not side.trailers_live and mutable and side.body is not None and side.body_eos:
            side.trailers = side.trailers if side.trailers is not None else HeaderMap()
            side.trailers_live = True  # Envoy's addDecodedTrailers/addEncodedTrailers
        return side.trailers if side.trailers_live else None

    def _unavailable(self, fn: str, kind: int) -> int:
        stream = self._stream()
        status = (
            Status.NOT_FOUND if stream is not None and stream._log_phase else Status.BAD_ARGUMENT
        )
        name = MapType(kind).name if kind <= _MAX_MAPTYPE else str(kind)
        return self._warn(
            status, f"{fn}({name}) while that map is not available (context {self._ctx().id})"
        )

    @_hostcall("proxy_get_header_map_value", "iiiii")
    def _proxy_get_header_map_value(
        self, kind: int, kptr: int, klen: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        if kind > _MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        key = _text(self._read(kptr, klen))
        headers = self._map(kind, mutable=False)
        if headers is None:
            return self._unavailable("proxy_get_header_map_value", kind)
        value = headers.get(key)
        if value is None:
            return Status.NOT_FOUND
        return self._copy_out(_raw(value), ptr_ptr, size_ptr)

    def _mutate(self, fn: str, kind: int, op: Callable[[HeaderMap], None]) -> int:
        if kind > _MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=True)
        if headers is None:
            return self._unavailable(fn, kind)
        op(headers)
        return Status.OK

    @_hostcall("proxy_add_header_map_value", "iiiii")
    def _proxy_add_header_map_value(
        self, kind: int, kptr: int, klen: int, vptr: int, vlen: int
    ) -> int:
        key, value = _text(self._read(kptr, klen)), _text(self._read(vptr, vlen))
        return self._mutate("proxy_add_header_map_value", kind, lambda h: h.add(key, value))

    @_hostcall("proxy_replace_header_map_value", "iiiii")
    def _proxy_replace_header_map_value(
        self, kind: int, kptr: int, klen: int, vptr: int, vlen: int
    ) -> int:
        key, value = _text(self._read(kptr, klen)), _text(self._read(vptr, vlen))
        return self._mutate("proxy_replace_header_map_value", kind, lambda h: h.replace(key, value))

    @_hostcall("proxy_remove_header_map_value", "iii")
    def _proxy_remove_header_map_value(self, kind: int, kptr: int, klen: int) -> int:
        key = _text(self._read(kptr, klen))
        return self._mutate("proxy_remove_header_map_value", kind, lambda h: h.remove(key))

    @_hostcall("proxy_get_header_map_pairs", "iii")
    def _proxy_get_header_map_pairs(self, kind: int, ptr_ptr: int, size_ptr: int) -> int:
        if kind > _MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=False)
        if headers is None or len(headers) == 0:  # Envoy: an empty map is (0, 0)
            return self._copy_out(b"", ptr_ptr, size_ptr)
        return self._copy_out(serialize_header_map(headers), ptr_ptr, size_ptr)

    @_hostcall("proxy_set_header_map_pairs", "iii")
    def _proxy_set_header_map_pairs(self, kind: int, ptr: int, size: int) -> int:
        pairs = self._decode_pairs("proxy_set_header_map_pairs", self._read(ptr, size))

        def set_all(headers: HeaderMap) -> None:
            headers._pairs.clear()
            for key, value in pairs:
                headers.add(key, value)

        return self._mutate("proxy_set_header_map_pairs", kind, set_all)

    @_hostcall("proxy_get_header_map_size", "ii")
    def _proxy_get_header_map_size(self, kind: int, ret: int) -> int:
        if kind > _MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=True)
        if headers is None:
            return self._unavailable("proxy_get_header_map_size", kind)
        self._write_u32(ret, headers.byte_size())
        return Status.OK

    def _decode_pairs(self, fn: str, data: bytes) -> list[tuple[str, str]]:
        pairs = deserialize_header_map(data)
        if pairs is None:
            self.abi_warnings.append(
                f"{fn}: malformed serialized header map {data!r}; Envoy uses an empty map"
            )
            return []
        return pairs

    # =========================================================================================
    # Host functions: stream control, local response, contexts
    # =========================================================================================
    @_hostcall("proxy_continue_stream", "i")
    def _proxy_continue_stream(self, kind: int) -> int:
        if kind > _MAX_STREAMTYPE:
            return Status.BAD_ARGUMENT
        if kind == StreamType.UPSTREAM:
            return Status.UNIMPLEMENTED
        stream = self._stream()
        if stream is None or kind == StreamType.DOWNSTREAM:
            return Status.OK
        stream.continued.append(StreamType(kind))
        side = stream._req if kind == StreamType.HTTP_REQUEST else stream._resp
        if side.paused_in == "body" and side.body is not None:
            side.last_body = bytes(side.body)  # what Envoy will forward on continue
        stream._req.forget_live()  # Envoy clears the request pointers for either direction
        self._after.append(lambda: stream._continue(side))
        return Status.OK

    @_hostcall("proxy_continue_request", "")
    def _proxy_continue_request(self) -> int:
        return self._proxy_continue_stream(StreamType.HTTP_REQUEST)

    @_hostcall("proxy_continue_response", "")
    def _proxy_continue_response(self) -> int:
        return self._proxy_continue_stream(StreamType.HTTP_RESPONSE)

    @_hostcall("proxy_close_stream", "i")
    def _proxy_close_stream(self, kind: int) -> int:
        if kind > _MAX_STREAMTYPE:
            return Status.BAD_ARGUMENT
        stream = self._stream()
        if stream is not None:
            stream.closed.append(StreamType(kind))
            if kind in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):

                def reset() -> None:
                    stream._req.terminated = stream._resp.terminated = True

                self._after.append(reset)
        return Status.OK

    @_hostcall("proxy_send_local_response", "iiiiiiii")
    def _proxy_send_local_response(
        self,
        status: int,
        dptr: int,
        dlen: int,
        bptr: int,
        blen: int,
        hptr: int,
        hlen: int,
        grpc: int,
    ) -> int:
        details, body = _text(self._read(dptr, dlen)), self._read(bptr, blen)
        headers = [
            (k.lower(), v)
            for k, v in self._decode_pairs("proxy_send_local_response", self._read(hptr, hlen))
        ]
        grpc_status = grpc - (1 << 32) if grpc & 0x80000000 else grpc
        self._stop_iteration = True  # Envoy: stopNextIteration(true)
        stream = self._stream()
        if stream is not None:
            stream.local_responses.append(
                LocalResponse(status, details, body, headers, grpc_status)
            )
            self._after.append(stream._deliver_local_reply)
        return Status.OK

    @_hostcall("proxy_set_effective_context", "i")
    def _proxy_set_effective_context(self, context_id: int) -> int:
        if context_id not in self._contexts:
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_set_effective_context({context_id}): no such context"
            )
        self._effective_ctx = context_id
        return Status.OK

    @_hostcall("proxy_done", "")
    def _proxy_done(self) -> int:
        ctx = self._ctx()
        if ctx.id not in self._pending_done or not isinstance(ctx, HttpStream):
            return Status.NOT_FOUND
        self._after.append(lambda: self._delete_context(ctx))
        return Status.OK

    @_hostcall("proxy_get_status", "iii")
    def _proxy_get_status(self, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
        self._write_u32(code_ptr, self._call_status[0])
        return self._copy_out(_raw(self._call_status[1]), ptr_ptr, size_ptr)

    @_hostcall("proxy_call_foreign_function", "iiiiii")
    def _proxy_call_foreign_function(
        self, nptr: int, nlen: int, aptr: int, alen: int, rptr: int, rlen: int
    ) -> int:
        name = _text(self._read(nptr, nlen))
        return self._warn(
            Status.NOT_FOUND, f"proxy_call_foreign_function({name!r}): no foreign functions"
        )

    # =========================================================================================
    # Host functions: http calls, Higress redis
    # =========================================================================================
    def _known_cluster(self, upstream: str) -> bool:
        return self.clusters is None or upstream.split("?", 1)[0] in self.clusters

    @_hostcall("proxy_http_call", "iiiiiiiiii")
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
        upstream = _text(self._read(uptr, ulen))
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

    @_hostcall("proxy_redis_init", "iiiiiii")
    def _proxy_redis_init(
        self, uptr: int, ulen: int, nptr: int, nlen: int, pptr: int, plen: int, timeout: int
    ) -> int:
        upstream = _text(self._read(uptr, ulen))
        username, password = _text(self._read(nptr, nlen)), _text(self._read(pptr, plen))
        status = Status.OK if self._known_cluster(upstream) else Status.BAD_ARGUMENT
        self.redis_inits.append(RedisInit(upstream, username, password, timeout, status))
        if status != Status.OK:
            return self._warn(status, f"proxy_redis_init to unknown cluster {upstream!r}")
        self._redis_upstreams.add(upstream.split("?", 1)[0])
        return Status.OK

    @_hostcall("proxy_redis_call", "iiiii")
    def _proxy_redis_call(self, uptr: int, ulen: int, qptr: int, qlen: int, ret_id: int) -> int:
        upstream = _text(self._read(uptr, ulen))
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

    # =========================================================================================
    # Host functions: shared data and queues
    # =========================================================================================
    @_hostcall("proxy_get_shared_data", "iiiii")
    def _proxy_get_shared_data(
        self, kptr: int, klen: int, ptr_ptr: int, size_ptr: int, cas_ptr: int
    ) -> int:
        entry = self.shared_data.get(self._read(kptr, klen))
        if entry is None:
            return Status.NOT_FOUND
        status = self._copy_out(entry[0], ptr_ptr, size_ptr)
        self._write_u32(cas_ptr, entry[1])
        return status

    @_hostcall("proxy_set_shared_data", "iiiii")
    def _proxy_set_shared_data(self, kptr: int, klen: int, vptr: int, vlen: int, cas: int) -> int:
        return self.shared_data._set_from_vm(self._read(kptr, klen), self._read(vptr, vlen), cas)

    @_hostcall("proxy_register_shared_queue", "iii")
    def _proxy_register_shared_queue(self, nptr: int, nlen: int, ret: int) -> int:
        qid = self.shared_data._register_queue(self.vm_id, _text(self._read(nptr, nlen)), self)
        self._write_u32(ret, qid)
        return Status.OK

    @_hostcall("proxy_resolve_shared_queue", "iiiii")
    def _proxy_resolve_shared_queue(
        self, vptr: int, vlen: int, nptr: int, nlen: int, ret: int
    ) -> int:
        key = (_text(self._read(vptr, vlen)), _text(self._read(nptr, nlen)))
        qid = self.shared_data._queue_names.get(key)
        if qid is None:
            return Status.NOT_FOUND
        self._write_u32(ret, qid)
        return Status.OK

    @_hostcall("proxy_enqueue_shared_queue", "iii")
    def _proxy_enqueue_shared_queue(self, qid: int, ptr: int, size: int) -> int:
        queue = self.shared_data._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(self._read(ptr, size))
        queue.owner._queue_ready.append(qid)
        return Status.OK

    @_hostcall("proxy_dequeue_shared_queue", "iii")
    def _proxy_dequeue_shared_queue(self, qid: int, ptr_ptr: int, size_ptr: int) -> int:
        queue = self.shared_data._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        if not queue.items:
            return Status.EMPTY
        return self._copy_out(queue.items.popleft(), ptr_ptr, size_ptr)

    # =========================================================================================
    # Host functions: metrics
    # =========================================================================================
    @_hostcall("proxy_define_metric", "iiii")
    def _proxy_define_metric(self, kind: int, nptr: int, nlen: int, ret: int) -> int:
        if kind > _MAX_METRICTYPE:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_define_metric type {kind}")
        name = _text(self._read(nptr, nlen))
        metric_type = MetricType(kind)
        self._next_metric_id[metric_type] += 4  # Envoy: the low two bits carry the type
        metric_id = self._next_metric_id[metric_type]
        self._metric_ids[metric_id] = (metric_type, name)
        self.metric_types[name] = metric_type
        if metric_type == MetricType.HISTOGRAM:
            self.histograms.setdefault(name, [])
        else:
            self.metrics.setdefault(name, 0)
        self._write_u32(ret, metric_id)
        return Status.OK

    def _metric(self, metric_id: int) -> tuple[MetricType, str] | None:
        return self._metric_ids.get(metric_id)

    @_hostcall("proxy_increment_metric", "iI")
    def _proxy_increment_metric(self, metric_id: int, delta: int) -> int:
        metric = self._metric(metric_id)
        if metric_id & 3 not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT
        if metric is None:
            return Status.NOT_FOUND
        if metric[0] == MetricType.COUNTER and delta <= 0:
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_increment_metric({metric[1]}, {delta}) on a counter"
            )
        self.metrics[metric[1]] = self.metrics.get(metric[1], 0) + delta
        return Status.OK

    @_hostcall("proxy_record_metric", "iI")
    def _proxy_record_metric(self, metric_id: int, value: int) -> int:
        metric = self._metric(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        value &= U64
        metric_type, name = metric
        if metric_type == MetricType.COUNTER:  # Envoy adds the value to a counter
            self.metrics[name] = self.metrics.get(name, 0) + value
        elif metric_type == MetricType.GAUGE:
            self.metrics[name] = value
        else:
            self.histograms.setdefault(name, []).append(value)
        return Status.OK

    @_hostcall("proxy_get_metric", "ii")
    def _proxy_get_metric(self, metric_id: int, ret: int) -> int:
        metric = self._metric(metric_id)
        if metric_id & 3 not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT
        if metric is None:
            return Status.NOT_FOUND
        self._write_u64(ret, self.metrics.get(metric[1], 0))
        return Status.OK

    # =========================================================================================
    # Host functions: properties
    # =========================================================================================
    @_hostcall("proxy_get_property", "iiii")
    def _proxy_get_property(self, pptr: int, plen: int, ptr_ptr: int, size_ptr: int) -> int:
        name = ".".join(_text(p) for p in self._read(pptr, plen).split(b"\0") if p)
        stream = self._stream()
        for source in (stream.properties_set, stream.properties) if stream is not None else ():
            if name in source:
                return self._copy_out(source[name], ptr_ptr, size_ptr)
        if name in self.properties:
            return self._copy_out(self.properties[name], ptr_ptr, size_ptr)
        return Status.NOT_FOUND

    @_hostcall("proxy_set_property", "iiii")
    def _proxy_set_property(self, pptr: int, plen: int, vptr: int, vlen: int) -> int:
        name = ".".join(_text(p) for p in self._read(pptr, plen).split(b"\0") if p)
        value = self._read(vptr, vlen)
        stream = self._stream()
        if stream is None:
            # Recorded for tests, but Envoy answers NOT_FOUND: a root context has no stream info.
            self.properties_set[name] = value
            return self._warn(Status.NOT_FOUND, f"proxy_set_property({name!r}) on the root context")
        stream.properties_set[name] = value
        return Status.OK

    # =========================================================================================
    # WASI
    # =========================================================================================
    @_wasi("fd_write", "iiii")
    def _fd_write(self, fd: int, iovs: int, count: int, ret: int) -> int:
        if fd not in (1, 2):
            return WasiErrno.BADF
        data = b"".join(
            self._read(*struct.unpack("<II", self._read(iovs + 8 * i, 8))) for i in range(count)
        )
        if data:
            text = _text(data[:-1] if data.endswith(b"\n") else data)
            self.logs.append((LogLevel.INFO if fd == 1 else LogLevel.ERROR, text))
        self._write_u32(ret, len(data))
        return WasiErrno.SUCCESS

    @_wasi("clock_time_get", "iIi")
    def _clock_time_get(self, clock_id: int, precision: int, ret: int) -> int:
        if clock_id not in (0, 1):
            return WasiErrno.NOTSUP
        self._write_u64(ret, self.clock.now_ns)
        return WasiErrno.SUCCESS

    @_wasi("random_get", "ii")
    def _random_get(self, ptr: int, size: int) -> int:
        self._write(ptr, self.random.randbytes(size))
        return WasiErrno.SUCCESS

    @_wasi("environ_sizes_get", "ii")
    def _environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        self._write_u32(count_ptr, 0)
        self._write_u32(size_ptr, 0)
        return WasiErrno.SUCCESS

    @_wasi("environ_get", "ii")
    def _environ_get(self, array_ptr: int, buf_ptr: int) -> int:
        return WasiErrno.SUCCESS

    @_wasi("args_sizes_get", "ii")
    def _args_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        self._write_u32(count_ptr, 0)
        self._write_u32(size_ptr, 0)
        return WasiErrno.SUCCESS

    @_wasi("args_get", "ii")
    def _args_get(self, array_ptr: int, buf_ptr: int) -> int:
        return WasiErrno.SUCCESS

    @_wasi("proc_exit", "i", results="")
    def _proc_exit(self, code: int) -> None:
        raise ProcExit(code)

    @_wasi("sched_yield", "")
    def _sched_yield(self) -> int:
        return WasiErrno.SUCCESS
