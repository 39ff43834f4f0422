"""A batch's life: created (queued line by line), cancelled, finished; and how it reads.

Statuses follow OpenAI's: ``in_progress`` from creation (the file was checked on upload and
again against the endpoint, so there is nothing left to validate), ``cancelling`` after a
cancel until the lines in flight are done, then one final status -- ``completed``,
``expired`` (the completion window passed with lines not run), ``cancelled``, or ``failed``
(the batch's stored credentials could not be decrypted: its lines were not sent, `errors`
says why). Every change
is one log line (``batch ID: OLD -> NEW ...``) and one count in
``tokenlimit_jobs_batches_total{status}``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from tokenlimit.jobs import batch_file
from tokenlimit.jobs.config import JobsConfig, parse_window
from tokenlimit.jobs.credentials import UNREADABLE_CODE, UNREADABLE_MESSAGE
from tokenlimit.jobs.metrics import Metrics
from tokenlimit.jobs.queue import Queue
from tokenlimit.jobs.store import Store, now_s

log = logging.getLogger("tokenlimit.jobs")
#: Credentials and a batch's lines outlive its window by this much, for the lines in flight.
WINDOW_SLACK_S = 300
TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(12)}"


def window_s(text: str, config: JobsConfig) -> int:
    try:
        seconds = parse_window(text)
    except ValueError as exc:
        raise batch_file.JobError(
            400, "invalid_completion_window", str(exc), "completion_window"
        ) from None
    if seconds > config.max_window_s:
        raise batch_file.JobError(
            400,
            "invalid_completion_window",
            f"completion_window {text!r} is longer than this service keeps work "
            f"({config.max_window_s:g} s)",
            "completion_window",
        )
    return max(1, int(seconds))


async def create_batch(
    store: Store,
    queue: Queue,
    metrics: Metrics,
    request: Mapping[str, Any],
    owner: str,
    credentials: Mapping[str, str],
) -> dict[str, Any]:
    """Check the request against its input file, store the batch and queue every line."""
    config = store.config
    input_file_id = request.get("input_file_id")
    endpoint = request.get("endpoint")
    window = request.get("completion_window")
    for name, value in (
        ("input_file_id", input_file_id),
        ("endpoint", endpoint),
        ("completion_window", window),
    ):
        if not isinstance(value, str) or not value:
            raise batch_file.JobError(400, "missing_parameter", f"`{name}` is required", name)
    assert isinstance(input_file_id, str) and isinstance(endpoint, str) and isinstance(window, str)
    seconds = window_s(window, config)
    meta = await store.file(input_file_id)
    content = await store.file_content(input_file_id)
    if meta is None or content is None or meta.get("owner") != owner:
        raise batch_file.JobError(
            404, "file_not_found", f"no file {input_file_id!r}", "input_file_id"
        )
    if meta.get("purpose") != "batch":
        raise batch_file.JobError(
            400, "invalid_file", f"file {input_file_id!r} is not a batch input file"
        )
    lines = batch_file.check_input(content.encode(), config)
    batch_file.check_endpoint(lines, endpoint)
    metadata = request.get("metadata")
    now = now_s()
    batch = {
        "id": new_id("batch"),
        "object": "batch",
        "endpoint": endpoint,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "in_progress",
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + seconds,
        "total": len(lines),
        "completed": 0,
        "failed": 0,
        "done": 0,
        "owner": owner,
        "metadata": metadata if isinstance(metadata, dict) else None,
    }
    await store.create_batch(batch, lines, credentials, seconds + WINDOW_SLACK_S)
    await queue.put_lines(str(batch["id"]), len(lines))
    changed(metrics, str(batch["id"]), "validating", "in_progress", f"{len(lines)} requests")
    return batch_object({k: str(v) for k, v in batch.items() if v is not None})


async def cancel_batch(store: Store, metrics: Metrics, batch_id: str) -> dict[str, str]:
    """Stop a batch: lines not started are skipped, lines in flight finish; `cancelled`
    once they have (or at once when nothing is in flight)."""
    batch = await store.batch(batch_id)
    assert batch is not None
    if batch["status"] == "in_progress":
        await store.set_batch(batch_id, status="cancelling", cancelling_at=now_s())
        changed(metrics, batch_id, "in_progress", "cancelling", "")
    return await store.batch(batch_id) or batch


async def finish_batch(store: Store, metrics: Metrics, batch_id: str) -> None:
    """Write the output and error files and move the batch to its final status, once.

    Safe to run again (a finisher killed half-way leaves its entry to be taken over): the
    file ids are derived from the batch id, so a second run rewrites the same files, and
    the status moves once (store.finish_batch)."""
    batch = await store.batch(batch_id)
    if batch is None or batch.get("finished"):
        return
    if int(batch.get("done", 0)) < int(batch.get("total", 0)):
        return
    finalizing = now_s()
    results = await store.results(batch_id)
    output: list[str] = []
    errors: list[str] = []
    kinds: set[str] = set()
    for index in sorted(results):
        result = json.loads(results[index])
        kinds.add(result["kind"])
        if (result["line"].get("error") or {}).get("code") == UNREADABLE_CODE:
            kinds.add(UNREADABLE_CODE)
        line = json.dumps(result["line"], separators=(",", ":"))
        (output if result["kind"] == "completed" else errors).append(line)
    fields: dict[str, str | int] = {"finalizing_at": finalizing}
    suffix = batch_id.removeprefix("batch_")
    for name, lines, kind in (
        ("output_file_id", output, "output"),
        ("error_file_id", errors, "error"),
    ):
        if lines:
            file_id = f"file-{suffix}-{kind}"
            content = "\n".join(lines) + "\n"
            meta = {
                "id": file_id,
                "object": "file",
                "bytes": len(content.encode()),
                "created_at": finalizing,
                "filename": f"{batch_id}_{kind}.jsonl",
                "purpose": "batch_output",
                "owner": batch["owner"],
            }
            await store.put_file(meta, content)
            fields[name] = file_id
    was = batch["status"]
    status = "completed"
    if was in ("cancelling", "cancelled"):
        status = "cancelled"
    elif UNREADABLE_CODE in kinds:
        status = "failed"
        fields["errors"] = json.dumps(
            {
                "object": "list",
                "data": [{"code": UNREADABLE_CODE, "message": UNREADABLE_MESSAGE, "param": None}],
            }
        )
    elif "expired" in kinds:
        status = "expired"
    fields["status"] = status
    fields[f"{status}_at"] = now_s()
    if await store.finish_batch(batch_id, fields):
        done = await store.batch(batch_id) or batch
        counts = f"completed {done.get('completed', 0)}, failed {done.get('failed', 0)}"
        changed(metrics, batch_id, was, status, f"{counts} of {done.get('total')}")


def changed(metrics: Metrics, batch_id: str, was: str, status: str, detail: str) -> None:
    metrics.batches.labels(status).inc()
    log.info("batch %s: %s -> %s%s", batch_id, was, status, f" ({detail})" if detail else "")


def batch_object(batch: Mapping[str, str]) -> dict[str, Any]:
    """The OpenAI Batch object from the stored hash (the owner and counters stay inside)."""
    found: dict[str, Any] = {
        "id": batch["id"],
        "object": "batch",
        "endpoint": batch["endpoint"],
        "errors": json.loads(batch["errors"]) if batch.get("errors") else None,
        "input_file_id": batch["input_file_id"],
        "completion_window": batch["completion_window"],
        "status": batch["status"],
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "request_counts": {
            "total": int(batch.get("total", 0)),
            "completed": int(batch.get("completed", 0)),
            "failed": int(batch.get("failed", 0)) + int(batch.get("expired", 0)),
        },
        "metadata": json.loads(batch["metadata"]) if batch.get("metadata") else None,
    }
    for name in TIMESTAMPS:
        found[name] = int(batch[name]) if batch.get(name) else None
    return found


def file_object(meta: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": meta["id"],
        "object": "file",
        "bytes": int(meta["bytes"]),
        "created_at": int(meta["created_at"]),
        "filename": meta["filename"],
        "purpose": meta["purpose"],
        "status": "processed",
        "expires_at": int(meta["expires_at"]) if meta.get("expires_at") else None,
    }
