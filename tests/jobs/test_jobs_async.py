"""Single requests with `Prefer: respond-async` (RFC 7240): 202 + Location, then the answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from jobs_support import Services, metric, wait_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}


def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


def test_respond_async_answers_202_and_the_job_carries_the_upstream_answer(
    services: Services, mock_stats
) -> None:
    _proc, url = services.start(workers=1)
    key = {"authorization": "Bearer solo"}
    status, headers, job = call(
        url + "/v1/chat/completions",
        "POST",
        CHAT,
        {**key, "prefer": "respond-async, wait=0"},
    )
    assert status == 202
    assert headers["Location"] == f"/v1/jobs/{job['id']}"
    assert headers["Preference-Applied"] == "respond-async"
    assert job["status"] == "queued" and job["path"] == "/v1/chat/completions"

    def finished() -> Any:
        found = call(url + headers["Location"], headers=key)[2]
        return found if found["status"] == "completed" else None

    done = wait_for(finished, 20, "the job", services)
    assert done["response"]["status_code"] == 200
    assert done["response"]["body"]["usage"]["completion_tokens"] == 7
    assert mock_stats()["requests"] == 1

    # Someone else's credentials do not see it.
    assert call(url + headers["Location"], headers={"authorization": "Bearer other"})[0] == 404


def test_without_prefer_respond_async_the_request_is_refused_with_the_reason(
    services: Services,
) -> None:
    _proc, url = services.start(workers=0)
    status, _headers, body = call(url + "/v1/chat/completions", "POST", CHAT)
    assert status == 400
    assert body["error"]["code"] == "respond_async_required"
    assert "Prefer: respond-async" in body["error"]["message"]


def test_a_queued_job_can_be_cancelled(services: Services, mock_stats) -> None:
    _proc, url = services.start(workers=0)  # nobody takes it: it stays queued
    key = {"authorization": "Bearer solo"}
    _status, headers, job = call(
        url + "/v1/chat/completions", "POST", CHAT, {**key, "prefer": "respond-async"}
    )
    status, _h, cancelled = call(url + f"/v1/jobs/{job['id']}/cancel", "POST", {}, key)
    assert status == 200 and cancelled["status"] == "cancelled"
    assert cancelled["response"] is None

    _proc2, url2 = services.start(workers=1)  # a worker comes: it must not run it
    wait_for(lambda: metric_zero_queue(url2), 10, "the queue to drain", services)
    assert call(url2 + headers["Location"], headers=key)[2]["status"] == "cancelled"
    assert mock_stats()["requests"] == 0


def metric_zero_queue(url: str) -> bool:
    return metric(url, "tokenlimit_jobs_queued") == 0 and (
        metric(url, "tokenlimit_jobs_pending") == 0
    )


CONTROLLED = ("--credential-header", "authorization", "--credential-header", "x-mock-status")


def test_a_refusal_for_good_fails_the_job_at_once(services: Services, mock_stats) -> None:
    """A 4xx other than 429 is the upstream's final word: no retry, the job fails with it."""
    _proc, url = services.start(1, *CONTROLLED)
    key = {"authorization": "Bearer solo", "x-mock-status": "400"}
    _s, headers, _job = call(
        url + "/v1/chat/completions", "POST", CHAT, {**key, "prefer": "respond-async"}
    )

    def finished() -> Any:
        found = call(url + headers["Location"], headers=key)[2]
        return found if found["status"] == "failed" else None

    failed = wait_for(finished, 20, "the failure", services)
    assert failed["response"]["status_code"] == 400
    assert "error" in failed["response"]["body"]
    assert mock_stats()["requests"] == 1


def test_a_5xx_is_retried_not_failed(services: Services, mock_stats) -> None:
    _proc, url = services.start(1, *CONTROLLED)
    key = {"authorization": "Bearer solo", "x-mock-status": "503"}
    _s, headers, _job = call(
        url + "/v1/chat/completions", "POST", CHAT, {**key, "prefer": "respond-async"}
    )
    wait_for(lambda: mock_stats()["requests"] >= 3, 20, "three attempts", services)
    job = call(url + headers["Location"], headers=key)[2]
    assert job["status"] == "in_progress" and job["response"] is None
    assert metric(url, "tokenlimit_jobs_retried_total") >= 2
    status, _h, _job = call(url + headers["Location"] + "/cancel", "POST", {}, key)
    assert status == 200
    done = wait_for(
        lambda: call(url + headers["Location"], headers=key)[2]["status"] == "cancelled",
        10,
        "the cancel of a running job",
        services,
    )
    assert done
