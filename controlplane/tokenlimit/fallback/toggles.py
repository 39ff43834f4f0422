"""Fallback toggles: automatic, forced, off — applied to a running gateway without a restart.

Standalone Envoy. A **state file** (JSON, written by `tokenlimit fallback render`) holds the
fallback spec, where the RDS file is, the admin URL, and each route's current mode:

    {"version": 1, "rdsPath": ".../rds/routes.yaml", "adminUrl": "http://127.0.0.1:9901",
     "routeTimeoutS": 300, "fallback": {...spec...},
     "routes": {"chat": {"mode": "forced", "to": "deepseek", "by": "cli", "since": 1.7e9,
                         "reason": "...", "probePercent": 0}}}

A toggle changes the route's entry, renders the route configuration for the new modes
(`tokenlimit.render.envoy.fallback.rds_resource`, what `tokenlimit.render.render` writes as
the `rds` file) and replaces the RDS file in one rename (temporary file in the
same directory, fsync, `os.replace`): Envoy's file watcher sees the rename and swaps the
route table atomically. Requests in flight finish on the routes they started with; new ones
take the new routes; no connection is closed and nothing restarts. With an admin URL the
toggle then waits until Envoy reports the new version (`http.<prefix>.rds.tokenlimit.
version_text` equals the file's `version_info`) or refused it (`update_rejected`).

The state file is read and written under an exclusive lock (`<state>.lock`, flock), so the CLI
and the automatic watcher never lose each other's changes.

Kubernetes. The route's mode lives in the policy: `spec.fallback.routes[i].mode` and
`forcedUpstream`. `toggle_policy_document` returns the changed TokenRateLimitPolicy; the CLI
prints it or server-side applies it through the same push path as rules (`tokenlimit.push`).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenlimit.apply import envoy_admin
from tokenlimit.apply.files import write_atomic
from tokenlimit.model import (
    ConfigInvalid,
    FallbackRoute,
    FallbackSpec,
    fallback_document,
    parse_fallback,
)
from tokenlimit.render.envoy.common import ROUTE_TIMEOUT_S
from tokenlimit.render.envoy.fallback import ROUTE_CONFIG_NAME, RouteState, rds_resource
from tokenlimit.render.yaml import to_yaml

STATE_VERSION = 1
STATE_FILE_DEFAULT = "tokenlimit-fallback.json"
APPLY_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
_RDS_STATS = f".rds.{ROUTE_CONFIG_NAME}."


class ToggleError(RuntimeError):
    """A toggle could not be made or applied; the message says why and what to do."""


@dataclass(frozen=True)
class RouteToggle:
    """One route's current mode and who set it."""

    mode: str  # auto | forced | off
    to: str | None = None  # forced: where requests start
    by: str = "spec"  # spec | cli | auto
    since: float = 0.0  # when it was set (the clock the setter used; wall time by default)
    reason: str = ""
    probe_percent: int = 0  # forced by the watcher: share still starting at the primary

    @property
    def route_state(self) -> RouteState:
        return RouteState(self.mode, self.to, self.probe_percent)

    def describe(self) -> str:
        if self.mode == "forced":
            probe = f", {self.probe_percent}% probe to the primary" if self.probe_percent else ""
            return f"forced to {self.to}{probe}"
        return "automatic" if self.mode == "auto" else "off"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "to": self.to,
            "by": self.by,
            "since": self.since,
            "reason": self.reason,
            "probePercent": self.probe_percent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteToggle:
        return cls(
            mode=str(data["mode"]),
            to=data.get("to"),
            by=str(data.get("by", "spec")),
            since=float(data.get("since", 0.0)),
            reason=str(data.get("reason", "")),
            probe_percent=int(data.get("probePercent", 0)),
        )

    @classmethod
    def of(cls, route: FallbackRoute) -> RouteToggle:
        state = RouteState.of(route)
        return cls(mode=state.mode, to=state.to)


@dataclass
class FallbackState:
    """The state file's content."""

    path: Path
    spec: FallbackSpec
    rds_path: Path
    admin_url: str | None = None
    route_timeout_s: int = ROUTE_TIMEOUT_S
    routes: dict[str, RouteToggle] = field(default_factory=dict)

    def toggle(self, route: str) -> RouteToggle:
        self.spec.route(route)  # KeyError naming the known routes
        return self.routes.get(route) or RouteToggle.of(self.spec.route(route))

    def route_states(self) -> dict[str, RouteState]:
        return {r.name: self.toggle(r.name).route_state for r in self.spec.routes}

    def rds_text(self) -> str:
        return to_yaml(rds_resource(self.spec, self.route_states(), self.route_timeout_s))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "rdsPath": str(self.rds_path),
            "adminUrl": self.admin_url,
            "routeTimeoutS": self.route_timeout_s,
            "fallback": fallback_document(self.spec),
            "routes": {name: t.to_json() for name, t in sorted(self.routes.items())},
        }

    @classmethod
    def from_json(cls, path: Path, data: Mapping[str, Any]) -> FallbackState:
        if data.get("version") != STATE_VERSION:
            raise ToggleError(
                f"{path}: not a tokenlimit fallback state file (version {data.get('version')!r}"
                f", expected {STATE_VERSION})"
            )
        try:
            spec = parse_fallback(data["fallback"])
        except ConfigInvalid as exc:
            raise ToggleError(f"{path}: fallback: {exc}") from None
        rds = Path(data["rdsPath"])
        if not rds.is_absolute():
            rds = path.parent / rds
        return cls(
            path=path,
            spec=spec,
            rds_path=rds,
            admin_url=data.get("adminUrl"),
            route_timeout_s=int(data.get("routeTimeoutS", ROUTE_TIMEOUT_S)),
            routes={
                name: RouteToggle.from_json(entry)
                for name, entry in (data.get("routes") or {}).items()
                if name in {r.name for r in spec.routes}
            },
        )


