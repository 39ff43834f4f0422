"""A proxy-wasm (ABI 0.2.1) host for tests: runs a real .wasm in-process with wasmtime.

Tests import everything from here; the modules hold one concern each (see host.py for the
behaviour the host promises).
"""

from support.proxywasm_host.host import (
    Action,
    BufferType,
    Clock,
    HeaderMap,
    Host,
    HostError,
    HttpCall,
    HttpStream,
    LocalResponse,
    LogLevel,
    MapType,
    MetricType,
    ProcExit,
    RedisCall,
    RedisInit,
    SharedData,
    Status,
    StreamType,
    WasmTrap,
    deserialize_header_map,
    load_module,
    serialize_header_map,
)

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
