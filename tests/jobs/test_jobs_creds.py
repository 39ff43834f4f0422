"""The submitter's credentials at rest: what Redis holds under `cred:{id}` while a job lives.

Anyone who can read the jobs' Redis (the gateway's bridge shares it, its RDB/AOF files, a
backup) must not read live API keys there: the record is encrypted with the service's key.
"""

from __future__ import annotations

import openai
import redis
from jobs_support import Services, chat_lines, jsonl
from support.redis_server import RedisServer

SECRET = "sk-live-0123456789abcdef-never-at-rest"
PREFIX = "tokenlimit:jobs"


def _client(url: str, key: str = SECRET) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _submit(client: openai.OpenAI, total: int = 2) -> str:
    uploaded = client.files.create(file=("in.jsonl", jsonl(chat_lines(total))), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def test_the_stored_credential_record_does_not_hold_the_credential(
    services: Services, redis_server: RedisServer
) -> None:
    _proc, url = services.start(0)  # no workers: the record stays while we look at it
    batch_id = _submit(_client(url))
    db = redis.Redis.from_url(redis_server.url)
    raw = db.get(f"{PREFIX}:cred:{batch_id}")
    assert raw, "the batch's credential record is missing"
    assert SECRET.encode() not in raw
    assert b"sk-live" not in raw and b"authorization" not in raw.lower()
    # Nothing else in Redis holds it either (files, batch hash, lines, queue entries).
    keys = db.keys(PREFIX + ":*")
    assert len(keys) > 3
    for key in keys:
        assert SECRET.encode() not in (db.dump(key) or b""), key
