"""`tokenlimit logs`: a quick look at an access log without Prometheus.

Reads the format `render.envoy.bootstrap.ACCESS_LOG_FORMAT` renders (`name=value` fields after
the method and path; "-" where Envoy had no value) and sums per caller (the filter's hashed
key), per rule and per model: requests, refusals by the limiter, upstream 429s, tokens and
spend. Lines of other formats are counted as skipped, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

LINE = re.compile(r"^\[(?P<at>[^\]]*)\] (?P<method>\S+) (?P<path>\S+) (?P<fields>.*)$")
FIELD = re.compile(r"(\w+)=(\S*)")
REFUSED_PREFIX = "rejected"  # rejected, rejected_store_unavailable, rejected_model, ...
ROWS_DEFAULT = 10


@dataclass
class Tally:
    requests: int = 0
    refused: int = 0
    upstream_429: int = 0
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def add(self, entry: dict[str, str]) -> None:
        self.requests += 1
        if entry.get("decision", "-").startswith(REFUSED_PREFIX):
            self.refused += 1
        if upstream_status(entry) == "429":
            self.upstream_429 += 1
        self.tokens += _int(entry.get("tokens"))
        self.cost_usd += _dollars(entry.get("cost"))


@dataclass
class Summary:
    lines: int = 0
    skipped: int = 0
    total: Tally = field(default_factory=Tally)
    decisions: dict[str, int] = field(default_factory=dict)
    callers: dict[str, Tally] = field(default_factory=dict)
    rules: dict[str, Tally] = field(default_factory=dict)
    models: dict[str, Tally] = field(default_factory=dict)

    def add(self, line: str) -> None:
        self.lines += 1
        entry = parse_line(line)
        if entry is None:
            self.skipped += 1
            return
        self.total.add(entry)
        decision = entry.get("decision", "-")
        self.decisions[decision] = self.decisions.get(decision, 0) + 1
        for table, name in (
            (self.callers, caller(entry)),
            (self.rules, entry.get("rule", "-")),
            (self.models, _model(entry)),
        ):
            table.setdefault(name, Tally()).add(entry)


def parse_line(line: str) -> dict[str, str] | None:
    """The fields of one access-log line, or None for a line of another format."""
    match = LINE.match(line.strip())
    if match is None:
        return None
    entry = dict(FIELD.findall(match["fields"]))
    if "decision" not in entry or "status" not in entry:
        return None
    entry["path"] = match["path"]
    return entry


def caller(entry: dict[str, str]) -> str:
    """The caller of a line: the last segment of the filter's counter identity (`key=`, e.g.
    `per_header:x-api-key:tokens:60:<sha-256 prefix>`): hashed for credentials."""
    return entry.get("key", "-").rpartition(":")[2] or "-"


def upstream_status(entry: dict[str, str]) -> str | None:
    """The status the upstream answered: Envoy's status when its details say `via_upstream`."""
    return entry.get("status") if entry.get("details") == "via_upstream" else None


def _model(entry: dict[str, str]) -> str:
    served = entry.get("served_model", "-")
    return served if served not in ("-", "") else entry.get("model", "-")


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return 0


def _dollars(value: str | None) -> Decimal:
    try:
        return Decimal(value or "") if value not in (None, "-") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def summarise(lines: Iterable[str]) -> Summary:
    summary = Summary()
    for line in lines:
        if line.strip():
            summary.add(line)
    return summary


def top(table: dict[str, Tally], rows: int = ROWS_DEFAULT) -> list[tuple[str, Tally]]:
    """The busiest entries: most tokens, then most requests."""
    return sorted(table.items(), key=lambda kv: (-kv[1].tokens, -kv[1].requests, kv[0]))[:rows]


def render(summary: Summary, rows: int = ROWS_DEFAULT) -> str:
    """The summary as plain text columns (readable in a pipe, greppable)."""
    t = summary.total
    out = [
        f"{t.requests} requests ({summary.skipped} other lines skipped), "
        f"{t.refused} refused by the limiter, {t.upstream_429} upstream 429, "
        f"{t.tokens} tokens, spend ${t.cost_usd}",
        "decisions: "
        + ", ".join(
            f"{k} {v}" for k, v in sorted(summary.decisions.items(), key=lambda kv: -kv[1])
        ),
    ]
    for title, table in (
        ("top callers (hashed key)", summary.callers),
        ("rules", summary.rules),
        ("models", summary.models),
    ):
        out.append("")
        out.append(f"{title:<34} {'requests':>9} {'refused':>8} {'429':>6} {'tokens':>10} spend")
        for name, tally in top(table, rows):
            out.append(
                f"{name[:34]:<34} {tally.requests:>9} {tally.refused:>8} "
                f"{tally.upstream_429:>6} {tally.tokens:>10} ${tally.cost_usd}"
            )
    return "\n".join(out) + "\n"
