"""Fallback toggles on a running Envoy: the CLI, the library and the auto switch, no restart."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.fallback_gateway import REQUEST_TIMEOUT_S, ROUTE, Envoy, Upstream, post
from tokenlimit.fallback import toggles
from tokenlimit.fallback.auto import Counts, Switch, Watcher, host_counts
from tokenlimit.fallback.cli import fallback_group
from tokenlimit.render.envoy.clusters import upstream_cluster_name

pytestmark = pytest.mark.usefixtures("healthy")


# --- toggles on the running gateway --------------------------------------------------------------


class Traffic:
    """Requests in a loop from another thread; records every outcome."""

    def __init__(self, envoy: Envoy) -> None:
        self.envoy = envoy
        self.outcomes: list[tuple[int, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A key per request: this test is about routes, not budgets.
                reply = post(self.envoy, f"traffic-{next(_KEYS)}")
                self.outcomes.append((reply.status, reply.upstream))
                if reply.status != 200:
                    self.errors.append(f"{reply.status} {reply.headers} {reply.body[:300]!r}")
            except OSError as exc:
                self.errors.append(str(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)


_KEYS = itertools.count()


def upstreams_now(envoy: Envoy, n: int = 6) -> set[str | None]:
    return {post(envoy, f"probe-{next(_KEYS)}").upstream for _ in range(n)}


def cli(state: Path, *args: str) -> str:
    result = CliRunner().invoke(fallback_group, [*args, "--state", str(state)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_toggles_switch_a_running_envoy_without_restart_or_failed_requests(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, state = fixed
    primary, _ = upstreams
    pid = envoy.proc.pid if envoy.proc else None
    with Traffic(envoy) as traffic:
        # Through the commands the CLI registers: each waits until Envoy serves the change.
        out = cli(state, "enable", ROUTE, "--to", "backup")
        assert out.startswith("route chat: automatic -> forced to backup (Envoy serves route")
        assert upstreams_now(envoy) == {"backup"}
        before_primary = primary.requests
        assert upstreams_now(envoy) == {"backup"} and primary.requests == before_primary

        assert "forced to backup -> off (Envoy serves" in cli(state, "disable", ROUTE)
        assert upstreams_now(envoy) == {"primary"}

        back = toggles.enable(state, ROUTE)
        assert back.applied and back.after.mode == "auto"
        assert upstreams_now(envoy) == {"primary"}
    assert traffic.errors == []
    assert traffic.outcomes and all(status == 200 for status, _ in traffic.outcomes)
    assert {u for _, u in traffic.outcomes} == {"primary", "backup"}
    assert envoy.proc is not None and envoy.proc.pid == pid and envoy.proc.poll() is None
    rows = toggles.status(state)
    assert rows[0]["mode"] == "auto" and rows[0]["inSync"] is True
    # Off means off: with the primary failing, nothing falls back.
    toggles.disable(state, ROUTE)
    try:
        primary.fail(503)
        assert post(envoy, "off").status == 503
    finally:
        toggles.enable(state, ROUTE)
    assert post(envoy, "on-again").upstream == "backup"


def test_auto_switch_enters_and_leaves_forced_fallback_on_envoys_stats(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, state = fixed
    primary, _ = upstreams
    switches: list[Switch] = []
    watcher = Watcher(str(state), notify=[switches.append], sleep=lambda _: None)
    cluster = upstream_cluster_name(ROUTE, "primary")
    try:
        assert watcher.step() == []  # the first sample
        primary.fail(429)
        before = host_counts(envoy.admin_url)[cluster]
        for _ in range(6):
            assert post(envoy, f"auto-{next(_KEYS)}").upstream == "backup"
        after = host_counts(envoy.admin_url)[cluster]
        # What the watcher reads: every attempt at the primary, every one failed (retried 429s).
        assert after - before == Counts(6, 6)
        (entered,) = watcher.step()
        assert (entered.after.mode, entered.after.to, entered.after.by) == (
            "forced",
            "backup",
            "auto",
        )
        assert entered.window == Counts(6, 6)
        assert toggles.status(state)[0]["inSync"] is True

        primary.heal()
        served = [post(envoy, f"auto-probe-{next(_KEYS)}").upstream for _ in range(40)]
        assert set(served) == {"primary", "backup"}  # 50% probe traffic still tries the primary
        (left,) = watcher.step()
        assert left.after.mode == "auto" and left.cause == "recovered"
        assert left.window.failures == 0 and left.window.attempts >= 4
        assert upstreams_now(envoy) == {"primary"}
    finally:
        toggles.enable(state, ROUTE)
    assert [s.after.mode for s in switches] == ["forced", "auto"]
