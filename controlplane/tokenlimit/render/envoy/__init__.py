"""Standalone Envoy: the bootstrap, the filter's ECDS document, the fallback chains (RDS).

- `upstream.py`  `Upstream`, parsed from `scheme://host[:port]`
- `common.py`    type URLs, names, timeouts shared by the rest
- `filter.py`    the filter's typed_config, the ECDS document, the model-rewrite role
- `clusters.py`  the one cluster builder, and the fallback chains' clusters
- `fallback.py`  the chains' routes (retry policy, modes), RDS document, rewrite listeners
- `bootstrap.py` the bootstrap holding all of it

`tokenlimit.render.render(policy, "envoy", ...)` puts them together; the names below are
what callers and tests use directly.
"""

from tokenlimit.model.upstream import Upstream
from tokenlimit.render.envoy.bootstrap import (
    ACCESS_LOG_FORMAT,
    DECISION_FIELDS,
    EnvoyOptions,
    FallbackRoutes,
    bootstrap,
    policy_options,
)
from tokenlimit.render.envoy.common import (
    CONNECT_TIMEOUT_S,
    FILTER_NAME,
    HCM_TYPE,
    ROUTE_TIMEOUT_S,
    ROUTER_TYPE,
    STREAM_IDLE_TIMEOUT_S,
    SYSTEM_CA_FILE,
    UPSTREAM_CLUSTER,
    WASM_TYPE,
)
from tokenlimit.render.envoy.filter import (
    BRIDGE_TOKEN_VARIABLE,
    EcdsFilter,
    InlineFilter,
    ecds_resource,
    filter_typed_config,
)
from tokenlimit.render.yaml import to_yaml

__all__ = [
    "ACCESS_LOG_FORMAT",
    "BRIDGE_TOKEN_VARIABLE",
    "CONNECT_TIMEOUT_S",
    "DECISION_FIELDS",
    "FILTER_NAME",
    "HCM_TYPE",
    "ROUTER_TYPE",
    "ROUTE_TIMEOUT_S",
    "STREAM_IDLE_TIMEOUT_S",
    "SYSTEM_CA_FILE",
    "UPSTREAM_CLUSTER",
    "WASM_TYPE",
    "EcdsFilter",
    "EnvoyOptions",
    "FallbackRoutes",
    "InlineFilter",
    "Upstream",
    "bootstrap",
    "ecds_resource",
    "filter_typed_config",
    "policy_options",
    "to_yaml",
]
