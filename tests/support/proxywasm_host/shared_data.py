"""State that several hosts (the worker threads of one Envoy) share: the clock, shared data and
shared queues, plus the host functions that reach them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.proxywasm_host.abi import U32, Status, bytes_of, hostcall, text_of
from support.proxywasm_host.vm import VmBase


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
    return bytes_of(key) if isinstance(key, str) else bytes(key)


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

    # -- shared queues -------------------------------------------------------------------------
    def _register_queue(self, vm_id: str, name: str, owner: SharedDataCalls) -> int:
        qid = self._queue_names.get((vm_id, name))
        if qid is None:
            qid = len(self._queues) + 1
            self._queue_names[(vm_id, name)] = qid
            self._queues[qid] = _Queue(owner)
        self._queues[qid].owner = owner
        return qid


@dataclass
class _Queue:
    owner: SharedDataCalls
    items: deque[bytes] = field(default_factory=deque)


class SharedDataCalls(VmBase):
    """proxy_{get,set}_shared_data and the shared-queue calls."""

    shared_data: SharedData
    vm_id: str
    _queue_ready: deque[int]

    # -- shared data ---------------------------------------------------------------------------
    @hostcall("proxy_get_shared_data", "iiiii")
    def _proxy_get_shared_data(
        self, kptr: int, klen: int, ptr_ptr: int, size_ptr: int, cas_ptr: int
    ) -> int:
        entry = self.shared_data.get(self._read(kptr, klen))
        if entry is None:
            return Status.NOT_FOUND
        status = self._copy_out(entry[0], ptr_ptr, size_ptr)
        self._write_u32(cas_ptr, entry[1])
        return status

    @hostcall("proxy_set_shared_data", "iiiii")
    def _proxy_set_shared_data(self, kptr: int, klen: int, vptr: int, vlen: int, cas: int) -> int:
        return self.shared_data._set_from_vm(self._read(kptr, klen), self._read(vptr, vlen), cas)

    # -- shared queues -------------------------------------------------------------------------
    @hostcall("proxy_register_shared_queue", "iii")
    def _proxy_register_shared_queue(self, nptr: int, nlen: int, ret: int) -> int:
        qid = self.shared_data._register_queue(self.vm_id, text_of(self._read(nptr, nlen)), self)
        self._write_u32(ret, qid)
        return Status.OK

    @hostcall("proxy_resolve_shared_queue", "iiiii")
    def _proxy_resolve_shared_queue(
        self, vptr: int, vlen: int, nptr: int, nlen: int, ret: int
    ) -> int:
        key = (text_of(self._read(vptr, vlen)), text_of(self._read(nptr, nlen)))
        qid = self.shared_data._queue_names.get(key)
        if qid is None:
            return Status.NOT_FOUND
        self._write_u32(ret, qid)
        return Status.OK

    @hostcall("proxy_enqueue_shared_queue", "iii")
    def _proxy_enqueue_shared_queue(self, qid: int, ptr: int, size: int) -> int:
        queue = self.shared_data._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(self._read(ptr, size))
        queue.owner._queue_ready.append(qid)
        return Status.OK

    @hostcall("proxy_dequeue_shared_queue", "iii")
    def _proxy_dequeue_shared_queue(self, qid: int, ptr_ptr: int, size_ptr: int) -> int:
        queue = self.shared_data._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        if not queue.items:
            return Status.EMPTY
        return self._copy_out(queue.items.popleft(), ptr_ptr, size_ptr)
