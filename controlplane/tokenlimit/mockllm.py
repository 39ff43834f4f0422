"""Mock LLM upstream: deterministic OpenAI / Azure / Anthropic / Gemini answers.

Used by ``tokenlimit up --upstream mock``, the demo and the test suites. It speaks
each provider's exact response shape (JSON and SSE) so the filter's usage parsers
are exercised against realistic bytes, and it can be told per request, through
request headers, how many tokens to report and how to misbehave.

Run it::

    python -m tokenlimit.mockllm --port 8000 [--host 127.0.0.1] [--name primary]

It prints ``mock-llm listening on http://HOST:PORT`` (flushed) once it accepts
connections (with ``--port 0`` the line carries the port actually bound) and stops
cleanly on SIGINT / SIGTERM. In-process: ``await start(host, port)`` (returns an
``AppRunner``; see :func:`runner_url`), or ``start_in_thread()`` for synchronous code.

Dialects (chosen by path, POST only)
------------------------------------
==============================================================  ===========================
path                                                            dialect
==============================================================  ===========================
``/v1/chat/completions``, any path ending ``/chat/completions``  OpenAI Chat Completions
(vLLM, Ollama, Groq, OpenRouter, ...)
``/openai/deployments/{deployment}/chat/completions``            Azure OpenAI (same shape,
                                                                 plus ``prompt_filter_results``;
                                                                 its first stream chunk has
                                                                 ``"choices": []`` and no usage)
``/v1/responses`` (any path ending ``/responses``)               OpenAI Responses API
``/v1/messages``                                                 Anthropic Messages
``/v1beta/models/{model}:generateContent``                       Gemini (also ``/v1/models/...``
``/v1beta/models/{model}:streamGenerateContent?alt=sse``         and Vertex ``/v1/projects/...
                                                                 /publishers/google/models/...``)
==============================================================  ===========================

Streaming is requested as the provider does it: ``"stream": true`` in the body
(OpenAI, Azure, Responses, Anthropic) or the ``:streamGenerateContent`` method
(Gemini; SSE with ``?alt=sse``, otherwise a streamed JSON array).

Usage numbers reported (P, C, K, W from the headers below):

* OpenAI chat:  ``usage.prompt_tokens=P, completion_tokens=C, total_tokens=P+C,
  prompt_tokens_details.cached_tokens=K``. Stream: the usage chunk
  (``"choices": []``) is sent only if the request has
  ``"stream_options": {"include_usage": true}``; then every other chunk carries
  ``"usage": null``, as OpenAI does. The stream ends ``data: [DONE]``.
* Responses:    ``usage.input_tokens=P, output_tokens=C, total_tokens=P+C,
  input_tokens_details.cached_tokens=K``; streaming: ``response.created`` ...
  ``response.output_text.delta`` ... ``response.completed`` (``response.usage``).
* Anthropic:    ``usage.input_tokens=P, output_tokens=C, cache_read_input_tokens=K,
  cache_creation_input_tokens=W``; streaming: ``message_start`` (usage with
  ``output_tokens: 1``), ``content_block_start``, ``ping``, ``content_block_delta`` xN,
  ``content_block_stop``, ``message_delta`` (``usage.output_tokens=C``), ``message_stop``.
* Gemini:       ``usageMetadata.promptTokenCount=P, candidatesTokenCount=C,
  totalTokenCount=P+C``, ``cachedContentTokenCount=K`` only when K > 0. SSE events are
  ``data: {...}\\r\\n\\r\\n`` (CRLF, as Google sends them); usageMetadata is on the last
  chunk only.

The reported prompt/input count is always exactly P in every dialect (the cached and
cache-creation counts are reported beside it, never subtracted from it).

Control headers (request headers; the contract the tests rely on)
-----------------------------------------------------------------
================================  =============================================================
header                            effect (default)
================================  =============================================================
``x-mock-prompt-tokens: P``       prompt/input tokens reported (``ceil(len(body)/4)``, min 1)
``x-mock-completion-tokens: C``   completion/output tokens reported; the text has C words
                                  (request's ``max_completion_tokens`` / ``max_tokens`` /
                                  ``max_output_tokens`` / ``generationConfig.maxOutputTokens``
                                  if given, else 16)
``x-mock-cached-tokens: K``       cached prompt tokens (0)
``x-mock-cache-creation-tokens``  Anthropic ``cache_creation_input_tokens`` (0)
``x-mock-status: S``              reply with status S and the provider's error JSON
                                  (e.g. 429, 500, 503, 529), whatever the body; S < 400
                                  just sets the status of the normal reply
``x-mock-retry-after: N``         set ``Retry-After: N`` on the reply (any status)
``x-mock-delay-ms: D``            sleep D ms before the reply headers (0)
``x-mock-stream-interval-ms: I``  sleep I ms between stream writes (0)
``x-mock-chunk-bytes: B``         re-split the response body into writes of exactly B bytes
                                  (the last may be shorter), each flushed separately with a
                                  ~1 ms pause, so SSE events / JSON straddle body chunks. The
                                  bytes are identical to the unsplit reply. Works for JSON too
                                  (then sent chunked, without Content-Length).
``x-mock-no-usage: 1``            omit usage entirely (no usage chunk, no usage fields)
``x-mock-abort-after-bytes: N``   send only the first N body bytes, then drop the connection
                                  (simulates an upstream reset mid-stream; JSON replies keep
                                  their full Content-Length so the truncation is visible)
================================  =============================================================

A malformed control header, an invalid JSON body or a non-object body gets a 400 with
the dialect's error JSON (OpenAI: ``{"error": {"message", "type":
"invalid_request_error", "param", "code"}}``; Anthropic and Gemini use their own shapes,
which also carry ``error.message``). An unknown path is a 404 and a wrong method a 405,
both OpenAI-shaped.

Every response carries ``x-mock-upstream: NAME`` (``--name`` / ``make_app(name=...)``,
default ``mock``). ``GET /mock/stats`` returns ``{"name", "requests", "by_path",
"by_status", "last_request": {"method", "path", "query", "headers", "body"}}`` counting
every request except ``/mock/*`` and ``/healthz``; ``POST /mock/reset`` clears it;
``GET /healthz`` answers 200. The mock never sends ``x-ratelimit-*`` headers itself, so
any such header seen by a client came from the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "RunningMock",
    "main",
    "make_app",
    "run",
    "runner_url",
    "start",
    "start_in_thread",
]

DEFAULT_NAME = "mock"
DEFAULT_COMPLETION_TOKENS = 16
CREATED = 1735689600  # fixed timestamp (2025-01-01T00:00:00Z) keeps bodies deterministic
MAX_STREAM_EVENTS = 256  # above this many tokens, deltas carry groups of tokens
CHUNK_PAUSE_S = 0.001

STATS_KEY: web.AppKey[dict[str, Any]] = web.AppKey("mock_stats", dict)
NAME_KEY: web.AppKey[str] = web.AppKey("mock_name", str)

VOCAB = (
    "Token", "budgets", "keep", "shared", "models", "fair", "for", "every", "tenant",
    "while", "the", "gateway", "counts", "each", "streamed", "word", "and", "settles",
    "usage", "at", "the", "end", "of", "the", "reply", ".",
)  # fmt: skip


class MockBadRequest(Exception):
    """A request the mock refuses with 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Dialect:
    kind: str  # "chat" | "responses" | "anthropic" | "gemini"
    azure: bool = False
    model: str | None = None  # from the path (Azure deployment, Gemini model)
    gemini_stream: bool = False


