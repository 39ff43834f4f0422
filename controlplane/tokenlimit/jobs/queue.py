"""The queue: one Redis Stream with one consumer group, read by every worker of every replica.

Why Redis Streams and not a job library: the service already needs Redis (the budgets' store,
where files, results and credentials also live), and a stream with a consumer group is a
maintained queue engine with exactly the delivery this service needs and no new dependency:

- XREADGROUP hands each entry to one consumer of the group and keeps it in that consumer's
  pending list until XACK: a worker acknowledges only after the result is written, so an
  entry whose worker died is still pending -- at-least-once delivery.
- XAUTOCLAIM moves entries pending longer than ``claim_idle_ms`` to the caller: a killed
  worker's job is taken over within that bound. A live worker on a long job (waiting out a
  429, a slow upstream) resets its entry's idle time with XCLAIM ... JUSTID every third of
  it, so it is not taken from under it.
- Idempotence is the store's part: a result is written once (HSETNX in a script), so a second
  delivery finds it written and only acknowledges.

arq, RQ, dramatiq, taskiq or Celery would each add a dependency and a worker model of their
own around the same Redis primitives, without removing any of the code the batch semantics
(per-line results written once, request counts, pacing per caller) need.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

GROUP = "workers"
CLAIM_COUNT = 10
#: Reset an entry's idle time only while `consumer` still holds it: a bare XCLAIM would take
#: it back from a consumer that took it over, and two would then hold it.
TOUCH = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class Entry:
    """One delivery: a batch line (batch id + index) or a single job (job id)."""

    entry_id: str
    fields: Mapping[str, str]
    claimed: bool = False  # taken over from another consumer

    @property
    def batch_id(self) -> str | None:
        return self.fields.get("batch")

    @property
    def index(self) -> int:
        return int(self.fields.get("index", "0"))

    @property
    def job_id(self) -> str | None:
        return self.fields.get("job")


class Queue:
    """The stream and its group; each worker reads as its own consumer name."""

    def __init__(self, client: aioredis.Redis, prefix: str, claim_idle_ms: int) -> None:
        self.redis = client
        self.stream = f"{prefix}:queue"
        self.claim_idle_ms = claim_idle_ms
        # XAUTOCLAIM walks the group's pending list from a cursor: each call looks at a few
        # entries from where the last one stopped, so one busy entry at the front never
        # hides an abandoned one behind it. Entries it hands over wait here, already ours.
        self._cursor = "0-0"
        self._claimed: list[Entry] = []
        self._touch = client.register_script(TOUCH)

    async def ensure_group(self) -> None:
        """Create the stream and group if missing (every replica does; the first one wins)."""
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def put_lines(self, batch_id: str, count: int) -> None:
        """One entry per line, in order, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(count):
                pipe.xadd(self.stream, {"batch": batch_id, "index": str(index)})
            await pipe.execute()

    async def put_job(self, job_id: str) -> None:
        await self.redis.xadd(self.stream, {"job": job_id})

    async def take(self, consumer: str, block_ms: int) -> Entry | None:
        """A job another consumer left idle too long first, else a new one (waits up to
        `block_ms`); None when there is nothing."""
        if not self._claimed:
            claimed = await self.redis.xautoclaim(
                self.stream,
                GROUP,
                consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=self._cursor,
                count=CLAIM_COUNT,
            )
            self._cursor = str(claimed[0])
            for message in cast("list[Any]", claimed[1]):
                if message:
                    self._claimed.append(_entry(message, claimed=True))
        if self._claimed:
            return self._claimed.pop(0)
        read = await self.redis.xreadgroup(
            GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
        )
        for _stream, messages in cast("list[Any]", read or []):
            for message in messages:
                return _entry(message)
        return None

    async def touch(self, consumer: str, entry_id: str) -> bool:
        """Still working on it: reset the entry's idle time so nobody takes it over. False
        when another consumer took it already (then this one must not take it back)."""
        touched = await self._touch(keys=[self.stream], args=[GROUP, consumer, entry_id])
        return bool(touched)

    async def ack(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def depth(self) -> tuple[int, int]:
        """(waiting for a worker, taken but not acknowledged) for the metrics."""
        groups = await self.redis.xinfo_groups(self.stream)
        for group in groups:
            if group["name"] == GROUP:
                lag = group.get("lag")
                pending = int(group.get("pending") or 0)
                if lag is None:  # Redis < 7: the stream's length counts both
                    lag = max(0, int(await self.redis.xlen(self.stream)) - pending)
                return int(lag), pending
        return 0, 0


def _entry(message: Any, claimed: bool = False) -> Entry:
    entry_id, fields = message
    if fields is None:  # deleted while pending: nothing left to do
        return Entry(str(entry_id), {}, claimed)
    return Entry(str(entry_id), {str(k): str(v) for k, v in dict(fields).items()}, claimed)
