"""Fallback in real Envoy: retries, back-off, Retry-After, per-try timeout and the model rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fallback_gateway import (
    BACKUP_KEY,
    CLIENT_AUTHORIZATION,
    ROUTE,
    Envoy,
    Upstream,
    header,
    host_header,
    post,
)

pytestmark = pytest.mark.usefixtures("healthy")


# --- retries, back-off, Retry-After, model -------------------------------------------------------


def test_retry_after_from_the_primary_is_waited_for(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.fail(429, retry_after=1)
    reply = post(envoy, "retry-after")
    assert reply.status == 200 and reply.upstream == "backup"
    # Envoy waits Retry-After plus up to 50% jitter: 1 s to 1.5 s, and some slack.
    assert 1.0 <= reply.elapsed_s < 2.5, reply.elapsed_s
    assert (
        envoy.counter(
            f"cluster.fallback_{ROUTE}_chain_from_primary.upstream_rq_retry_backoff_ratelimited"
        )
        >= 1
    )


def test_retry_after_beyond_the_maximum_is_ignored_and_backoff_is_bounded(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.fail(429, retry_after=60)  # above retryAfter.maxIntervalMs (3 s): not waited for
    reply = post(envoy, "long-retry-after")
    assert reply.status == 200 and reply.upstream == "backup"
    assert reply.elapsed_s < 0.9, reply.elapsed_s  # exponential back-off: at most 50 ms here
    primary.fail(503)
    for _ in range(3):
        reply = post(envoy, "backoff")
        assert reply.status == 200 and reply.upstream == "backup"
        assert reply.elapsed_s < 0.9, reply.elapsed_s


def test_a_slow_primary_hits_the_per_try_timeout_and_the_fallback_answers(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.slow(4000)
    reply = post(envoy, "slow")
    assert reply.status == 200 and reply.upstream == "backup"
    assert 0.9 <= reply.elapsed_s < 2.5, reply.elapsed_s  # perTryTimeoutMs 1000


def test_model_is_rewritten_for_the_fallback_only(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    served = post(envoy, "model-primary", model="gpt-4o")
    assert served.upstream == "primary"
    seen = primary.stats()["last_request"]
    assert seen["body"]["model"] == "gpt-4o"
    assert host_header(seen) == primary.url.removeprefix("http://")
    primary.fail(500)
    served = post(envoy, "model-backup", model="gpt-4o")
    assert served.status == 200 and served.upstream == "backup"
    seen = backup.stats()["last_request"]
    assert seen["body"]["model"] == "backup-model"
    assert seen["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert host_header(seen) == backup.url.removeprefix("http://")
    assert primary.stats()["last_request"]["body"]["model"] == "gpt-4o"
    # The backup gets the gateway's own key (from Envoy's environment); the primary, which
    # names no key, gets the client's.
    assert header(seen, "authorization") == f"Bearer {BACKUP_KEY}"
    assert header(primary.stats()["last_request"], "authorization") == CLIENT_AUTHORIZATION
