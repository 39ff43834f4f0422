"""The watch loop: list, watch, reconcile what changed, retry failures with back-off.

Why this is written here and not taken from a library: the official Python client has no
informer or work queue (client-go's are Go only); it has `kubernetes.watch.Watch`, which
reads the stream (`tokenlimit.apply.kube_client` uses it) but neither relists on 410 nor
retries per object. kopf has all of it, but brings its own API client (a second one, with
its own credentials and errors), asyncio, and its own peering objects instead of a Lease, and
it cannot be run against the in-memory API server the tests use; see docs/operator.md. What
remains is the ordering client-go's informer + workqueue would give, in one thread:

- list the policies (their resourceVersion starts the watch) and queue every one;
- watch from that resourceVersion; a change to a policy's spec (generation), deletion or
  finalizers queues it; status-only changes (our own writes) do not;
- run what is due in the queue: one reconcile per policy, one log line per outcome;
- a failed reconcile is queued again after a per-policy exponential back-off with jitter
  (0.5 s doubling to 60 s), or after the server's Retry-After when that is longer;
- `410 Gone` (the watch's resourceVersion was compacted) lists again at once; any other API
  error (or a dropped connection) backs off the same way and resumes the watch;
- every `resync_s` every policy is reconciled again, repairing hand edits of owned objects.

The watch is asked to end by the time the next queued retry or resync is due, so a blocking
stream never delays them. Time and randomness come from a `Clock` and a `random` function,
so the tests run the loop against the fake API server in no wall-clock time.
"""

from __future__ import annotations

import contextlib
import logging
import random as _random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tokenlimit.apply.kube import POLICY, ApiError, KubeClient, ObjectRef, WatchEvent, ref_of
from tokenlimit.operator.controller import Outcome, PolicyController

log = logging.getLogger("tokenlimit.operator")

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
BACKOFF_JITTER = 0.2  # up to 20% added, so failures that began together spread out
RESYNC_S = 300.0
WATCH_TIMEOUT_S = 300.0  # server-side timeoutSeconds of one watch request
WATCH_TIMEOUT_MIN_S = 1.0
API = "list/watch"  # the back-off key for the list and watch requests themselves
GONE = "410"  # the back-off key for repeated 410 answers


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None:
        """Wait; may return early when the operator is stopping."""
        ...


@dataclass
class SystemClock:
    """Real time; `sleep` wakes as soon as `stop` is set."""

    stop: threading.Event = field(default_factory=threading.Event)

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))


class Interrupted(BaseException):
    """Raised by the SIGTERM handler to leave a blocking watch read."""


