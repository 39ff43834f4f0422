"""Gemini generateContent / streamGenerateContent (SSE with alt=sse, else a JSON array)."""

from __future__ import annotations

import json
from typing import Any

from tokenlimit.dev.mockllm.common import (
    Dialect,
    Knobs,
    completion_deltas,
    sse_event,
)

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


def chunk(d: Dialect, k: Knobs, text: str, finish: bool, usage: bool, rid: str) -> dict[str, Any]:
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


def stream(d: Dialect, k: Knobs, rid: str, sse: bool) -> list[bytes]:
    pieces = completion_deltas(k.completion) or [""]
    chunks = [
        chunk(d, k, p, i == len(pieces) - 1, i == len(pieces) - 1, rid)
        for i, p in enumerate(pieces)
    ]
    if sse:
        return [sse_event(c, newline="\r\n", compact=False) for c in chunks]
    # streamed JSON array, as Google sends it without alt=sse
    out: list[bytes] = []
    for i, c in enumerate(chunks):
        prefix = "[" if i == 0 else ",\r\n"
        out.append((prefix + json.dumps(c, indent=2, ensure_ascii=False)).encode())
    out.append(b"]")
    return out
