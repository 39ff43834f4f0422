"""Rule push: a validated policy to a running gateway.

Two targets, one rule: the policy goes through `loader.policy_from_data` first (the CLI does
that), so an invalid policy never reaches a gateway.

Standalone Envoy (`ecds_change` + `tokenlimit.apply.files.write_atomic`): the filter config
lives in a file-based ECDS resource that Envoy watches. The new document replaces the old one
in one rename; Envoy sees it and loads the new config in place, without a restart and without
touching open connections. A config Envoy refuses leaves the old one
running. The module path is kept from the current file unless given, so a push changes rules,
not the module (a new module would start a new VM and forget the budgets in it).

Kubernetes (`connect`, `apply_objects`): server-side apply with field manager `tokenlimit`,
each object reported as created, configured or unchanged; with `dry_run` the API server's own
dry run (`dryRun=All`) and a diff of what would change. It goes through the project's one
Kubernetes client (`tokenlimit.apply.kube`, the operator's too); tests drive it with the
in-memory API server `tests/support/fakekube.py`. It has not been run against a live cluster.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tokenlimit.apply.files import write_atomic as write_atomic  # the CLI's name for it
from tokenlimit.apply.kube import (
    ApiError,
    KindNotServed,
    KubeClient,
    KubeError,
    NoCredentials,
    ref_of,
    secret_value,
)
from tokenlimit.model import FilterConfig
from tokenlimit.render.envoy import FILTER_NAME, ecds_resource, to_yaml

FIELD_MANAGER = "tokenlimit"
Outcome = Literal["created", "configured", "unchanged"]
# Fields the API server owns: left out when deciding whether an object changed.
_SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
)


class PushError(RuntimeError):
    """The push did not happen (or not completely); the message says why."""


# --- standalone Envoy: the ECDS file ---------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """The ECDS file as it is and as the push would leave it."""

    path: Path
    before: str | None  # None: there is no file yet
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        """A unified diff, current file to new file ('' when unchanged)."""
        lines = difflib.unified_diff(
            (self.before or "").splitlines(keepends=True),
            self.after.splitlines(keepends=True),
            fromfile=str(self.path) if self.before is not None else "/dev/null",
            tofile=str(self.path),
        )
        return "".join(lines)


def ecds_change(config: FilterConfig, ecds_path: Path, wasm_path: str | None) -> FileChange:
    """What pushing `config` to the ECDS file at `ecds_path` would write.

    `wasm_path` None keeps the module the current file names; with no current file it is
    required.
    """
    try:
        before: str | None = ecds_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    except OSError as exc:
        raise PushError(f"{ecds_path}: cannot read: {exc.strerror or exc}") from None
    module = wasm_path or (current_module(before, ecds_path) if before is not None else None)
    if module is None:
        raise PushError(
            f"{ecds_path} does not exist yet: pass --wasm PATH (the filter module as Envoy "
            "sees it; `tokenlimit filter path` prints the packaged one)"
        )
    return FileChange(ecds_path, before, to_yaml(ecds_resource(config, module)))


def current_module(text: str, origin: Path) -> str:
    """The module file the current ECDS document names."""
    try:
        document = yaml.safe_load(text)
        (resource,) = document["resources"]
        if resource["name"] != FILTER_NAME:
            raise KeyError("name")
        return str(resource["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        raise PushError(
            f"{origin} is not a tokenlimit ECDS file (no resource {FILTER_NAME!r} with a local "
            "module): pass --wasm PATH, or point --ecds at the file `tokenlimit render "
            "--out-dir` wrote"
        ) from None


# --- Kubernetes: server-side apply -----------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    kind: str
    api_version: str
    namespace: str | None
    name: str
    outcome: Outcome
    diff: str  # live → applied, YAML ('' when unchanged)

    def line(self, dry_run: bool) -> str:
        """kubectl's way: `tokenratelimitpolicy.tokenlimit.io/chat created (server dry run)`."""
        group = self.api_version.rpartition("/")[0]
        kind = f"{self.kind.lower()}.{group}" if group else self.kind.lower()
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{kind}/{self.name}{where} {self.outcome}" + (
            " (server dry run)" if dry_run else ""
        )


