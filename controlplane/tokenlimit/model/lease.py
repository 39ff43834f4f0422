"""Leases for hot keys (issue 17): `lease: {fraction}` on a rule whose budgets live in Redis.

Each gateway worker takes `fraction` of a budget from Redis in one script call and admits
against that slice locally until it is spent (docs/redis.md, "Leases"). The same checks are made
by filter/src/config/parse_lease.zig; the vectors in contract/config.json ("lease: ...") pin the
two halves equal. The field is spelled the same in a policy and in the filter config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import WrapValidator

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model.fields import Present
from tokenlimit.model.limits import LEASE_FRACTION_MILLI_MAX

__all__ = ["LeaseConfig", "OptLease", "lease_refusal"]

_FRACTION_MAX = LEASE_FRACTION_MILLI_MAX / 1000


def _fraction(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths, as the filter reads them; 0 would lease nothing.
    ok = type(value) in (int, float) and 0 < value <= _FRACTION_MAX
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6 and round(value * 1000) > 0
    if not ok:
        raise _error(
            f"must be a number greater than 0 and at most {_FRACTION_MAX:.3f}, with at most 3 "
            f"decimals, got {show(value)}"
        )
    return handler(value)


class LeaseConfig(_Model):
    """Leases for hot keys: each worker admits against its own slice of a Redis budget."""

    fraction: Annotated[float | int, WrapValidator(_fraction)]
    """The share of a budget a worker takes at a time (e.g. 0.05): one Redis call per slice
    instead of one per request. Budget a worker holds unused is at most one slice per key."""


OptLease = Annotated[Annotated[LeaseConfig, WrapValidator(_object)] | None, Present]


def lease_refusal(rule: object) -> str | None:
    """Why a rule cannot take leases (None: it can): they need the Redis store on tokenlimit's
    own keys and fixed windows, as parse_lease.zig says."""
    if getattr(rule, "lease", None) is None:
        return None
    if getattr(rule, "redis", None) is None:
        return "needs a redis store (leases are slices of a budget kept in Redis)"
    if getattr(rule, "compat", None) is not None:
        return "is not available under compat (Higress's keys and script have no leases)"
    algorithm = getattr(rule, "algorithm", None)
    if algorithm not in (None, "fixed"):
        return (
            f"needs algorithm fixed, got {algorithm} (a sliding window or a token bucket frees "
            "room continuously, so a slice would not stay inside the budget)"
        )
    return None
