"""The bridge's Prometheus metrics, with prometheus_client doing the exposition.

Each :class:`Metrics` has its own registry, so several bridges in one process (the tests) keep
separate counts. Every label value is created up front: a scraper sees every outcome and
command at 0 before the first request, not a series that appears later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The text format the bridge has always answered with (scrapers negotiate nothing here).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

COMMAND_LABELS = ("evalsha", "eval", "script_load", "script_exists", "ping", "time")
OUTCOMES = (
    "ok",
    "unauthorized",
    "forbidden",
    "bad_request",
    "redis_unreachable",
    "redis_auth_failed",
    "redis_timeout",
    "redis_error",
)
HISTOGRAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

PoolCounts = Callable[[], tuple[int, int]]


class _PoolCollector(Collector):
    """``tokenlimit_bridge_pool_connections{state}``, read from the pool at scrape time."""

    def __init__(self, counts: PoolCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        idle, busy = self._counts()
        gauge = GaugeMetricFamily(
            "tokenlimit_bridge_pool_connections",
            "Open Redis connections by state.",
            labels=["state"],
        )
        gauge.add_metric(["idle"], idle)
        gauge.add_metric(["busy"], busy)
        yield gauge


class Metrics:
    """``tokenlimit_bridge_requests_total{outcome}``, ``..._commands_total{command}``,
    ``..._request_seconds`` (histogram, /v1/resp only) and ``..._pool_connections{state}``."""

    def __init__(self, pool_counts: PoolCounts) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        requests = Counter(
            "tokenlimit_bridge_requests",
            "/v1/resp requests by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        commands = Counter(
            "tokenlimit_bridge_commands",
            "Redis commands forwarded, by command.",
            ["command"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "tokenlimit_bridge_request_seconds",
            "Time to answer a /v1/resp request.",
            buckets=HISTOGRAM_BUCKETS,
            registry=self.registry,
        )
        # the labelled children, looked up once: the hot path does no label handling
        self._outcomes = {outcome: requests.labels(outcome) for outcome in OUTCOMES}
        self._commands = {label: commands.labels(label) for label in COMMAND_LABELS}
        self.registry.register(_PoolCollector(pool_counts))

    def observe(self, outcome: str, seconds: float) -> None:
        """One /v1/resp request answered with `outcome` after `seconds`."""
        self._outcomes[outcome].inc()
        self._seconds.observe(seconds)

    def forwarded(self, labels: Iterable[str]) -> None:
        """Commands sent to Redis, by their allowlist label."""
        for label in labels:
            self._commands[label].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
