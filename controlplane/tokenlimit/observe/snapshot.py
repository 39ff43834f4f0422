"""What the panel shows, as JSON: built from the summed Envoy stats, the Redis rows and a short
history of earlier stats (for the per-model curves). Pure: the dashboard server calls it."""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tokenlimit.observe.prom import OUTCOMES, Stats
from tokenlimit.observe.sources import caller
from tokenlimit.usage import MICRO_USD, WINDOW_NAMES, Row

HISTORY_POINTS = 120  # at a 5 s refresh: the last 10 minutes of curves
BUDGET_ROWS_MAX = 50
CALLERS_MAX = 10
CAMEL = {o: o.split("_")[0] + "".join(p.title() for p in o.split("_")[1:]) for o in OUTCOMES}


@dataclass
class History:
    points: deque[tuple[float, Stats]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    def add(self, at: float, stats: Stats) -> None:
        self.points.append((at, stats))


def _group(stats: Stats, by: int) -> dict[str, dict[str, float]]:
    """Per rule (by=0) or per model (by=1): requests by outcome, tokens, cost, upstream 429s."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(CAMEL.values(), 0.0))
    for (rule, model, outcome), n in stats.requests.items():
        row = rows[(rule, model)[by]]
        name = CAMEL.get(outcome, outcome)
        row[name] = row.get(name, 0.0) + n
    for name, values in (
        ("tokens", stats.tokens),
        ("costUsd", stats.cost_microusd),
        ("upstream429", stats.upstream_rate_limited),
    ):
        for key, n in values.items():
            row = rows[key[by]]
            row[name] = row.get(name, 0.0) + (n / MICRO_USD if name == "costUsd" else n)
    if by == 0:
        for rule, n in stats.budget_warned.items():
            rows[rule]["warned"] = rows[rule].get("warned", 0.0) + n
    return rows


def _table(groups: dict[str, dict[str, float]], name: str) -> list[dict[str, Any]]:
    fields = (*CAMEL.values(), "tokens", "costUsd", "upstream429")
    table = []
    for key in sorted(groups):
        row: dict[str, Any] = {name: key, **{f: 0.0 for f in fields}, **groups[key]}
        table.append(row)
    return table


def _budgets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    found = []
    for r in rows:
        c = r.counter
        share = r.used / r.limit if r.used is not None and r.limit else None
        found.append(
            {
                "rule": c.rule,
                "unit": "usd" if c.unit == "cost" else c.unit,
                "window": WINDOW_NAMES.get(c.window_s, f"{c.window_s}s"),
                "caller": caller(r),
                "model": c.model,
                "used": _amount(r.used, c.unit),
                "limit": _amount(r.limit, c.unit),
                "share": share,
            }
        )
    found.sort(key=lambda b: (-float(b["share"] or 0.0), str(b["rule"]), str(b["caller"])))
    return found[:BUDGET_ROWS_MAX]


def _amount(value: int | None, unit: str) -> float | None:
    if value is None:
        return None
    return value / MICRO_USD if unit == "cost" else float(value)


def _callers(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The busiest callers in the windows Redis holds now, each unit summed over its counters
    (one counter per window: the shortest window of each unit, not a double count)."""
    shortest: dict[tuple[str, str, str, str], Row] = {}
    for r in rows:
        if r.used is None or r.counter.limit_type == "global":
            continue  # a global budget is everyone's, not a caller's
        key = (caller(r), r.counter.rule, r.counter.unit, r.counter.model)
        if key not in shortest or r.counter.window_s < shortest[key].counter.window_s:
            shortest[key] = r
    callers: dict[tuple[str, str], dict[str, Any]] = {}
    for (who, rule, unit, _), r in shortest.items():
        entry = callers.setdefault(
            (who, rule), {"caller": who, "rule": rule, "tokens": 0, "requests": 0, "costUsd": 0.0}
        )
        used = r.used or 0
        if unit == "cost":
            entry["costUsd"] += used / MICRO_USD
        else:
            entry[unit] += used
    ranked = sorted(callers.values(), key=lambda e: (-e["tokens"], -e["requests"], e["caller"]))
    return ranked[:CALLERS_MAX]


def _series(history: History) -> dict[str, Any]:
    """Per model: tokens per minute between consecutive looks, and the limiter's refusals."""
    points = list(history.points)
    at: list[str] = []
    models: dict[str, list[float]] = defaultdict(list)
    refusals: list[float] = []
    for (t0, s0), (t1, s1) in itertools.pairwise(points):
        span_min = max(t1 - t0, 1e-3) / 60
        at.append(_iso(t1))
        for model in s1.models():
            now = sum(n for (_, m), n in s1.tokens.items() if m == model)
            then = sum(n for (_, m), n in s0.tokens.items() if m == model)
            models[model].append(round(max(now - then, 0) / span_min, 1))
        refusals.append(
            round(max(s1.requests_by("rejected") - s0.requests_by("rejected"), 0) / span_min, 1)
        )
    # A model first seen late has fewer points: pad its start so every curve shares the x axis.
    padded = {m: [0.0] * (len(at) - len(v)) + v for m, v in models.items()}
    return {"at": at, "tokensPerMinute": padded, "refusalsPerMinute": refusals}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build(
    at: float,
    stats: Stats | None,
    rows: Sequence[Row],
    errors: Sequence[str],
    history: History,
    *,
    redis: str,
) -> dict[str, Any]:
    """The panel's JSON. `redis`: "ok", "unavailable" or "off" (no --redis)."""
    seen = stats or Stats()
    rules, models = _group(seen, 0), _group(seen, 1)
    summed: dict[str, float] = defaultdict(float)
    for group in rules.values():
        for name, n in group.items():
            summed[name] += n
    totals = _table({"all": summed}, "scope")[0]
    return {
        "at": _iso(at),
        "errors": list(errors),
        "redis": redis,
        "circuitOpen": seen.redis_circuit_open > 0,
        "totals": totals,
        "rules": _table(rules, "rule"),
        "models": _table(models, "model"),
        "budgets": _budgets(rows),
        "callers": _callers(rows),
        "series": _series(history),
    }
