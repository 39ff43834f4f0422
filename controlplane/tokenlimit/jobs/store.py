"""Files, batches, single jobs, results and credentials in Redis, each with a TTL.

Key layout (``P`` is ``JobsConfig.prefix``)::

    P:file:{id}            hash   the File object (owner, bytes, filename, purpose, created_at)
    P:file:{id}:content    string the JSONL bytes (input files and the output/error files)
    P:files:{owner}        zset   the owner's file ids by creation time
    P:batch:{id}           hash   the Batch object's fields + counters total/completed/failed/done
    P:batch:{id}:lines     list   the input lines, in file order (what workers send)
    P:batch:{id}:results   hash   line index -> its result, written ONCE (HSETNX)
    P:batches:{owner}      zset   the owner's batch ids by creation time
    P:job:{id}             hash   a single `Prefer: respond-async` request and its result
    P:cred:{id}            string the submitter's credential headers, encrypted, see below
    P:pace:{owner}         string epoch ms before which no worker sends for this owner

Results are written once: :data:`RECORD_LINE` sets a line's result with HSETNX and counts it in
the same script, so a line delivered twice (at-least-once: a worker killed after sending, a
take-over) cannot be counted or written twice, and the counters always equal the results.

Credentials live in their own key, never in the batch or job hash the API returns: they are
written when the batch is created, expire with its completion window, and are deleted the
moment the batch or job reaches a final state. They are stored only encrypted (the Store
cannot be made without a CredentialBox: credentials.py). Nothing logs them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from tokenlimit.jobs.config import JobsConfig
from tokenlimit.jobs.credentials import CredentialBox

#: A line's result and its count in one step: returns {written (0|1), done, total}. The
#: results live as long as their batch (a batch gone by its TTL records nothing: no key is
#: ever left without an expiry).
RECORD_LINE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0} end
local written = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 and redis.call('TTL', KEYS[2]) == -1 then redis.call('EXPIRE', KEYS[2], ttl) end
if written == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
  redis.call('HINCRBY', KEYS[1], 'done', 1)
end
return {written, tonumber(redis.call('HGET', KEYS[1], 'done') or '0'),
        tonumber(redis.call('HGET', KEYS[1], 'total') or '0')}
"""

#: A single job's result, once; the status moves with it. Returns 1 if this call wrote it.
RECORD_JOB = """
if redis.call('HSETNX', KEYS[1], 'result', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3])
return 1
"""

#: Raise the owner's not-before time (never lower it: the longest wait asked for wins).
PUSH_PACE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return math.max(current, wanted)
"""

#: The final state of a batch, once: fields, the credentials and lines gone, a fresh TTL.
FINISH_BATCH = """
if redis.call('HSETNX', KEYS[1], 'finished', '1') == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

FINAL_BATCH = frozenset({"completed", "failed", "expired", "cancelled"})
FINAL_JOB = frozenset({"completed", "failed", "expired", "cancelled"})


def now_s() -> int:
    return int(time.time())


def owner_of(credentials: Mapping[str, str]) -> str:
    """Who submitted: a hash of their credential headers (a caller sees only their own work)."""
    digest = hashlib.sha256()
    for name in sorted(credentials):
        digest.update(f"{name}\0{credentials[name]}\0".encode())
    return digest.hexdigest()[:32]


