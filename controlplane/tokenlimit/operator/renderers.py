"""The renderer for each gateway kind, found when first asked for.

The operator renders with the project's own renderers (`tokenlimit.render.*`), the same ones
`tokenlimit render` and `push` use; this module adapts each to the `Renderer` protocol
(policy → Kubernetes objects, plus the kinds it may produce). They are imported lazily so a
missing or broken renderer fails the gateway kind that needs it, with a message, not the
whole package.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenlimit.loader import LoadedPolicy
from tokenlimit.operator.kube import CONFIG_MAP, Kind, KubeClient, Obj, ObjectRef
from tokenlimit.operator.reconcile import GATEWAY_KINDS, GatewayKind, Renderer, Settings

SECRET = Kind("v1", "Secret")
ECDS_KEY = "tokenlimit-ecds.yaml"  # the file name Envoy's path_config_source points at
NAME_CHARS_MAX = 253  # a DNS subdomain: ConfigMap and most object names


class RendererMissing(LookupError):
    """This build has no renderer for a gateway kind."""


def renderer_for(gateway: GatewayKind, secrets: SecretReader | None = None) -> Renderer:
    """The renderer for `gateway`; `secrets` reads the Secret values a policy refers to."""
    if gateway == "envoy":
        return EnvoyEcdsRenderer()
    if gateway in ("higress", "istio"):
        return _wasm_plugin_renderer(gateway, secrets)
    raise ValueError(f"unknown gateway kind {gateway!r}: expected one of {GATEWAY_KINDS}")


def child_name(policy_name: str, suffix: str) -> str:
    """`<policy>-<suffix>`, shortened with a hash when it would be too long for a name."""
    name = f"{policy_name}-{suffix}"
    if len(name) <= NAME_CHARS_MAX:
        return name
    digest = hashlib.sha256(policy_name.encode()).hexdigest()[:10]
    keep = NAME_CHARS_MAX - len(suffix) - len(digest) - 2
    return f"{policy_name[:keep].rstrip('-.')}-{digest}-{suffix}"


@dataclass(frozen=True)
class EnvoyEcdsRenderer:
    """Standalone Envoy in a cluster: a ConfigMap holding the filter's ECDS document.

    Mounted into the Envoy pod, it is the file the bootstrap's `path_config_source` watches
    (with `watched_directory` set to the mount, since the kubelet swaps a symlink on update),
    so rule changes reach Envoy without a restart.
    """

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return (CONFIG_MAP,)

    def render(
        self, policy: LoadedPolicy, document: Mapping[str, Any], settings: Settings
    ) -> list[Obj]:
        from tokenlimit.render.envoy import ecds_resource, to_yaml

        ecds = ecds_resource(policy.config, settings.envoy_module_path)
        return [
            {
                "apiVersion": CONFIG_MAP.api_version,
                "kind": CONFIG_MAP.kind,
                "metadata": {"name": child_name(policy.name, "tokenlimit-ecds")},
                "data": {ECDS_KEY: to_yaml(ecds)},
            }
        ]


def _wasm_plugin_renderer(gateway: GatewayKind, secrets: SecretReader | None) -> Renderer:
    module_name = f"tokenlimit.render.{gateway}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RendererMissing(
            f"this build of tokenlimit has no {gateway} renderer ({module_name}: {exc})"
        ) from None
    adapter = getattr(module, "operator_renderer", None)
    if adapter is None:
        raise RendererMissing(f"{module_name} has no operator_renderer()")
    if "secrets" in inspect.signature(adapter).parameters:
        return adapter(secrets=secrets)
    return adapter()


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
