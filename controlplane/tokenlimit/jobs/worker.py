"""A worker: takes one job at a time off the queue and runs it through the gateway.

Each attempt goes to the gateway with the submitter's own credential headers, so the
budgets the gateway enforces on interactive traffic apply here too. The worker never
hammers: a 429 (from the limiter or from a provider behind it) pushes the submitter's
"not before" time in Redis to what `Retry-After` / `x-ratelimit-reset-*` say, and every
worker of every replica waits for it; an admitted answer whose budget is below the share
left for interactive traffic does the same. 5xx and connection errors back off and retry.
A job fails only when its completion window passes or the upstream refuses it for good
(a 4xx other than 429). The result is written once (see store.py), then the entry is
acknowledged: a worker killed before that leaves its entry to be taken over.

Stored credentials no key opens (credentials.py: a key removed from the key file too soon, an
altered record) fail the job at once, without sending it, with the error code
`credentials_unreadable`: retrying cannot help, and a loop over it would never end. One log
line per batch or job names it (never the credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from tokenlimit.jobs import batch_file, pacing
from tokenlimit.jobs.config import JobsConfig
from tokenlimit.jobs.credentials import UNREADABLE_CODE, UNREADABLE_MESSAGE, CredentialsUnreadable
from tokenlimit.jobs.metrics import Metrics
from tokenlimit.jobs.queue import Entry, Queue
from tokenlimit.jobs.store import FINAL_JOB, Store, now_s

log = logging.getLogger("tokenlimit.jobs")
#: Waits are taken in steps this long, so a cancel or an expiry is noticed while waiting.
PACE_STEP_S = 1.0
#: Forwarded from the upstream's answer to a single job's result.
KEPT_HEADERS = ("content-type", "x-request-id")
#: Batches and jobs whose unreadable credentials this process has logged (bounded: a batch
#: of many lines is one log line, not one per line).
_REPORTED: OrderedDict[str, None] = OrderedDict()
REPORTED_MAX = 1024

StillWanted = Callable[[], Awaitable[str | None]]  # None: go on; else why to stop


@dataclass(frozen=True)
class Outcome:
    kind: str  # completed | failed | cancelled | expired
    status: int = 0
    text: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class Worker:
    """One consumer of the group (a process runs `JobsConfig.workers` of them)."""

    def __init__(
        self,
        name: str,
        config: JobsConfig,
        store: Store,
        queue: Queue,
        metrics: Metrics,
        session: aiohttp.ClientSession,
    ) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.session = session
        self.touch_every_s = config.claim_idle_ms / 3000

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                entry = await self.queue.take(self.name, self.config.block_ms)
                if entry is not None:
                    await self._handle(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone, a bug: the entry stays pending, retried
                log.warning("worker %s: %s: %s", self.name, type(exc).__name__, exc)
                await asyncio.sleep(min(1.0, self.config.block_ms / 1000))

    async def _handle(self, entry: Entry) -> None:
        if entry.claimed:
            self.metrics.taken_over.inc()
        self.metrics.running.inc()
        toucher = asyncio.create_task(self._touch(entry.entry_id))
        try:
            if entry.batch_id is not None:
                await self._line(entry.batch_id, entry.index)
            elif entry.job_id is not None:
                await self._job(entry.job_id)
        finally:
            toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await toucher
            self.metrics.running.dec()
        await self.queue.ack(entry.entry_id)

    async def _touch(self, entry_id: str) -> None:
        while True:
            await asyncio.sleep(self.touch_every_s)
            try:
                if not await self.queue.touch(self.name, entry_id):
                    # Taken over (this worker stalled past claim_idle_ms): the result is still
                    # written once, whoever finishes first.
                    log.info("worker %s: entry %s was taken over", self.name, entry_id)
                    return
            except Exception:  # a missed touch only risks a second delivery
                continue

    # --- batch lines ---------------------------------------------------------------------------

    async def _line(self, batch_id: str, index: int) -> None:
        batch = await self.store.batch(batch_id)
        if batch is None or batch.get("finished"):
            return  # gone (retention passed) or already final: nothing to do
        if await self.store.has_result(batch_id, index):
            await self.finish_if_done(batch_id)  # a re-delivery: maybe the finisher died
            return
        raw = await self.store.line(batch_id, index)
        if raw is None:
            return
        request = json.loads(raw)
        custom_id = str(request["custom_id"])
        try:
            credentials = await self.store.credentials(batch_id) or {}
        except CredentialsUnreadable as exc:
            self._unreadable("batch", batch_id, exc)
            line = batch_file.error_line(
                batch_id, index, custom_id, UNREADABLE_CODE, UNREADABLE_MESSAGE
            )
            await self._record_line(batch_id, index, "failed", line)
            return

        async def still_wanted() -> str | None:
            status = await self.store.redis.hget(self.store.key("batch", batch_id), "status")
            return "cancelled" if status in ("cancelling", "cancelled") else None

        outcome = await self.attempt(
            batch["owner"],
            int(batch["expires_at"]),
            str(request["url"]),
            request["body"],
            credentials,
            still_wanted,
        )
        if outcome.kind in ("completed", "failed"):
            line = batch_file.output_line(
                batch_id,
                index,
                custom_id,
                outcome.status,
                batch_file.decode_body(outcome.text),
                outcome.headers.get("x-request-id", ""),
            )
        else:
            message = {
                "expired": "the batch's completion window passed before this request ran",
                "cancelled": "the batch was cancelled before this request ran",
            }[outcome.kind]
            line = batch_file.error_line(
                batch_id, index, custom_id, f"batch_{outcome.kind}", message
            )
        await self._record_line(batch_id, index, outcome.kind, line)

    async def _record_line(
        self, batch_id: str, index: int, kind: str, line: Mapping[str, object]
    ) -> None:
        result = json.dumps({"kind": kind, "line": line}, separators=(",", ":"))
        written, done, total = await self.store.record_line(batch_id, index, result, kind)
        if written:
            self.metrics.finished.labels(kind).inc()
        if done >= total:
            await self.finish_if_done(batch_id)

    async def finish_if_done(self, batch_id: str) -> None:
        from tokenlimit.jobs.lifecycle import finish_batch

        await finish_batch(self.store, self.metrics, batch_id)

    # --- single jobs ---------------------------------------------------------------------------

    async def _job(self, job_id: str) -> None:
        job = await self.store.job(job_id)
        if job is None or "result" in job or job.get("status") in FINAL_JOB:
            return
        try:
            credentials = await self.store.credentials(job_id) or {}
        except CredentialsUnreadable as exc:
            self._unreadable("job", job_id, exc)
            error = {
                "message": UNREADABLE_MESSAGE,
                "type": "server_error",
                "param": None,
                "code": UNREADABLE_CODE,
            }
            result = json.dumps({"response": None, "error": error}, separators=(",", ":"))
            if await self.store.record_job(job_id, result, "failed"):
                self.metrics.finished.labels("failed").inc()
            return
        await self.store.set_job(job_id, status="in_progress", started_at=now_s())

        async def still_wanted() -> str | None:
            key = self.store.key("job", job_id)
            cancel = await self.store.redis.hget(key, "cancel_requested")
            return "cancelled" if cancel else None

        outcome = await self.attempt(
            job["owner"],
            int(job["expires_at"]),
            job["path"],
            json.loads(job["body"]),
            credentials,
            still_wanted,
        )
        response = None
        if outcome.kind in ("completed", "failed"):
            response = {
                "status_code": outcome.status,
                "headers": {k: v for k, v in outcome.headers.items() if k in KEPT_HEADERS},
                "body": batch_file.decode_body(outcome.text),
            }
        result = json.dumps({"response": response}, separators=(",", ":"))
        if await self.store.record_job(job_id, result, outcome.kind):
            self.metrics.finished.labels(outcome.kind).inc()

    def _unreadable(self, kind: str, record_id: str, exc: CredentialsUnreadable) -> None:
        """Count the failed job; log the first one of each batch or job (this process)."""
        self.metrics.credentials_unreadable.inc()
        if record_id in _REPORTED:
            return
        _REPORTED[record_id] = None
        if len(_REPORTED) > REPORTED_MAX:
            _REPORTED.popitem(last=False)
        log.warning(
            "%s %s: its stored credentials cannot be decrypted, its requests fail with %s "
            "without being sent: %s",
            kind,
            record_id,
            UNREADABLE_CODE,
            exc,
        )

    # --- one request, as many attempts as it takes ---------------------------------------------

    async def attempt(
        self,
        owner: str,
        expires_at: int,
        path: str,
        body: object,
        credentials: Mapping[str, str],
        still_wanted: StillWanted,
    ) -> Outcome:
        failures = 0
        while True:
            stop = await still_wanted()
            if stop is not None:
                return Outcome(stop)
            if time.time() >= expires_at:
                return Outcome("expired")
            wait_s = (await self.store.pace_until_ms(owner)) / 1000 - time.time()
            if wait_s > 0:
                # A little jitter: the workers that wait for the same moment arrive spread.
                await asyncio.sleep(min(PACE_STEP_S, wait_s) + random.uniform(0, 0.02))
                continue
            try:
                status, headers, text = await self._send(path, body, credentials)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                self.metrics.retried.inc()
                log.info("worker %s: %s to the gateway: %s", self.name, path, type(exc).__name__)
                await asyncio.sleep(self._backoff(failures))
                continue
            if status == 429:
                self.metrics.retried_429.inc()
                delay = pacing.retry_delay_s(headers)
                await self.store.push_pace(owner, int((time.time() + delay) * 1000))
                continue
            if status >= 500:
                failures += 1
                self.metrics.retried.inc()
                await asyncio.sleep(self._backoff(failures))
                continue
            reserve = pacing.reserve_delay_s(headers, self.config.interactive_share)
            if reserve > 0:
                await self.store.push_pace(owner, int((time.time() + reserve) * 1000))
            return Outcome("completed" if status < 300 else "failed", status, text, headers)

    def _backoff(self, failures: int) -> float:
        delay = pacing.backoff_s(failures - 1, self.config.backoff_s, self.config.backoff_max_s)
        return pacing.jittered(delay)

    async def _send(
        self, path: str, body: object, credentials: Mapping[str, str]
    ) -> tuple[int, dict[str, str], str]:
        headers = {**credentials, "content-type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        async with self.session.post(
            self.config.gateway + path, json=body, headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            found = {k.lower(): v for k, v in response.headers.items()}
            return response.status, found, text