@dataclass(frozen=True)
class Knobs:
    prompt: int
    completion: int
    cached: int
    cache_creation: int
    status: int
    retry_after: str | None
    delay_ms: int
    interval_ms: int
    chunk_bytes: int
    no_usage: bool
    abort_after: int | None
    hit_max: bool  # completion count equals the request's own limit


# --------------------------------------------------------------------------- routing

_GEMINI_RE = re.compile(
    r"^/(?:v1|v1beta|v1alpha)/(?:projects/[^/]+/locations/[^/]+/publishers/google/)?"
    r"models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)
_AZURE_RE = re.compile(r"^/openai/deployments/(?P<dep>[^/]+)/chat/completions$")


def _route(path: str) -> Dialect | None:
    m = _AZURE_RE.match(path)
    if m:
        return Dialect("chat", azure=True, model=m.group("dep"))
    if path.endswith("/chat/completions"):
        return Dialect("chat")
    if path.endswith("/responses"):
        return Dialect("responses")
    if path == "/v1/messages" or path.endswith("/v1/messages"):
        return Dialect("anthropic")
    m = _GEMINI_RE.match(path)
    if m:
        return Dialect(
            "gemini",
            model=m.group("model"),
            gemini_stream=m.group("method") == "streamGenerateContent",
        )
    return None


# --------------------------------------------------------------------------- errors

_OPENAI_ERR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout", None),
    413: ("invalid_request_error", "request_too_large"),
    429: ("tokens", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_GEMINI_ERR = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MSG = {
    400: "Invalid request.",
    404: "The requested resource was not found.",
    429: "Rate limit reached for tokens. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "The upstream timed out.",
    529: "Overloaded",
}


def _error_body(
    kind: str, status: int, message: str | None = None, param: str | None = None
) -> dict[str, Any]:
    msg = message or _DEFAULT_MSG.get(status) or f"Mock upstream error {status}."
    if kind == "anthropic":
        etype = _ANTHROPIC_ERR.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": etype, "message": msg}}
    if kind == "gemini":
        gstatus = _GEMINI_ERR.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": msg, "status": gstatus}}
    etype, code = _OPENAI_ERR.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": msg, "type": etype, "param": param, "code": code}}


def _json_bytes(obj: Any, pretty: bool) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- knobs


def _int_header(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise MockBadRequest(f"header {name} must be a non-negative integer, got {raw!r}", name)
    return value


def _request_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    gen = body.get("generationConfig") or body.get("generation_config")
    if isinstance(gen, dict):
        v = gen.get("maxOutputTokens", gen.get("max_output_tokens"))
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _parse_control(request: web.Request) -> dict[str, Any]:
    """Header knobs that do not depend on the body (validated before it is parsed)."""
    status = _int_header(request, "x-mock-status", 200)
    assert status is not None
    if not 100 <= status <= 599:
        raise MockBadRequest(
            f"header x-mock-status must be 100..599, got {status}", "x-mock-status"
        )
    no_usage_raw = request.headers.get("x-mock-no-usage", "").strip().lower()
    return {
        "status": status,
        "retry_after": request.headers.get("x-mock-retry-after"),
        "delay_ms": _int_header(request, "x-mock-delay-ms", 0),
        "interval_ms": _int_header(request, "x-mock-stream-interval-ms", 0),
        "chunk_bytes": _int_header(request, "x-mock-chunk-bytes", 0),
        "abort_after": _int_header(request, "x-mock-abort-after-bytes", None),
        "no_usage": no_usage_raw not in ("", "0", "false", "no", "off"),
        "prompt": _int_header(request, "x-mock-prompt-tokens", None),
        "completion": _int_header(request, "x-mock-completion-tokens", None),
        "cached": _int_header(request, "x-mock-cached-tokens", 0),
        "cache_creation": _int_header(request, "x-mock-cache-creation-tokens", 0),
    }


def _knobs(ctl: dict[str, Any], raw: bytes, body: dict[str, Any]) -> Knobs:
    limit = _request_limit(body)
    prompt = ctl["prompt"] if ctl["prompt"] is not None else max(1, math.ceil(len(raw) / 4))
    if ctl["completion"] is not None:
        completion = ctl["completion"]
    else:
        completion = limit if limit is not None else DEFAULT_COMPLETION_TOKENS
    return Knobs(
        prompt=prompt,
        completion=completion,
        cached=ctl["cached"],
        cache_creation=ctl["cache_creation"],
        status=ctl["status"],
        retry_after=ctl["retry_after"],
        delay_ms=ctl["delay_ms"],
        interval_ms=ctl["interval_ms"],
        chunk_bytes=ctl["chunk_bytes"],
        no_usage=ctl["no_usage"],
        abort_after=ctl["abort_after"],
        hit_max=limit is not None and completion >= limit,
    )


# --------------------------------------------------------------------------- text


def completion_deltas(tokens: int) -> list[str]:
    """The completion text as stream deltas: one word per token, grouped when long."""
    words = [("" if i == 0 else " ") + VOCAB[i % len(VOCAB)] for i in range(tokens)]
    group = 1 if tokens <= MAX_STREAM_EVENTS else math.ceil(tokens / MAX_STREAM_EVENTS)
    return ["".join(words[i : i + group]) for i in range(0, tokens, group)]


def completion_text(tokens: int) -> str:
    return "".join(completion_deltas(tokens))


def _ident(prefix: str, path: str, raw: bytes, length: int = 24) -> str:
    digest = hashlib.sha256(path.encode() + b"\0" + raw).hexdigest()
    return prefix + digest[:length]


def _sse(
    data: Any, event: str | None = None, *, newline: str = "\n", compact: bool = True
) -> bytes:
    payload = (
        data
        if isinstance(data, str)
        else (
            json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            if compact
            else json.dumps(data, ensure_ascii=False)
        )
    )
    head = f"event: {event}{newline}" if event else ""
    return f"{head}data: {payload}{newline}{newline}".encode()


# --------------------------------------------------------------------------- OpenAI chat

_CONTENT_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def _chat_usage(k: Knobs) -> dict[str, Any]:
    return {
        "prompt_tokens": k.prompt,
        "completion_tokens": k.completion,
        "total_tokens": k.prompt + k.completion,
        "prompt_tokens_details": {"cached_tokens": k.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_json(d: Dialect, k: Knobs, body: dict[str, Any], cid: str) -> dict[str, Any]:
    model = str(body.get("model") or d.model or "mock-model")
    choice: dict[str, Any] = {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": completion_text(k.completion),
            "refusal": None,
            "annotations": [],
        },
        "logprobs": None,
        "finish_reason": "length" if k.hit_max else "stop",
    }
    if d.azure:
        choice["content_filter_results"] = _CONTENT_FILTER_OK
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [choice],
    }
    if d.azure:
        out["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_OK}
        ]
    if not k.no_usage:
        out["usage"] = _chat_usage(k)
    if not d.azure:
        out["service_tier"] = "default"
    out["system_fingerprint"] = "fp_mock0001"
    return out


def _chat_stream(d: Dialect, k: Knobs, body: dict[str, Any], cid: str) -> list[bytes]:
    model = str(body.get("model") or d.model or "mock-model")
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    include_usage = include_usage and not k.no_usage
    events: list[bytes] = []

    if d.azure:
        events.append(
            _sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_OK}
                    ],
                }
            )
        )

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        c: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
        }
        if not d.azure:
            c["service_tier"] = "default"
        c["system_fingerprint"] = "fp_mock0001"
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if d.azure and "content" in delta:
            choice["content_filter_results"] = _CONTENT_FILTER_OK
        c["choices"] = [choice]
        if include_usage:
            c["usage"] = None
        return _sse(c)

    events.append(chunk({"role": "assistant", "content": "", "refusal": None}, None))
    for piece in completion_deltas(k.completion):
        events.append(chunk({"content": piece}, None))
    events.append(chunk({}, "length" if k.hit_max else "stop"))
    if include_usage:
        u: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
        }
        if not d.azure:
            u["service_tier"] = "default"
        u["system_fingerprint"] = "fp_mock0001"
        u["choices"] = []
        u["usage"] = _chat_usage(k)
        events.append(_sse(u))
    events.append(b"data: [DONE]\n\n")
    return events


