"""The operator's `Renderer`: `tokenlimit.render.render` behind the reconcile protocol.

The operator renders with the same function `tokenlimit render` and `push --rendered` call,
so a policy reaches the cluster with every object it renders to (a Higress policy's fallback
redirects too) or is refused naming the field; nothing is looked up by name at run time.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenlimit.apply.kube import Kind, KubeClient, Obj, ObjectRef
from tokenlimit.loader import LoadedPolicy
from tokenlimit.operator.reconcile import GATEWAY_KINDS, GatewayKind, Renderer, Settings
from tokenlimit.render import (
    EnvoyConfigMapTarget,
    HigressOptions,
    IstioOptions,
    RenderError,
    WasmModule,
    kinds,
    render,
)
from tokenlimit.render.kube import SecretSource
from tokenlimit.render.kube import child_name as child_name
from tokenlimit.render.pipeline import ECDS_KEY as ECDS_KEY

SECRET = Kind("v1", "Secret")
# The operator's gateway kind → the render target (Envoy in a cluster: the ECDS ConfigMap).
TARGETS: dict[str, str] = {"envoy": "envoy-configmap", "higress": "higress", "istio": "istio"}


def renderer_for(gateway: GatewayKind, secrets: SecretSource | None = None) -> Renderer:
    """The renderer for `gateway`; `secrets` reads the Secret values a policy refers to."""
    if gateway not in TARGETS:
        raise ValueError(f"unknown gateway kind {gateway!r}: expected one of {GATEWAY_KINDS}")
    return GatewayRenderer(gateway, secrets)


@dataclass(frozen=True)
class GatewayRenderer:
    """One gateway kind's objects for a policy: `render()` with the operator's settings."""

    gateway: str
    secrets: SecretSource | None = None

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(Kind(api_version, kind) for api_version, kind in kinds(TARGETS[self.gateway]))

    def render(
        self, policy: LoadedPolicy, document: Mapping[str, Any], settings: Settings
    ) -> list[Obj]:
        target = TARGETS[self.gateway]
        if target == "envoy-configmap":
            options: Any = EnvoyConfigMapTarget(settings.envoy_module_path)
        else:
            if policy.policy is None:
                raise RenderError("the operator renders TokenRateLimitPolicy documents only")
            if settings.module is None:
                raise RenderError(f"the operator has no filter module URL for {self.gateway}")
            module = WasmModule(settings.module.url, settings.module.sha256 or None)
            options = HigressOptions(module=module) if target == "higress" else IstioOptions(module)
        return list(render(policy, target, options, secrets=self.secrets).objects)


@dataclass(frozen=True)
class EnvoyEcdsRenderer(GatewayRenderer):
    """Standalone Envoy in a cluster: a ConfigMap holding the filter's ECDS document."""

    gateway: str = "envoy"


class SecretMissing(ValueError):
    """A Secret (or its key) that a policy refers to is not there: the policy cannot run."""


class SecretReader:
    """Reads `data[key]` of a Secret in the policy's namespace (the renderers' SecretSource).

    A missing Secret or key refuses the policy (Accepted False, naming the reference); any
    other API error fails the reconcile, which is retried with back-off. Secrets are not
    watched: a changed value reaches the gateway at the next resync.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def __call__(self, namespace: str | None, ref: Any) -> str:
        where = f"{namespace}/{ref.name}" if namespace else ref.name
        secret = self.client.get(ObjectRef(SECRET, namespace, ref.name))
        field = "spec.redis.passwordSecretRef"
        if secret is None:
            raise SecretMissing(f"{field}: Secret {where} not found")
        encoded = (secret.get("data") or {}).get(ref.key)
        if encoded is None:
            raise SecretMissing(f"{field}: Secret {where} has no key {ref.key!r}")
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise SecretMissing(
                f"{field}: Secret {where} key {ref.key!r} is not UTF-8 text"
            ) from None
