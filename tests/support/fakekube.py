"""An in-memory API server behind the KubeClient seam, and a clock that only moves on sleep.

For tests (client-go ships its fake clientset beside the real one for the same reason). It
keeps the API's bookkeeping: uid, resourceVersion (one counter for everything), generation
(bumped when anything outside metadata and status changes), creationTimestamp,
deletionTimestamp with finalizers, garbage collection of dependents whose controller owner is
deleted, resourceVersion preconditions (409), a watch history per kind that can be compacted
(410), and server-side apply that is a no-op when nothing changes. It simplifies field
ownership: the applier owns every field it sends (the operator is the only applier here).

Failures are injected as ApiErrors (tests build them from recorded responses with
`kube.api_error`), and a recorded watch stream can be served line by line through
`kube.watch_event`, so recorded shapes go through the real client's parsing.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenlimit.apply.kube import (
    FIELD_MANAGER,
    ApiError,
    Kind,
    KindNotServed,
    Obj,
    ObjectList,
    ObjectRef,
    WatchEvent,
    kind_of,
    ref_of,
    watch_event,
)

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
OPERATIONS = (
    "get",
    "list",
    "watch",
    "apply",
    "delete",
    "patch",
    "patch_status",
    "create",
    "replace",
)
WRITES = frozenset(OPERATIONS) - {"get", "list", "watch"}


class FakeClock:
    """Time that passes only in `sleep`; callbacks run when their time is reached."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.t = 0.0
        self.start = start
        self.slept: list[float] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (t, next(self._order), action))

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.slept.append(seconds)
        self.advance_to(self.t + seconds)

    def advance_to(self, t: float) -> None:
        while self._timers and self._timers[0][0] <= t:
            when, _, action = heapq.heappop(self._timers)
            self.t = max(self.t, when)
            action()
        self.t = max(self.t, t)

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None


@dataclass
class _Fault:
    operation: str
    error: ApiError
    times: int
    kind: Kind | None
    name: str | None


@dataclass
class _Event:
    version: int
    type: str
    object: Obj


