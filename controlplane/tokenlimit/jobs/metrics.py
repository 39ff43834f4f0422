"""The jobs service's Prometheus metrics (prometheus_client does the exposition).

Each :class:`Metrics` has its own registry, so several services in one process (the tests)
keep separate counts. Counters count this process's work; the queue gauges are the whole
queue's (every replica reports the same numbers: aggregate them with max, not sum).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OUTCOMES = ("completed", "failed", "expired", "cancelled")
BATCH_STATES = ("in_progress", "cancelling", "completed", "expired", "cancelled", "failed")


class Metrics:
    """``tokenlimit_jobs_queued``, ``_pending``, ``_running``, ``_finished_total{outcome}``,
    ``_retried_after_429_total``, ``_retried_total`` (5xx, connection errors),
    ``_taken_over_total``, ``_batches_total{status}`` and ``_credentials_unreadable_total``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queued = Gauge(
            "tokenlimit_jobs_queued", "Jobs waiting for a worker (whole queue).", registry=r
        )
        self.pending = Gauge(
            "tokenlimit_jobs_pending",
            "Jobs taken by a worker and not acknowledged yet (whole queue).",
            registry=r,
        )
        self.running = Gauge(
            "tokenlimit_jobs_running", "Jobs this process is working on now.", registry=r
        )
        self.finished = Counter(
            "tokenlimit_jobs_finished",
            "Jobs (batch lines and single requests) this process finished, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.retried_429 = Counter(
            "tokenlimit_jobs_retried_after_429",
            "Attempts the gateway refused with 429 and that were retried after waiting.",
            registry=r,
        )
        self.retried = Counter(
            "tokenlimit_jobs_retried",
            "Attempts retried after a 5xx or a connection error.",
            registry=r,
        )
        self.taken_over = Counter(
            "tokenlimit_jobs_taken_over",
            "Jobs taken over from a worker that stopped touching them.",
            registry=r,
        )
        self.batches = Counter(
            "tokenlimit_jobs_batches",
            "Batch state changes made by this process, by new status.",
            ["status"],
            registry=r,
        )
        self.credentials_unreadable = Counter(
            "tokenlimit_jobs_credentials_unreadable",
            "Jobs (batch lines and single requests) failed because no key in the key file "
            "decrypts their stored credentials (a key removed too soon, an altered record).",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.finished.labels(outcome)
        for status in BATCH_STATES:
            self.batches.labels(status)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
