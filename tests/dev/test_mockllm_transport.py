"""Tests for the mock LLM upstream (tokenlimit.dev.mockllm): bytes on the wire, aborts, errors,
delays, the control API and the command line. Split from test_mockllm.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.mock_client import H, call, raw_chunks, sse_events
from tokenlimit.dev import mockllm
from tokenlimit.dev.mockllm import RunningMock, start_in_thread

CONTROLPLANE = Path(__file__).resolve().parents[2] / "controlplane"


# --------------------------------------------------------------------------- byte-level


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/messages", {"stream": True}),
        ("/v1/responses", {"stream": True}),
        ("/v1beta/models/g:streamGenerateContent?alt=sse", {}),
        ("/v1/chat/completions", {}),
    ],
)
def test_chunk_bytes_splits_same_bytes(mock: RunningMock, path: str, body: dict[str, Any]) -> None:
    whole = call(mock, path, body, H).body
    chunks = raw_chunks(mock, path, body, {**H, "x-mock-chunk-bytes": "7"})
    assert b"".join(chunks) == whole
    assert all(len(c) == 7 for c in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= 7
    assert len(chunks) == math.ceil(len(whole) / 7)


def test_unsplit_stream_writes_one_event_per_chunk(mock: RunningMock) -> None:
    body = {"stream": True}
    chunks = raw_chunks(mock, "/v1/messages", body, H)
    assert all(c.startswith(b"event: ") and c.endswith(b"\n\n") for c in chunks)
    assert len(chunks) == len(sse_events(b"".join(chunks)))


def test_long_completion_groups_tokens(mock: RunningMock) -> None:
    hdrs = {"x-mock-completion-tokens": "1000"}
    body = {"stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(call(mock, "/v1/chat/completions", body, hdrs).body)
    assert len(events) <= mockllm.MAX_STREAM_EVENTS + 4
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for _, d in events[:-2])
    assert len(text.split()) == 1000
    assert json.loads(events[-2][1])["usage"]["completion_tokens"] == 1000


def test_abort_after_bytes_stream(mock: RunningMock) -> None:
    hdrs = {**H, "x-mock-abort-after-bytes": "150", "x-mock-chunk-bytes": "40"}
    with pytest.raises(http.client.IncompleteRead) as exc:
        call(mock, "/v1/chat/completions", {"stream": True}, hdrs)
    full = call(mock, "/v1/chat/completions", {"stream": True}, H).body
    assert exc.value.partial == full[:150]


def test_abort_after_bytes_json(mock: RunningMock) -> None:
    hdrs = {**H, "x-mock-abort-after-bytes": "64"}
    with pytest.raises(http.client.IncompleteRead) as exc:
        call(mock, "/v1/messages", {}, hdrs)
    assert len(exc.value.partial) == 64


def test_abort_beyond_length_still_drops_connection(mock: RunningMock) -> None:
    full = call(mock, "/v1/messages", {"stream": True}, H).body
    hdrs = {**H, "x-mock-abort-after-bytes": str(len(full) + 10)}
    with pytest.raises(http.client.IncompleteRead) as exc:
        call(mock, "/v1/messages", {"stream": True}, hdrs)
    assert exc.value.partial == full


# --------------------------------------------------------------------------- errors


def test_status_and_retry_after(mock: RunningMock) -> None:
    hdrs = {"x-mock-status": "429", "x-mock-retry-after": "7"}
    r = call(mock, "/v1/chat/completions", {"stream": True}, hdrs)
    assert r.status == 429
    assert r.headers["Retry-After"] == "7"
    assert r.headers["x-mock-upstream"] == "primary"
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["message"]

    r = call(mock, "/v1/messages", {}, {"x-mock-status": "529"})
    assert r.status == 529
    assert r.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    r = call(mock, "/v1beta/models/g:generateContent", {}, {"x-mock-status": "503"})
    assert r.status == 503
    assert r.json()["error"]["status"] == "UNAVAILABLE" and r.json()["error"]["code"] == 503
    r = call(mock, "/v1/responses", {}, {"x-mock-status": "500"})
    assert r.status == 500 and r.json()["error"]["type"] == "server_error"
    # a forced status wins even over a bad body
    assert call(mock, "/v1/chat/completions", b"", {"x-mock-status": "503"}).status == 503
    # Retry-After also on a successful reply
    r = call(mock, "/v1/chat/completions", {}, {"x-mock-retry-after": "2"})
    assert r.status == 200 and r.headers["Retry-After"] == "2"


def test_delay(mock: RunningMock) -> None:
    t0 = time.monotonic()
    r = call(mock, "/v1/chat/completions", {}, {"x-mock-delay-ms": "300"})
    elapsed = time.monotonic() - t0
    assert r.status == 200
    assert 0.3 <= elapsed < 2.0


def test_stream_interval(mock: RunningMock) -> None:
    t0 = time.monotonic()
    hdrs = {"x-mock-completion-tokens": "3", "x-mock-stream-interval-ms": "50"}
    call(mock, "/v1/chat/completions", {"stream": True}, hdrs)
    assert time.monotonic() - t0 >= 0.25  # 6 events, 5 gaps


def test_bad_input_is_400(mock: RunningMock) -> None:
    for raw in (b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"):
        r = call(mock, "/v1/chat/completions", raw)
        assert r.status == 400, raw
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"]
    r = call(mock, "/v1/messages", b"nope")
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = call(mock, "/v1beta/models/g:generateContent", b"nope")
    assert r.status == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = call(mock, "/v1/chat/completions", {}, {"x-mock-prompt-tokens": "many"})
    assert r.status == 400 and r.json()["error"]["param"] == "x-mock-prompt-tokens"
    r = call(mock, "/v1/chat/completions", {}, {"x-mock-status": "999"})
    assert r.status == 400
    # the server is still fine
    assert call(mock, "/healthz", method="GET").status == 200


def test_unknown_path_and_method(mock: RunningMock) -> None:
    r = call(mock, "/v2/nothing", {})
    assert r.status == 404
    assert r.headers["x-mock-upstream"] == "primary"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = call(mock, "/v1/chat/completions", method="GET")
    assert r.status == 405 and "error" in r.json()


# --------------------------------------------------------------------------- control API


def test_stats_and_reset(mock: RunningMock) -> None:
    assert call(mock, "/mock/reset", method="POST").status == 200
    call(mock, "/v1/chat/completions", {"model": "a", "n": 1}, {"X-Tenant": "t1"})
    call(mock, "/v1/chat/completions", {"model": "b"})
    call(mock, "/v1/messages", {"model": "c"}, {"x-mock-status": "429"})
    call(mock, "/healthz", method="GET")
    stats = call(mock, "/mock/stats", method="GET").json()
    assert stats["name"] == "primary"
    assert stats["requests"] == 3
    assert stats["by_path"] == {"/v1/chat/completions": 2, "/v1/messages": 1}
    assert stats["by_status"] == {"200": 2, "429": 1}
    last = stats["last_request"]
    assert last["path"] == "/v1/messages"
    assert last["body"] == {"model": "c"}
    assert last["headers"]["x-mock-status"] == "429"
    assert call(mock, "/mock/reset", method="POST").status == 200
    stats = call(mock, "/mock/stats", method="GET").json()
    assert stats["requests"] == 0 and stats["by_path"] == {} and stats["last_request"] is None


def test_several_named_upstreams() -> None:
    with start_in_thread(name="fallback-a") as a, start_in_thread(name="fallback-b") as b:
        assert call(a, "/v1/chat/completions", {}).headers["x-mock-upstream"] == "fallback-a"
        assert call(b, "/v1/chat/completions", {}).headers["x-mock-upstream"] == "fallback-b"
        assert call(b, "/healthz", method="GET").headers["x-mock-upstream"] == "fallback-b"


def test_in_process_start_with_aiohttp_client() -> None:
    async def scenario() -> None:
        runner = await mockllm.start("127.0.0.1", 0, name="inproc")
        try:
            url = mockllm.runner_url(runner)
            async with aiohttp.ClientSession() as s:
                body = {"stream": True, "stream_options": {"include_usage": True}}
                async with s.post(f"{url}/v1/chat/completions", json=body, headers=H) as r:
                    assert r.status == 200
                    assert r.headers["x-mock-upstream"] == "inproc"
                    data = await r.read()
                assert json.loads(sse_events(data)[-2][1])["usage"]["total_tokens"] == 127
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_subprocess_cli_prints_ready_line_and_stops_on_sigterm() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(CONTROLPLANE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenlimit.dev.mockllm", "--port", "0", "--name", "sub"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("mock-llm listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("x-mock-upstream") == "sub"
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
