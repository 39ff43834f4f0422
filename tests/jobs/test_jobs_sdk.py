"""The official openai SDK's batch flow, end to end: SDK -> tokenlimit jobs -> real Envoy with
the filter (a budget tight enough to refuse attempts) -> the mock LLM."""

from __future__ import annotations

import json
import time

import openai
import redis
from jobs_support import Services, chat_lines, jsonl, metric, wait_for
from tokenlimit.dev.gateway import Gateway

LINES = 8


def test_sdk_batch_completes_every_line_once_under_a_tight_budget(
    services: Services, gateway: Gateway, mock_stats
) -> None:
    _proc, url = services.start(workers=3)
    client = openai.OpenAI(base_url=url + "/v1", api_key="team-a", max_retries=0)
    uploaded = client.files.create(file=("in.jsonl", jsonl(chat_lines(LINES))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0

    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "in_progress" and batch.request_counts.total == LINES

    def done() -> object:
        found = client.batches.retrieve(batch.id)
        return found if found.status == "completed" else None

    finished = wait_for(done, 60, "the batch", services)
    assert finished.request_counts.completed == LINES and finished.request_counts.failed == 0
    assert finished.error_file_id is None

    output = client.files.content(finished.output_file_id).text
    records = [json.loads(line) for line in output.splitlines()]
    assert sorted(r["custom_id"] for r in records) == sorted(f"req-{i}" for i in range(LINES))
    assert all(r["response"]["status_code"] == 200 for r in records)
    assert all(r["response"]["body"]["object"] == "chat.completion" for r in records)
    # None ran twice: the upstream answered exactly one request per line...
    assert mock_stats()["requests"] == LINES
    # ...while the gateway refused attempts the workers then retried after waiting.
    time.sleep(0.3)  # the access log reaches its file within 0.1 s
    assert "status=429" in gateway.logs().stdout
    assert metric(url, "tokenlimit_jobs_retried_after_429_total") > 0

    listed = client.batches.list()
    assert [b.id for b in listed.data] == [batch.id]

    # Nothing is kept for ever, and the caller's credentials went with the batch's end.
    keys = redis.Redis.from_url(services.redis_url, decode_responses=True)
    assert not keys.keys("tokenlimit:jobs:cred:*")
    assert not keys.keys("tokenlimit:jobs:batch:*:lines")
    for key in keys.keys("tokenlimit:jobs:*"):
        if key != "tokenlimit:jobs:queue":
            assert keys.ttl(key) > 0, key
    log = services.log_text()
    assert "team-a" not in log  # never logged
    # One log line per state change.
    assert f"batch {batch.id}: validating -> in_progress ({LINES} requests)" in log
    assert f"batch {batch.id}: in_progress -> completed (completed {LINES}, failed 0 of" in log
