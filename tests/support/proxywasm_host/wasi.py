"""The WASI (snapshot preview1) calls a proxy-wasm module may import: stdout/stderr go to the
log, time is the fake clock, randomness is seeded, the environment is `Host.environment` (Envoy's
`vm_config.environment_variables`), there are no arguments."""

from __future__ import annotations

import random
import struct

from support.proxywasm_host.abi import LogLevel, ProcExit, WasiErrno, text_of, wasi_call
from support.proxywasm_host.shared_data import Clock
from support.proxywasm_host.vm import VmBase


class WasiCalls(VmBase):
    """wasi_snapshot_preview1.*"""

    clock: Clock
    logs: list[tuple[int, str]]
    random: random.Random
    environment: dict[str, str]

    def _environ_entries(self) -> list[bytes]:
        return [f"{k}={v}".encode() + b"\0" for k, v in self.environment.items()]

    @wasi_call("fd_write", "iiii")
    def _fd_write(self, fd: int, iovs: int, count: int, ret: int) -> int:
        if fd not in (1, 2):
            return WasiErrno.BADF
        data = b"".join(
            self._read(*struct.unpack("<II", self._read(iovs + 8 * i, 8))) for i in range(count)
        )
        if data:
            text = text_of(data[:-1] if data.endswith(b"\n") else data)
            self.logs.append((LogLevel.INFO if fd == 1 else LogLevel.ERROR, text))
        self._write_u32(ret, len(data))
        return WasiErrno.SUCCESS

    @wasi_call("clock_time_get", "iIi")
    def _clock_time_get(self, clock_id: int, precision: int, ret: int) -> int:
        if clock_id not in (0, 1):
            return WasiErrno.NOTSUP
        self._write_u64(ret, self.clock.now_ns)
        return WasiErrno.SUCCESS

    @wasi_call("random_get", "ii")
    def _random_get(self, ptr: int, size: int) -> int:
        self._write(ptr, self.random.randbytes(size))
        return WasiErrno.SUCCESS

    @wasi_call("environ_sizes_get", "ii")
    def _environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        entries = self._environ_entries()
        self._write_u32(count_ptr, len(entries))
        self._write_u32(size_ptr, sum(len(entry) for entry in entries))
        return WasiErrno.SUCCESS

    @wasi_call("environ_get", "ii")
    def _environ_get(self, array_ptr: int, buf_ptr: int) -> int:
        for index, entry in enumerate(self._environ_entries()):
            self._write_u32(array_ptr + 4 * index, buf_ptr)
            self._write(buf_ptr, entry)
            buf_ptr += len(entry)
        return WasiErrno.SUCCESS

    @wasi_call("args_sizes_get", "ii")
    def _args_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        self._write_u32(count_ptr, 0)
        self._write_u32(size_ptr, 0)
        return WasiErrno.SUCCESS

    @wasi_call("args_get", "ii")
    def _args_get(self, array_ptr: int, buf_ptr: int) -> int:
        return WasiErrno.SUCCESS

    @wasi_call("proc_exit", "i", results="")
    def _proc_exit(self, code: int) -> None:
        raise ProcExit(code)

    @wasi_call("sched_yield", "")
    def _sched_yield(self) -> int:
        return WasiErrno.SUCCESS
