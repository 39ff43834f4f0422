"""Renderers: pure functions from a policy to gateway config."""

from tokenlimit.model.upstream import Upstream
from tokenlimit.render.envoy import (
    EcdsFilter,
    EnvoyOptions,
    InlineFilter,
    bootstrap,
    ecds_resource,
    filter_typed_config,
    to_yaml,
)

__all__ = [
    "EcdsFilter",
    "EnvoyOptions",
    "InlineFilter",
    "Upstream",
    "bootstrap",
    "ecds_resource",
    "filter_typed_config",
    "to_yaml",
]
