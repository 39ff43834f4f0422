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
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from support.proxywasm_host.abi import (
    ROOT_CONTEXT_ID,
    HostError,
    LogLevel,
    MetricType,
    Status,
    bytes_of,
    hostcall,
    text_of,
)
from support.proxywasm_host.buffers import BufferCalls
from support.proxywasm_host.calls import (
    CallOuts,
    HttpCallHandler,
    RedisHandler,
)
from support.proxywasm_host.control import ControlCalls
from support.proxywasm_host.metrics import MetricCalls
from support.proxywasm_host.shared_data import Clock, SharedData, SharedDataCalls
from support.proxywasm_host.stream import (
    HttpStream,
    PropertyValue,
    RootContext,
    property_bytes,
)
from support.proxywasm_host.vm import VmBase
from support.proxywasm_host.wasi import WasiCalls


class Host(BufferCalls, ControlCalls, CallOuts, SharedDataCalls, MetricCalls, WasiCalls, VmBase):
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
        environment: Mapping[str, str] | None = None,
        allow_on_headers_stop_iteration: bool = False,
        count_instructions: bool = False,
    ) -> None:
        # The whole state, in one place; each attribute's type is declared by the class that uses
        # it (VmBase or one of the host-function groups).
        self.wasm_path = Path(wasm_path)
        self.count_instructions = count_instructions
        self.clock = clock or Clock()
        self.vm_config = bytes_of(vm_config) if isinstance(vm_config, str) else bytes(vm_config)
        self.shared_data = shared_data if shared_data is not None else SharedData()
        self.properties = {k: property_bytes(v) for k, v in (properties or {}).items()}
        self.properties_set = {}
        self.metrics = metrics if metrics is not None else {}
        self.histograms = {}
        self.metric_types = {}
        self.log_level = int(log_level)
        self.logs = []
        self.abi_warnings = []  # non-OK answers caused by misuse (phase, memory, ...)
        self.clusters = None if clusters is None else set(clusters)
        self.http_call_handler = http_call_handler
        self.redis_handler = redis_handler
        self.http_calls = []
        self.redis_inits = []
        self.redis_calls = []
        self.tick_period_ms: int | None = None
        self.trap = None
        self.vm_id = vm_id
        # Envoy's Wasm `allow_on_headers_stop_iteration`, and the VM environment variable with
        # which tokenlimit's rendered config tells the filter it is set (render/envoy/filter.py).
        self.allow_on_headers_stop_iteration = allow_on_headers_stop_iteration
        self.environment = dict(environment or {})
        if allow_on_headers_stop_iteration:
            self.environment.setdefault("TOKENLIMIT_HOLD_REQUEST_HEADERS", "1")
        self.random = random.Random(seed)
        self.call_trace = None  # set to [] to record
        self.call_names = None  # set to [] to record (VmBase.call_names)
        self.plugin_config = None

        self._contexts = {ROOT_CONTEXT_ID: RootContext()}
        self._next_context_id = ROOT_CONTEXT_ID + 1
        self._pending_done = set()
        self._current_ctx = 0
        self._effective_ctx = 0
        self._stop_iteration = False
        self._last_call_stopped = False
        self._after = deque()
        self._in_configure = False
        self._http_response = None
        self._call_status = (0, "")
        self._redis_reply = None
        self._redis_upstreams = set()
        self._metric_ids = {}
        self._next_metric_id = {t: int(t) for t in MetricType}
        self._next_http_call_id = 0
        self._next_redis_call_id = 3
        self._queue_ready = deque()

        self._instantiate()
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
        self.plugin_config = bytes_of(config) if isinstance(config, str) else bytes(config)
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
    # Host functions: logging, time, tick
    # =========================================================================================
    @hostcall("proxy_log", "iii")
    def _proxy_log(self, level: int, ptr: int, size: int) -> int:
        if level > LogLevel.CRITICAL:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_log level {level}")
        self.logs.append((level, text_of(self._read(ptr, size))))
        return Status.OK

    @hostcall("proxy_get_log_level", "i")
    def _proxy_get_log_level(self, ret: int) -> int:
        self._write_u32(ret, self.log_level)
        return Status.OK

    @hostcall("proxy_set_tick_period_milliseconds", "i")
    def _proxy_set_tick_period_milliseconds(self, period: int) -> int:
        self.tick_period_ms = period
        return Status.OK

    @hostcall("proxy_get_current_time_nanoseconds", "i")
    def _proxy_get_current_time_nanoseconds(self, ret: int) -> int:
        self._write_u64(ret, self.clock.now_ns)
        return Status.OK
