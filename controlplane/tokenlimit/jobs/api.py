"""The HTTP API (aiohttp): OpenAI Files and Batches, single async jobs, health and metrics.

    POST /v1/files                    multipart: file (JSONL), purpose=batch
    GET  /v1/files/{id}               the File object
    GET  /v1/files/{id}/content       the bytes (input, output and error files)
    POST /v1/batches                  {input_file_id, endpoint, completion_window, metadata}
    GET  /v1/batches                  the caller's batches, newest first (limit, after)
    GET  /v1/batches/{id}             the Batch object, with request_counts
    POST /v1/batches/{id}/cancel
    POST <any LLM path>               with `Prefer: respond-async`: 202 + Location /v1/jobs/{id}
    GET  /v1/jobs/{id}                status and, when done, the upstream's answer
    POST /v1/jobs/{id}/cancel
    GET  /healthz, /readyz, /metrics

Callers are told apart by their credential headers (``JobsConfig.credential_headers``): a
batch, file or job is visible only to the caller whose credentials created it (others get
404), because those credentials are what it spends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from tokenlimit.jobs import lifecycle
from tokenlimit.jobs.batch_file import JobError, check_input
from tokenlimit.jobs.metrics import CONTENT_TYPE, Metrics
from tokenlimit.jobs.queue import Queue
from tokenlimit.jobs.store import Store, now_s, owner_of

STORE = web.AppKey("store", Store)
QUEUE = web.AppKey("queue", Queue)
METRICS = web.AppKey("metrics", Metrics)
_RESPOND_ASYNC = re.compile(r"(^|[,\s])respond-async\s*($|[,;])", re.IGNORECASE)
#: A single job waits at most this long for a worker and for room in the budget.
JOB_WINDOW_S = 24 * 3600
READ_CHUNK = 64 * 1024
LIST_LIMIT_MAX = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(store: Store, queue: Queue, metrics: Metrics) -> web.Application:
    # Request bodies other than uploads (a single job, a batch request) are bounded by the
    # line bound; uploads are streamed and counted against max_file_bytes (api._upload).
    app = web.Application(
        client_max_size=store.config.max_line_bytes + READ_CHUNK, middlewares=[_errors]
    )
    app[STORE], app[QUEUE], app[METRICS] = store, queue, metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/v1/files", _upload)
    app.router.add_get("/v1/files/{id}", _file)
    app.router.add_get("/v1/files/{id}/content", _content)
    app.router.add_post("/v1/batches", _create_batch)
    app.router.add_get("/v1/batches", _list_batches)
    app.router.add_get("/v1/batches/{id}", _batch)
    app.router.add_post("/v1/batches/{id}/cancel", _cancel_batch)
    app.router.add_get("/v1/jobs/{id}", _job)
    app.router.add_post("/v1/jobs/{id}/cancel", _cancel_job)
    app.router.add_post("/{path:.*}", _submit_job)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except JobError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPRequestEntityTooLarge as exc:
        error = JobError(413, "request_too_large", f"the request body is too large: {exc.text}")
        return web.json_response(error.body(), status=413)


def _credentials(request: web.Request) -> tuple[dict[str, str], str]:
    names = request.app[STORE].config.credential_headers
    found = {name: request.headers[name] for name in names if name in request.headers}
    return found, owner_of(found)


# --- health --------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].redis.ping()
    except Exception as exc:
        return web.json_response({"status": "redis unreachable", "error": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        queued, pending = await request.app[QUEUE].depth()
        metrics.queued.set(queued)
        metrics.pending.set(pending)
    except Exception:  # the counters still tell something without Redis
        pass
    return web.Response(body=metrics.exposition(), headers={"content-type": CONTENT_TYPE})


# --- files ---------------------------------------------------------------------------------


async def _upload(request: web.Request) -> web.Response:
    store = request.app[STORE]
    _credentials_found, owner = _credentials(request)
    if not request.content_type.startswith("multipart/"):
        raise JobError(400, "invalid_request", "upload the file as multipart/form-data")
    purpose, filename, content = None, "input.jsonl", b""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or filename
            content = await _read_bounded(part, store.config.max_file_bytes)
    if purpose != "batch":
        raise JobError(
            400, "invalid_purpose", f"purpose {purpose!r}: this service takes `batch`", "purpose"
        )
    lines = check_input(content, store.config)
    now = now_s()
    meta = {
        "id": lifecycle.new_id("file").replace("_", "-"),
        "object": "file",
        "bytes": len(content),
        "created_at": now,
        "expires_at": now + store.config.retention_s,
        "filename": filename,
        "purpose": "batch",
        "owner": owner,
        "lines": len(lines),
    }
    await store.put_file(meta, content.decode())
    return web.json_response(lifecycle.file_object({k: str(v) for k, v in meta.items()}))


async def _read_bounded(part: BodyPartReader, limit: int) -> bytes:
    """The part's bytes, refused as soon as they pass `limit` (never held whole first)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise JobError(
                413,
                "file_too_large",
                f"the file has more than {limit} bytes; at most {limit} are accepted",
                "file",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _owned(
    request: web.Request, kind: str, fetch: Callable[[str], Awaitable[dict[str, str] | None]]
) -> dict[str, str]:
    """The file, batch or job named by the path, if the caller owns it: anybody else's is
    answered as missing (404), so ids cannot be probed."""
    _creds, owner = _credentials(request)
    object_id = request.match_info["id"]
    found = await fetch(object_id)
    if found is None or found.get("owner") != owner:
        raise JobError(404, f"{kind}_not_found", f"no {kind} {object_id!r}")
    return found