@dataclass(frozen=True)
class ToggleResult:
    route: str
    before: RouteToggle
    after: RouteToggle
    rds_changed: bool  # False: the route table was already like this
    version: str  # the RDS version_info now in the file
    applied: bool | None  # True: Envoy serves it; None: not checked (no admin URL)

    def line(self) -> str:
        what = f"route {self.route}: {self.before.describe()} -> {self.after.describe()}"
        if not self.rds_changed:
            return f"{what} (routes unchanged)"
        if self.applied:
            return f"{what} (Envoy serves route version {self.version})"
        return f"{what} (route version {self.version} written; not checked: no admin URL)"


# --- files (written with apply.files.write_atomic: one rename, fsync'ed) ---------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `<path>.lock` (the CLI and the watcher take turns)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def load_state(path: str | os.PathLike[str]) -> FallbackState:
    state_path = Path(path)
    try:
        data = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToggleError(
            f"{state_path} does not exist: create it with `tokenlimit fallback render` "
            "(or pass --state PATH)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ToggleError(f"{state_path}: cannot read the fallback state: {exc}") from None
    if not isinstance(data, dict):
        raise ToggleError(f"{state_path}: not a tokenlimit fallback state file")
    try:
        return FallbackState.from_json(state_path, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToggleError(f"{state_path}: not a tokenlimit fallback state file ({exc})") from None


def save_state(state: FallbackState) -> None:
    write_atomic(state.path, json.dumps(state.to_json(), indent=2, sort_keys=False) + "\n")


def init_state(
    path: str | os.PathLike[str],
    spec: FallbackSpec,
    rds_path: str | os.PathLike[str],
    *,
    admin_url: str | None = None,
    route_timeout_s: int = ROUTE_TIMEOUT_S,
) -> FallbackState:
    """A new state file (every route in its spec mode) and the RDS file it implies."""
    state = FallbackState(
        path=Path(path),
        spec=spec,
        rds_path=Path(rds_path),
        admin_url=admin_url,
        route_timeout_s=route_timeout_s,
    )
    with locked(state.path):
        text = state.rds_text()
        if _read(state.rds_path) != text:  # `render` may have written this route table
            write_atomic(state.rds_path, text)
        save_state(state)
    return state


# --- toggles -------------------------------------------------------------------------------------


def check_toggle(route: FallbackRoute, mode: str, to: str | None) -> None:
    if mode not in ("auto", "forced", "off"):
        raise ToggleError(f"mode must be auto, forced or off, got {mode!r}")
    if to is not None:
        names = [u.name for u in route.upstreams]
        if to not in names:
            raise ToggleError(
                f"route {route.name} has no upstream {to!r} (upstreams: {', '.join(names)})"
            )
        if mode != "forced":
            raise ToggleError("--to names where forced fallback sends requests: mode forced")


def set_mode(
    state_path: str | os.PathLike[str],
    route: str,
    mode: str,
    *,
    to: str | None = None,
    by: str = "cli",
    reason: str = "",
    probe_percent: int = 0,
    clock: Callable[[], float] = time.time,
    wait: bool = True,
    timeout_s: float = APPLY_TIMEOUT_S,
    guard: Callable[[RouteToggle], bool] | None = None,
) -> ToggleResult | None:
    """Set one route's mode, rewrite the RDS file, and (with an admin URL and `wait`) wait
    until Envoy serves it. `guard(current)` False leaves everything as it is (returns None):
    the watcher uses it to never override a person's toggle made in the meantime."""
    with locked(Path(state_path)):
        state = load_state(state_path)
        try:
            spec_route = state.spec.route(route)
        except KeyError as exc:
            raise ToggleError(str(exc.args[0])) from None
        before = state.toggle(route)
        if guard is not None and not guard(before):
            return None
        if mode == "forced" and to is None:
            to = spec_route.fallbacks[0].name
        check_toggle(spec_route, mode, to)
        after = RouteToggle(
            mode=mode,
            to=to if mode == "forced" else None,
            by=by,
            since=clock(),
            reason=reason,
            probe_percent=probe_percent if mode == "forced" else 0,
        )
        state.routes[route] = after
        text = state.rds_text()
        changed = _read(state.rds_path) != text
        if changed:
            write_atomic(state.rds_path, text)
        save_state(state)
    version = rds_version(text)
    applied: bool | None = None
    if state.admin_url and wait:
        wait_applied(state.admin_url, version, timeout_s)
        applied = True
    return ToggleResult(route, before, after, changed, version, applied)


def enable(
    state_path: str | os.PathLike[str], route: str, to: str | None = None, **kwargs: Any
) -> ToggleResult:
    """`tokenlimit fallback enable ROUTE [--to UPSTREAM]`: automatic, or forced to UPSTREAM."""
    result = set_mode(state_path, route, "forced" if to else "auto", to=to, **kwargs)
    assert result is not None
    return result


def disable(state_path: str | os.PathLike[str], route: str, **kwargs: Any) -> ToggleResult:
    """`tokenlimit fallback disable ROUTE`: the primary only, no retries."""
    result = set_mode(state_path, route, "off", **kwargs)
    assert result is not None
    return result


def rds_version(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("version_info:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    return ""


# --- Envoy's view --------------------------------------------------------------------------------


def admin_stats(admin_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Envoy's /stats?format=json as {name: value} (counters, gauges and text readouts)."""
    try:
        return envoy_admin.stats(admin_url, timeout_s=timeout_s)
    except envoy_admin.EnvoyAdminError as exc:
        raise ToggleError(f"cannot read Envoy's stats at {admin_url}: {exc}") from None


def rds_status(stats: Mapping[str, Any]) -> tuple[str | None, int]:
    """(the route version Envoy serves, how many RDS updates it rejected)."""
    version = None
    rejected = 0
    for name, value in stats.items():
        if _RDS_STATS not in name:
            continue
        if name.endswith(".version_text"):
            version = str(value) if value is not None else ""
        elif name.endswith(".update_rejected") and isinstance(value, int):
            rejected += value
    return version, rejected


def wait_applied(admin_url: str, version: str, timeout_s: float = APPLY_TIMEOUT_S) -> None:
    """Wait until Envoy serves route version `version`; raise if it refuses it or times out."""
    _, rejected_before = rds_status(admin_stats(admin_url))
    deadline = time.monotonic() + timeout_s
    while True:
        serving, rejected = rds_status(admin_stats(admin_url))
        if serving == version:
            return
        if rejected > rejected_before:
            raise ToggleError(
                f"Envoy refused route version {version} and keeps serving {serving}: see its "
                "log (`rds: ... rejected`)"
            )
        if time.monotonic() > deadline:
            raise ToggleError(
                f"Envoy did not load route version {version} within {timeout_s:g}s (it serves "
                f"{serving or 'no RDS routes'}): is it running with the bootstrap `tokenlimit "
                "fallback render` wrote, and is the RDS file's directory the one it watches?"
            )
        time.sleep(POLL_INTERVAL_S)


def status(state_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Each route: its mode, who set it, and (with an admin URL) what Envoy serves."""
    state = load_state(state_path)
    version = rds_version(state.rds_text())
    serving: str | None = None
    envoy_error = None
    if state.admin_url:
        try:
            serving, _ = rds_status(admin_stats(state.admin_url, timeout_s=2.0))
        except ToggleError as exc:
            envoy_error = str(exc)
    rows = []
    for route in state.spec.routes:
        toggle = state.toggle(route.name)
        rows.append(
            {
                "route": route.name,
                "mode": toggle.mode,
                "to": toggle.to,
                "describe": toggle.describe(),
                "by": toggle.by,
                "since": toggle.since,
                "reason": toggle.reason,
                "upstreams": [u.name for u in route.upstreams],
                "routeVersion": version,
                "envoyServes": serving,
                "inSync": None if serving is None else serving == version,
                "envoyError": envoy_error,
            }
        )
    return rows


# --- Kubernetes ----------------------------------------------------------------------------------


def toggle_policy_document(
    document: Mapping[str, Any], route: str, mode: str, to: str | None = None
) -> dict[str, Any]:
    """The TokenRateLimitPolicy with `spec.fallback.routes[route]` in the new mode (validated)."""
    changed = copy.deepcopy(dict(document))
    changed.pop("status", None)
    spec = changed.get("spec")
    fallback = spec.get("fallback") if isinstance(spec, dict) else None
    if not isinstance(fallback, dict):
        raise ToggleError("the policy has no spec.fallback: nothing to toggle")
    try:
        parsed = parse_fallback(fallback)
    except ConfigInvalid as exc:
        raise ToggleError(f"spec.fallback: {exc}") from None
    try:
        spec_route = parsed.route(route)
    except KeyError as exc:
        raise ToggleError(str(exc.args[0])) from None
    if mode == "forced" and to is None:
        to = spec_route.fallbacks[0].name
    check_toggle(spec_route, mode, to)
    for entry in fallback["routes"]:
        if entry.get("name") == route:
            entry["mode"] = mode
            if mode == "forced":
                entry["forcedUpstream"] = to
            else:
                entry.pop("forcedUpstream", None)
    parse_fallback(fallback)  # still valid
    return changed
