"""Counter names as the filter writes them (meter/counter.zig), for the checks that need them.

    tokenlimit:{<rule>}:<limit type>[:<source>]:<tokens|requests>:<window seconds>:<identity>

`counter_rule_name` is how a rule name appears there; `counter_key_bytes` how long the longest
name of one budget is, so the model refuses what the filter could not count.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from tokenlimit.model.fields import PLAIN_RULE_NAME, PLAIN_RULE_NAME_BYTES_MAX
from tokenlimit.model.higress import WINDOWS
from tokenlimit.model.model_budgets import COST_WINDOWS, LONG_WINDOWS

# meter/counter.zig: a counter name longer than this cannot be counted, so no config may need
# one. The longest identity is a hashed value (32 hex digits); a global budget's is "global".
COUNTER_KEY_BYTES_MAX = 256
_IDENTITY_BYTES_MAX = 32
LIMIT_TYPES = {
    "limit_by_header": "header",
    "limit_by_param": "param",
    "limit_by_cookie": "cookie",
    "limit_by_consumer": "consumer",
    "limit_by_per_header": "per_header",
    "limit_by_per_param": "per_param",
    "limit_by_per_cookie": "per_cookie",
    "limit_by_per_consumer": "per_consumer",
    "limit_by_per_ip": "per_ip",
    "limit_by_model": "model",
    "limit_by_per_model": "per_model",
}
# Calendar weeks and months by their nominal length (design-model-budgets.md §4): the longest
# window segment a counter name may carry.
_WINDOW_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604_800,
    "month": 2_629_746,
}
# `:m=<model>`: the model segment of a per-model budget, the model as an identity is written.
_MODEL_SEGMENT_BYTES = len(":m=") + _IDENTITY_BYTES_MAX


def counter_rule_name(name: str) -> str:
    """A rule name as counter names carry it: as written when it is plain (every name valid
    before `:` and non-ASCII names were accepted keeps its counters), else `=` and the hex
    SHA-256 of the name: 65 bytes, longer than any plain name, so the two never meet."""
    if PLAIN_RULE_NAME.fullmatch(name) and len(name) <= PLAIN_RULE_NAME_BYTES_MAX:
        return name
    return "=" + hashlib.sha256(name.encode()).hexdigest()


def counter_key_bytes(
    rule: str, limit_type: str, source: str, windows: BaseModel, model_keyed: bool = False
) -> int:
    """The longest counter name one item's budgets need (meter/counter.zig's format)."""
    longest = 0
    for field in (*WINDOWS, *LONG_WINDOWS, *COST_WINDOWS):
        if getattr(windows, field) is None:
            continue
        unit = {"token": "tokens", "request": "requests", "cost": "cost"}[field.split("_")[0]]
        seconds = _WINDOW_SECONDS[field.rsplit("_", 1)[1]]
        identity = 6 if limit_type == "global" else _IDENTITY_BYTES_MAX
        size = len(f"tokenlimit:{{{counter_rule_name(rule)}}}:{limit_type}".encode())
        size += len(f":{source}".encode()) if source else 0
        size += len(f":{unit}:{seconds}:") + identity
        size += _MODEL_SEGMENT_BYTES if model_keyed else 0
        longest = max(longest, size)
    return longest
