"""Standalone Envoy: a fallback chain as a retry policy, a route table (RDS) and, for an upstream
with another model or its own key, an internal listener. The chain's clusters are built in
`clusters.py`, the bootstrap that holds them in `bootstrap.py`.

Pure functions of their arguments (golden-tested): the same spec and state give the same bytes.

How a request moves along the chain (Envoy 1.40):

- Each upstream is a cluster of its own (`fallback_<route>_<upstream>`); an **aggregate
  cluster** (`envoy.clusters.aggregate`) lists them in priority order. Envoy linearises the
  priority levels of the listed clusters (primary = P0, first fallback = P1, ...), and with
  every upstream healthy all load goes to P0.
- The route's **retry policy** carries `retry_priority: envoy.retry_priorities.previous_priorities`
  with `update_frequency: 1`: every attempt excludes the priority it used, so attempt 2 goes to
  P1, attempt 3 to P2, and after the last one the exclusions reset (the primary again). The
  aggregate load balancer consults the retry priority (it maps each host back to its
  linearised priority), which is what moves a retry to the next cluster.
- What is retried: `retriable-status-codes` (the route's list, default 429 and 5xx),
  `reset` (includes a per-try timeout) and `connect-failure`. Between attempts the
  exponential back-off (`retry_back_off`, Envoy adds full jitter) applies, or, when the failed
  response carries `Retry-After: <seconds>` no longer than the configured maximum,
  `rate_limited_retry_back_off` waits that long (plus up to 50% jitter).
- The limiter is the listener-level HTTP filter before the router: it decides once per
  request, its rejection is a local reply that never reaches the router (so it is never
  retried and never falls back), and it reads usage from the one response the client gets, so
  a request served by any upstream is charged once, against the same key.
- An upstream whose `model` is set is reached through an **internal listener**
  (`fallback_<route>_<upstream>_rewrite`, in-process, no socket) running the filter in its
  model-rewrite role (`{"model_rewrite": "<model>"}`: renames the body's top-level `model`,
  limits nothing) behind Envoy's buffer filter, then a router to the upstream's own cluster
  (`..._direct`). Not an upstream HTTP filter on the member cluster: a request routed to an
  aggregate cluster gets the aggregate's upstream filter chain, never the member's
  (envoyproxy/envoy#29318; checked here: the member's filter did not run). The buffer filter
  is there because the limiter drops `Content-Length` (it may grow the body) and the rewrite
  needs a complete body of known length; the buffer filter sets it.
- `Host` follows the upstream: `auto_host_rewrite` with each endpoint's `hostname` set.

Modes (the route is served through RDS, so switching rewrites one file; see toggles):

- `auto`: the chain from the primary.
- `forced` (to X): the chain from X (X, then the others in their order) — requests still fall
  back if X fails. When the watcher forces it, `probe_percent` of the requests still take the
  chain from the primary (weighted clusters), so the primary's recovery shows in its stats.
- `off`: the primary's cluster alone, no retries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenlimit.model import FallbackRoute, FallbackSpec, FallbackUpstream
from tokenlimit.render.envoy.clusters import (
    chain_cluster_name,
    direct_cluster_name,
    rewrite_listener_name,
    upstream_cluster_name,
)
from tokenlimit.render.envoy.common import (
    HCM_TYPE,
    ROUTE_TIMEOUT_S,
    STREAM_IDLE_TIMEOUT_S,
    router_filter,
)
from tokenlimit.render.envoy.filter import model_rewrite_filter

ROUTE_CONFIG_NAME = "tokenlimit"
ROUTE_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PREVIOUS_PRIORITIES_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3"
    ".PreviousPrioritiesConfig"
)
BUFFER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
# Larger bodies are answered 413 by the buffer filter; the outer route never buffers more than
# FallbackRoute.buffer_bytes (at most this) for another attempt.
REWRITE_BUFFER_BYTES = 64 * 1024 * 1024
RETRY_ON = "retriable-status-codes,reset,connect-failure"
RETRY_AFTER_HEADER = "retry-after"


@dataclass(frozen=True)
class RouteState:
    """How a route is served right now (the spec's mode unless a toggle changed it)."""

    mode: str  # auto | forced | off
    to: str | None = None  # forced: the upstream requests start at
    probe_percent: int = 0  # forced by the watcher: share still starting at the primary

    @classmethod
    def of(cls, route: FallbackRoute) -> RouteState:
        """The state the spec itself asks for."""
        if route.mode == "forced":
            return cls("forced", route.forced_upstream or route.fallbacks[0].name)
        return cls(route.mode)


def duration(ms: int) -> str:
    """Milliseconds as a protobuf Duration string: 250 → `0.25s`, 2000 → `2s`."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:g}s"


# --- listeners -------------------------------------------------------------------------------


def listeners(
    spec: FallbackSpec, wasm_path: str, stream_idle_timeout_s: int = STREAM_IDLE_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The internal listeners that rename the model or set the key for one upstream each."""
    return [
        rewrite_listener(route.name, upstream, wasm_path, stream_idle_timeout_s)
        for route in spec.routes
        for upstream in route.upstreams
        if upstream.needs_listener
    ]


def rewrite_listener(
    route: str,
    upstream: FallbackUpstream,
    wasm_path: str,
    stream_idle_timeout_s: int = STREAM_IDLE_TIMEOUT_S,
) -> dict[str, Any]:
    """An internal listener for one upstream: buffer the body (so it has a length) and rename
    the model when it has one; set the gateway's key for it when it has one; forward."""
    assert upstream.needs_listener
    name = rewrite_listener_name(route, upstream.name)
    forward: dict[str, Any] = {
        "match": {"prefix": "/"},
        "route": {
            "cluster": direct_cluster_name(route, upstream.name),
            # The outer route's timeout and per-try timeout govern.
            "timeout": "0s",
            "auto_host_rewrite": True,
        },
    }
    credential = upstream.credential_header
    if credential is not None:
        header, value = credential
        # The key comes from Envoy's environment when the request is forwarded: secrets by
        # reference, never in this config. The client's own credential is replaced.
        forward["request_headers_to_add"] = [
            {
                "header": {"key": header, "value": value},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    rewrite_filters: list[dict[str, Any]] = []
    if upstream.model is not None:
        rewrite_filters = [
            # The limiter drops Content-Length (it may grow the body); the rewrite needs a
            # complete body of known length. The buffer filter holds the body and sets it.
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {"@type": BUFFER_TYPE, "max_request_bytes": REWRITE_BUFFER_BYTES},
            },
            model_rewrite_filter(upstream.model, wasm_path),
        ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "stream_idle_timeout": f"{stream_idle_timeout_s}s",
        "route_config": {
            "name": name,
            "virtual_hosts": [
                {
                    "name": name,
                    "domains": ["*"],
                    "routes": [forward],
                }
            ],
        },
        "http_filters": [
            *rewrite_filters,
            router_filter(),
        ],
    }
    return {
        "name": name,
        "internal_listener": {},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


# --- routes ------------------------------------------------------------------------------------


def retry_policy(route: FallbackRoute) -> dict[str, Any]:
    """The retry policy that walks the chain (see the module docstring)."""
    policy: dict[str, Any] = {
        "retry_on": RETRY_ON,
        "num_retries": route.retries,
    }
    if route.per_try_timeout_ms is not None:
        policy["per_try_timeout"] = duration(route.per_try_timeout_ms)
    policy["retriable_status_codes"] = list(route.retriable_status_codes)
    policy["retry_priority"] = {
        "name": "envoy.retry_priorities.previous_priorities",
        "typed_config": {"@type": PREVIOUS_PRIORITIES_TYPE, "update_frequency": 1},
    }
    policy["retry_back_off"] = {
        "base_interval": duration(route.back_off.base_interval_ms),
        "max_interval": duration(route.back_off.max_interval_ms),
    }
    if route.retry_after.honor:
        policy["rate_limited_retry_back_off"] = {
            "reset_headers": [{"name": RETRY_AFTER_HEADER, "format": "SECONDS"}],
            "max_interval": duration(route.retry_after.max_interval_ms),
        }
    return policy


def route_entry(
    route: FallbackRoute, state: RouteState, route_timeout_s: int = ROUTE_TIMEOUT_S
) -> dict[str, Any]:
    """The route for one fallback chain in its current mode."""
    action: dict[str, Any] = {}
    start = route.primary.name
    if state.mode == "forced":
        start = state.to or route.fallbacks[0].name
    if state.mode == "off":
        action["cluster"] = upstream_cluster_name(route.name, route.primary.name)
    elif state.mode == "forced" and state.probe_percent > 0 and start != route.primary.name:
        action["weighted_clusters"] = {
            "clusters": [
                {
                    "name": chain_cluster_name(route.name, start),
                    "weight": 100 - state.probe_percent,
                },
                {
                    "name": chain_cluster_name(route.name, route.primary.name),
                    "weight": state.probe_percent,
                },
            ]
        }
    else:
        action["cluster"] = chain_cluster_name(route.name, start)
    action["timeout"] = f"{route_timeout_s}s"
    action["auto_host_rewrite"] = True
    if state.mode != "off":
        action["retry_policy"] = retry_policy(route)
    entry: dict[str, Any] = {
        "name": route.name,
        "match": {"prefix": route.path_prefix},
        "route": action,
    }
    if state.mode != "off":
        # Bodies up to this size are kept so that another attempt can send them again.
        entry["request_body_buffer_limit"] = route.buffer_bytes
    return entry


def route_configuration(
    spec: FallbackSpec,
    states: Mapping[str, RouteState] | None = None,
    route_timeout_s: int = ROUTE_TIMEOUT_S,
) -> dict[str, Any]:
    """The RouteConfiguration (one virtual host, the spec's routes in order)."""
    states = states or {}
    return {
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [
            {
                "name": "fallback",
                "domains": ["*"],
                "routes": [
                    route_entry(r, states.get(r.name) or RouteState.of(r), route_timeout_s)
                    for r in spec.routes
                ],
            }
        ],
    }


def rds_resource(
    spec: FallbackSpec,
    states: Mapping[str, RouteState] | None = None,
    route_timeout_s: int = ROUTE_TIMEOUT_S,
) -> dict[str, Any]:
    """The file-based RDS document; `version_info` is a digest of the route configuration,
    so Envoy's config_dump tells which version it serves."""
    config = {"@type": ROUTE_CONFIG_TYPE, **route_configuration(spec, states, route_timeout_s)}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return {"version_info": digest, "resources": [config]}