class Store:
    """The Redis side of the service (one client, shared by the API and the workers)."""

    def __init__(
        self, config: JobsConfig, box: CredentialBox, client: aioredis.Redis | None = None
    ) -> None:
        self.config = config
        self.box = box
        self.prefix = config.prefix
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            config.redis, password=config.redis_password, decode_responses=True
        )
        self._record_line = self.redis.register_script(RECORD_LINE)
        self._record_job = self.redis.register_script(RECORD_JOB)
        self._push_pace = self.redis.register_script(PUSH_PACE)
        self._finish_batch = self.redis.register_script(FINISH_BATCH)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def close(self) -> None:
        await self.redis.aclose()

    # --- files ---------------------------------------------------------------------------------

    async def put_file(self, meta: dict[str, Any], content: str) -> None:
        ttl = self.config.retention_s
        file_id = str(meta["id"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("file", file_id), mapping=_flat(meta))
            pipe.expire(self.key("file", file_id), ttl)
            pipe.set(self.key("file", file_id, "content"), content, ex=ttl)
            index = self.key("files", str(meta["owner"]))
            pipe.zadd(index, {file_id: float(meta["created_at"])})
            pipe.expire(index, ttl)
            await pipe.execute()

    async def file(self, file_id: str) -> dict[str, str] | None:
        found = await self.redis.hgetall(self.key("file", file_id))
        return cast("dict[str, str]", found) or None

    async def file_content(self, file_id: str) -> str | None:
        return cast("str | None", await self.redis.get(self.key("file", file_id, "content")))

    # --- batches -------------------------------------------------------------------------------

    async def create_batch(
        self, batch: dict[str, Any], lines: list[str], credentials: Mapping[str, str], ttl_s: int
    ) -> None:
        """The batch, its lines and its credentials in one transaction (all or nothing)."""
        batch_id = str(batch["id"])
        key = self.key("batch", batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_flat(batch))
            pipe.expire(key, ttl_s)
            pipe.rpush(self.key("batch", batch_id, "lines"), *lines)
            pipe.expire(self.key("batch", batch_id, "lines"), ttl_s)
            pipe.set(self.key("cred", batch_id), self.box.seal(batch_id, credentials), ex=ttl_s)
            index = self.key("batches", str(batch["owner"]))
            pipe.zadd(index, {batch_id: float(batch["created_at"])})
            pipe.expire(index, ttl_s)
            await pipe.execute()

    async def batch(self, batch_id: str) -> dict[str, str] | None:
        found = await self.redis.hgetall(self.key("batch", batch_id))
        return cast("dict[str, str]", found) or None

    async def batch_ids(self, owner: str) -> list[str]:
        """The owner's batches, newest first."""
        ids = await self.redis.zrevrange(self.key("batches", owner), 0, -1)
        return [str(i) for i in ids]

    async def set_batch(self, batch_id: str, **fields: str | int) -> None:
        await self.redis.hset(self.key("batch", batch_id), mapping=dict[Any, Any](fields))

    async def line(self, batch_id: str, index: int) -> str | None:
        found = await self.redis.lindex(self.key("batch", batch_id, "lines"), index)
        return cast("str | None", found)

    async def record_line(
        self, batch_id: str, index: int, result: str, kind: str
    ) -> tuple[bool, int, int]:
        """Write line `index`'s result once and count it under `kind` (completed, failed,
        cancelled or expired); returns (written by this call, lines done, lines in total)."""
        keys = [self.key("batch", batch_id), self.key("batch", batch_id, "results")]
        written, done, total = await self._record_line(keys=keys, args=[index, result, kind])
        return bool(written), int(done), int(total)

    async def has_result(self, batch_id: str, index: int) -> bool:
        key = self.key("batch", batch_id, "results")
        return bool(await self.redis.hexists(key, str(index)))

    async def results(self, batch_id: str) -> dict[int, str]:
        found = await self.redis.hgetall(self.key("batch", batch_id, "results"))
        return {int(k): str(v) for k, v in found.items()}

    async def finish_batch(self, batch_id: str, fields: Mapping[str, str | int]) -> bool:
        """Move the batch to its final state once (the first finisher wins, the rest see
        False); keep it for `retention_s` from now and drop its credentials and lines. One
        script, so a finisher killed half-way leaves nothing half-done for its successor."""
        keys = [
            self.key("batch", batch_id),
            self.key("batch", batch_id, "results"),
            self.key("cred", batch_id),
            self.key("batch", batch_id, "lines"),
        ]
        pairs = [item for name, value in fields.items() for item in (name, value)]
        done = await self._finish_batch(keys=keys, args=[self.config.retention_s, *pairs])
        return bool(done)

    # --- single jobs ---------------------------------------------------------------------------

    async def create_job(
        self, job: dict[str, Any], credentials: Mapping[str, str], ttl_s: int
    ) -> None:
        job_id = str(job["id"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("job", job_id), mapping=_flat(job))
            pipe.expire(self.key("job", job_id), ttl_s)
            pipe.set(self.key("cred", job_id), self.box.seal(job_id, credentials), ex=ttl_s)
            await pipe.execute()

    async def job(self, job_id: str) -> dict[str, str] | None:
        found = await self.redis.hgetall(self.key("job", job_id))
        return cast("dict[str, str]", found) or None

    async def set_job(self, job_id: str, **fields: str | int) -> None:
        await self.redis.hset(self.key("job", job_id), mapping=dict[Any, Any](fields))

    async def record_job(self, job_id: str, result: str, status: str) -> bool:
        """The job's result, once; the credentials go with the job's end."""
        written = await self._record_job(
            keys=[self.key("job", job_id)], args=[result, status, now_s()]
        )
        if written:
            await self.redis.delete(self.key("cred", job_id))
            await self.redis.expire(self.key("job", job_id), self.config.retention_s)
        return bool(written)

    # --- credentials and pacing ----------------------------------------------------------------

    async def credentials(self, record_id: str) -> dict[str, str] | None:
        """The credential headers of batch or job `record_id` (None once they are gone);
        CredentialsUnreadable if no key in the key file opens them."""
        found = await self.redis.get(self.key("cred", record_id))
        return self.box.open(record_id, str(found)) if found else None

    async def pace_until_ms(self, owner: str) -> int:
        found = await self.redis.get(self.key("pace", owner))
        return int(found) if found else 0

    async def push_pace(self, owner: str, until_ms: int) -> int:
        """No worker sends for `owner` before `until_ms` (epoch ms); returns the new bound."""
        ttl_ms = max(1, until_ms - int(time.time() * 1000)) + 1000
        found = await self._push_pace(keys=[self.key("pace", owner)], args=[until_ms, ttl_ms])
        return int(found)


def _flat(record: Mapping[str, Any]) -> dict[Any, Any]:
    """A record for a Redis hash: None dropped, nested values as JSON."""
    flat: dict[str, str | int] = {}
    for name, value in record.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            flat[name] = json.dumps(value)
        elif isinstance(value, bool):
            flat[name] = int(value)
        elif isinstance(value, (int, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