class Backoff:
    """Per-key exponential back-off with jitter, bounded; `forget` after a success."""

    def __init__(
        self,
        base_s: float = BACKOFF_BASE_S,
        max_s: float = BACKOFF_MAX_S,
        jitter: float = BACKOFF_JITTER,
        random: Callable[[], float] = _random.random,
    ) -> None:
        assert 0 < base_s <= max_s
        assert 0 <= jitter < 1
        self.base_s = base_s
        self.max_s = max_s
        self.jitter = jitter
        self.random = random
        self._failures: dict[Any, int] = {}

    def delay(self, key: Any, retry_after_s: float | None = None) -> float:
        """The wait before retrying `key` after one more failure."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self.max_s, self.base_s * 2.0 ** min(failures, 32))
        delay = min(self.max_s, delay * (1 + self.jitter * self.random()))
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)  # the server knows better when it will recover
        return delay

    def failures(self, key: Any) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Any) -> None:
        self._failures.pop(key, None)


class Queue:
    """Keys due at a time; a key queued twice keeps the earlier time (no duplicates)."""

    def __init__(self) -> None:
        self._due: dict[ObjectRef, float] = {}

    def add(self, key: ObjectRef, at: float) -> None:
        self._due[key] = min(at, self._due.get(key, at))

    def discard(self, key: ObjectRef) -> None:
        self._due.pop(key, None)

    def pop_due(self, now: float) -> list[ObjectRef]:
        due = sorted((at, key) for key, at in self._due.items() if at <= now)
        for _, key in due:
            del self._due[key]
        return [key for _, key in due]

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)


@dataclass(frozen=True)
class LoopOptions:
    namespace: str | None = None  # None: every namespace
    resync_s: float = RESYNC_S
    watch_timeout_s: float = WATCH_TIMEOUT_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S


class Loop:
    def __init__(
        self,
        client: KubeClient,
        controller: PolicyController,
        clock: Clock,
        options: LoopOptions = LoopOptions(),
        stopping: Callable[[], bool] = lambda: False,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.client = client
        self.controller = controller
        self.clock = clock
        self.options = options
        self.stopping = stopping
        self.queue = Queue()
        self.retries = Backoff(options.backoff_base_s, options.backoff_max_s, random=random)
        self.resource_version: str | None = None  # None: list before watching
        self.known: set[ObjectRef] = set()
        self.watching = False  # True only while blocked reading the watch stream
        self.lists = 0
        self.watches = 0
        self._seen: dict[ObjectRef, tuple[Any, ...]] = {}
        self._next_resync = 0.0

    def run(self) -> None:
        """Until `stopping()` (or Interrupted); API errors never end it."""
        scope = self.options.namespace or "all namespaces"
        log.info("watching %s in %s", POLICY, scope)
        try:
            while not self.stopping():
                try:
                    if self.resource_version is None:
                        self._list()
                    self._work()
                    if self._soon():
                        continue
                    self._watch()
                    self.retries.forget(API)
                    self.retries.forget(GONE)
                except ApiError as exc:
                    self._api_failed(exc)
        except Interrupted:
            pass
        log.info("stopped")

    # --- list and watch ---------------------------------------------------------------------

    def _list(self) -> None:
        listed = self.client.list(POLICY, self.options.namespace)
        self.lists += 1
        refs = {ref_of(item) for item in listed.items}
        now = self.clock.monotonic()
        # Deleted while we were not watching: a sync finds them gone and forgets them.
        for ref in refs | self.known:
            self.queue.add(ref, now)
        self.known = refs
        self._seen = {ref_of(item): _trigger(item) for item in listed.items}
        self.resource_version = listed.resource_version
        self._next_resync = now + self.options.resync_s
        log.info(
            "listed %d %s at resourceVersion %s",
            len(refs),
            _plural(len(refs)),
            listed.resource_version,
        )

    def _watch(self) -> None:
        assert self.resource_version is not None
        timeout = self._watch_timeout()
        ends = self.clock.monotonic() + timeout
        self.watches += 1
        stream = self.client.watch(POLICY, self.options.namespace, self.resource_version, timeout)
        with contextlib.closing(stream):
            while not self.stopping():
                self.watching = True
                try:
                    event = next(stream, None)
                finally:
                    self.watching = False
                if event is None:
                    return  # the server ended the stream (timeout): watch again from here
                self._on_event(event)
                self._work()
                due = self.queue.next_due()
                if due is not None and due < ends - WATCH_TIMEOUT_MIN_S:
                    return  # a retry falls due before this stream would end: re-watch shorter

    def _soon(self) -> bool:
        """Sleep instead of watching when a retry is due sooner than a watch can end."""
        now = self.clock.monotonic()
        due = self.queue.next_due()
        if due is None or due - now >= WATCH_TIMEOUT_MIN_S:
            return False
        self.clock.sleep(max(0.0, due - now))
        return True

    def _watch_timeout(self) -> float:
        now = self.clock.monotonic()
        wake = min(now + self.options.watch_timeout_s, self._next_resync)
        due = self.queue.next_due()
        if due is not None:
            wake = min(wake, due)
        return min(self.options.watch_timeout_s, max(WATCH_TIMEOUT_MIN_S, wake - now))

    def _on_event(self, event: WatchEvent) -> None:
        if event.resource_version:
            self.resource_version = event.resource_version
        if event.type == "BOOKMARK":
            return
        ref = ref_of(event.object)
        if event.type == "DELETED":
            self.known.discard(ref)
            self._seen.pop(ref, None)
            self.queue.discard(ref)
            self.retries.forget(ref)
            log.info("%s/%s: deleted; owned objects are garbage-collected", ref.namespace, ref.name)
            return
        trigger = _trigger(event.object)
        if event.type == "ADDED" or self._seen.get(ref) != trigger:
            self.queue.add(ref, self.clock.monotonic())
        self._seen[ref] = trigger
        self.known.add(ref)

    def _api_failed(self, exc: ApiError) -> None:
        if exc.gone:
            # The usual case (history compacted while we were away) lists again at once. A
            # server that keeps answering 410 right after a list is given back-off instead.
            repeated = self.retries.failures(GONE) > 0
            delay = self.retries.delay(GONE) if repeated else 0.0
            if not repeated:
                self.retries.delay(GONE)  # counted: the next 410 in a row backs off
            wait = f" in {delay:.1f}s" if repeated else ""
            log.info("watch expired (%s): listing again%s", exc, wait)
            self.resource_version = None
            self._pause(delay)
            return
        delay = self.retries.delay(API, exc.retry_after_s)
        log.warning("%s failed: %s; retrying in %.1fs", API, exc, delay)
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, still running reconciles that fall due meanwhile."""
        until = self.clock.monotonic() + seconds
        while not self.stopping():
            self._work()
            now = self.clock.monotonic()
            if now >= until:
                return
            due = self.queue.next_due()
            self.clock.sleep(min(until, due if due is not None and due > now else until) - now)

    # --- the work queue ---------------------------------------------------------------------

    def _work(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_resync and self.resource_version is not None:
            for ref in self.known:
                self.queue.add(ref, now)
            self._next_resync = now + self.options.resync_s
        for ref in self.queue.pop_due(now):
            if self.stopping():
                self.queue.add(ref, now)
                return
            self._sync(ref)

    def _sync(self, ref: ObjectRef) -> Outcome:
        outcome = self.controller.sync(ref)
        if outcome.result == "gone":
            self.known.discard(ref)
            self._seen.pop(ref, None)
        if not outcome.failed:
            self.retries.forget(ref)
            # A resync finding nothing to do is not news; a refused spec is.
            level = {"unchanged": logging.DEBUG, "refused": logging.WARNING}.get(
                outcome.result, logging.INFO
            )
            log.log(level, outcome.line())
            return outcome
        retry_after = outcome.error.retry_after_s if outcome.error else None
        delay = self.retries.delay(ref, retry_after)
        self.queue.add(ref, self.clock.monotonic() + delay)
        log.warning("%s; retry %d in %.1fs", outcome.line(), self.retries.failures(ref), delay)
        return outcome


def _trigger(policy: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, needs a reconcile (not status: that is our own write)."""
    meta = policy.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        tuple(meta.get("finalizers") or ()),
    )


def _plural(count: int) -> str:
    return "policy" if count == 1 else "policies"
