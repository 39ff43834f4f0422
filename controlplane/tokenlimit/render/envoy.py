"""Envoy config for the filter: the Wasm typed_config, a file-based ECDS document, a bootstrap.

Pure functions of their arguments: the same policy and options give the same bytes (golden
tests pin them). Dicts are built in a fixed order and dumped without sorting, so the YAML reads
top-down the way Envoy documents it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tokenlimit.model import ENVOY_BRIDGE_CLUSTER, FilterConfig, PolicySpec, filter_json
from tokenlimit.model.upstream import Upstream

FILTER_NAME = "tokenlimit"  # plugin name, root_id, vm_id and ECDS resource name
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STDOUT_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_CONNECTIONS_TYPE = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3"
    ".DownstreamConnectionsConfig"
)
UPSTREAM_CLUSTER = "upstream"
LISTENER_NAME_DEFAULT = "tokenlimit"

# The properties the filter sets with proxy_set_property, as Envoy's access log reads them.
DECISION_FIELDS = ("decision", "rule", "key", "tokens")
ACCESS_LOG_FORMAT = (
    "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% "
    "status=%RESPONSE_CODE% flags=%RESPONSE_FLAGS% "
    + " ".join(f"{f}=%FILTER_STATE(wasm.tokenlimit_{f}:PLAIN)%" for f in DECISION_FIELDS)
    + " duration_ms=%DURATION% upstream=%UPSTREAM_HOST%\n"
)

# LLM responses stream for minutes; Envoy's 15 s default route timeout would cut them off.
ROUTE_TIMEOUT_S = 300
STREAM_IDLE_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 5
MAX_CONNECTIONS = 10_000
# Envoy has no "use the system trust store" switch; this is the bundle's path on Debian,
# Ubuntu (Envoy's own images) and Alpine. Red Hat keeps it at /etc/pki/tls/certs/ca-bundle.crt.
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class InlineFilter:
    """The filter config is part of the bootstrap (changing it needs a restart)."""

    typed_config: dict[str, Any]


@dataclass(frozen=True)
class EcdsFilter:
    """The filter config is read from an ECDS file, reloaded when the file is renamed over."""

    path: str


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
    return found


BRIDGE_TOKEN_VARIABLE = "TOKENLIMIT_BRIDGE_TOKEN"  # filter/src/redis_store.zig reads it


def filter_typed_config(cfg: FilterConfig, wasm_path: str) -> dict[str, Any]:
    """The `envoy.extensions.filters.http.wasm.v3.Wasm` typed_config running the filter."""
    return {
        "@type": WASM_TYPE,
        "config": {
            "name": FILTER_NAME,
            "root_id": FILTER_NAME,
            # One VM id for every config version: a new config reuses the running VM, so the
            # budgets it keeps in shared data survive an ECDS update.
            "vm_config": {
                "vm_id": FILTER_NAME,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm_path}},
                # The bridge's bearer token reaches the filter from Envoy's own environment,
                # never through this config (unset: the bridge must not require one).
                "environment_variables": {"host_env_keys": [BRIDGE_TOKEN_VARIABLE]},
            },
            "configuration": {"@type": STRING_VALUE_TYPE, "value": filter_json(cfg)},
        },
    }


def ecds_resource(cfg: FilterConfig, wasm_path: str) -> dict[str, Any]:
    """A file-based ECDS document holding the filter's typed_config."""
    return {
        "resources": [
            {
                "@type": EXTENSION_CONFIG_TYPE,
                "name": FILTER_NAME,
                "typed_config": filter_typed_config(cfg, wasm_path),
            }
        ]
    }


def bootstrap(options: EnvoyOptions) -> dict[str, Any]:
    """An Envoy bootstrap: one listener with the filter in front of one upstream cluster."""
    return {
        # File-based ECDS needs a node identity; harmless without it.
        "node": {"id": options.node_id, "cluster": options.node_id},
        "admin": {"address": _socket_address(options.admin_address, options.admin_port)},
        "static_resources": {
            "listeners": [_listener(options)],
            "clusters": _clusters(options),
        },
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


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML in the dicts' own order, without anchors/aliases, long strings on one line."""
    return yaml.dump(
        doc,
        Dumper=_PlainDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,
    )


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _clusters(options: EnvoyOptions) -> list[dict[str, Any]]:
    clusters = [_upstream_cluster(options.upstream, options.upstream_ca_file, UPSTREAM_CLUSTER)]
    if options.bridge is not None:
        clusters.append(
            _upstream_cluster(options.bridge, options.upstream_ca_file, ENVOY_BRIDGE_CLUSTER)
        )
    return clusters


def _listener(options: EnvoyOptions) -> dict[str, Any]:
    return {
        "name": options.listener_name,
        "address": _socket_address(options.listen_address, options.listen_port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _http_connection_manager(options),
                    }
                ]
            }
        ],
    }


def _http_connection_manager(options: EnvoyOptions) -> dict[str, Any]:
    return {
        "@type": HCM_TYPE,
        "stat_prefix": "tokenlimit",
        "stream_idle_timeout": f"{options.stream_idle_timeout_s}s",
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": STDOUT_LOG_TYPE,
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ],
        "route_config": _route_config(options),
        # The limiter sits before the router, once per request: retries and fallbacks the
        # router makes stay under the same budget and are counted once.
        "http_filters": [
            _tokenlimit_http_filter(options.filter),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }


def _route_config(options: EnvoyOptions) -> dict[str, Any]:
    return {
        "name": "tokenlimit",
        "virtual_hosts": [
            {
                "name": "upstream",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": UPSTREAM_CLUSTER,
                            "timeout": f"{options.route_timeout_s}s",
                            "host_rewrite_literal": options.upstream.authority,
                        },
                    }
                ],
            }
        ],
    }


def _tokenlimit_http_filter(filter_source: InlineFilter | EcdsFilter) -> dict[str, Any]:
    if isinstance(filter_source, InlineFilter):
        return {"name": FILTER_NAME, "typed_config": filter_source.typed_config}
    return {
        "name": FILTER_NAME,
        "config_discovery": {
            "config_source": {
                "path_config_source": {"path": filter_source.path},
                "resource_api_version": "V3",
            },
            "type_urls": [WASM_TYPE],
        },
    }


def _upstream_cluster(upstream: Upstream, ca_file: str, name: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if upstream.is_ip else "LOGICAL_DNS",
        "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
    }
    if not upstream.is_ip:
        cluster["dns_lookup_family"] = "V4_PREFERRED"  # `localhost` must not mean ::1 only
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": _socket_address(upstream.host, upstream.port)}}
                ]
            }
        ],
    }
    # HTTP/1.1 to the upstream: what every OpenAI-compatible server speaks.
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE,
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    if upstream.tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS_TYPE,
                "sni": upstream.host,
                # Verify the server like a browser would: trusted CA, host name in the certificate.
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": ca_file},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": upstream.host}}
                        ],
                    }
                },
            },
        }
    return cluster
