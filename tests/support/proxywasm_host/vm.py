"""The VM: compiled-module cache, instantiation, linking imports to host functions, calling
exports (traps become WasmTrap), the module's memory and the context table."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

try:
    import wasmtime
except ImportError as exc:  # pragma: no cover - exercised only on a broken environment
    raise ImportError(
        "the proxy-wasm test host needs the `wasmtime` package: "
        "/work/main/.venv/bin/pip install wasmtime"
    ) from exc

from support.proxywasm_host.abi import (
    HOSTCALLS,
    KIND,
    ROOT_CONTEXT_ID,
    U32,
    U64,
    Hostcall,
    HostError,
    MapType,
    MemoryFault,
    Status,
    WasmTrap,
)
from support.proxywasm_host.maps import deserialize_header_map
from support.proxywasm_host.stream import Context, HttpStream

_ENGINES: dict[bool, wasmtime.Engine] = {}
_MODULES: dict[tuple[str, int, int, bool], wasmtime.Module] = {}
# Fuel given to a store that counts instructions: more than any test spends.
FUEL = 2**62


def _engine(count_instructions: bool = False) -> wasmtime.Engine:
    """One engine per kind: counting instructions (wasmtime fuel: one unit per Wasm operator,
    deterministic for a module and a wasmtime version) needs its own engine config."""
    engine = _ENGINES.get(count_instructions)
    if engine is None:
        config = wasmtime.Config()
        config.consume_fuel = count_instructions
        engine = _ENGINES[count_instructions] = wasmtime.Engine(config)
    return engine


def load_module(wasm_path: str | Path, count_instructions: bool = False) -> wasmtime.Module:
    """Compiles ``wasm_path`` once (per path, size, mtime and engine) and reuses it."""
    path = Path(wasm_path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, count_instructions)
    module = _MODULES.get(key)
    if module is None:
        module = wasmtime.Module.from_file(_engine(count_instructions), str(path))
        _MODULES[key] = module
    return module


class VmBase:
    """The machinery every group of host functions builds on; Host puts the groups together."""

    wasm_path: Path
    module: wasmtime.Module
    trap: WasmTrap | None
    call_trace: list[tuple[str, tuple[int, ...], Any]] | None
    # Set to [] to record each host call as "proxy_get_header_map_value :path" (the name the
    # call is about, for calls that take one): what the filter asks the host per request.
    call_names: list[str] | None
    abi_warnings: list[str]
    # Counts the Wasm operators the module executes (issue 17: a deterministic measure of the
    # filter's own work, beside the host calls); read with `instructions()`.
    count_instructions: bool
    _store: wasmtime.Store
    _memory: wasmtime.Memory
    _exports: dict[str, wasmtime.Func]
    _contexts: dict[int, Context]
    _pending_done: set[int]
    _current_ctx: int
    _effective_ctx: int
    _stop_iteration: bool
    _last_call_stopped: bool
    _after: deque[Callable[[], None]]

    def _instantiate(self) -> None:
        """Compiles (once), links and instantiates the module, then runs its WASI start-up."""
        self.module = load_module(self.wasm_path, self.count_instructions)
        self._store = wasmtime.Store(_engine(self.count_instructions))
        if self.count_instructions:
            self._store.set_fuel(FUEL)
        instance = wasmtime.Instance(self._store, self.module, self._link())
        exports = instance.exports(self._store)
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise HostError(f"{self.wasm_path} does not export its memory as `memory`")
        self._memory = memory
        self._exports = {}
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

    def instructions(self) -> int:
        """Wasm operators executed so far (a host built with ``count_instructions=True``)."""
        if not self.count_instructions:
            raise HostError("this host does not count instructions (count_instructions=True)")
        return FUEL - self._store.get_fuel()

    # -- calling into the module ---------------------------------------------------------------
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
            spec = HOSTCALLS.get((imp.module, imp.name or ""))
            ty = imp.type
            if not isinstance(ty, wasmtime.FuncType):
                problems.append(f"{what} (a non-function import)")
                continue
            if spec is None:
                problems.append(what)
                continue
            want = ([KIND[c] for c in spec.params], [KIND[c] for c in spec.results])
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

    def _adapter(self, what: str, spec: Hostcall) -> Callable[..., Any]:
        impl = getattr(self, spec.attr)
        unsigned = tuple(c == "i" for c in spec.params)

        def call(*args: int) -> Any:
            args = tuple(a & U32 if u else a for a, u in zip(args, unsigned, strict=True))
            try:
                result = impl(*args)
            except MemoryFault as exc:
                self.abi_warnings.append(f"{what}: {exc}")
                result = spec.fault
            if self.call_trace is not None:
                self.call_trace.append((what, args, result))
            if self.call_names is not None:
                self.call_names.append(self._call_name(what, args))
            return None if not spec.results else int(result)

        return call

    # Calls whose first (name pointer, length) pair names what they are about, by its offset.
    _NAMED_CALLS: ClassVar[dict[str, int]] = {
        "env.proxy_get_header_map_value": 1,
        "env.proxy_replace_header_map_value": 1,
        "env.proxy_remove_header_map_value": 1,
        "env.proxy_add_header_map_value": 1,
        "env.proxy_get_property": 0,
        "env.proxy_set_property": 0,
        "env.proxy_get_shared_data": 0,
        "env.proxy_set_shared_data": 0,
        "env.proxy_define_metric": 1,
    }

    def _call_name(self, what: str, args: tuple[int, ...]) -> str:
        call = what.split(".", 1)[1]
        at = self._NAMED_CALLS.get(what)
        if at is None:
            return call
        try:
            named = self._read(args[at], args[at + 1]).decode("utf-8", "replace")
        except MemoryFault:
            named = "?"
        named = named.replace(chr(0), ".")
        if at == 1 and "header_map" in call:  # which map: request_headers, response_headers, ...
            named = f"{MapType(args[0]).name.lower()}:{named}"
        return f"{call} {named}"

    # -- memory --------------------------------------------------------------------------------
    def _check(self, ptr: int, size: int) -> None:
        if ptr + size > self._memory.data_len(self._store):
            raise MemoryFault(f"[{ptr:#x}, +{size}) is outside the module's memory")

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
            raise MemoryFault("module exports neither proxy_on_memory_allocate nor malloc")
        ptr = int(fn(self._store, size)) & U32
        if ptr == 0:
            raise MemoryFault(f"proxy_on_memory_allocate({size}) returned 0")
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

    def _decode_pairs(self, fn: str, data: bytes) -> list[tuple[str, str]]:
        """A header map the module serialized; malformed, Envoy uses an empty one (and so do we,
        with a warning the test can see)."""
        pairs = deserialize_header_map(data)
        if pairs is None:
            self.abi_warnings.append(
                f"{fn}: malformed serialized header map {data!r}; Envoy uses an empty map"
            )
            return []
        return pairs

    # -- contexts ------------------------------------------------------------------------------
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