# --------------------------------------------------------------------------- Responses


def _responses_obj(
    k: Knobs, body: dict[str, Any], rid: str, mid: str, done: bool
) -> dict[str, Any]:
    text = completion_text(k.completion)
    output: list[dict[str, Any]] = []
    if done:
        output.append(
            {
                "id": mid,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
                ],
            }
        )
    usage: dict[str, Any] | None = None
    if done and not k.no_usage:
        usage = {
            "input_tokens": k.prompt,
            "input_tokens_details": {"cached_tokens": k.cached},
            "output_tokens": k.completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": k.prompt + k.completion,
        }
    obj: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": "completed" if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model") or "mock-model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    if k.no_usage:
        del obj["usage"]
    return obj


def _responses_stream(k: Knobs, body: dict[str, Any], rid: str, mid: str) -> list[bytes]:
    seq = 0
    events: list[bytes] = []

    def ev(etype: str, fields: dict[str, Any]) -> None:
        nonlocal seq
        events.append(_sse({"type": etype, "sequence_number": seq, **fields}, etype))
        seq += 1

    pending = _responses_obj(k, body, rid, mid, done=False)
    ev("response.created", {"response": pending})
    ev("response.in_progress", {"response": pending})
    item = {
        "id": mid,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    ev("response.output_item.added", {"output_index": 0, "item": item})
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    ev("response.content_part.added", {**where, "part": part})
    for piece in completion_deltas(k.completion):
        ev("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
    text = completion_text(k.completion)
    ev("response.output_text.done", {**where, "text": text, "logprobs": []})
    ev("response.content_part.done", {**where, "part": {**part, "text": text}})
    final = _responses_obj(k, body, rid, mid, done=True)
    ev("response.output_item.done", {"output_index": 0, "item": final["output"][0]})
    ev("response.completed", {"response": final})
    return events


# --------------------------------------------------------------------------- Anthropic


def _anthropic_usage(k: Knobs, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": k.prompt,
        "cache_creation_input_tokens": k.cache_creation,
        "cache_read_input_tokens": k.cached,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _anthropic_json(k: Knobs, body: dict[str, Any], mid: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or "mock-model"),
        "content": [{"type": "text", "text": completion_text(k.completion)}],
        "stop_reason": "max_tokens" if k.hit_max else "end_turn",
        "stop_sequence": None,
    }
    if not k.no_usage:
        out["usage"] = _anthropic_usage(k, k.completion)
    return out


def _anthropic_stream(k: Knobs, body: dict[str, Any], mid: str) -> list[bytes]:
    message: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or "mock-model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if not k.no_usage:
        message["usage"] = _anthropic_usage(k, 1)
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    for piece in completion_deltas(k.completion):
        events.append(
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                "content_block_delta",
            )
        )
    events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens" if k.hit_max else "end_turn", "stop_sequence": None},
    }
    if not k.no_usage:
        delta["usage"] = {"output_tokens": k.completion}
    events.append(_sse(delta, "message_delta"))
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return events


