"""Rendering: pure functions from a policy to gateway config, for every target.

    from tokenlimit.render import render, EnvoyTarget
    rendered = render(policy, "higress", HigressOptions(module=WasmModule(url)))

- `pipeline.py`         `render(policy, target, options)`: the one entry point (targets there)
- `envoy/`              standalone Envoy: bootstrap, clusters, filter/ECDS, fallback routes
- `higress.py`          the Higress WasmPlugin
- `higress_fallback.py` Higress fallback: routes in matchRules, the redirect EnvoyFilter
- `istio.py`            the Istio WasmPlugin (+ what reaching the bridge needs)
- `kube.py`             what the Kubernetes renderers share (WasmModule, metadata, names)
- `yaml.py`             the YAML dumper every document goes through

No module here imports the operator, the CLI or anything that reads a cluster.
"""

from tokenlimit.model.upstream import Upstream
from tokenlimit.render.envoy import (
    EcdsFilter,
    EnvoyOptions,
    InlineFilter,
    bootstrap,
    ecds_resource,
    filter_typed_config,
)
from tokenlimit.render.higress import HigressOptions
from tokenlimit.render.istio import IstioOptions
from tokenlimit.render.kube import RenderError, WasmModule
from tokenlimit.render.pipeline import (
    TARGETS,
    EnvoyConfigMapTarget,
    EnvoyTarget,
    Rendered,
    kinds,
    render,
)
from tokenlimit.render.yaml import to_yaml, to_yaml_documents

__all__ = [
    "TARGETS",
    "EcdsFilter",
    "EnvoyConfigMapTarget",
    "EnvoyOptions",
    "EnvoyTarget",
    "HigressOptions",
    "InlineFilter",
    "IstioOptions",
    "RenderError",
    "Rendered",
    "Upstream",
    "WasmModule",
    "bootstrap",
    "ecds_resource",
    "filter_typed_config",
    "kinds",
    "render",
    "to_yaml",
    "to_yaml_documents",
]
