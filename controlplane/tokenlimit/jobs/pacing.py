"""How long to hold back, read from what the gateway answered (pure functions, no I/O).

The filter answers a refusal with `429`, `Retry-After` (whole seconds, at least 1) and the
OpenAI-style `x-ratelimit-{limit,remaining,reset}-{tokens,requests,cost}` headers; with
`show_limit_headers` admitted answers carry them too. Workers wait what the gateway says
instead of hammering it, and stop early when a budget falls below the share left for
interactive traffic.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

KINDS = ("tokens", "requests", "cost")
#: When a 429 says nothing about when to come back.
DEFAULT_RETRY_S = 1.0
#: Spread workers that wake together over a little time, so they do not arrive as one burst.
JITTER_FRACTION = 0.1
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(text: str) -> float | None:
    """OpenAI's reset form (`42s`, `1m30s`, `120ms`, `1h2m`) or plain seconds, in seconds."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def retry_delay_s(headers: Mapping[str, str]) -> float:
    """After a 429: the longest wait any refusing budget asks for (Retry-After or reset)."""
    waits = [parse_reset(headers.get(f"x-ratelimit-reset-{kind}", "")) for kind in KINDS]
    retry_after = parse_reset(headers.get("retry-after", ""))
    found = [w for w in [*waits, retry_after] if w is not None]
    return max(found) if found else DEFAULT_RETRY_S


def reserve_delay_s(headers: Mapping[str, str], share: float) -> float:
    """After an admitted answer: how long to wait so `share` of each budget stays free for
    interactive traffic (0 when every budget has more than that left, or none is reported)."""
    if share <= 0:
        return 0.0
    wait = 0.0
    for kind in KINDS:
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if limit is None or remaining is None or reset is None or limit <= 0:
            continue
        if remaining < share * limit:
            wait = max(wait, reset)
    return wait


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Capped exponential back-off for a 5xx or a connection error."""
    return float(min(cap_s, base_s * (2 ** min(attempt, 30))))


def jittered(delay_s: float, rng: random.Random | None = None) -> float:
    pick = (rng or random).random()
    return delay_s * (1.0 + JITTER_FRACTION * pick)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
