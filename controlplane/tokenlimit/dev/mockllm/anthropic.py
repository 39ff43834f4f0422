"""Anthropic Messages: JSON and the message_start ... message_stop SSE events."""

from __future__ import annotations

from typing import Any

from tokenlimit.dev.mockllm.common import (
    Knobs,
    completion_deltas,
    completion_text,
    sse_event,
)

# --------------------------------------------------------------------------- Anthropic


def _anthropic_usage(k: Knobs, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": k.prompt,
        "cache_creation_input_tokens": k.cache_creation,
        "cache_read_input_tokens": k.cached,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(k: Knobs, body: dict[str, Any], mid: str) -> dict[str, Any]:
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


def stream(k: Knobs, body: dict[str, Any], mid: str) -> list[bytes]:
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
        sse_event({"type": "message_start", "message": message}, "message_start"),
        sse_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse_event({"type": "ping"}, "ping"),
    ]
    for piece in completion_deltas(k.completion):
        events.append(
            sse_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                "content_block_delta",
            )
        )
    events.append(sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens" if k.hit_max else "end_turn", "stop_sequence": None},
    }
    if not k.no_usage:
        delta["usage"] = {"output_tokens": k.completion}
    events.append(sse_event(delta, "message_delta"))
    events.append(sse_event({"type": "message_stop"}, "message_stop"))
    return events
