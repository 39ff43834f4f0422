"""Automatic forced fallback: watch the primary's failure ratio in Envoy, switch with hysteresis.

For every route with `autoSwitch`, the watcher reads Envoy's admin API every `intervalS` and
keeps a window (`windowS`) of the primary's counters:

- **What is measured.** Envoy charges the per-status counters (`cluster.<c>.upstream_rq_429`,
  `upstream_rq_5xx`) of a request routed through an aggregate cluster to the *aggregate*
  cluster (the route's target), not to the member that answered; the member's own
  `cluster.<primary>.upstream_rq_total` counts its attempts but not their outcome. The
  per-host counters of the member do both: `rq_total` (attempts at the primary) and
  `rq_error` (attempts that failed: a 5xx, or any response or reset the router retried — a
  429 the chain moved on from counts here). So the watcher reads `/clusters?format=json` and
  sums the primary member cluster's hosts: ratio = rq_error / rq_total over the window.
  (Checked against Envoy 1.40 in tests/test_fallback_envoy.py.)
- **Enter.** In automatic mode, when the window holds at least `minRequests` attempts and the
  ratio reaches `enterRatio`, and the route has not switched in the last `holdS`: forced
  fallback to the first fallback, with `probePercent` of the requests still starting at the
  primary (they fall back per request on failure), so its recovery is measured.
- **Exit.** While forced by the watcher, after `holdS`: back to automatic when the window
  holds at least `minRequests` attempts at the primary with a ratio at most `exitRatio`, or
  when after `holdS + windowS` there is still too little probe traffic to tell (automatic
  mode still falls back per request, so trying the primary again loses no request).
- The watcher never overrides a person: routes that are off, or forced by `tokenlimit
  fallback enable --to`, are left alone, and a switch is made only if the route is still in
  the mode the decision was based on (checked under the state file's lock).

Every switch is logged (`tokenlimit.fallback` logger) and posted to the webhooks through
`tokenlimit.observe.notify` (the sender `tokenlimit alerts` uses too): a generic JSON body,
DingTalk / WeCom group-robot bodies (`{"msgtype": "text", "text": {"content": ...}}`; DingTalk's
optional signing secret adds `timestamp` and `sign` to the URL), or Slack's `{"text": ...}`.

Clock and sleep are injected, so the state machine is tested without waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenlimit.apply import envoy_admin
from tokenlimit.fallback import toggles
from tokenlimit.fallback.toggles import RouteToggle, ToggleError
from tokenlimit.model import AutoSwitch, FallbackRoute
from tokenlimit.observe import notify as sending
from tokenlimit.observe.notify import (
    DINGTALK_CONTENT_CHARS_MAX,
    WEBHOOK_FORMATS,
    WEBHOOK_TIMEOUT_S,
    WECOM_CONTENT_BYTES_MAX,
    dingtalk_signed_url,
    webhook_body,
)
from tokenlimit.render.envoy.clusters import upstream_cluster_name

LOG = logging.getLogger("tokenlimit.fallback")
__all__ = [
    "DINGTALK_CONTENT_CHARS_MAX",
    "WEBHOOK_FORMATS",
    "WEBHOOK_TIMEOUT_S",
    "WECOM_CONTENT_BYTES_MAX",
    "Counts",
    "Switch",
    "WatchError",
    "Watcher",
    "Webhook",
    "dingtalk_signed_url",
    "host_counts",
    "parse_host_counts",
    "webhook_body",
]


class WatchError(RuntimeError):
    """The watcher cannot run; the message says why."""


@dataclass(frozen=True)
class Counts:
    """Cumulative attempts and failed attempts at one cluster's hosts."""

    attempts: int
    failures: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.attempts - other.attempts, self.failures - other.failures)

    @property
    def ratio(self) -> float:
        return min(1.0, self.failures / self.attempts) if self.attempts > 0 else 0.0


def host_counts(admin_url: str, timeout_s: float = 2.0) -> dict[str, Counts]:
    """Per cluster, the sum over its hosts of `rq_total` and `rq_error` (/clusters?format=json)."""
    try:
        statuses = envoy_admin.clusters(admin_url, timeout_s=timeout_s)
    except envoy_admin.EnvoyAdminError as exc:
        raise WatchError(f"cannot read Envoy's clusters at {admin_url}: {exc}") from None
    return parse_host_counts({"cluster_statuses": statuses})


