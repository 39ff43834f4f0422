"""OpenAI Chat Completions (and Azure OpenAI's variant of it): JSON and SSE replies."""

from __future__ import annotations

from typing import Any

from tokenlimit.dev.mockllm.common import (
    CREATED,
    Dialect,
    Knobs,
    completion_deltas,
    completion_text,
    sse_event,
)

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


def chat_json(d: Dialect, k: Knobs, body: dict[str, Any], cid: str) -> dict[str, Any]:
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


def chat_stream(d: Dialect, k: Knobs, body: dict[str, Any], cid: str) -> list[bytes]:
    model = str(body.get("model") or d.model or "mock-model")
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    include_usage = include_usage and not k.no_usage
    events: list[bytes] = []

    if d.azure:
        events.append(
            sse_event(
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
        return sse_event(c)

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
        events.append(sse_event(u))
    events.append(b"data: [DONE]\n\n")
    return events
