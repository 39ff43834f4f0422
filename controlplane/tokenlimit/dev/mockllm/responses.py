"""The OpenAI Responses API: JSON and its typed SSE events."""

from __future__ import annotations

from typing import Any

from tokenlimit.dev.mockllm.common import (
    CREATED,
    Knobs,
    completion_deltas,
    completion_text,
    sse_event,
)

# --------------------------------------------------------------------------- Responses


def response_obj(k: Knobs, body: dict[str, Any], rid: str, mid: str, done: bool) -> dict[str, Any]:
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


def stream(k: Knobs, body: dict[str, Any], rid: str, mid: str) -> list[bytes]:
    seq = 0
    events: list[bytes] = []

    def ev(etype: str, fields: dict[str, Any]) -> None:
        nonlocal seq
        events.append(sse_event({"type": etype, "sequence_number": seq, **fields}, etype))
        seq += 1

    pending = response_obj(k, body, rid, mid, done=False)
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
    final = response_obj(k, body, rid, mid, done=True)
    ev("response.output_item.done", {"output_index": 0, "item": final["output"][0]})
    ev("response.completed", {"response": final})
    return events