@dataclass
class FakeKube:
    clock: FakeClock = field(default_factory=FakeClock)
    objects: dict[tuple[str, str, str | None, str], Obj] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (clock, op, what)
    version: int = 1000
    compacted: int = 0  # watching from a resourceVersion below this answers 410
    _history: list[_Event] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _scripted_watches: list[list[str]] = field(default_factory=list)
    _drop_watch_after: list[int] = field(default_factory=list)
    _uids: Iterator[int] = field(default_factory=itertools.count)
    # Kinds discovery knows; None: every kind (a kind outside raises KindNotServed).
    served: set[Kind] | None = None
    # Names whose fields another field manager owns: an apply without force gets this 409.
    conflicts: dict[str, ApiError] = field(default_factory=dict)
    # The options of each apply: field_manager, dry_run, force.
    applied_with: list[dict[str, Any]] = field(default_factory=list)

    # --- test controls ----------------------------------------------------------------------

    def fail(
        self,
        operation: str,
        error: ApiError,
        times: int = 1,
        kind: Kind | None = None,
        name: str | None = None,
    ) -> None:
        """The next `times` calls of `operation` (on `kind` / `name`, if given) raise `error`."""
        assert operation in OPERATIONS, operation
        self._faults.append(_Fault(operation, error, times, kind, name))

    def script_watch(self, lines: Iterable[str]) -> None:
        """The next watch streams these recorded lines (then ends) instead of the history."""
        self._scripted_watches.append(list(lines))

    def drop_watch_after(self, events: int) -> None:
        """The next watch breaks (connection reset) after delivering `events` events."""
        self._drop_watch_after.append(events)

    def compact(self) -> None:
        """Forget the watch history before now (as etcd compaction does)."""
        self.compacted = self.version

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] in WRITES]

    def seed(self, obj: Obj) -> Obj:
        """Store `obj` as it is (a recorded object keeps its uid, generation, versions)."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        version = int(meta.get("resourceVersion") or self._next_version())
        self.version = max(self.version, version)
        meta["resourceVersion"] = str(version)
        meta.setdefault("uid", self._uid())
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", _time(self.clock.now()))
        self.objects[_key(stored)] = stored
        self._history.append(_Event(version, "ADDED", copy.deepcopy(stored)))
        return copy.deepcopy(stored)

    def edit(self, ref: ObjectRef, change: Callable[[Obj], None]) -> Obj:
        """Someone else (a user's kubectl) changes an object: generation follows the spec."""
        current = self._require(ref)
        updated = copy.deepcopy(current)
        change(updated)
        return self._store(current, updated, "MODIFIED")

    def remove(self, ref: ObjectRef) -> None:
        """A user deletes the object (finalizers and garbage collection apply)."""
        self._delete(self._require(ref))

    def stored(self, ref: ObjectRef) -> Obj | None:
        found = self.objects.get(_key_of(ref))
        return copy.deepcopy(found) if found is not None else None

    # --- KubeClient -------------------------------------------------------------------------

    def get(self, ref: ObjectRef) -> Obj | None:
        self._enter("get", ref.kind, str(ref), ref.name)
        return self.stored(ref)

    def list(
        self, kind: Kind, namespace: str | None = None, label_selector: str | None = None
    ) -> ObjectList:
        self._enter("list", kind, f"{kind.kind} {namespace or '*'} {label_selector or ''}".strip())
        wanted = _selector(label_selector)
        items = [
            copy.deepcopy(o)
            for key, o in sorted(self.objects.items())
            if kind_of(o) == kind
            and (namespace is None or key[2] == namespace)
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return ObjectList(items, str(self.version))

    def watch(
        self, kind: Kind, namespace: str | None, resource_version: str, timeout_s: float
    ) -> Generator[WatchEvent, None, None]:
        self._enter("watch", kind, f"{kind.kind} {namespace or '*'} from {resource_version}")
        if self._scripted_watches:
            return self._scripted(self._scripted_watches.pop(0))
        if int(resource_version) < self.compacted:
            status = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {resource_version} ({self.compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            return self._scripted([json.dumps(status)])
        drop = self._drop_watch_after.pop(0) if self._drop_watch_after else None
        return self._stream(kind, namespace, int(resource_version), timeout_s, drop)

    def apply(
        self,
        obj: Obj,
        *,
        field_manager: str = FIELD_MANAGER,
        dry_run: bool = False,
        force: bool = False,
    ) -> Obj:
        ref = ref_of(obj)
        self._enter("apply", ref.kind, str(ref), ref.name)
        self.applied_with.append(
            {"field_manager": field_manager, "dry_run": dry_run, "force": force}
        )
        if ref.name in self.conflicts and not force:
            raise self.conflicts[ref.name]
        if dry_run:
            # The server's dry run: the answer a real apply would give, nothing stored.
            saved = copy.deepcopy((self.objects, self._history, self.version))
            try:
                return self._apply(obj)
            finally:
                self.objects, self._history, self.version = saved
        return self._apply(obj)

    def _apply(self, obj: Obj) -> Obj:
        current = self.objects.get(_key(obj))
        if current is None:
            return self._create(obj)
        updated = copy.deepcopy(obj)
        meta = updated["metadata"]
        for name in ("uid", "creationTimestamp", "generation", "resourceVersion", "finalizers"):
            if name in current["metadata"]:
                meta.setdefault(name, current["metadata"][name])
        if "status" in current:
            updated["status"] = current["status"]
        return self._store(current, updated, "MODIFIED")

    def delete(self, ref: ObjectRef, uid: str | None = None) -> bool:
        self._enter("delete", ref.kind, str(ref), ref.name)
        current = self.objects.get(_key_of(ref))
        if current is None:
            return False
        if uid is not None and current["metadata"]["uid"] != uid:
            raise _conflict(
                ref,
                f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {current['metadata']['uid']}",
            )
        self._delete(current)
        return True

    def patch(self, ref: ObjectRef, patch: Obj) -> Obj:
        self._enter("patch", ref.kind, str(ref), ref.name)
        current = self._require(ref)
        self._precondition(ref, current, patch)
        updated = _merge(copy.deepcopy(current), patch)
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._store(current, updated, "MODIFIED")

    def patch_status(self, ref: ObjectRef, status: Obj, resource_version: str) -> Obj:
        self._enter("patch_status", ref.kind, str(ref), ref.name)
        current = self._require(ref)
        self._precondition(ref, current, {"metadata": {"resourceVersion": resource_version}})
        updated = copy.deepcopy(current)
        updated["status"] = _merge(copy.deepcopy(current.get("status") or {}), status)
        return self._store(current, updated, "MODIFIED")

    def create(self, obj: Obj) -> Obj:
        ref = ref_of(obj)
        self._enter("create", ref.kind, str(ref), ref.name)
        if _key(obj) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_resource(ref.kind)} "{ref.name}" already exists',
            )
        return self._create(obj)

    def replace(self, obj: Obj) -> Obj:
        ref = ref_of(obj)
        self._enter("replace", ref.kind, str(ref), ref.name)
        current = self._require(ref)
        self._precondition(ref, current, obj)
        updated = copy.deepcopy(obj)
        for name in ("uid", "creationTimestamp", "generation"):
            updated["metadata"][name] = current["metadata"][name]
        return self._store(current, updated, "MODIFIED")

    # --- the server's bookkeeping -----------------------------------------------------------

    def _enter(self, operation: str, kind: Kind, what: str, name: str | None = None) -> None:
        self.calls.append((operation, what))
        self.timeline.append((self.clock.t, operation, what))
        if self.served is not None and kind not in self.served:
            raise KindNotServed(kind)
        for fault in self._faults:
            if (
                fault.operation == operation
                and fault.kind in (None, kind)
                and fault.name in (None, name)
                and fault.times > 0
            ):
                fault.times -= 1
                raise fault.error

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def _uid(self) -> str:
        return str(uuid.UUID(int=0x7E57_0000_0000_4000_8000_0000_0000_0000 + next(self._uids)))

    def _require(self, ref: ObjectRef) -> Obj:
        current = self.objects.get(_key_of(ref))
        if current is None:
            raise ApiError(404, "NotFound", f'{_resource(ref.kind)} "{ref.name}" not found')
        return current

    def _precondition(self, ref: ObjectRef, current: Obj, body: Obj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise _conflict(
                ref,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )

    def _create(self, obj: Obj) -> Obj:
        created = copy.deepcopy(obj)
        meta = created["metadata"]
        meta["uid"] = self._uid()
        meta["generation"] = 1
        meta["creationTimestamp"] = _time(self.clock.now())
        meta["resourceVersion"] = str(self._next_version())
        created.pop("status", None)
        self.objects[_key(created)] = created
        self._history.append(_Event(self.version, "ADDED", copy.deepcopy(created)))
        return copy.deepcopy(created)

    def _store(self, current: Obj, updated: Obj, event: str) -> Obj:
        meta = updated["metadata"]
        if _without_versions(updated) == _without_versions(current):
            return copy.deepcopy(current)  # a no-op write changes nothing, not even the version
        if _spec_of(updated) != _spec_of(current):
            meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
        else:
            meta["generation"] = current["metadata"].get("generation", 1)
        meta["resourceVersion"] = str(self._next_version())
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._forget(updated)
            return copy.deepcopy(updated)
        self.objects[_key(updated)] = updated
        self._history.append(_Event(self.version, event, copy.deepcopy(updated)))
        return copy.deepcopy(updated)

    def _delete(self, current: Obj) -> None:
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                updated = copy.deepcopy(current)
                updated["metadata"]["deletionTimestamp"] = _time(self.clock.now())
                self._store(current, updated, "MODIFIED")
            return
        current["metadata"]["resourceVersion"] = str(self._next_version())
        self._forget(current)

    def _forget(self, obj: Obj) -> None:
        self.objects.pop(_key(obj), None)
        self._history.append(_Event(self.version, "DELETED", copy.deepcopy(obj)))
        # The garbage collector: dependents whose owner is gone go too (background deletion).
        uid = obj["metadata"]["uid"]
        for dependent in list(self.objects.values()):
            owners = dependent["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                self._delete(dependent)

    def _stream(
        self, kind: Kind, namespace: str | None, since: int, timeout_s: float, drop: int | None
    ) -> Generator[WatchEvent, None, None]:
        deadline = self.clock.monotonic() + timeout_s
        delivered = 0
        cursor = since
        while True:
            pending = [
                e
                for e in self._history
                if e.version > cursor
                and kind_of(e.object) == kind
                and (namespace is None or e.object["metadata"].get("namespace") == namespace)
            ]
            for event in pending:
                if drop is not None and delivered >= drop:
                    raise ApiError(0, "ProtocolError", "Connection broken: connection reset")
                cursor = event.version
                delivered += 1
                yield WatchEvent(event.type, copy.deepcopy(event.object))
            if pending:
                continue
            if drop is not None and delivered >= drop:
                raise ApiError(0, "ProtocolError", "Connection broken: connection reset")
            now = self.clock.monotonic()
            if now >= deadline:
                return  # the server's timeoutSeconds: the stream ends cleanly
            wake = self.clock.next_timer()
            self.clock.advance_to(deadline if wake is None else min(deadline, max(wake, now)))

    def _scripted(self, lines: list[str]) -> Generator[WatchEvent, None, None]:
        for line in lines:
            event = watch_event(line)
            if event is not None:
                yield event


def _key(obj: Obj) -> tuple[str, str, str | None, str]:
    return _key_of(ref_of(obj))


def _key_of(ref: ObjectRef) -> tuple[str, str, str | None, str]:
    return (ref.kind.group, ref.kind.kind, ref.namespace, ref.name)


def _resource(kind: Kind) -> str:
    plural = kind.kind.lower() + ("es" if kind.kind.endswith("s") else "s")
    plural = plural[:-2] + "ies" if plural.endswith("ys") else plural
    return f"{plural}.{kind.group}" if kind.group else plural


def _conflict(ref: ObjectRef, why: str) -> ApiError:
    # apimachinery errors.NewConflict: `Operation cannot be fulfilled on <resource> "<name>"`.
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_resource(ref.kind)} "{ref.name}": {why}',
    )


def _selector(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = (part.split("=", 1) for part in text.split(","))
    return {k.strip(): v.strip() for k, v in pairs}


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _without_versions(obj: Obj) -> Obj:
    stripped = copy.deepcopy(obj)
    stripped["metadata"].pop("resourceVersion", None)
    stripped["metadata"].pop("generation", None)
    return stripped


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