def parse_host_counts(body: Mapping[str, Any]) -> dict[str, Counts]:
    found: dict[str, Counts] = {}
    for cluster in body.get("cluster_statuses", []):
        attempts = failures = 0
        for host in cluster.get("host_statuses", []):
            values = {s.get("name"): int(s.get("value", 0) or 0) for s in host.get("stats", [])}
            attempts += values.get("rq_total", 0)
            failures += values.get("rq_error", 0)
        found[str(cluster.get("name"))] = Counts(max(attempts, failures), failures)
    return found


@dataclass(frozen=True)
class Switch:
    """One change the watcher made."""

    route: str
    primary: str
    before: RouteToggle
    after: RouteToggle
    window: Counts  # attempts and failures at the primary the decision saw
    window_s: float
    threshold: float
    at: float
    cause: str  # failing | recovered | unmeasured

    @property
    def reason(self) -> str:
        measured = (
            f"primary {self.primary} failed {self.window.failures} of {self.window.attempts} "
            f"attempts ({self.window.ratio:.0%}) in the last {self.window_s:.0f}s"
        )
        if self.cause == "failing":
            return f"{measured}, at or above {self.threshold:.0%}"
        if self.cause == "recovered":
            return f"{measured}, at or below {self.threshold:.0%}"
        return f"too little traffic reached primary {self.primary} to measure it: trying it again"

    def text(self) -> str:
        return (
            f"[tokenlimit] fallback route {self.route}: {self.before.describe()} -> "
            f"{self.after.describe()}. {self.reason[0].upper()}{self.reason[1:]}."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "tokenlimit.fallback.switch",
            "route": self.route,
            "primary": self.primary,
            "from": {"mode": self.before.mode, "to": self.before.to},
            "to": {
                "mode": self.after.mode,
                "to": self.after.to,
                "probePercent": self.after.probe_percent,
            },
            "attempts": self.window.attempts,
            "failures": self.window.failures,
            "ratio": round(self.window.ratio, 4),
            "threshold": self.threshold,
            "windowS": round(self.window_s, 3),
            "cause": self.cause,
            "reason": self.reason,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
            "text": self.text(),
        }


# --- webhooks ------------------------------------------------------------------------------------
# The sending lives in tokenlimit.observe.notify, shared with `tokenlimit alerts`; these names stay
# importable from here. Webhook logs as "fallback webhook" on this module's logger, as before.


class Webhook(sending.Webhook):
    """Posts each switch to one URL in one format; failures are logged, never raised."""

    def __init__(
        self,
        url: str,
        fmt: str = "generic",
        *,
        secret: str | None = None,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger = LOG,
    ) -> None:
        super().__init__(
            url,
            fmt,
            secret=secret,
            timeout_s=timeout_s,
            clock=clock,
            logger=logger,
            label="fallback webhook",
        )


# --- the watcher ---------------------------------------------------------------------------------


@dataclass
class _Window:
    samples: deque[tuple[float, Counts]]

    def add(self, at: float, counts: Counts, window_s: float) -> None:
        if self.samples and counts.attempts < self.samples[-1][1].attempts:
            self.samples.clear()  # Envoy restarted: counters start over
        self.samples.append((at, counts))
        while len(self.samples) >= 2 and self.samples[1][0] <= at - window_s:
            self.samples.popleft()

    def delta(self) -> tuple[Counts, float]:
        if len(self.samples) < 2:
            return Counts(0, 0), 0.0
        (first_at, first), (last_at, last) = self.samples[0], self.samples[-1]
        return last - first, last_at - first_at


