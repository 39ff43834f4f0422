"""`tokenlimit alerts`: look every interval, send each episode's messages to every webhook.

Standalone: it needs Envoy admin URLs and/or Redis, nothing else (no Prometheus). Clock and
sleep are injected through `Sources` and `run`, so the tests step it with a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tokenlimit.observe.alerts import AlertEvent, Evaluator
from tokenlimit.observe.sources import Sources

LOG = logging.getLogger("tokenlimit.alerts")


class AlertLoop:
    def __init__(
        self,
        sources: Sources,
        evaluator: Evaluator,
        notify: Iterable[Callable[[AlertEvent], Any]] = (),
        logger: logging.Logger = LOG,
    ) -> None:
        self.sources = sources
        self.evaluator = evaluator
        self.notify = list(notify)
        self.logger = logger
        self._unread: set[str] = set()

    def step(self) -> list[AlertEvent]:
        """Look once; log what could not be read (once per cause), send the episodes' messages."""
        observation, _, errors = self.sources.observe()
        for error in set(errors) - self._unread:
            self.logger.warning("alerts: %s", error)
        self._unread = set(errors)
        events = self.evaluator.step(observation)
        for event in events:
            self.logger.info("%s", event.text())
            for send in self.notify:
                try:
                    send(event)
                except Exception as exc:  # a notifier must never stop the loop
                    self.logger.warning("alert notifier failed: %s", exc)
        return events

    def run(
        self,
        interval_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        max_steps: int | None = None,
    ) -> None:
        steps = 0
        while (stop is None or not stop.is_set()) and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
            if max_steps is None or steps < max_steps:
                sleep(interval_s)
