"""A proxy-wasm (ABI 0.2.1) host for tests: runs a real .wasm in-process with wasmtime.

Tests import everything from here. One module per concern (host.py states what Envoy behaviour
the host reproduces):

* abi.py -- enums with the spec's numbers, errors, the host-function registry
* maps.py -- header maps and their serialized ABI form
* stream.py -- one HTTP stream: events, pause/continue, local replies
* shared_data.py -- what hosts share: the fake clock, shared data, shared queues
* vm.py -- module cache, linking, calling exports, memory, contexts
* buffers.py, control.py, calls.py, metrics.py, wasi.py -- the host functions, by group
* host.py -- ``Host``: one worker's VM, its lifecycle and public API
"""

from support.proxywasm_host.abi import (
    Action,
    BufferType,
    HostError,
    LogLevel,
    MapType,
    MetricType,
    ProcExit,
    Status,
    StreamType,
    WasmTrap,
)
from support.proxywasm_host.calls import HttpCall, RedisCall, RedisInit
from support.proxywasm_host.host import Host
from support.proxywasm_host.maps import HeaderMap, deserialize_header_map, serialize_header_map
from support.proxywasm_host.shared_data import Clock, SharedData
from support.proxywasm_host.stream import HttpStream, LocalResponse
from support.proxywasm_host.vm import load_module

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
