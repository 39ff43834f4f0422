"""Several workers on one queue: sharing it, and taking over from one that was killed."""

from __future__ import annotations

import json
import signal
import time

import openai
import redis
from jobs_support import CLAIM_IDLE_MS, Services, chat_lines, jsonl, metric, wait_for

#: Forwarded like a credential, so the mock LLM answers each line slowly and a worker is
#: always caught mid-request when it is killed.
SLOW = ("--credential-header", "authorization", "--credential-header", "x-mock-delay-ms")


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1",
        api_key="team-w",
        max_retries=0,
        default_headers={"x-mock-delay-ms": "300"},
    )


def _submit(client: openai.OpenAI, total: int) -> str:
    uploaded = client.files.create(
        file=("in.jsonl", jsonl(chat_lines(total, max_tokens=5))), purpose="batch"
    )
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def _output_ids(client: openai.OpenAI, batch_id: str) -> list[str]:
    batch = client.batches.retrieve(batch_id)
    text = client.files.content(batch.output_file_id).text
    return [json.loads(line)["custom_id"] for line in text.splitlines()]


def test_two_services_share_the_queue_and_each_line_runs_once(
    services: Services, mock_stats
) -> None:
    _a, url_a = services.start(2, *SLOW)
    _b, url_b = services.start(2, *SLOW)
    client = _client(url_a)
    total = 16
    batch_id = _submit(client, total)
    wait_for(
        lambda: client.batches.retrieve(batch_id).status == "completed", 30, "the batch", services
    )

    assert sorted(_output_ids(client, batch_id)) == sorted(f"req-{i}" for i in range(total))
    done_a = metric(url_a, 'tokenlimit_jobs_finished_total{outcome="completed"}')
    done_b = metric(url_b, 'tokenlimit_jobs_finished_total{outcome="completed"}')
    assert done_a > 0 and done_b > 0 and done_a + done_b == total
    assert mock_stats()["requests"] == total
    # The other service answers for the same batch: all state is in Redis.
    assert _client(url_b).batches.retrieve(batch_id).request_counts.completed == total


def test_a_killed_workers_lines_are_taken_over_and_none_is_duplicated(
    services: Services, mock_stats
) -> None:
    doomed, url_a = services.start(3, *SLOW)
    client = _client(url_a)
    total = 20
    batch_id = _submit(client, total)
    wait_for(
        lambda: client.batches.retrieve(batch_id).request_counts.completed >= 3, 20, "3", services
    )
    doomed.send_signal(signal.SIGKILL)  # mid-batch, with requests in flight
    doomed.wait(5)
    # Lines the killed service had taken and not finished (its workers may all have been
    # between lines, pacing, at the kill: then there is nothing to take over).
    orphaned = _pending_entries(services.redis_url)

    _b, url_b = services.start(2, *SLOW)
    started_at = time.monotonic()
    survivor = _client(url_b)
    wait_for(
        lambda: survivor.batches.retrieve(batch_id).status == "completed", 40, "the batch", services
    )
    took_s = time.monotonic() - started_at

    ids = _output_ids(survivor, batch_id)
    assert sorted(ids) == sorted(f"req-{i}" for i in range(total))  # each line once
    counts = survivor.batches.retrieve(batch_id).request_counts
    assert counts.completed == total and counts.failed == 0
    if orphaned:
        assert metric(url_b, "tokenlimit_jobs_taken_over_total") >= 1
    # At-least-once: a line whose request was in flight at the kill may reach the upstream a
    # second time (at most one per killed worker), but its result is written once.
    assert total <= mock_stats()["requests"] <= total + 3
    # Bounded: the take-over waits claim_idle_ms, then the rest runs at the budget's pace
    # (about 4 lines a second here; the margin is for a loaded machine).
    assert took_s < CLAIM_IDLE_MS / 1000 + 30


def test_a_live_worker_on_a_slow_request_keeps_its_job(services: Services, mock_stats) -> None:
    """A request slower than claim_idle_ms is not taken over while its worker lives: the
    worker touches its entry, so the upstream sees each line once."""
    _a, url_a = services.start(2, *SLOW)
    _b, url_b = services.start(2, *SLOW)
    client = openai.OpenAI(
        base_url=url_a + "/v1",
        api_key="team-slow",
        max_retries=0,
        default_headers={"x-mock-delay-ms": str(CLAIM_IDLE_MS * 2)},
    )
    total = 4
    batch_id = _submit(client, total)
    wait_for(
        lambda: client.batches.retrieve(batch_id).status == "completed", 30, "the batch", services
    )
    assert mock_stats()["requests"] == total
    assert metric(url_a, "tokenlimit_jobs_taken_over_total") == 0
    assert metric(url_b, "tokenlimit_jobs_taken_over_total") == 0


def _pending_entries(redis_url: str) -> int:
    """Entries of the jobs queue's consumer group taken by a consumer and not acknowledged."""
    client = redis.Redis.from_url(redis_url)
    streams = [key for key in client.scan_iter(match="*:queue") if client.type(key) == b"stream"]
    return sum(int(client.xpending(stream, "workers")["pending"]) for stream in streams)
