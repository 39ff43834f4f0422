"""Envoy clusters: the one builder of a cluster that reaches an upstream, and the fallback
chains built from it.

`upstream_cluster` is used for the plain bootstrap's `upstream`, for the bridge cluster
(`model.ENVOY_BRIDGE_CLUSTER`) and for every member of a fallback chain, so DNS, HTTP/1.1 and
TLS verification are decided in one place.

Fallback names hold no `_` or `.` of their own (route and upstream names are DNS labels), so
`fallback_<route>_<upstream>` is unambiguous and safe in stat names.
"""

from __future__ import annotations

from typing import Any

from tokenlimit.model import FallbackRoute, FallbackSpec, FallbackUpstream
from tokenlimit.model.upstream import Upstream
from tokenlimit.render.envoy.common import (
    CONNECT_TIMEOUT_S,
    HTTP_OPTIONS_KEY,
    HTTP_OPTIONS_TYPE,
    SYSTEM_CA_FILE,
    TLS_TYPE,
    socket_address,
)

AGGREGATE_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"


def upstream_cluster(
    name: str, upstream: Upstream, ca_file: str = SYSTEM_CA_FILE, *, hostname: str | None = None
) -> dict[str, Any]:
    """A cluster reaching `upstream`: its endpoint, HTTP/1.1, TLS (SNI, SAN check) for https.

    `hostname` is set on the endpoint when routes use `auto_host_rewrite` (fallback chains:
    each member gets its own Host).
    """
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if upstream.is_ip else "LOGICAL_DNS",
        "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
    }
    if not upstream.is_ip:
        cluster["dns_lookup_family"] = "V4_PREFERRED"  # `localhost` must not mean ::1 only
    address = socket_address(upstream.host, upstream.port)
    cluster["load_assignment"] = _load_assignment(name, address, hostname)
    cluster["typed_extension_protocol_options"] = _http1_options()
    if upstream.tls:
        cluster["transport_socket"] = _tls(upstream, ca_file)
    return cluster


def _load_assignment(name: str, address: dict[str, Any], hostname: str | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"address": address}
    if hostname is not None:
        # `hostname` is what auto_host_rewrite puts in Host for this upstream.
        endpoint["hostname"] = hostname
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]}


def _http1_options() -> dict[str, Any]:
    # HTTP/1.1 to the upstream: what every OpenAI-compatible server speaks.
    return {
        HTTP_OPTIONS_KEY: {
            "@type": HTTP_OPTIONS_TYPE,
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }


def _tls(target: Upstream, ca_file: str) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS_TYPE,
            "sni": target.host,
            # Verify the server like a browser would: trusted CA, host name in the certificate.
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": ca_file},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": target.host}}
                    ],
                }
            },
        },
    }


# --- fallback chains -------------------------------------------------------------------------


def upstream_cluster_name(route: str, upstream: str) -> str:
    """`fallback_<route>_<upstream>` (names hold no `_` or `.`: unambiguous, stat-safe)."""
    return f"fallback_{route}_{upstream}"


def chain_cluster_name(route: str, first: str) -> str:
    """The aggregate cluster whose chain starts at `first`."""
    return f"fallback_{route}_chain_from_{first}"


def direct_cluster_name(route: str, upstream: str) -> str:
    """The cluster behind an upstream's rewrite listener: `fallback_<route>_<upstream>_direct`."""
    return f"fallback_{route}_{upstream}_direct"


def rewrite_listener_name(route: str, upstream: str) -> str:
    """The internal listener renaming the model for one upstream."""
    return f"fallback_{route}_{upstream}_rewrite"


def fallback_clusters(spec: FallbackSpec, ca_file: str = SYSTEM_CA_FILE) -> list[dict[str, Any]]:
    """Every route's member clusters (and, for an upstream reached through its rewrite
    listener, the cluster behind it), then its chain (aggregate) clusters."""
    found: list[dict[str, Any]] = []
    for route in spec.routes:
        for upstream in route.upstreams:
            target, hostname = upstream.upstream, upstream.upstream.authority
            member = upstream_cluster_name(route.name, upstream.name)
            if not upstream.needs_listener:
                found.append(upstream_cluster(member, target, ca_file, hostname=hostname))
                continue
            found.append(member_cluster_via_rewrite(route.name, upstream))
            direct = direct_cluster_name(route.name, upstream.name)
            found.append(upstream_cluster(direct, target, ca_file, hostname=hostname))
        found.extend(chain_cluster(route, upstream.name) for upstream in route.upstreams)
    return found


def chain_order(route: FallbackRoute, first: str) -> list[str]:
    """The upstreams in the order a chain starting at `first` tries them."""
    names = [u.name for u in route.upstreams]
    return [first, *(n for n in names if n != first)]


def chain_cluster(route: FallbackRoute, first: str) -> dict[str, Any]:
    """An aggregate cluster: the upstreams from `first`, then the others in priority order
    (Envoy linearises their priorities: first = P0, next = P1, ...)."""
    return {
        "name": chain_cluster_name(route.name, first),
        "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": AGGREGATE_TYPE,
                "clusters": [
                    upstream_cluster_name(route.name, n) for n in chain_order(route, first)
                ],
            },
        },
    }


def member_cluster_via_rewrite(route: str, upstream: FallbackUpstream) -> dict[str, Any]:
    """The chain's member for an upstream with another model (or its own key): the rewrite
    listener.

    Envoy gives a request routed to an aggregate cluster the *aggregate's* upstream filter
    chain, never the member cluster's (envoyproxy/envoy#29318), so a per-upstream upstream
    filter would never run. The member is instead an internal listener (in-process, no
    socket) whose HTTP filters rename the model and whose router forwards to the upstream.
    Retries, Retry-After and per-upstream host stats stay with the outer router.
    """
    name = upstream_cluster_name(route, upstream.name)
    address = {
        "envoy_internal_address": {
            "server_listener_name": rewrite_listener_name(route, upstream.name)
        }
    }
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
        "load_assignment": _load_assignment(name, address, upstream.upstream.authority),
        "typed_extension_protocol_options": _http1_options(),
    }
