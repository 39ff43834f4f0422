"""Store names: what Higress can resolve as Redis, what Envoy and Istio call the bridge.

A policy names its Redis store once (`spec.redis`); the filter config needs the name the
gateway itself uses. Higress reaches Redis through its service registry, so the name must be
one Higress has (`higress_redis_problem` says why not and what to write); Envoy and Istio
reach the tokenlimit bridge through an Envoy cluster (`filter_redis`).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from tokenlimit.model._checks import show
from tokenlimit.model.fields import DNS_SUBDOMAIN, DNS_SUBDOMAIN_CHARS_MAX
from tokenlimit.model.limits import BRIDGE_CLUSTER

if TYPE_CHECKING:  # the policy model checks its store with this module: import only for types
    from tokenlimit.model.policy import PolicyRedis, PolicySpec

ENVOY_BRIDGE_CLUSTER = BRIDGE_CLUSTER  # the cluster render.envoy adds for the bridge
HIGRESS_STATIC_PORT = 80  # Higress serves `.static` registry entries on this logical port
REDIS_PORT_DEFAULT = 6379


def host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if DNS_SUBDOMAIN.fullmatch(host) and len(host) <= DNS_SUBDOMAIN_CHARS_MAX:
        return None
    return f"must be a host name (lowercase letters, digits, '-', '.') or an IP, got {show(host)}"


def higress_redis_problem(host: str, port: int | None) -> str | None:
    """Why Higress would answer `bad argument` on Redis init for this name and port, or None.

    Higress's Redis ABI takes an Envoy cluster, `outbound|<port>||<host>`; a cluster it does
    not have fails `proxy_redis_init` with `bad argument` (alibaba/higress #851, #1104,
    #1486, #1539, #3135). The message says what to write instead. A message about the port
    starts with `port: `.
    """
    if "://" in host:
        return (
            f"must be the Redis service as Higress names it, not a URL, got {show(host)}: "
            "write e.g. redis.dns (a DNS service in Higress's registry), redis.static (a static "
            "address) or redis.<namespace>.svc.cluster.local"
        )
    name, colon, tail = host.rpartition(":")
    if colon and tail.isdigit() and not is_ip(host):
        return f"put the port in redis.port, not in the name: host: {name}, port: {tail}"
    if is_ip(host):
        return (
            f"Higress reaches Redis through its service registry, not by address, got "
            f"{show(host)}: register a static service for {host}:{port or REDIS_PORT_DEFAULT} "
            "(McpBridge registry type static) named e.g. redis, then write host: redis.static "
            "and leave port out (static services use Higress's logical port 80)"
        )
    if not (DNS_SUBDOMAIN.fullmatch(host) and len(host) <= DNS_SUBDOMAIN_CHARS_MAX):
        return (
            "must be a service name Higress knows (lowercase letters, digits, '-', '.'), got "
            f"{show(host)}"
        )
    labels = host.split(".")
    if labels[-1] == "static":
        if port not in (None, HIGRESS_STATIC_PORT):
            return (
                f"port: Higress serves .static services on its logical port 80 (the real "
                f"address and port are in the registry entry), got {port}: leave port out "
                "or set 80"
            )
        return None
    if labels[-1] == "dns":
        if port is None:
            return (
                f"port: {host} is a DNS service in Higress's registry; its cluster is "
                f"outbound|<port>||{host} with the port of that registry entry: set redis.port "
                "to it (usually 6379)"
            )
        return None
    if len(labels) == 1:
        return (
            f"{show(host)} alone is not a name Higress can resolve: for a Kubernetes Service "
            f"write service: {{name: {host}, namespace: <namespace>}} (or host: "
            f"{host}.<namespace>.svc.cluster.local), or register it in Higress and write "
            f"host: {host}.dns"
        )
    if len(labels) >= 3 and labels[2] == "svc":
        if len(labels) >= 5:
            return None  # <name>.<namespace>.svc.<cluster domain>
        if len(labels) == 4:
            return (
                "a Kubernetes Service name is <name>.<namespace>.svc.cluster.local, got "
                f"{show(host)}"
            )
    if len(labels) == 2 or labels[2:] == ["svc"]:
        return (
            f"Higress needs the full Service name, got {show(host)}: write "
            f"{labels[0]}.{labels[1]}.svc.cluster.local (or service: {{name: {labels[0]}, "
            f"namespace: {labels[1]}}})"
        )
    return (
        f"Higress resolves Redis only through its service registry, got {show(host)}: register "
        f"{host} as a DNS service (McpBridge registry type dns) named e.g. redis and write "
        "host: redis.dns with that entry's port, or point at a Kubernetes Service "
        "(service: {name, namespace})"
    )


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def higress_redis_name(redis: PolicyRedis) -> tuple[str, int]:
    """The Redis service name and port the Higress filter config carries."""
    host = redis.service.host if redis.service is not None else str(redis.host)
    if redis.port is not None:
        return host, redis.port
    return host, HIGRESS_STATIC_PORT if host.endswith(".static") else REDIS_PORT_DEFAULT


def istio_cluster(host: str, port: int) -> str:
    """The Envoy cluster Istio generates for `host:port`: `outbound|<port>||<host>`."""
    return f"outbound|{port}||{host}"


def filter_redis(spec: PolicySpec) -> dict[str, Any] | None:
    """The filter's `redis` object for a policy's store (no password: see render.higress)."""
    redis = spec.redis
    if redis is None:
        return None
    found: dict[str, Any]
    if spec.gateway == "higress":
        host, port = higress_redis_name(redis)
        found = {"service_name": host, "service_port": port}
        if redis.username is not None:
            found["username"] = redis.username
    else:
        bridge = redis.bridge
        assert bridge is not None  # the model refuses Envoy/Istio stores without a bridge
        name = (
            istio_cluster(bridge.address, bridge.port)
            if spec.gateway == "istio"
            else ENVOY_BRIDGE_CLUSTER
        )
        found = {"service_name": name, "service_port": bridge.port}
    if redis.timeout_ms is not None:
        found["timeout"] = redis.timeout_ms
    if spec.gateway == "higress" and redis.database is not None:
        found["database"] = redis.database
    return found
