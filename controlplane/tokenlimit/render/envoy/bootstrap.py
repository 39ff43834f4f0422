"""An Envoy bootstrap: one listener with the limiter before the router, and its clusters.

Without a fallback spec the listener routes everything to one upstream cluster. With one,
the route table is the fallback chains' (inline, or from a file-based RDS document the
toggles replace) and the clusters are the chains' (see `fallback.py`, `clusters.py`).

Pure functions of their arguments: the same options give the same bytes (golden tests pin
them). Dicts are built in a fixed order and dumped without sorting, so the YAML reads
top-down the way Envoy documents it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenlimit.model import ENVOY_BRIDGE_CLUSTER, FallbackSpec, PolicySpec
from tokenlimit.model.upstream import Upstream
from tokenlimit.render.envoy import fallback as chains
from tokenlimit.render.envoy.clusters import fallback_clusters, upstream_cluster
from tokenlimit.render.envoy.common import (
    DOWNSTREAM_CONNECTIONS_TYPE,
    HCM_TYPE,
    LISTENER_NAME_DEFAULT,
    MAX_CONNECTIONS,
    ROUTE_TIMEOUT_S,
    STDOUT_LOG_TYPE,
    STREAM_IDLE_TIMEOUT_S,
    SYSTEM_CA_FILE,
    UPSTREAM_CLUSTER,
    router_filter,
    socket_address,
)
from tokenlimit.render.envoy.filter import EcdsFilter, InlineFilter, limiter_http_filter

INTERNAL_LISTENER_TYPE = (
    "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
)

# The properties the filter sets with proxy_set_property, as Envoy's access log reads them.
DECISION_FIELDS = ("decision", "rule", "key", "tokens", "model", "cost", "cache")  # cache: issue 15
# The path without its query string (`NQ`): API keys travel in queries too (`?key=`, Gemini),
# and this log is written at info level. ORIG_OR_PATH: the path the client sent.
ACCESS_LOG_FORMAT = (
    "[%START_TIME%] %REQ(:METHOD)% %PATH(NQ:ORIG_OR_PATH)% "
    "status=%RESPONSE_CODE% flags=%RESPONSE_FLAGS% "
    + " ".join(f"{f}=%FILTER_STATE(wasm.tokenlimit_{f}:PLAIN)%" for f in DECISION_FIELDS)
    + " duration_ms=%DURATION% upstream=%UPSTREAM_HOST%\n"
)


@dataclass(frozen=True)
class EnvoyOptions:
    upstream: Upstream
    filter: InlineFilter | EcdsFilter
    listen_port: int = 10000
    admin_port: int = 9901
    listen_address: str = "127.0.0.1"
    admin_address: str = "127.0.0.1"
    node_id: str = "tokenlimit"
    route_timeout_s: int = ROUTE_TIMEOUT_S
    stream_idle_timeout_s: int = STREAM_IDLE_TIMEOUT_S
    upstream_ca_file: str = SYSTEM_CA_FILE  # for https upstreams
    max_connections: int = MAX_CONNECTIONS
    listener_name: str = LISTENER_NAME_DEFAULT
    # The tokenlimit bridge (RESP over HTTP to Redis), as the cluster the filter's
    # http_call names (model.ENVOY_BRIDGE_CLUSTER); None: no shared store.
    bridge: Upstream | None = None
    # Proxies in front of Envoy whose X-Forwarded-For entries are trusted (docs/threat-model.md).
    # 0: the peer address (per-IP budgets) is the TCP connection's, whatever the client sends.
    xff_num_trusted_hops: int = 0


@dataclass(frozen=True)
class FallbackRoutes:
    """The fallback chains a bootstrap routes through instead of its one upstream."""

    spec: FallbackSpec
    wasm_path: str  # the module the rewrite listeners run
    rds_path: str | None = None  # None: the route table inline (no toggles)
    states: Mapping[str, chains.RouteState] | None = None  # None: each route's spec mode


def policy_options(spec: PolicySpec | None) -> dict[str, Any]:
    """The EnvoyOptions a policy's spec decides: its listener and its bridge."""
    found: dict[str, Any] = {}
    if spec is None:
        return found
    target = spec.target_ref
    if target is not None and target.listener is not None:
        found["listener_name"] = target.listener
    bridge = spec.redis.bridge if spec.redis is not None else None
    if bridge is not None:
        found["bridge"] = Upstream(host=bridge.address, port=bridge.port, tls=bool(bridge.tls))
    if spec.xff_num_trusted_hops is not None:
        found["xff_num_trusted_hops"] = spec.xff_num_trusted_hops
    return found


