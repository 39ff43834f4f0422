"""The Higress failure in real Envoy: reproduced on the naive gateway, fixed on the project's.

See tests/e2e/conftest.py for the two gateways.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fallback_gateway import ROUTE, Envoy, Upstream, avoid_hour_boundary, post

pytestmark = pytest.mark.usefixtures("healthy")


# --- the Higress failure, reproduced and fixed ---------------------------------------------------


def spend_budget(envoy: Envoy, key: str) -> None:
    """One allowed request that costs more than the whole budget (postpaid: charged after)."""
    first = post(envoy, key, prompt=80, completion=40)
    assert first.status == 200 and first.upstream == "primary", first


def test_naive_setup_lets_an_over_budget_key_escape_through_the_fallback(
    naive: Envoy, upstreams: tuple[Upstream, Upstream]
) -> None:
    primary, backup = upstreams
    avoid_hour_boundary()
    spend_budget(naive, "naive-over")
    before = (primary.requests, backup.requests, naive.tokens_charged())
    reply = post(naive, "naive-over")
    # The limiter refused (its 429), the router took that for the primary's answer and went
    # to the fallback, which no limiter guards: the key is served, uncounted.
    assert reply.status == 200, reply
    assert reply.upstream == "backup"
    assert backup.requests == before[1] + 1
    assert primary.requests == before[0]  # the limiter's 429 never reached the primary
    assert naive.tokens_charged() == before[2]


def test_fixed_over_budget_key_gets_429_and_no_upstream_sees_the_request(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    avoid_hour_boundary()
    spend_budget(envoy, "fixed-over")
    retries = f"cluster.fallback_{ROUTE}_chain_from_primary.upstream_rq_retry"
    before = (primary.requests, backup.requests, envoy.tokens_charged(), envoy.counter(retries))
    for _ in range(3):
        reply = post(envoy, "fixed-over")
        assert reply.status == 429, reply
        assert reply.upstream is None
        assert reply.body == b"Too many requests"
        assert 1 <= int(reply.headers["retry-after"]) <= 3600
    # No upstream saw it, nothing was charged, and not a single retry was made: the
    # rejection is a local reply before the router.
    after = (primary.requests, backup.requests, envoy.tokens_charged(), envoy.counter(retries))
    assert after == before


def test_fixed_primary_429_is_served_by_the_fallback_and_charged_once(
    fixed: tuple[Envoy, Path], naive: Envoy, upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    avoid_hour_boundary()
    primary.fail(429)
    for gateway, key in ((envoy, "fixed-under"), (naive, "naive-under")):
        before_backup = backup.requests
        before_charged = gateway.tokens_charged()
        reply = post(gateway, key, prompt=12, completion=7)
        assert reply.status == 200, reply
        assert reply.upstream == "backup"
        assert backup.requests == before_backup + 1
        charged = gateway.tokens_charged() - before_charged
        if gateway is envoy:
            # Exactly the usage of the one response the client got, once.
            assert charged == 12 + 7
        else:
            # The naive limiter saw only the primary's error (not charged); the response the
            # client got was never counted.
            assert charged == 0
