"""Tests for the mock LLM upstream (tokenlimit.dev.mockllm)."""

from __future__ import annotations

import json
import math

from support.mock_client import H, call, sse_events
from tokenlimit.dev.mockllm import RunningMock

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