def apply_objects(
    api: KubeClient, objects: Iterable[Mapping[str, Any]], *, dry_run: bool, force: bool = False
) -> list[ApplyResult]:
    """Apply each object in order; stop at the first the API server refuses (PushError)."""
    results: list[ApplyResult] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        label = f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(
            " /", " "
        )
        try:
            before = api.get(ref_of(obj))
            after = api.apply(dict(obj), field_manager=FIELD_MANAGER, dry_run=dry_run, force=force)
        except KubeError as exc:
            done = "".join(f"\n  {r.line(dry_run)}" for r in results)
            applied = f"\napplied before it:{done}" if done else ""
            raise PushError(f"{label}: {_refused(exc, obj)}{applied}") from None
        results.append(_result(obj, before, after, dry_run))
    return results


def _result(
    obj: Mapping[str, Any],
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    dry_run: bool,
) -> ApplyResult:
    old = comparable(before) if before is not None else None
    new = comparable(after)
    if before is None:
        outcome: Outcome = "created"
    elif dry_run:
        outcome = "configured" if old != new else "unchanged"
    else:
        version = (before.get("metadata") or {}).get("resourceVersion")
        changed = (after.get("metadata") or {}).get("resourceVersion") != version
        outcome = "configured" if changed else "unchanged"
    diff = "".join(
        difflib.unified_diff(
            (to_yaml(old) if old is not None else "").splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile="live" if old is not None else "/dev/null",
            tofile="applied",
        )
    )
    meta = obj.get("metadata") or {}
    return ApplyResult(
        kind=str(obj.get("kind")),
        api_version=str(obj.get("apiVersion")),
        namespace=meta.get("namespace"),
        name=str(meta.get("name")),
        outcome=outcome,
        diff=diff if outcome != "unchanged" else "",
    )


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` without what the API server writes (status, uid, managedFields, ...)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    return {k: meta if k == "metadata" else v for k, v in obj.items() if k != "status"}


def connect(context: str | None = None) -> KubeClient:
    """The cluster the kubeconfig names (`context` picks one), else a pod's service account."""
    from tokenlimit.apply.kube_client import connect as connect_client

    try:
        return connect_client(context=context)
    except NoCredentials as exc:
        raise PushError(f"{exc} (set KUBECONFIG, or pass --context)") from None
    except ApiError as exc:
        raise PushError(f"the API server: {exc}") from None


def _refused(exc: KubeError, obj: Mapping[str, Any]) -> PushError:
    """The API server's own words, with what to do where there is something to do."""
    if isinstance(exc, KindNotServed):
        hint = (
            " (install the CRD first: kubectl apply -f deploy/helm/tokenlimit/crds/)"
            if str(obj.get("apiVersion")).startswith("tokenlimit.io/")
            else " (is that gateway installed in this cluster?)"
        )
        return PushError(f"the API server does not serve {obj['apiVersion']} {obj['kind']}{hint}")
    if not isinstance(exc, ApiError):
        return PushError(str(exc))
    text = exc.message if exc.status else str(exc)
    if exc.conflict:
        text += " (another field manager owns these fields: --force-conflicts takes them over)"
    return PushError(text)


def secrets_from(api: KubeClient) -> Callable[[str | None, Any], str]:
    """A render.kube.SecretSource reading the policy's namespace from the cluster."""

    def read(namespace: str | None, ref: Any) -> str:
        if namespace is None:
            raise PushError("the policy has no namespace to read its Secret from")
        try:
            return secret_value(api, namespace, ref.name, ref.key)
        except KubeError as exc:
            raise PushError(str(exc)) from None

    return read
