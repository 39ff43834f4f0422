"""`render(policy, target, options)`: every object a policy needs on a gateway, fallback included.

The one entry point `tokenlimit render`, `push --rendered`, the operator, `tokenlimit up` and
`tokenlimit fallback render` call. What each target returns:

- `envoy` (`EnvoyTarget`): files by role -- `bootstrap`; `ecds` when the options name an ECDS
  path; `rds` when the policy has spec.fallback and the options name an RDS path (inline
  otherwise).
- `envoy-configmap` (`EnvoyConfigMapTarget`): the ConfigMap holding the ECDS document (the
  operator's Envoy target).
- `higress` (`HigressOptions`): the WasmPlugin, and a redirect EnvoyFilter per fallback route.
- `istio` (`IstioOptions`): the WasmPlugin (+ ServiceEntry, DestinationRule for the bridge).

Every target carries the same filter config, `policy_filter_config(policy)`: what the filter
cannot work out itself is rendered there, as of the render -- the policy's `timeZone` as a
`calendar` table of UTC offsets (a year back, ten ahead; re-rendered on every apply), and
`pricesFrom: genai-prices` as `prices` numbers (docs/design-model-budgets.md).

A part of the policy a target cannot carry is refused with a `RenderError` naming the field
(`spec.fallback: ...`), never dropped: a limiter rendered without its fallback routes is the
budget escape the fallback exists to close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tokenlimit.loader import LoadedPolicy
from tokenlimit.model import FilterConfig, TokenRateLimitPolicy, policy_filter_config
from tokenlimit.model.upstream import Upstream
from tokenlimit.render import higress, istio
from tokenlimit.render.envoy.bootstrap import (
    EnvoyOptions,
    FallbackRoutes,
    bootstrap,
    policy_options,
)
from tokenlimit.render.envoy.fallback import RouteState, rds_resource
from tokenlimit.render.envoy.filter import (
    EcdsFilter,
    InlineFilter,
    ecds_resource,
    filter_typed_config,
)
from tokenlimit.render.kube import RenderError, SecretSource, check_gateway, child_name
from tokenlimit.render.yaml import to_yaml

Target = Literal["envoy", "envoy-configmap", "higress", "istio"]
TARGETS: tuple[str, ...] = get_args(Target)
ECDS_KEY = "tokenlimit-ecds.yaml"  # the ConfigMap key: the file Envoy's path_config_source reads
CONFIG_MAP = ("v1", "ConfigMap")

# A policy document, a loaded file (a bare Higress config too), or just a filter config
# (`tokenlimit up` runs one): Envoy needs only the filter config, Kubernetes the policy.
Source = LoadedPolicy | TokenRateLimitPolicy | FilterConfig


@dataclass(frozen=True)
class EnvoyTarget:
    """Standalone Envoy: the bootstrap and the files it reads."""

    wasm_path: str  # the filter module as Envoy sees it
    upstream: Upstream | None = None  # None: the first fallback route's primary
    ecds_path: str | None = None  # None: the filter config inline (changes need a restart)
    rds_path: str | None = None  # spec.fallback: the route table's file; None: inline
    route_states: Mapping[str, RouteState] | None = None  # None: each route's spec mode
    listen_address: str = "127.0.0.1"
    listen_port: int = 10000
    admin_port: int = 9901
    bridge: Upstream | None = None  # a bridge to add; overrides spec.redis.bridge
    xff_num_trusted_hops: int | None = None  # None: the policy's (default 0)


@dataclass(frozen=True)
class EnvoyConfigMapTarget:
    """Standalone Envoy in a cluster (the operator): the ECDS document as a ConfigMap."""

    wasm_path: str  # the module's path inside the Envoy pod


Options = EnvoyTarget | EnvoyConfigMapTarget | higress.HigressOptions | istio.IstioOptions


@dataclass(frozen=True)
class Rendered:
    """Kubernetes objects, or Envoy documents by role (`bootstrap`, `ecds`, `rds`)."""

    objects: tuple[dict[str, Any], ...] = ()
    files: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def text(self, role: str) -> str:
        """One Envoy document as the YAML written to its file."""
        return to_yaml(self.files[role])


def render(
    policy: Source, target: str, options: Options, *, secrets: SecretSource | None = None
) -> Rendered:
    """Everything `policy` needs on `target` (see the module docstring).

    `secrets` reads the values a policy refers to (Higress's Redis password). Raises
    RenderError (a ValueError) saying what to change.
    """
    config, document = _parts(policy)
    if target == "envoy" and isinstance(options, EnvoyTarget):
        return _envoy(config, document, options)
    if target == "envoy-configmap" and isinstance(options, EnvoyConfigMapTarget):
        return Rendered(objects=(_ecds_config_map(policy, config, document, options),))
    if target in ("higress", "istio"):
        if document is None:
            raise RenderError(
                "a bare Higress config says nothing about where it attaches: convert it with "
                "`tokenlimit import` and render the policy"
            )
        if target == "higress" and isinstance(options, higress.HigressOptions):
            return Rendered(objects=tuple(higress.render(document, options, secrets)))
        if target == "istio" and isinstance(options, istio.IstioOptions):
            return Rendered(objects=tuple(istio.render(document, options)))
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    raise TypeError(f"target {target} does not take {type(options).__name__}")


def kinds(target: str) -> tuple[tuple[str, str], ...]:
    """Every (apiVersion, kind) `render` may return for a Kubernetes target."""
    found = {"envoy-configmap": (CONFIG_MAP,), "higress": higress.KINDS, "istio": istio.KINDS}
    if target not in found:
        raise ValueError(f"target {target!r} renders no Kubernetes objects")
    return found[target]


def _parts(policy: Source) -> tuple[FilterConfig, TokenRateLimitPolicy | None]:
    if isinstance(policy, LoadedPolicy):
        return policy.config, policy.policy
    if isinstance(policy, TokenRateLimitPolicy):
        return policy_filter_config(policy), policy
    return policy, None


def _envoy(
    config: FilterConfig, policy: TokenRateLimitPolicy | None, options: EnvoyTarget
) -> Rendered:
    if policy is not None:
        check_gateway(policy, "envoy")
    spec = policy.spec if policy is not None else None
    fallback = spec.fallback if spec is not None else None
    upstream = options.upstream
    if upstream is None:
        if fallback is None:
            raise RenderError("no upstream: name the LLM API the gateway forwards to")
        upstream = fallback.routes[0].primary.upstream
    decided = policy_options(spec)
    if options.bridge is not None:
        decided["bridge"] = options.bridge
    if options.xff_num_trusted_hops is not None:
        decided["xff_num_trusted_hops"] = options.xff_num_trusted_hops
    filter_source: InlineFilter | EcdsFilter = InlineFilter(
        filter_typed_config(config, options.wasm_path)
    )
    if options.ecds_path is not None:
        filter_source = EcdsFilter(options.ecds_path)
    envoy = EnvoyOptions(
        upstream=upstream,
        filter=filter_source,
        listen_address=options.listen_address,
        listen_port=options.listen_port,
        admin_port=options.admin_port,
        **decided,
    )
    routes = None
    if fallback is not None:
        routes = FallbackRoutes(fallback, options.wasm_path, options.rds_path, options.route_states)
    files = {"bootstrap": bootstrap(envoy, routes)}
    if options.ecds_path is not None:
        files["ecds"] = ecds_resource(config, options.wasm_path)
    if fallback is not None and options.rds_path is not None:
        files["rds"] = rds_resource(fallback, options.route_states, envoy.route_timeout_s)
    return Rendered(files=files)


def _ecds_config_map(
    source: Source,
    config: FilterConfig,
    policy: TokenRateLimitPolicy | None,
    options: EnvoyConfigMapTarget,
) -> dict[str, Any]:
    """Mounted into the Envoy pod, the ConfigMap is the file the bootstrap's
    `path_config_source` watches (with `watched_directory` set to the mount, since the
    kubelet swaps a symlink on update), so rule changes reach Envoy without a restart."""
    if policy is not None and policy.spec.fallback is not None:
        raise RenderError(
            "spec.fallback: the operator's Envoy target is the filter's ECDS ConfigMap, which "
            "cannot carry the fallback chains' clusters and routes: render the bootstrap with "
            "`tokenlimit render --target envoy --out-dir DIR` and mount it, or remove "
            "spec.fallback"
        )
    if isinstance(source, LoadedPolicy):
        name = source.name
    elif policy is not None:
        name = policy.metadata.name
    else:
        raise RenderError("a ConfigMap needs the policy's name: render a policy document")
    return {
        "apiVersion": CONFIG_MAP[0],
        "kind": CONFIG_MAP[1],
        "metadata": {"name": child_name(name, "tokenlimit-ecds")},
        "data": {ECDS_KEY: to_yaml(ecds_resource(config, options.wasm_path))},
    }
