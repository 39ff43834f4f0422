"""Where the panel and the alerts look: Envoy admin endpoints and the Redis budget store.

`Sources.observe()` takes one `Observation` (alerts.py) plus the Redis rows behind it; both
commands poll it on their interval. Redis is read through `tokenlimit.usage.read_usage`, the
same `budget.lua peek` `tokenlimit usage` prints, so a number means the same everywhere.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokenlimit.model.counters import counter_rule_name
from tokenlimit.observe import prom
from tokenlimit.observe.alerts import BudgetLevel, Observation
from tokenlimit.usage import WINDOW_NAMES, Budget, BudgetKey, Row, budgets_of, read_usage

if TYPE_CHECKING:
    from tokenlimit.model import FilterConfig

REDIS_TIMEOUT_S = 3.0
CALLER_CHARS = 12
EVERYONE = "(everyone)"  # a global budget's one counter is nobody's in particular


@dataclass
class Policy:
    """What a policy tells the readers: each counter's limit, and each rule's warn_at."""

    budgets: dict[BudgetKey, Budget] = field(default_factory=dict)
    warn_at: dict[str, float] = field(default_factory=dict)  # counter rule name -> fraction

    def add(self, config: FilterConfig) -> None:
        self.budgets.update(budgets_of(config))
        rules = ([config] if config.rule_name is not None else []) + list(config.rules or [])
        for rule in rules:
            share = rule.warn_at if rule.warn_at is not None else config.warn_at
            if rule.rule_name is not None and share is not None:
                self.warn_at[counter_rule_name(rule.rule_name)] = float(share)


def caller(row: Row) -> str:
    """A caller as the panel shows it: always a hash (the filter's for credentials, and one of
    the name for addresses and consumers), so an exposed panel shows no key, IP or name."""
    if row.counter.limit_type == "global":
        return EVERYONE
    identity = row.counter.identity
    if not row.counter.hashed:
        identity = hashlib.sha256(identity.encode()).hexdigest()
    return identity[:CALLER_CHARS]


def counter_label(row: Row) -> str:
    c = row.counter
    window = WINDOW_NAMES.get(c.window_s, f"{c.window_s}s")
    model = f" model {c.model}" if c.model else ""
    return f"{c.unit}/{window} caller {caller(row)}{model}"


def budget_levels(rows: Sequence[Row], policy: Policy) -> list[BudgetLevel]:
    return [
        BudgetLevel(
            r.counter.rule, counter_label(r), r.used, r.limit, policy.warn_at.get(r.counter.rule)
        )
        for r in rows
        if r.used is not None and r.limit is not None
    ]


@dataclass
class Sources:
    envoys: Sequence[str]
    redis_url: str | None = None
    policy: Policy | None = None
    clock: Callable[[], float] = time.time

    def observe(self) -> tuple[Observation, list[Row], list[str]]:
        """One look: the observation, the Redis rows, and what could not be read."""
        at = self.clock()
        stats, errors = prom.read(self.envoys)
        seen = stats if len(errors) < len(self.envoys) else None
        rows: list[Row] = []
        store_error = None
        if self.redis_url is not None:
            try:
                rows = self._rows()
            except Exception as exc:  # redis.RedisError, a refused connection, a bad URL
                store_error = f"{_shown(self.redis_url)}: {exc}"
                errors.append(store_error)
        levels = budget_levels(rows, self.policy) if self.policy and not store_error else None
        return Observation(at, seen, levels, store_error), rows, errors

    def _rows(self) -> list[Row]:
        import redis

        assert self.redis_url is not None
        client = redis.Redis.from_url(
            self.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        try:
            client.ping()
            return read_usage(client, self.policy.budgets if self.policy else None)
        finally:
            client.close()


def _shown(url: str) -> str:
    """A Redis URL without its password."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
