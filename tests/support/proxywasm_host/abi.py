"""The proxy-wasm ABI as the host sees it: enums with the spec's numbers, errors, and the registry
that maps each imported host function to the method implementing it.

A method becomes a host function with ``@hostcall(name, params)`` (or ``@wasi_call``); the VM
links every import of the module against this registry and refuses a module that imports
anything it does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

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


MAX_BUFFERTYPE = max(BufferType)
MAX_MAPTYPE = max(MapType)
MAX_STREAMTYPE = max(StreamType)
MAX_METRICTYPE = max(MetricType)


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


class MemoryFault(Exception):
    """A pointer/length outside the module's memory, or a failed allocation."""


# Strings cross the ABI as bytes; surrogateescape lets any byte sequence round-trip through str.
def text_of(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def bytes_of(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# Host-call registry: (module, name) -> (param kinds, result kinds, method name)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hostcall:
    params: str  # one letter per param: i = i32, I = i64
    results: str
    attr: str
    fault: int  # returned when the call touches invalid memory


HOSTCALLS: dict[tuple[str, str], Hostcall] = {}
KIND = {"i": "i32", "I": "i64"}

Method = TypeVar("Method", bound=Callable[..., Any])


def hostcall(
    name: str, params: str, results: str = "i", module: str = "env"
) -> Callable[[Method], Method]:
    """Registers the decorated Host method as the import ``module.name`` (the method itself is
    returned unchanged, so calls between host functions keep their types)."""

    def register(fn: Method) -> Method:
        fault = (
            WasiErrno.FAULT if module == "wasi_snapshot_preview1" else Status.INVALID_MEMORY_ACCESS
        )
        HOSTCALLS[(module, name)] = Hostcall(params, results, fn.__name__, int(fault))
        return fn

    return register


def wasi_call(name: str, params: str, results: str = "i") -> Callable[[Method], Method]:
    return hostcall(name, params, results, module="wasi_snapshot_preview1")
