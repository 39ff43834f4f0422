"""What the Kubernetes renderers (render.higress, render.istio) share.

Object names and metadata, the filter module's location (`WasmModule`), the fail strategy
a policy implies, secrets passed in at apply time, and multi-document YAML output. Pure
functions: no cluster is read here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tokenlimit.model import PolicySpec, SecretKeyRef, TokenRateLimitPolicy

# Re-exported: Kubernetes callers read and write YAML streams through this module.
from tokenlimit.render.yaml import load_yaml_documents as load_yaml_documents
from tokenlimit.render.yaml import to_yaml_documents as to_yaml_documents

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tokenlimit"
POLICY_ANNOTATION = "tokenlimit.io/policy"  # namespace/name of the policy an object came from
NAME_CHARS_MAX = 253  # a DNS subdomain
NAME_PREFIX = "tokenlimit"
MODULE_SCHEMES = ("oci", "http", "https", "file")
FAIL_STRATEGIES = ("FAIL_OPEN", "FAIL_CLOSE")
PHASES = ("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS")
PULL_POLICIES = ("IfNotPresent", "Always")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# (policy namespace, reference) -> the Secret's value for that key. The operator and
# `push --target kube` read it from the cluster; `tokenlimit render` from a local file.
SecretSource = Callable[[str | None, SecretKeyRef], str]


class RenderError(ValueError):
    """The policy cannot be rendered for this gateway (the message says what to change)."""


@dataclass(frozen=True)
class WasmModule:
    """Where the gateway fetches the filter module, and the sha256 it verifies it with."""

    url: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in MODULE_SCHEMES or not urlsplit(self.url).netloc + urlsplit(self.url).path:
            raise RenderError(
                f"module URL must start with oci://, https://, http:// or file://, got "
                f"{self.url!r} (e.g. oci://registry.example.com/tokenlimit-wasm:0.1.0)"
            )
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise RenderError(
                f"sha256 must be 64 lowercase hex digits, got {self.sha256!r} "
                "(sha256sum of the module file)"
            )


def object_name(*parts: str) -> str:
    """`tokenlimit-<part>-<part>`, shortened with a hash when longer than a DNS subdomain."""
    name = "-".join((NAME_PREFIX, *parts))
    if len(name) <= NAME_CHARS_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: NAME_CHARS_MAX - len(digest) - 1].rstrip('-.')}-{digest}"


def metadata(name: str, namespace: str | None, policy: TokenRateLimitPolicy) -> dict[str, Any]:
    """Metadata of a rendered object: managed-by label, the policy it came from."""
    found: dict[str, Any] = {"name": name}
    if namespace is not None:
        found["namespace"] = namespace
    found["labels"] = {MANAGED_BY_LABEL: MANAGED_BY}
    found["annotations"] = {POLICY_ANNOTATION: policy_ref(policy)}
    return found


def policy_ref(policy: TokenRateLimitPolicy) -> str:
    """`namespace/name`, or `name` when the document does not say its namespace."""
    meta = policy.metadata
    return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name


def check_gateway(policy: TokenRateLimitPolicy, target: str) -> None:
    """Refuse a policy that attaches to another gateway kind."""
    gateway = policy.spec.gateway
    if gateway is not None and gateway != target:
        raise RenderError(
            f"spec.targetRef.gateway: the policy attaches to {gateway}, not {target}: "
            f"render it with --target {gateway}"
        )


def fail_strategy(spec: PolicySpec, chosen: str | None) -> str:
    """The WasmPlugin failStrategy: as chosen, else what the policy's failureMode implies.

    A policy that rejects when its store fails (`failureMode: closed`) should not let traffic
    through when the module itself cannot load either; every other policy fails open, as
    Higress's own rate limiters do.
    """
    if chosen is not None:
        if chosen not in FAIL_STRATEGIES:
            raise RenderError(f"fail strategy must be one of {', '.join(FAIL_STRATEGIES)}")
        return chosen
    return "FAIL_CLOSE" if spec.failure_mode == "closed" else "FAIL_OPEN"


def check_choice(value: str | None, options: Sequence[str], what: str) -> None:
    if value is not None and value not in options:
        raise RenderError(f"{what} must be one of {', '.join(options)}, got {value!r}")


def child_name(policy_name: str, suffix: str) -> str:
    """`<policy>-<suffix>`, shortened with a hash when it would be too long for a name."""
    name = f"{policy_name}-{suffix}"
    if len(name) <= NAME_CHARS_MAX:
        return name
    digest = hashlib.sha256(policy_name.encode()).hexdigest()[:10]
    keep = NAME_CHARS_MAX - len(suffix) - len(digest) - 2
    return f"{policy_name[:keep].rstrip('-.')}-{digest}-{suffix}"
