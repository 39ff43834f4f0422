"""`tokenlimit usage`: the budgets the Redis store holds right now, as a table.

Counter keys are written by the filter (filter/src/match.zig) as

    tokenlimit:{<rule>}:<limit type>[:<source>]:<tokens|requests>:<window seconds>:<identity>

where `<identity>` is the key value itself for addresses and consumer names, and the first
16 bytes of its SHA-256 in hex for values that may be credentials (headers, parameters,
cookies). `--key K` finds a caller by computing both forms, so nobody has to store a raw key.
Each counter is a hash {s: window start (ms), u: used, p: previous window's usage}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

KEY_PREFIX = "tokenlimit:"
HASHED_TYPES = {"header", "param", "cookie", "per_header", "per_param", "per_cookie"}
SCAN_COUNT = 500
ROWS_MAX = 10_000


def hash_value(value: str) -> str:
    """How the filter names a credential-like key value (match.zig `hashValue`)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Counter:
    rule: str
    limit_type: str
    source: str
    unit: str
    window_s: int
    identity: str
    key: str

    @property
    def hashed(self) -> bool:
        return self.limit_type in HASHED_TYPES


def parse_counter_key(key: str) -> Counter | None:
    """The parts of a counter key, or None for anything else under the prefix."""
    if not key.startswith(KEY_PREFIX + "{"):
        return None
    rule_end = key.find("}:", len(KEY_PREFIX))
    if rule_end < 0:
        return None
    rule = key[len(KEY_PREFIX) + 1 : rule_end]
    parts = key[rule_end + 2 :].split(":")
    # type, [source], unit, window, identity (the identity itself never contains ':')
    if len(parts) == 4:
        limit_type, unit, window, identity = parts
        source = ""
    elif len(parts) >= 5:
        limit_type, unit, window, identity = parts[0], parts[-3], parts[-2], parts[-1]
        source = ":".join(parts[1:-3])
    else:
        return None
    if unit not in ("tokens", "requests") or not window.isdigit():
        return None
    return Counter(rule, limit_type, source, unit, int(window), identity, key)


@dataclass(frozen=True)
class Row:
    counter: Counter
    used: int
    resets_in_s: float


def identities_for(value: str) -> set[str]:
    """Both spellings a caller's key value can have in a counter key."""
    return {value, hash_value(value)}


def current_usage(record: dict[bytes, bytes], window_s: int, now_ms: int) -> tuple[int, float]:
    """Usage in the current fixed window (the record of an earlier window counts 0)."""
    start = int(record.get(b"s", b"0"))
    used = int(record.get(b"u", b"0"))
    length_ms = window_s * 1000
    current_start = now_ms - now_ms % length_ms
    if start != current_start:
        return 0, (current_start + length_ms - now_ms) / 1000
    return used, (start + length_ms - now_ms) / 1000


def read_usage(client, rule: str | None = None, key_value: str | None = None) -> list[Row]:
    """Rows for every counter (of `rule`, of the caller with `key_value`) Redis holds now."""
    pattern = f"{KEY_PREFIX}{{{rule}}}:*" if rule else f"{KEY_PREFIX}*"
    wanted = identities_for(key_value) if key_value is not None else None
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows: list[Row] = []
    for raw_key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        counter = parse_counter_key(raw_key.decode(errors="replace"))
        if counter is None or (wanted is not None and counter.identity not in wanted):
            continue
        used, resets_in = current_usage(client.hgetall(raw_key), counter.window_s, now_ms)
        rows.append(Row(counter, used, resets_in))
        if len(rows) >= ROWS_MAX:
            break
    return sorted(
        rows, key=lambda r: (r.counter.rule, r.counter.identity, r.counter.unit, r.counter.window_s)
    )


def table_rows(rows: Iterable[Row]) -> list[tuple[str, ...]]:
    """The cells `tokenlimit usage` prints, one tuple per counter."""
    return [
        (
            r.counter.rule,
            r.counter.limit_type + (f" {r.counter.source}" if r.counter.source else ""),
            r.counter.identity[:12] + "…" if r.counter.hashed else r.counter.identity,
            f"{r.counter.unit}/{r.counter.window_s}s",
            str(r.used),
            f"{r.resets_in_s:.0f}s",
        )
        for r in rows
    ]
