"""What every dialect of the mock shares: the per-request knobs, the deterministic text and
identifiers, and the JSON / SSE encoders."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

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


def json_bytes(obj: Any, pretty: bool) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- text


def completion_deltas(tokens: int) -> list[str]:
    """The completion text as stream deltas: one word per token, grouped when long."""
    words = [("" if i == 0 else " ") + VOCAB[i % len(VOCAB)] for i in range(tokens)]
    group = 1 if tokens <= MAX_STREAM_EVENTS else math.ceil(tokens / MAX_STREAM_EVENTS)
    return ["".join(words[i : i + group]) for i in range(0, tokens, group)]


def completion_text(tokens: int) -> str:
    return "".join(completion_deltas(tokens))


def ident(prefix: str, path: str, raw: bytes, length: int = 24) -> str:
    digest = hashlib.sha256(path.encode() + b"\0" + raw).hexdigest()
    return prefix + digest[:length]


def sse_event(
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
