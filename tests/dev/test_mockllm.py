"""Tests for the mock LLM upstream (tokenlimit.dev.mockllm)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tokenlimit.dev import mockllm
from tokenlimit.dev.mockllm import RunningMock, start_in_thread

CONTROLPLANE = Path(__file__).resolve().parents[2] / "controlplane"


@pytest.fixture(scope="module")
def mock() -> Iterator[RunningMock]:
    m = start_in_thread(name="primary")
    try:
        yield m
    finally:
        m.stop()


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    m: RunningMock,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Reply:
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body (LF or CRLF line endings)."""
    text = body.decode().replace("\r\n", "\n")
    out: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        out.append((event, "\n".join(data)))
    return out


def raw_chunks(
    m: RunningMock, path: str, body: dict[str, Any], headers: dict[str, str]
) -> list[bytes]:
    """Send one request over a raw socket and return the HTTP/1.1 body chunks as framed."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: mock", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head += ["Content-Type: application/json", f"Content-Length: {len(payload)}", "", ""]
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall("\r\n".join(head).encode() + payload)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    headers_end = buf.index(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in buf[:headers_end].lower()
    rest = buf[headers_end + 4 :]
    chunks: list[bytes] = []
    while True:
        line_end = rest.index(b"\r\n")
        size = int(rest[:line_end], 16)
        if size == 0:
            return chunks
        chunks.append(rest[line_end + 2 : line_end + 2 + size])
        rest = rest[line_end + 2 + size + 2 :]


H = {"x-mock-prompt-tokens": "120", "x-mock-completion-tokens": "7", "x-mock-cached-tokens": "30"}


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_chat_json_usage(mock: RunningMock) -> None:
    r = call(mock, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}, H)
    assert r.status == 200
    assert r.headers["x-mock-upstream"] == "primary"
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "gpt-4o-mini"
    assert doc["id"].startswith("chatcmpl-")
    assert doc["usage"]["prompt_tokens"] == 120
    assert doc["usage"]["completion_tokens"] == 7
    assert doc["usage"]["total_tokens"] == 127
    assert doc["usage"]["prompt_tokens_details"]["cached_tokens"] == 30
    msg = doc["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert len(msg["content"].split()) == 7
    # deterministic: the same request gives the same bytes
    assert (
        call(mock, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}, H).body
        == r.body
    )


def test_openai_chat_stream_without_include_usage_has_no_usage(mock: RunningMock) -> None:
    r = call(mock, "/v1/chat/completions", {"model": "m", "stream": True}, H)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.body.endswith(b"data: [DONE]\n\n")
    assert b"usage" not in r.body
    events = sse_events(r.body)
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert len(text.split()) == 7
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_chat_stream_with_include_usage(mock: RunningMock) -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    r = call(mock, "/v1/chat/completions", body, H)
    events = sse_events(r.body)
    assert events[-1] == (None, "[DONE]")
    usage_chunk = json.loads(events[-2][1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 120
    assert usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["total_tokens"] == 127
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 30
    # like OpenAI: every other chunk carries "usage": null
    for _, data in events[:-2]:
        assert json.loads(data)["usage"] is None
    # one delta per token (plus the role chunk and the finish chunk)
    assert len(events) == 7 + 4


def test_openai_defaults_from_body(mock: RunningMock) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 101}]}
    raw = json.dumps(body).encode()
    r = call(mock, "/v1/chat/completions", raw)
    assert r.json()["usage"]["prompt_tokens"] == math.ceil(len(raw) / 4)
    assert r.json()["usage"]["completion_tokens"] == 16
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    r = call(mock, "/v1/chat/completions", {"model": "m", "max_tokens": 5})
    assert r.json()["usage"]["completion_tokens"] == 5
    assert r.json()["choices"][0]["finish_reason"] == "length"
    r = call(mock, "/v1/chat/completions", {"model": "m", "max_completion_tokens": 9})
    assert r.json()["usage"]["completion_tokens"] == 9


def test_azure_and_compatible_paths(mock: RunningMock) -> None:
    path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    r = call(mock, path, {"messages": []}, H)
    doc = r.json()
    assert doc["model"] == "gpt4o-prod"
    assert doc["usage"]["total_tokens"] == 127
    assert "prompt_filter_results" in doc
    body = {"stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(call(mock, path, body, H).body)
    first = json.loads(events[0][1])
    assert first["choices"] == [] and "usage" not in first  # Azure's prompt-filter chunk
    assert json.loads(events[-2][1])["usage"]["completion_tokens"] == 7
    for compat in ("/openai/v1/chat/completions", "/api/v1/chat/completions"):
        assert call(mock, compat, {"model": "llama3"}, H).json()["usage"]["prompt_tokens"] == 120


def test_no_usage_header(mock: RunningMock) -> None:
    hdrs = {**H, "x-mock-no-usage": "1"}
    assert "usage" not in call(mock, "/v1/chat/completions", {}, hdrs).json()
    body = {"stream": True, "stream_options": {"include_usage": True}}
    r = call(mock, "/v1/chat/completions", body, hdrs)
    assert b"usage" not in r.body and r.body.endswith(b"data: [DONE]\n\n")
    assert b"usage" not in call(mock, "/v1/messages", {"stream": True}, hdrs).body
    assert "usageMetadata" not in call(mock, "/v1beta/models/g:generateContent", {}, hdrs).json()
    assert "usage" not in call(mock, "/v1/responses", {}, hdrs).json()


# --------------------------------------------------------------------------- Responses


def test_responses_json_usage(mock: RunningMock) -> None:
    r = call(mock, "/v1/responses", {"model": "gpt-4.1", "input": "hi"}, H)
    doc = r.json()
    assert doc["object"] == "response" and doc["status"] == "completed"
    assert doc["usage"] == {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 30},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 127,
    }
    assert len(doc["output"][0]["content"][0]["text"].split()) == 7
    r = call(mock, "/v1/responses", {"model": "gpt-4.1", "max_output_tokens": 3})
    assert r.json()["usage"]["output_tokens"] == 3


def test_responses_stream(mock: RunningMock) -> None:
    r = call(mock, "/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True}, H)
    events = sse_events(r.body)
    names = [e for e, _ in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert names.count("response.output_text.delta") == 7
    for name, data in events:
        assert json.loads(data)["type"] == name
    assert json.loads(events[0][1])["response"]["usage"] is None
    final = json.loads(events[-1][1])["response"]
    assert final["usage"]["input_tokens"] == 120
    assert final["usage"]["output_tokens"] == 7
    assert final["usage"]["total_tokens"] == 127
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 30
    assert b"[DONE]" not in r.body


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_json_usage(mock: RunningMock) -> None:
    hdrs = {**H, "x-mock-cache-creation-tokens": "11"}
    r = call(mock, "/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 1024}, hdrs)
    doc = r.json()
    assert doc["type"] == "message" and doc["role"] == "assistant"
    assert doc["id"].startswith("msg_")
    u = doc["usage"]
    assert u["input_tokens"] == 120
    assert u["output_tokens"] == 7
    assert u["cache_read_input_tokens"] == 30
    assert u["cache_creation_input_tokens"] == 11
    assert doc["stop_reason"] == "end_turn"
    r = call(mock, "/v1/messages", {"model": "c", "max_tokens": 4})
    assert r.json()["usage"]["output_tokens"] == 4
    assert r.json()["stop_reason"] == "max_tokens"


def test_anthropic_stream(mock: RunningMock) -> None:
    r = call(mock, "/v1/messages", {"model": "claude", "max_tokens": 50, "stream": True}, H)
    events = sse_events(r.body)
    names = [e for e, _ in events]
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert names.count("content_block_delta") == 7
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    for name, data in events:
        assert json.loads(data)["type"] == name
    start = json.loads(events[0][1])["message"]["usage"]
    assert start["input_tokens"] == 120
    assert start["output_tokens"] == 1
    assert start["cache_read_input_tokens"] == 30
    assert json.loads(events[-2][1])["usage"] == {"output_tokens": 7}


# --------------------------------------------------------------------------- Gemini


def test_gemini_json_usage(mock: RunningMock) -> None:
    r = call(mock, "/v1beta/models/gemini-2.0-flash:generateContent", {"contents": []}, H)
    doc = r.json()
    um = doc["usageMetadata"]
    assert um["promptTokenCount"] == 120
    assert um["candidatesTokenCount"] == 7
    assert um["totalTokenCount"] == 127
    assert um["cachedContentTokenCount"] == 30
    assert doc["modelVersion"] == "gemini-2.0-flash"
    parts = doc["candidates"][0]["content"]["parts"]
    assert len(parts[0]["text"].split()) == 7
    no_cache = {k: v for k, v in H.items() if k != "x-mock-cached-tokens"}
    r = call(mock, "/v1beta/models/g:generateContent", {}, no_cache)
    assert "cachedContentTokenCount" not in r.json()["usageMetadata"]
    body = {"generationConfig": {"maxOutputTokens": 6}}
    r = call(mock, "/v1/models/g:generateContent", body)
    assert r.json()["usageMetadata"]["candidatesTokenCount"] == 6


def test_gemini_stream_sse(mock: RunningMock) -> None:
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    r = call(mock, path, {"contents": []}, H)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert b"\r\n\r\n" in r.body  # Google frames its SSE events with CRLF
    chunks = [json.loads(d) for _, d in sse_events(r.body)]
    assert len(chunks) == 7
    assert all("usageMetadata" not in c for c in chunks[:-1])
    um = chunks[-1]["usageMetadata"]
    assert (um["promptTokenCount"], um["candidatesTokenCount"], um["totalTokenCount"]) == (
        120,
        7,
        127,
    )
    assert um["cachedContentTokenCount"] == 30
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_stream_json_array(mock: RunningMock) -> None:
    r = call(mock, "/v1beta/models/g:streamGenerateContent", {}, H)
    arr = r.json()
    assert isinstance(arr, list) and len(arr) == 7
    assert arr[-1]["usageMetadata"]["totalTokenCount"] == 127


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
