"""What every part of the Envoy rendering shares: type URLs, names, timeouts, addresses."""

from __future__ import annotations

from typing import Any

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
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_OPTIONS_KEY}"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_CONNECTIONS_TYPE = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3"
    ".DownstreamConnectionsConfig"
)
UPSTREAM_CLUSTER = "upstream"
LISTENER_NAME_DEFAULT = "tokenlimit"

# LLM responses stream for minutes; Envoy's 15 s default route timeout would cut them off.
ROUTE_TIMEOUT_S = 300
STREAM_IDLE_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 5
MAX_CONNECTIONS = 10_000
# Envoy has no "use the system trust store" switch; this is the bundle's path on Debian,
# Ubuntu (Envoy's own images) and Alpine. Red Hat keeps it at /etc/pki/tls/certs/ca-bundle.crt.
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def router_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
