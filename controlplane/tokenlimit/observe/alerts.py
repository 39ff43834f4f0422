"""Alert episodes from what Envoy and Redis show: each fires once and resolves once.

`Evaluator.step(observation)` is pure apart from its own memory: it is handed an observation
(taken at an injected time) and returns the messages to send, so the rules are tested with a
fake clock and no waiting. The conditions, the same the chart's PrometheusRule states
(deploy/helm/tokenlimit/files/prometheus-rules.yaml):

- **upstream_rate_limited** (per model): upstreams answered 429 in every lookback (default 60 s)
  for `rate_limited_s` (default 5 minutes, the issue's "stays rate-limited for 5 minutes");
  resolves after a lookback without a 429.
- **budget_warn** / **budget_spent** (per counter, from Redis with the policy's limits): used
  reached `warn_at` of the limit / the whole limit; resolves when the window resets. Without a
  policy (no limits known), per rule from the metrics: admissions past warn_at
  (`tokenlimit_budget_warned`) / limiter refusals in the last lookback.
- **refusal_rate** (per rule): the limiter refused at least `refusal_ratio` of the requests in
  `refusal_window_s` (with at least `refusal_min_requests` requests, so one refusal in three
  requests at night pages nobody).
- **store_unavailable**: an Envoy reports its Redis circuit open, or Redis itself does not
  answer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tokenlimit.observe.prom import Stats

Kind = Literal[
    "upstream_rate_limited", "budget_warn", "budget_spent", "refusal_rate", "store_unavailable"
]
AlertKey = tuple[str, str]  # kind, subject
METRIC_KINDS = frozenset({"upstream_rate_limited", "refusal_rate"})
BUDGET_KINDS = frozenset({"budget_warn", "budget_spent"})


@dataclass(frozen=True)
class Thresholds:
    rate_limited_s: float = 300.0
    lookback_s: float = 60.0
    refusal_ratio: float = 0.2
    refusal_window_s: float = 300.0
    refusal_min_requests: int = 20
    warn_at: float = 0.8  # for budgets whose policy sets no warn_at


@dataclass(frozen=True)
class BudgetLevel:
    """One Redis counter against its limit."""

    rule: str
    counter: str  # how people read it: unit/window, caller identity (hashed), model
    used: int
    limit: int
    warn_at: float | None = None


@dataclass(frozen=True)
class Observation:
    at: float
    stats: Stats | None  # None: no Envoy answered
    budgets: list[BudgetLevel] | None = None  # None: no policy, limits unknown
    store_error: str | None = None  # Redis did not answer


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str
    summary: str


@dataclass(frozen=True)
class AlertEvent:
    """One message: an alert started firing, or its episode ended."""

    alert: Alert
    state: Literal["firing", "resolved"]
    since: float
    at: float

    def text(self) -> str:
        if self.state == "firing":
            return (
                f"[tokenlimit] FIRING {self.alert.kind} {self.alert.subject}: {self.alert.summary}"
            )
        lasted = _duration(self.at - self.since)
        return (
            f"[tokenlimit] RESOLVED {self.alert.kind} {self.alert.subject} after {lasted}: "
            f"{self.alert.summary}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "event": f"tokenlimit.alert.{self.state}",
            "alert": self.alert.kind,
            "subject": self.alert.subject,
            "summary": self.alert.summary,
            "since": _iso(self.since),
            "at": _iso(self.at),
            "text": self.text(),
        }


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Evaluator:
    thresholds: Thresholds = field(default_factory=Thresholds)
    _history: deque[tuple[float, Stats]] = field(default_factory=deque)
    _throttled_since: dict[str, float] = field(default_factory=dict)
    _active: dict[AlertKey, tuple[Alert, float]] = field(default_factory=dict)

    def step(self, obs: Observation) -> list[AlertEvent]:
        """The messages this observation calls for: new episodes firing, ended ones resolved."""
        current = self._conditions(obs)
        events = []
        for key, alert in current.items():
            if key not in self._active:
                self._active[key] = (alert, obs.at)
                events.append(AlertEvent(alert, "firing", obs.at, obs.at))
        for key in [k for k in self._active if k not in current]:
            alert, since = self._active.pop(key)
            events.append(AlertEvent(alert, "resolved", since, obs.at))
        return events

    def active(self) -> list[Alert]:
        return [alert for alert, _ in self._active.values()]

    def _conditions(self, obs: Observation) -> dict[AlertKey, Alert]:
        found: dict[AlertKey, Alert] = {}
        if obs.stats is not None:
            self._remember(obs.at, obs.stats)
            found |= self._rate_limited(obs.at, obs.stats)
            found |= self._refusals(obs.at, obs.stats)
            if obs.budgets is None:
                found |= self._budgets_from_metrics(obs.at, obs.stats)
        else:
            # Envoy unseen: keep the metric episodes as they were rather than resolve them on
            # a blind spot (a gateway restart must not read as "recovered").
            carried = METRIC_KINDS if obs.budgets is not None else METRIC_KINDS | BUDGET_KINDS
            found |= {k: a for k, (a, _) in self._active.items() if k[0] in carried}
        if obs.budgets is not None:
            found |= self._budgets(obs.budgets)
        down = obs.store_error or (
            "an Envoy reports its Redis circuit open"
            if obs.stats is not None and obs.stats.redis_circuit_open > 0
            else None
        )
        if down:
            found[("store_unavailable", "redis")] = Alert(
                "store_unavailable", "redis", f"the Redis budget store is unavailable: {down}"
            )
        return found

    def _remember(self, at: float, stats: Stats) -> None:
        self._history.append((at, stats))
        keep_s = max(self.thresholds.lookback_s, self.thresholds.refusal_window_s)
        while len(self._history) > 2 and self._history[1][0] <= at - keep_s:
            self._history.popleft()

    def _before(self, at: float, span_s: float) -> Stats:
        """The oldest remembered stats no older than `span_s` (the window's start)."""
        for seen_at, stats in self._history:
            if seen_at >= at - span_s:
                return stats
        return self._history[-1][1]

    def _rate_limited(self, at: float, stats: Stats) -> dict[AlertKey, Alert]:
        t = self.thresholds
        start = self._before(at, t.lookback_s)
        found = {}
        for model in {m for _, m in stats.upstream_rate_limited}:
            now_n = _sum(stats.upstream_rate_limited, model=model)
            increase = _increase(now_n, _sum(start.upstream_rate_limited, model=model))
            if increase <= 0:
                self._throttled_since.pop(model, None)
                continue
            since = self._throttled_since.setdefault(model, at)
            if at - since >= t.rate_limited_s:
                found[("upstream_rate_limited", model)] = Alert(
                    "upstream_rate_limited",
                    model,
                    f"upstreams answered 429 for model {model} for {_duration(at - since)} "
                    f"({increase:.0f} in the last {t.lookback_s:.0f}s)",
                )
        return found

    def _refusals(self, at: float, stats: Stats) -> dict[AlertKey, Alert]:
        t = self.thresholds
        start = self._before(at, t.refusal_window_s)
        found = {}
        for rule in stats.rules():
            rejected = _increase(
                stats.requests_by("rejected", rule=rule), start.requests_by("rejected", rule=rule)
            )
            allowed = _increase(
                stats.requests_by("allowed", rule=rule), start.requests_by("allowed", rule=rule)
            )
            total = rejected + allowed
            if total >= t.refusal_min_requests and rejected / total >= t.refusal_ratio:
                found[("refusal_rate", rule)] = Alert(
                    "refusal_rate",
                    rule,
                    f"the limiter refused {rejected:.0f} of {total:.0f} requests "
                    f"({rejected / total:.0%}) of rule {rule} in the last "
                    f"{t.refusal_window_s:.0f}s, at or above {t.refusal_ratio:.0%}",
                )
        return found

    def _budgets(self, levels: list[BudgetLevel]) -> dict[AlertKey, Alert]:
        found = {}
        for level in levels:
            if level.limit <= 0:
                continue
            warn_at = level.warn_at if level.warn_at is not None else self.thresholds.warn_at
            share = level.used / level.limit
            subject = f"{level.rule} {level.counter}"
            if share >= warn_at:
                found[("budget_warn", subject)] = Alert(
                    "budget_warn",
                    subject,
                    f"{level.used} of {level.limit} used ({share:.0%}), past warn_at {warn_at:.0%}",
                )
            if level.used >= level.limit:
                found[("budget_spent", subject)] = Alert(
                    "budget_spent", subject, f"spent: {level.used} of {level.limit} used"
                )
        return found

    def _budgets_from_metrics(self, at: float, stats: Stats) -> dict[AlertKey, Alert]:
        start = self._before(at, self.thresholds.lookback_s)
        window = f"{self.thresholds.lookback_s:.0f}s"
        found = {}
        for rule in stats.rules():
            warned = _increase(stats.budget_warned.get(rule, 0), start.budget_warned.get(rule, 0))
            if warned > 0:
                found[("budget_warn", rule)] = Alert(
                    "budget_warn",
                    rule,
                    f"{warned:.0f} admissions past warn_at in the last {window}",
                )
            refused = _increase(
                stats.requests_by("rejected", rule=rule), start.requests_by("rejected", rule=rule)
            )
            if refused > 0:
                found[("budget_spent", rule)] = Alert(
                    "budget_spent", rule, f"{refused:.0f} requests refused in the last {window}"
                )
        return found


def _sum(values: dict[tuple[str, str], float], *, model: str) -> float:
    return sum(n for (_, m), n in values.items() if m == model)


def _increase(now: float, then: float) -> float:
    """A counter's increase; a counter that went down started over (Envoy restarted)."""
    return now - then if now >= then else now