async def _owned_file(request: web.Request) -> dict[str, str]:
    return await _owned(request, "file", request.app[STORE].file)


async def _file(request: web.Request) -> web.Response:
    return web.json_response(lifecycle.file_object(await _owned_file(request)))


async def _content(request: web.Request) -> web.Response:
    meta = await _owned_file(request)
    content = await request.app[STORE].file_content(meta["id"])
    if content is None:
        raise JobError(404, "file_not_found", f"file {meta['id']!r} has no content any more")
    return web.Response(text=content, content_type="application/jsonl")


# --- batches -------------------------------------------------------------------------------


async def _create_batch(request: web.Request) -> web.Response:
    credentials, owner = _credentials(request)
    body = await _json_object(request)
    app = request.app
    batch = await lifecycle.create_batch(
        app[STORE], app[QUEUE], app[METRICS], body, owner, credentials
    )
    return web.json_response(batch)


async def _owned_batch(request: web.Request) -> dict[str, str]:
    return await _owned(request, "batch", request.app[STORE].batch)


async def _batch(request: web.Request) -> web.Response:
    return web.json_response(lifecycle.batch_object(await _owned_batch(request)))


async def _cancel_batch(request: web.Request) -> web.Response:
    batch = await _owned_batch(request)
    if batch["status"] not in ("in_progress", "cancelling"):
        raise JobError(
            409, "batch_not_cancellable", f"batch {batch['id']!r} is already {batch['status']}"
        )
    app = request.app
    found = await lifecycle.cancel_batch(app[STORE], app[METRICS], batch["id"])
    return web.json_response(lifecycle.batch_object(found))


async def _list_batches(request: web.Request) -> web.Response:
    _creds, owner = _credentials(request)
    store = request.app[STORE]
    try:
        limit = min(LIST_LIMIT_MAX, max(1, int(request.query.get("limit", "20"))))
    except ValueError:
        raise JobError(400, "invalid_limit", "limit must be a number", "limit") from None
    ids = await store.batch_ids(owner)
    after = request.query.get("after")
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    page: list[dict[str, Any]] = []
    for batch_id in ids:
        batch = await store.batch(batch_id)
        if batch is not None:
            page.append(lifecycle.batch_object(batch))
        if len(page) > limit:
            break
    data = page[:limit]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(page) > limit,
        }
    )


# --- single jobs -----------------------------------------------------------------------------


async def _submit_job(request: web.Request) -> web.Response:
    if not _RESPOND_ASYNC.search(request.headers.get("prefer", "")):
        raise JobError(
            400,
            "respond_async_required",
            "this service runs requests asynchronously: send `Prefer: respond-async` "
            "(or call the gateway directly for an immediate answer)",
        )
    body = await _json_object(request)
    if body.get("stream") is True:
        raise JobError(400, "stream_unsupported", "an asynchronous job cannot stream", "stream")
    credentials, owner = _credentials(request)
    store = request.app[STORE]
    now = now_s()
    job = {
        "id": lifecycle.new_id("job"),
        "status": "queued",
        "method": "POST",
        "path": str(request.rel_url),  # path and query, as the gateway will see them
        "body": json.dumps(body),
        "owner": owner,
        "created_at": now,
        "expires_at": now + JOB_WINDOW_S,
    }
    await store.create_job(job, credentials, JOB_WINDOW_S + lifecycle.WINDOW_SLACK_S)
    await request.app[QUEUE].put_job(str(job["id"]))
    location = f"/v1/jobs/{job['id']}"
    return web.json_response(
        _job_object({k: str(v) for k, v in job.items()}),
        status=202,
        headers={"Location": location, "Preference-Applied": "respond-async"},
    )


async def _owned_job(request: web.Request) -> dict[str, str]:
    return await _owned(request, "job", request.app[STORE].job)


async def _job(request: web.Request) -> web.Response:
    return web.json_response(_job_object(await _owned_job(request)))


async def _cancel_job(request: web.Request) -> web.Response:
    job = await _owned_job(request)
    store = request.app[STORE]
    if "result" not in job:
        await store.set_job(job["id"], cancel_requested=1)
        if job.get("status") == "queued":  # no worker has it: cancelled now
            await store.record_job(job["id"], json.dumps({"response": None}), "cancelled")
    return web.json_response(_job_object(await store.job(job["id"]) or job))


def _job_object(job: dict[str, str]) -> dict[str, Any]:
    result = json.loads(job["result"]) if job.get("result") else {}
    return {
        "id": job["id"],
        "object": "job",
        "status": job["status"],
        "method": job["method"],
        "path": job["path"],
        "created_at": int(job["created_at"]),
        "started_at": int(job["started_at"]) if job.get("started_at") else None,
        "finished_at": int(job["finished_at"]) if job.get("finished_at") else None,
        "expires_at": int(job["expires_at"]),
        "response": result.get("response"),
        # Why a job failed without an answer (credentials_unreadable), OpenAI's error shape.
        "error": result.get("error"),
    }


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise JobError(400, "invalid_json", f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise JobError(400, "invalid_json", "the request body must be a JSON object")
    return body
