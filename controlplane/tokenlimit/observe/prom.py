"""Envoy's /stats/prometheus, read and summed: what the panel and the alerts count from.

The filter's labelled metrics (issue 16) appear as

    tokenlimit_requests{rule,model,outcome}      allowed rejected shadow_rejected waited
                                                 downgraded cached estimated store_unavailable
    tokenlimit_tokens{rule,model}                tokens charged
    tokenlimit_cost_microusd{rule,model}         cost charged, micro-USD
    tokenlimit_upstream_rate_limited{rule,model} upstream 429 answers
    tokenlimit_budget_warned{rule}               admissions past warn_at
    tokenlimit_redis_circuit_open                gauge: 1 while Redis is unavailable

(Envoy prints counters without a `_total` suffix.) The filter also keeps the same counts
unlabelled (`tokenlimit_requests_allowed`, `tokenlimit_tokens_charged`, ...), as a filter built
before the labels had only those: they are read, as rule "*" and model "none", only where the
labelled family is missing, so the panel and alerts work against either and never count twice.

Several Envoys (`--envoy-admin` more than once) are summed, gauges by their maximum.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

ALL_RULES = "*"  # the unlabelled metrics of a filter without labels
NO_MODEL = "none"
OUTCOMES = (
    "allowed",
    "rejected",
    "shadow_rejected",
    "waited",
    "downgraded",
    "cached",
    "estimated",
    "store_unavailable",
)
# Unlabelled counters a filter without labels defines (filter/src/abi/metrics.zig), as outcomes.
LEGACY_OUTCOMES = {
    "tokenlimit_requests_allowed": "allowed",
    "tokenlimit_requests_rejected": "rejected",
    "tokenlimit_requests_shadow_rejected": "shadow_rejected",
    "tokenlimit_usage_estimated": "estimated",
}
FETCH_TIMEOUT_S = 3.0
BODY_BYTES_MAX = 16 << 20  # a stats page past this is refused rather than held in memory

Labels = tuple[tuple[str, str], ...]


class StatsError(RuntimeError):
    """An Envoy's stats could not be read; the message names which and why."""


@dataclass
class Stats:
    """The tokenlimit metrics of one or more Envoys, summed."""

    # (rule, model, outcome) -> requests
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)
    tokens: dict[tuple[str, str], float] = field(default_factory=dict)
    cost_microusd: dict[tuple[str, str], float] = field(default_factory=dict)
    upstream_rate_limited: dict[tuple[str, str], float] = field(default_factory=dict)
    budget_warned: dict[str, float] = field(default_factory=dict)
    redis_circuit_open: float = 0.0

    def merge(self, other: Stats) -> Stats:
        """The sum of two Envoys' counters (the larger gauge)."""
        merged = Stats(redis_circuit_open=max(self.redis_circuit_open, other.redis_circuit_open))
        for name in ("requests", "tokens", "cost_microusd", "upstream_rate_limited"):
            _add_all(getattr(merged, name), getattr(self, name), getattr(other, name))
        _add_all(merged.budget_warned, self.budget_warned, other.budget_warned)
        return merged

    def requests_by(self, outcome: str, *, rule: str | None = None) -> float:
        return sum(
            n
            for (r, _, o), n in self.requests.items()
            if o == outcome and (rule is None or r == rule)
        )

    def rules(self) -> list[str]:
        names = {r for r, _, _ in self.requests} | {r for r, _ in self.tokens}
        return sorted(names | set(self.budget_warned))

    def models(self) -> list[str]:
        names = {m for _, m, _ in self.requests} | {m for _, m in self.tokens}
        return sorted(names | {m for _, m in self.upstream_rate_limited})


def _add_all(into: dict, *sources: Mapping) -> None:  # type: ignore[type-arg]
    for source in sources:
        for key, value in source.items():
            into[key] = into.get(key, 0.0) + value


def parse(text: str) -> Stats:
    """The tokenlimit metrics in a Prometheus text exposition. A filter with labels still
    defines the unlabelled counters too (they count the same requests): those are read only
    from a filter that shows no labelled series, so nothing is counted twice."""
    labelled, legacy = Stats(), Stats()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names a counter's samples `<name>_total`; Envoy prints them without.
            name = family.name if sample.name == family.name + "_total" else sample.name
            labels, value = sample.labels, float(sample.value)
            rule = labels.get("rule", ALL_RULES)
            model = labels.get("model", NO_MODEL)
            if name == "tokenlimit_requests" and "outcome" in labels:
                _bump(labelled.requests, (rule, model, labels["outcome"]), value)
            elif name in LEGACY_OUTCOMES:
                _bump(legacy.requests, (rule, model, LEGACY_OUTCOMES[name]), value)
            elif name == "tokenlimit_tokens":
                _bump(labelled.tokens, (rule, model), value)
            elif name == "tokenlimit_tokens_charged":
                _bump(legacy.tokens, (rule, model), value)
            elif name == "tokenlimit_cost_microusd":
                _bump(labelled.cost_microusd, (rule, model), value)
            elif name == "tokenlimit_upstream_rate_limited":
                _bump(labelled.upstream_rate_limited, (rule, model), value)
            elif name == "tokenlimit_budget_warned":
                _bump(labelled.budget_warned, rule, value)
            elif name == "tokenlimit_budget_warnings":
                _bump(legacy.budget_warned, rule, value)
            elif name == "tokenlimit_redis_circuit_open":
                labelled.redis_circuit_open = max(labelled.redis_circuit_open, value)
    families = ("requests", "tokens", "cost_microusd", "upstream_rate_limited", "budget_warned")
    if any(getattr(labelled, name) for name in families):
        return labelled  # a filter with labels: its unlabelled twins are the same counts
    labelled.requests, labelled.tokens = legacy.requests, legacy.tokens
    labelled.budget_warned = legacy.budget_warned
    return labelled


def _bump(into: dict, key: object, value: float) -> None:  # type: ignore[type-arg]
    into[key] = into.get(key, 0.0) + value


def fetch_text(admin_url: str, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """One Envoy's /stats/prometheus, the stats whose names hold "tokenlimit" (`filter=` keeps
    the page small; it matches Envoy's internal names, `wasmcustom.tokenlimit.*`, not the
    Prometheus ones, so it cannot be anchored to `^tokenlimit_`)."""
    url = admin_url.rstrip("/") + "/stats/prometheus?filter=tokenlimit"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read(BODY_BYTES_MAX + 1)
    except (OSError, ValueError) as exc:
        raise StatsError(f"cannot read {admin_url}/stats/prometheus: {exc}") from None
    if len(body) > BODY_BYTES_MAX:
        raise StatsError(f"{admin_url}/stats/prometheus is over {BODY_BYTES_MAX} bytes")
    return body.decode(errors="replace")


def read(admin_urls: Iterable[str], timeout_s: float = FETCH_TIMEOUT_S) -> tuple[Stats, list[str]]:
    """Every reachable Envoy's stats summed, and one error line per Envoy that did not answer."""
    total, errors = Stats(), []
    for url in admin_urls:
        try:
            total = total.merge(parse(fetch_text(url, timeout_s)))
        except (StatsError, ValueError) as exc:
            errors.append(str(exc))
    return total, errors
