"""Istio: a TokenRateLimitPolicy as an `extensions.istio.io/v1alpha1` WasmPlugin (+ bridge).

    render(policy, IstioOptions(module=WasmModule(url, sha256))) -> [WasmPlugin, ServiceEntry?,
                                                                     DestinationRule?]

`policy` is a validated `TokenRateLimitPolicy`; the result is a list of Kubernetes object
dicts in a fixed key order (golden-tested). Raises `RenderError` (a ValueError) when the
policy cannot run on Istio.

Choices, and why:
- **Attachment**: `spec.targetRef.selector.matchLabels` → `selector`, or
  `spec.targetRef.gatewayRef` → `targetRefs: [{group: gateway.networking.k8s.io, kind:
  Gateway}]`. One of them is required: a WasmPlugin with neither runs on every workload of
  its namespace (every proxy of the mesh in the root namespace). The WasmPlugin lives in the
  policy's namespace (Istio allows no cross-namespace targetRefs).
- **Phase**: `UNSPECIFIED_PHASE` (end of the chain, just before the router), after Istio's
  authentication (AUTHN) and authorization (AUTHZ) filters: claims copied to headers by a
  RequestAuthentication are there to key on, and denied requests never spend budget.
- **failStrategy** follows `failureMode` (`closed` → FAIL_CLOSE, else FAIL_OPEN).
- **The store**: stock Envoy has no Redis client, so the filter sends RESP over
  `proxy_http_call` to the tokenlimit bridge. An http_call names an Envoy *cluster*; Istio
  calls a service's cluster `outbound|<port>||<host>`, so the filter config's
  `redis.service_name` is exactly that. A bridge that is a Kubernetes Service is in the mesh
  registry already. A bridge given by `host` that is not `*.svc.cluster.local` is not, so a
  `ServiceEntry` (MESH_EXTERNAL, DNS resolution, `exportTo: ["."]`) creates that cluster. With
  `bridge.tls` a `DestinationRule` makes the sidecar originate TLS (the filter's call is plain
  HTTP); the `ServiceEntry` port then still speaks HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenlimit.model import BridgeRef, TokenRateLimitPolicy, filter_json, policy_filter_config
from tokenlimit.render.envoy.filter import BRIDGE_TOKEN_VARIABLE
from tokenlimit.render.kube import (
    PHASES,
    PULL_POLICIES,
    RenderError,
    WasmModule,
    check_choice,
    check_gateway,
    fail_strategy,
    metadata,
    object_name,
)

API_VERSION = "extensions.istio.io/v1alpha1"
KIND = "WasmPlugin"
NETWORKING_API_VERSION = "networking.istio.io/v1"  # served since Istio 1.22
SERVICE_ENTRY = "ServiceEntry"
DESTINATION_RULE = "DestinationRule"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
PHASE_DEFAULT = "UNSPECIFIED_PHASE"
MESH_SUFFIX = ".svc.cluster.local"
# Every (apiVersion, kind) `render` may return: the operator lists these to find its objects.
KINDS = (
    (API_VERSION, KIND),
    (NETWORKING_API_VERSION, SERVICE_ENTRY),
    (NETWORKING_API_VERSION, DESTINATION_RULE),
)


@dataclass(frozen=True)
class IstioOptions:
    module: WasmModule
    phase: str = PHASE_DEFAULT
    priority: int | None = None  # None: Istio orders by name within the phase
    fail_strategy: str | None = None  # None: from spec.failureMode
    image_pull_policy: str | None = None
    image_pull_secret: str | None = None


def render(policy: TokenRateLimitPolicy, options: IstioOptions) -> list[dict[str, Any]]:
    """The WasmPlugin running `policy` on Istio, and what reaching the bridge needs."""
    check_gateway(policy, "istio")
    if policy.spec.fallback is not None:
        # Never rendered without it: the limiter would be in place and the fallback gone.
        raise RenderError(
            "spec.fallback: model fallback is not rendered for Istio (a VirtualService retry "
            "policy would be needed); render it for standalone Envoy (--target envoy) or "
            "Higress, or remove spec.fallback"
        )
    check_choice(options.phase, PHASES, "phase")
    check_choice(options.image_pull_policy, PULL_POLICIES, "imagePullPolicy")
    target = policy.spec.target_ref
    if target is None:
        raise RenderError(
            "spec.targetRef: an Istio policy needs targetRef {gateway: istio, selector: "
            "{matchLabels: ...}} or {gateway: istio, gatewayRef: {name: ...}}; without one the "
            "WasmPlugin would run on every workload of its namespace"
        )
    namespace = policy.metadata.namespace
    spec: dict[str, Any] = {}
    if target.selector is not None:
        spec["selector"] = {"matchLabels": dict(target.selector.match_labels)}
    elif target.gateway_ref is not None:
        spec["targetRefs"] = [
            {"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": target.gateway_ref.name}
        ]
    spec["url"] = options.module.url
    if options.module.sha256 is not None:
        spec["sha256"] = options.module.sha256
    if options.image_pull_policy is not None:
        spec["imagePullPolicy"] = options.image_pull_policy
    if options.image_pull_secret is not None:
        spec["imagePullSecret"] = options.image_pull_secret
    spec["phase"] = options.phase
    if options.priority is not None:
        spec["priority"] = options.priority
    spec["failStrategy"] = fail_strategy(policy.spec, options.fail_strategy)
    spec["pluginConfig"] = json.loads(filter_json(policy_filter_config(policy)))
    if policy.spec.redis is not None:
        # The bridge's token, from the proxy's environment (a Secret the gateway or sidecar
        # mounts as TOKENLIMIT_BRIDGE_TOKEN): secrets by reference, never in pluginConfig.
        spec["vmConfig"] = {"env": [{"name": BRIDGE_TOKEN_VARIABLE, "valueFrom": "HOST"}]}
    objects = [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata(object_name(policy.metadata.name), namespace, policy),
            "spec": spec,
        }
    ]
    bridge = policy.spec.redis.bridge if policy.spec.redis is not None else None
    if bridge is not None:
        objects.extend(bridge_objects(policy, bridge))
    return objects


def bridge_objects(policy: TokenRateLimitPolicy, bridge: BridgeRef) -> list[dict[str, Any]]:
    """A ServiceEntry when the bridge is outside the mesh registry; a DestinationRule for TLS."""
    host = bridge.address
    name = object_name(policy.metadata.name, "bridge")
    namespace = policy.metadata.namespace
    objects: list[dict[str, Any]] = []
    if not host.endswith(MESH_SUFFIX):
        objects.append(
            {
                "apiVersion": NETWORKING_API_VERSION,
                "kind": SERVICE_ENTRY,
                "metadata": metadata(name, namespace, policy),
                "spec": {
                    "hosts": [host],
                    "ports": [{"number": bridge.port, "name": "http-bridge", "protocol": "HTTP"}],
                    "location": "MESH_EXTERNAL",
                    "resolution": "DNS",
                    "exportTo": ["."],
                },
            }
        )
    if bridge.tls:
        objects.append(
            {
                "apiVersion": NETWORKING_API_VERSION,
                "kind": DESTINATION_RULE,
                "metadata": metadata(name, namespace, policy),
                "spec": {
                    "host": host,
                    "exportTo": ["."],
                    "trafficPolicy": {
                        "portLevelSettings": [
                            {
                                "port": {"number": bridge.port},
                                "tls": {"mode": "SIMPLE", "sni": host},
                            }
                        ]
                    },
                },
            }
        )
    return objects
