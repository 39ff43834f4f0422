"""Reading a running Envoy through its admin endpoint: the one client `up`, the fallback
toggles, the automatic switch, the tests and the benchmarks share."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class EnvoyAdminError(Exception):
    """The admin endpoint could not be read (the message names the URL and the cause)."""


def get(admin_url: str, path: str, *, timeout_s: float = 5.0) -> str:
    """The body of GET `path` on the admin endpoint at `admin_url`."""
    url = admin_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise EnvoyAdminError(f"Envoy admin {url} answered {exc.code}") from None
    except OSError as exc:
        raise EnvoyAdminError(f"cannot read Envoy admin {url}: {exc}") from None


def stats(admin_url: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """/stats?format=json as {name: value}: counters and gauges (int), text readouts (str)."""
    text = get(admin_url, "/stats?format=json", timeout_s=timeout_s)
    try:
        entries = json.loads(text).get("stats", [])
    except (ValueError, AttributeError) as exc:
        raise EnvoyAdminError(f"Envoy admin {admin_url}/stats: not JSON: {exc}") from None
    return {
        entry["name"]: entry.get("value")
        for entry in entries
        if isinstance(entry, dict) and "name" in entry
    }


def counters(admin_url: str, *, timeout_s: float = 5.0) -> dict[str, int]:
    """The integer stats only (counters and gauges)."""
    return {
        name: value
        for name, value in stats(admin_url, timeout_s=timeout_s).items()
        if isinstance(value, int)
    }


def clusters(admin_url: str, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """/clusters?format=json: `cluster_statuses`, one entry per cluster."""
    text = get(admin_url, "/clusters?format=json", timeout_s=timeout_s)
    try:
        found = json.loads(text).get("cluster_statuses", [])
    except (ValueError, AttributeError) as exc:
        raise EnvoyAdminError(f"Envoy admin {admin_url}/clusters: not JSON: {exc}") from None
    return [entry for entry in found if isinstance(entry, dict)]


def is_live(admin_url: str) -> bool:
    """Envoy's /ready says LIVE (its listeners and clusters are initialised)."""
    try:
        return get(admin_url, "/ready", timeout_s=1.0).strip() == "LIVE"
    except EnvoyAdminError:
        return False