def bootstrap(options: EnvoyOptions, fallback: FallbackRoutes | None = None) -> dict[str, Any]:
    """The bootstrap: the listener (and the fallback's internal listeners), the clusters."""
    listeners = [_listener(options, fallback)]
    clusters = [upstream_cluster(UPSTREAM_CLUSTER, options.upstream, options.upstream_ca_file)]
    if fallback is not None:
        clusters = fallback_clusters(fallback.spec, options.upstream_ca_file)
        listeners.extend(
            chains.listeners(fallback.spec, fallback.wasm_path, options.stream_idle_timeout_s)
        )
    if options.bridge is not None:
        clusters.append(
            upstream_cluster(ENVOY_BRIDGE_CLUSTER, options.bridge, options.upstream_ca_file)
        )
    document: dict[str, Any] = {
        # File-based ECDS needs a node identity; harmless without it.
        "node": {"id": options.node_id, "cluster": options.node_id},
        "admin": {"address": socket_address(options.admin_address, options.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # A cap on open client connections, so a connection flood cannot exhaust the host
        # (Envoy warns at startup when there is none).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS_TYPE,
                        "max_active_downstream_connections": options.max_connections,
                    },
                }
            ]
        },
    }
    if len(listeners) > 1:
        document["bootstrap_extensions"] = [
            {
                "name": "envoy.bootstrap.internal_listener",
                "typed_config": {"@type": INTERNAL_LISTENER_TYPE},
            }
        ]
    return document


def _listener(options: EnvoyOptions, fallback: FallbackRoutes | None) -> dict[str, Any]:
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _http_connection_manager(options, fallback),
    }
    return {
        "name": options.listener_name,
        "address": socket_address(options.listen_address, options.listen_port),
        "filter_chains": [{"filters": [hcm]}],
    }


def _http_connection_manager(
    options: EnvoyOptions, fallback: FallbackRoutes | None
) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "tokenlimit",
        "stream_idle_timeout": f"{options.stream_idle_timeout_s}s",
        # The downstream address is the connection's peer, or the entry `xff_num_trusted_hops`
        # from the right of X-Forwarded-For; without this Envoy takes the last entry a client
        # wrote itself, and rotating it escaped every per-IP budget.
        "use_remote_address": True,
        "xff_num_trusted_hops": options.xff_num_trusted_hops,
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": STDOUT_LOG_TYPE,
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ],
    }
    if fallback is None:
        hcm["route_config"] = _route_config(options)
    elif fallback.rds_path is None:
        hcm["route_config"] = chains.route_configuration(
            fallback.spec, fallback.states, options.route_timeout_s
        )
    else:
        # A directory of its own for the file: Envoy watches the whole directory.
        hcm["rds"] = {
            "route_config_name": chains.ROUTE_CONFIG_NAME,
            "config_source": {
                "path_config_source": {"path": fallback.rds_path},
                "resource_api_version": "V3",
            },
        }
    # The limiter sits before the router, once per request: retries and fallbacks the
    # router makes stay under the same budget and are counted once.
    hcm["http_filters"] = [limiter_http_filter(options.filter), router_filter()]
    return hcm


def _route_config(options: EnvoyOptions) -> dict[str, Any]:
    route = {
        "cluster": UPSTREAM_CLUSTER,
        "timeout": f"{options.route_timeout_s}s",
        "host_rewrite_literal": options.upstream.authority,
    }
    return {
        "name": "tokenlimit",
        "virtual_hosts": [
            {
                "name": "upstream",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": route}],
            }
        ],
    }