class Watcher:
    """Polls Envoy and switches routes between automatic and forced fallback."""

    def __init__(
        self,
        state_path: str,
        *,
        counts: Callable[[str], Mapping[str, Counts]] = host_counts,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        notify: Iterable[Callable[[Switch], Any]] = (),
        logger: logging.Logger = LOG,
        wait_applied: bool = True,
    ) -> None:
        self.state_path = state_path
        self.counts = counts
        self.clock = clock
        self.sleep = sleep
        self.notify = list(notify)
        self.logger = logger
        self.wait_applied = wait_applied
        self._windows: dict[str, _Window] = {}

    def watched(self) -> list[tuple[FallbackRoute, AutoSwitch]]:
        state = toggles.load_state(self.state_path)
        return [(r, r.auto_switch) for r in state.spec.routes if r.auto_switch is not None]

    def interval_s(self) -> float:
        routes = self.watched()
        if not routes:
            raise WatchError(
                f"{self.state_path}: no route has autoSwitch: nothing to watch (add "
                "autoSwitch: {} to a route of the fallback spec)"
            )
        return float(min(auto.interval_s for _, auto in routes))

    def step(self) -> list[Switch]:
        """Read Envoy once, decide for every watched route, make the switches."""
        state = toggles.load_state(self.state_path)
        if not state.admin_url:
            raise WatchError(f"{self.state_path}: no adminUrl: the watcher reads Envoy's admin API")
        counts = self.counts(state.admin_url)
        now = self.clock()
        switches = []
        for route in state.spec.routes:
            auto = route.auto_switch
            if auto is None:
                continue
            cluster = upstream_cluster_name(route.name, route.primary.name)
            seen = counts.get(cluster, Counts(0, 0))
            window = self._windows.setdefault(route.name, _Window(deque()))
            window.add(now, seen, auto.window_s)
            switch = self._decide(route, auto, state.toggle(route.name), window, now)
            if switch is not None:
                switches.append(switch)
                # The samples so far describe the old routing: measure from here on.
                self._windows[route.name] = _Window(deque([(now, seen)]))
        return switches

    def _decide(
        self,
        route: FallbackRoute,
        auto: AutoSwitch,
        current: RouteToggle,
        window: _Window,
        now: float,
    ) -> Switch | None:
        if current.mode == "off" or (current.mode == "forced" and current.by != "auto"):
            window.samples.clear()  # a person decided; measure afresh when they hand back
            return None
        delta, span = window.delta()
        held = now - current.since >= auto.hold_s
        if not held:
            return None
        if current.mode == "auto":
            if delta.attempts >= auto.min_requests and delta.ratio >= auto.enter_ratio:
                return self._switch(
                    route,
                    current,
                    "forced",
                    route.fallbacks[0].name,
                    auto,
                    delta,
                    span,
                    now,
                    auto.enter_ratio,
                    "failing",
                )
            return None
        # forced by the watcher: back to auto once the primary recovered, or when a whole
        # window passed without enough traffic to tell
        if delta.attempts >= auto.min_requests:
            if delta.ratio > auto.exit_ratio:
                return None
            reason = "recovered"
        elif now - current.since >= auto.hold_s + auto.window_s:
            reason = "unmeasured"
        else:
            return None
        return self._switch(
            route, current, "auto", None, auto, delta, span, now, auto.exit_ratio, reason
        )

    def _switch(
        self,
        route: FallbackRoute,
        current: RouteToggle,
        mode: str,
        to: str | None,
        auto: AutoSwitch,
        delta: Counts,
        span: float,
        now: float,
        threshold: float,
        cause: str,
    ) -> Switch | None:
        try:
            result = toggles.set_mode(
                self.state_path,
                route.name,
                mode,
                to=to,
                by="auto",
                reason=cause,
                probe_percent=auto.probe_percent if mode == "forced" else 0,
                clock=lambda: now,
                wait=self.wait_applied,
                guard=lambda seen: seen == current,
            )
        except ToggleError as exc:
            self.logger.error("fallback route %s: switch to %s failed: %s", route.name, mode, exc)
            return None
        if result is None:
            return None  # someone toggled the route meanwhile: theirs stands
        switch = Switch(
            route=route.name,
            primary=route.primary.name,
            before=current,
            after=result.after,
            window=delta,
            window_s=span,
            threshold=threshold,
            at=now,
            cause=cause,
        )
        self.logger.info("%s", switch.text())
        for notify in self.notify:
            try:
                notify(switch)
            except Exception as exc:  # a notifier must never stop the watcher
                self.logger.warning("fallback notifier failed: %s", exc)
        return switch

    def run(self, *, max_steps: int | None = None, stop: threading.Event | None = None) -> None:
        """Step every interval until `stop` is set (or `max_steps` steps were made)."""
        steps = 0
        while (stop is None or not stop.is_set()) and (max_steps is None or steps < max_steps):
            try:
                self.step()
            except (WatchError, ToggleError) as exc:
                self.logger.error("fallback watcher: %s", exc)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
            self.sleep(self.interval_s())