# --------------------------------------------------------------------------- Gemini


def _gemini_usage(k: Knobs) -> dict[str, Any]:
    u: dict[str, Any] = {
        "promptTokenCount": k.prompt,
        "candidatesTokenCount": k.completion,
        "totalTokenCount": k.prompt + k.completion,
    }
    if k.cached > 0:
        u["cachedContentTokenCount"] = k.cached
    u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": k.prompt}]
    return u


def _gemini_chunk(
    d: Dialect, k: Knobs, text: str, finish: bool, usage: bool, rid: str
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        cand["finishReason"] = "MAX_TOKENS" if k.hit_max else "STOP"
    cand["index"] = 0
    out: dict[str, Any] = {"candidates": [cand]}
    if usage and not k.no_usage:
        out["usageMetadata"] = _gemini_usage(k)
    out["modelVersion"] = d.model or "mock-model"
    out["responseId"] = rid
    return out


def _gemini_stream(d: Dialect, k: Knobs, rid: str, sse: bool) -> list[bytes]:
    pieces = completion_deltas(k.completion) or [""]
    chunks = [
        _gemini_chunk(d, k, p, i == len(pieces) - 1, i == len(pieces) - 1, rid)
        for i, p in enumerate(pieces)
    ]
    if sse:
        return [_sse(c, newline="\r\n", compact=False) for c in chunks]
    # streamed JSON array, as Google sends it without alt=sse
    out: list[bytes] = []
    for i, c in enumerate(chunks):
        prefix = "[" if i == 0 else ",\r\n"
        out.append((prefix + json.dumps(c, indent=2, ensure_ascii=False)).encode())
    out.append(b"]")
    return out


# --------------------------------------------------------------------------- sending


async def _send(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    writes: Sequence[bytes],
    k: Knobs,
    *,
    stream: bool,
) -> web.StreamResponse:
    body = b"".join(writes)
    if not stream and k.chunk_bytes == 0 and k.abort_after is None:
        return web.Response(status=status, body=body, headers=headers)

    resp = web.StreamResponse(status=status, headers=headers)
    if stream or k.chunk_bytes:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = len(body)
    if k.chunk_bytes:
        n = k.chunk_bytes
        pieces = [body[i : i + n] for i in range(0, len(body), n)]
        pause = max(CHUNK_PAUSE_S, k.interval_ms / 1000)
    else:
        pieces = list(writes) if stream else [body]
        pause = k.interval_ms / 1000

    try:
        await resp.prepare(request)
        sent = 0
        for i, piece in enumerate(pieces):
            if k.abort_after is not None and sent + len(piece) >= k.abort_after:
                piece = piece[: k.abort_after - sent]
                if piece:
                    await resp.write(piece)
                await _abort(request)
                return resp
            if i and pause > 0:
                await asyncio.sleep(pause)
            await resp.write(piece)
            sent += len(piece)
        if k.abort_after is not None:  # N >= body length: drop before the terminator
            await _abort(request)
            return resp
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away mid-reply; nothing more to do
    return resp


async def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    # let what was written reach the socket, then close it without a terminating chunk
    for _ in range(200):
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    transport.abort()


# --------------------------------------------------------------------------- handlers


def _record(request: web.Request, raw: bytes) -> None:
    stats = request.app[STATS_KEY]
    stats["requests"] += 1
    stats["by_path"][request.path] = stats["by_path"].get(request.path, 0) + 1
    body: Any
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = raw.decode("utf-8", errors="replace")
    stats["last_request"] = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": body,
    }


