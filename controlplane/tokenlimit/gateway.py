"""`tokenlimit.gateway` moved to `tokenlimit.dev.gateway`: the names callers import, from there."""

from tokenlimit.dev.gateway import (
    BRIDGE_CLUSTER,
    MOCK,
    Gateway,
    GatewayError,
    GatewayLogs,
    envoy_binary,
    free_port,
)

__all__ = [
    "BRIDGE_CLUSTER",
    "MOCK",
    "Gateway",
    "GatewayError",
    "GatewayLogs",
    "envoy_binary",
    "free_port",
]
