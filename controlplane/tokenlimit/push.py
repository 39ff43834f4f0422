"""Rule push: a validated policy to a running gateway.

Two targets, one rule: the policy goes through `loader.policy_from_data` first (the CLI does
that), so an invalid policy never reaches a gateway.

Standalone Envoy (`ecds_change` + `write_atomic`): the filter config lives in a file-based ECDS
resource that Envoy watches. The new document is written to a temporary file in the same
directory, fsync'ed and renamed over the old one (`os.replace`, atomic on POSIX), then the
directory is fsync'ed; Envoy sees one rename and loads the new config in place, without a
restart and without touching open connections. A config Envoy refuses leaves the old one
running. The module path is kept from the current file unless given, so a push changes rules,
not the module (a new module would start a new VM and forget the budgets in it).

Kubernetes (`KubeApi`, `apply_objects`): server-side apply with field manager `tokenlimit`,
each object reported as created, configured or unchanged; with `dry_run` the API server's own
dry run (`dryRun=All`) and a diff of what would change. `DynamicApi` implements `KubeApi` on
the official client's DynamicClient. Tests drive it with a fake DynamicClient answering with
the API's documented JSON shapes; it has not been run against a live cluster.
"""

from __future__ import annotations

import base64
import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

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


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: readers see the old file or the new one."""
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # the rename itself survives a crash
    finally:
        os.close(directory_fd)


# --- Kubernetes: server-side apply -----------------------------------------------------------


class KubeApi(Protocol):
    """The three calls a push makes to the API server."""

    def get(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live object with `obj`'s kind, namespace and name, or None."""
        ...

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool, force: bool) -> dict[str, Any]:
        """Server-side apply `obj` (field manager `tokenlimit`); the object as stored."""
        ...

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded."""
        ...


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
    api: KubeApi, objects: Iterable[Mapping[str, Any]], *, dry_run: bool, force: bool = False
) -> list[ApplyResult]:
    """Apply each object in order; stop at the first the API server refuses (PushError)."""
    results: list[ApplyResult] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        label = f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(
            " /", " "
        )
        try:
            before = api.get(obj)
            after = api.apply(obj, dry_run=dry_run, force=force)
        except PushError as exc:
            done = "".join(f"\n  {r.line(dry_run)}" for r in results)
            applied = f"\napplied before it:{done}" if done else ""
            raise PushError(f"{label}: {exc}{applied}") from None
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


class DynamicApi:
    """`KubeApi` on kubernetes.dynamic.DynamicClient (any kind, discovered by apiVersion)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, context: str | None = None) -> DynamicApi:
        """From the kubeconfig (KUBECONFIG or ~/.kube/config; `context` picks one), else the
        in-cluster service account."""
        from kubernetes import config
        from kubernetes.dynamic import DynamicClient

        try:
            api_client = config.new_client_from_config(context=context)
        except config.ConfigException as exc:
            if context is not None:
                raise PushError(f"kubeconfig: {exc}") from None
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise PushError(
                    f"no Kubernetes credentials: {exc} (set KUBECONFIG, or pass --context)"
                ) from None
            from kubernetes import client as k8s

            api_client = k8s.ApiClient()
        return cls(DynamicClient(api_client))

    def _resource(self, obj: Mapping[str, Any]) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            hint = (
                " (install the CRD first: kubectl apply -f deploy/helm/tokenlimit/crds/)"
                if str(obj["apiVersion"]).startswith("tokenlimit.io/")
                else " (is that gateway installed in this cluster?)"
            )
            raise PushError(
                f"the API server does not serve {obj['apiVersion']} {obj['kind']}{hint}"
            ) from None

    def get(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

        meta = obj["metadata"]
        try:
            found = self.client.get(
                self._resource(obj), name=meta["name"], namespace=meta.get("namespace")
            )
        except NotFoundError:
            return None
        except DynamicApiError as exc:
            raise PushError(_api_message(exc)) from None
        return dict(found.to_dict())

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool, force: bool) -> dict[str, Any]:
        from kubernetes.dynamic.exceptions import DynamicApiError

        meta = obj["metadata"]
        try:
            applied = self.client.server_side_apply(
                self._resource(obj),
                body=dict(obj),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True if force else None,
                dry_run="All" if dry_run else None,
            )
        except DynamicApiError as exc:
            raise PushError(_api_message(exc)) from None
        return dict(applied.to_dict())

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = self.get(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
            }
        )
        if secret is None:
            raise PushError(f"Secret {namespace}/{name} not found")
        data = secret.get("data") or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise PushError(f"Secret {namespace}/{name} has no key {key!r} (keys: {keys})")
        try:
            return base64.b64decode(data[key], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise PushError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from None


def _api_message(exc: Any) -> str:
    """The API server's own words: the Status object's message, and the code."""
    status = getattr(exc, "status", None)
    summary = getattr(exc, "summary", None)
    text = summary() if callable(summary) else str(exc)
    if status == 409:
        text += " (another field manager owns these fields: --force-conflicts takes them over)"
    return text


def secrets_from(api: KubeApi) -> Callable[[str | None, Any], str]:
    """A render.kube.SecretSource reading the policy's namespace from the cluster."""

    def read(namespace: str | None, ref: Any) -> str:
        if namespace is None:
            raise PushError("the policy has no namespace to read its Secret from")
        return api.secret_value(namespace, ref.name, ref.key)

    return read