def _count_status(request: web.Request, status: int) -> None:
    by_status = request.app[STATS_KEY]["by_status"]
    by_status[str(status)] = by_status.get(str(status), 0) + 1


def _error_response(
    request: web.Request,
    kind: str,
    status: int,
    message: str | None = None,
    param: str | None = None,
    retry_after: str | None = None,
) -> web.Response:
    _count_status(request, status)
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    pretty = kind in ("chat", "responses", "gemini")
    return web.Response(
        status=status,
        body=_json_bytes(_error_body(kind, status, message, param), pretty),
        headers=headers,
    )


async def _llm_handler(request: web.Request) -> web.StreamResponse:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        _record(request, b"")
        return _error_response(request, "chat", 413, "Request body too large for mock-llm.")
    _record(request, raw)

    dialect = _route(request.path)
    if dialect is None:
        return _error_response(
            request, "chat", 404, f"Unknown path {request.path!r} (mock-llm).", None
        )
    if request.method != "POST":
        return _error_response(
            request, dialect.kind, 405, f"Method {request.method} not allowed; use POST."
        )
    try:
        ctl = _parse_control(request)
    except MockBadRequest as e:
        return _error_response(request, dialect.kind, 400, e.message, e.param)

    if ctl["delay_ms"]:
        await asyncio.sleep(ctl["delay_ms"] / 1000)
    if ctl["status"] >= 400:  # a forced error wins over body validation
        return _error_response(request, dialect.kind, ctl["status"], None, None, ctl["retry_after"])

    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return _error_response(
            request,
            dialect.kind,
            400,
            f"We could not parse the JSON body of your request. ({e})",
            None,
            ctl["retry_after"],
        )
    if not isinstance(parsed, dict):
        return _error_response(
            request,
            dialect.kind,
            400,
            f"Invalid request body: expected a JSON object, got {type(parsed).__name__}.",
            None,
            ctl["retry_after"],
        )
    k = _knobs(ctl, raw, parsed)

    headers: dict[str, str] = {}
    if k.retry_after is not None:
        headers["Retry-After"] = k.retry_after
    stream = False
    writes: list[bytes]
    if dialect.kind == "chat":
        cid = _ident("chatcmpl-", request.path, raw)
        stream = parsed.get("stream") is True
        if stream:
            writes = _chat_stream(dialect, k, parsed, cid)
        else:
            writes = [_json_bytes(_chat_json(dialect, k, parsed, cid), not dialect.azure)]
    elif dialect.kind == "responses":
        rid = _ident("resp_", request.path, raw, 48)
        mid = _ident("msg_", request.path + "#m", raw, 48)
        stream = parsed.get("stream") is True
        if stream:
            writes = _responses_stream(k, parsed, rid, mid)
        else:
            writes = [_json_bytes(_responses_obj(k, parsed, rid, mid, done=True), True)]
    elif dialect.kind == "anthropic":
        mid = _ident("msg_01", request.path, raw)
        stream = parsed.get("stream") is True
        if stream:
            writes = _anthropic_stream(k, parsed, mid)
        else:
            writes = [_json_bytes(_anthropic_json(k, parsed, mid), False)]
    else:
        rid = _ident("", request.path, raw, 22)
        if dialect.gemini_stream:
            stream = True
            sse = request.query.get("alt") == "sse"
            writes = _gemini_stream(dialect, k, rid, sse)
            if not sse:
                headers["Content-Type"] = "application/json; charset=UTF-8"
        else:
            chunk = _gemini_chunk(dialect, k, completion_text(k.completion), True, True, rid)
            writes = [_json_bytes(chunk, True)]

    if stream:
        headers.setdefault("Content-Type", "text/event-stream; charset=utf-8")
        headers["Cache-Control"] = "no-cache"
    else:
        headers["Content-Type"] = "application/json"
    _count_status(request, k.status)
    return await _send(request, k.status, headers, writes, k, stream=stream)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "name": request.app[NAME_KEY]})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY])


