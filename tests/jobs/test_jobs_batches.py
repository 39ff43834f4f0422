"""Batch lifecycle through the SDK: cancel, expiry, bounds refused with clear errors."""

from __future__ import annotations

import json

import openai
import pytest
from jobs_support import Services, chat_lines, jsonl, wait_for


def _client(url: str, key: str = "team-b") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _submit(client: openai.OpenAI, lines: list[dict], window: str = "24h") -> str:
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
    )
    return batch.id


def test_cancel_stops_the_lines_not_started_and_keeps_the_finished_ones(
    services: Services, mock_stats
) -> None:
    _proc, url = services.start(workers=2)
    client = _client(url)
    total = 40  # ~60 tokens each at 120 tokens/s: ~20 s if not cancelled
    batch_id = _submit(client, chat_lines(total))
    wait_for(
        lambda: client.batches.retrieve(batch_id).request_counts.completed >= 2,
        20,
        "2 lines",
        services,
    )
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status in ("cancelling", "cancelled")

    def final() -> object:
        found = client.batches.retrieve(batch_id)
        return found if found.status == "cancelled" else None

    batch = wait_for(final, 10, "the cancel", services)
    completed = batch.request_counts.completed
    assert 2 <= completed < total
    assert batch.cancelled_at is not None
    output = client.files.content(batch.output_file_id).text.splitlines()
    assert len(output) == completed
    errors = [
        json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()
    ]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(output) + len(errors) == total
    assert mock_stats()["requests"] == completed  # cancelled lines never reached the upstream

    with pytest.raises(openai.ConflictError, match="already cancelled"):
        client.batches.cancel(batch_id)


def test_lines_the_completion_window_runs_out_on_expire(services: Services, mock_stats) -> None:
    _proc, url = services.start(workers=2)
    client = _client(url, "team-c")
    total = 30
    batch_id = _submit(client, chat_lines(total), window="2s")

    def final() -> object:
        found = client.batches.retrieve(batch_id)
        return found if found.status == "expired" else None

    batch = wait_for(final, 15, "the expiry", services)
    counts = batch.request_counts
    assert counts.total == total and 0 < counts.completed < total
    assert counts.completed + counts.failed == total
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert mock_stats()["requests"] == counts.completed


def test_bounds_are_refused_with_clear_errors(services: Services) -> None:
    _proc, url = services.start(
        0, "--max-file-bytes", "2000", "--max-lines", "5", "--max-line-bytes", "300"
    )
    client = _client(url)
    with pytest.raises(openai.APIStatusError, match="at most 2000 are accepted") as big:
        client.files.create(file=("a.jsonl", b"x" * 2001), purpose="batch")
    assert big.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="more than 5 request lines"):
        client.files.create(file=("a.jsonl", jsonl(chat_lines(6))), purpose="batch")
    long_line = chat_lines(1)
    long_line[0]["body"]["messages"][0]["content"] = "y" * 300
    with pytest.raises(openai.BadRequestError, match=r"line 1 has \d+ bytes; at most 300"):
        client.files.create(file=("a.jsonl", jsonl(long_line)), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="line 1 is not JSON"):
        client.files.create(file=("a.jsonl", b"{not json\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="custom_id 'req-0' repeats"):
        client.files.create(file=("a.jsonl", jsonl(chat_lines(1) * 2)), purpose="batch")

    uploaded = client.files.create(file=("a.jsonl", jsonl(chat_lines(2))), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="the batch's endpoint is '/v1/embeddings'"):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="is not a duration"):
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="soon",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError):
        _client(url, "someone-else").files.retrieve(uploaded.id)