async def _reset(request: web.Request) -> web.Response:
    request.app[STATS_KEY].update(_fresh_stats(request.app[NAME_KEY]))
    return web.json_response({"reset": True})


def _fresh_stats(name: str) -> dict[str, Any]:
    return {"name": name, "requests": 0, "by_path": {}, "by_status": {}, "last_request": None}


def make_app(name: str = DEFAULT_NAME) -> web.Application:
    """The mock upstream as an aiohttp application."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[NAME_KEY] = name
    app[STATS_KEY] = _fresh_stats(name)

    async def tag(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-mock-upstream"] = name

    app.on_response_prepare.append(tag)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/mock/stats", _stats)
    app.router.add_post("/mock/reset", _reset)
    app.router.add_route("*", "/{tail:.*}", _llm_handler)
    return app


# --------------------------------------------------------------------------- running


async def start(host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME) -> web.AppRunner:
    """Start serving in the running event loop; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(make_app(name), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def runner_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first socket a runner from :func:`start` listens on."""
    addr = runner.addresses[0]
    host, port = addr[0], addr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _serve_forever(host: str, port: int, name: str) -> None:
    runner = await start(host, port, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        print(f"mock-llm listening on {runner_url(runner)}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str = "127.0.0.1", port: int = 8000, name: str = DEFAULT_NAME) -> None:
    """Serve until SIGINT or SIGTERM (blocking)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(host, port, name))


class RunningMock:
    """A mock served from a background thread (for synchronous code and tests)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(
            target=self._main, args=(host, port), name=f"mock-llm-{name}", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"mock-llm failed to start: {self._error}") from self._error
        if not self.url:
            raise RuntimeError("mock-llm did not start within 10 s")

    def _main(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = self._loop.run_until_complete(start(host, port, self.name))
            self.url = runner_url(self._runner)
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> RunningMock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME
) -> RunningMock:
    """Serve from a daemon thread; returns a handle with ``.url``, ``.port``, ``.stop()``."""
    return RunningMock(host, port, name)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tokenlimit.mockllm", description="Deterministic mock LLM upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--name", default=DEFAULT_NAME, help="value of x-mock-upstream")
    args = parser.parse_args(argv)
    try:
        run(args.host, args.port, args.name)
    except OSError as e:
        print(f"mock-llm: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        raise SystemExit(1) from e


if __name__ == "__main__":
    main()
