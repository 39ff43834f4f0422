"""The real Helm engine for the chart tests, and Kubernetes' own schemas to check its output.

Helm: the PyPI wheel ``helm-python-sdk`` bundles ``libhelm_c``, a C ABI over Helm's official Go
SDK (v4), and binds it with ctypes. ``Chart.render`` is ``helm template`` without the CLI: the
same chart loader, value coalescing, ``values.schema.json`` enforcement and template engine, with
no cluster (``lookup`` returns nothing). ``lint`` is ``helm lint``.

Kubernetes: the PyPI wheel ``kubernetes-validate`` ships the JSON schemas generated from the
Kubernetes OpenAPI documents of every release (its "strict" variant also refuses unknown fields,
as the API server's strict field validation does).

Both are in the ``dev`` extras, so ``make test`` (``pip install -e '.[dev]'``) installs them; a
missing one fails the tests with that command, never skips them.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tokenlimit"
INSTALL_HINT = ".venv/bin/pip install -e '.[dev]'   (or: make venv)"

RELEASE = "tokenlimit"
NAMESPACE = "tokenlimit-system"


class EngineMissing(RuntimeError):
    """A package the chart tests need is not installed."""


def _require(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:  # the wheel's native library failing to load lands here too
        raise EngineMissing(
            f"`{package}` is not importable ({e}); install the dev extras: {INSTALL_HINT}"
        ) from e


def helm() -> ModuleType:
    return _require("helm_python", "helm-python-sdk")


def kubernetes_validate() -> ModuleType:
    return _require("kubernetes_validate", "kubernetes-validate")


@dataclass
class Rendered:
    """What `helm template` would print, parsed: objects in template-file order, plus NOTES."""

    objects: list[dict[str, Any]]
    notes: str
    sources: dict[str, str] = field(default_factory=dict)  # "Kind/name" -> template path

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if len(found) != 1:
            have = sorted(self.names())
            raise AssertionError(f"expected one {kind}/{name}, found {len(found)}; have {have}")
        return found[0]

    def names(self) -> set[str]:
        return {f"{o['kind']}/{o['metadata']['name']}" for o in self.objects}

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]


@functools.cache
def _chart() -> Any:
    # Loaded once per session; the handle stays open until the process exits.
    return helm().Chart.load(str(CHART))


def render(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> Rendered:
    """Render the chart like `helm template RELEASE CHART -n NAMESPACE` (an install)."""
    manifests = _chart().render(values or {}, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    notes = ""
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            objects.append(doc)
            sources[f"{doc['kind']}/{doc['metadata']['name']}"] = path
    return Rendered(objects, notes, sources)


def render_error(values: dict[str, Any]) -> str:
    """Render values Helm must refuse; return Helm's message (fails if Helm accepts them)."""
    h = helm()
    try:
        _chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except (h.HelmValuesError, h.HelmRenderError) as e:
        return str(e)
    raise AssertionError(f"Helm accepted values it should refuse: {values}")


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """`helm lint --strict` with these values: {"messages": [...], "errors": [...]}."""
    return helm().lint(str(CHART), values or {}, strict=True, namespace=NAMESPACE)


def chart_crds() -> list[dict[str, Any]]:
    """The documents Helm installs from the chart's crds/ directory."""
    docs: list[dict[str, Any]] = []
    for crd in _chart().crds:
        docs.extend(d for d in yaml.safe_load_all(crd["data"]) if d)
    return docs


def validate_kube(obj: dict[str, Any], kube_version: str) -> None:
    """Check an object against that Kubernetes release's schema; unknown fields are errors."""
    kv = kubernetes_validate()
    try:
        kv.validate(obj, kube_version, strict=True)
    except kv.ValidationError as e:
        where = "/".join(str(p) for p in e.caught.absolute_path) or "(root)"
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata'].get('name')} is not a valid Kubernetes "
            f"{kube_version} object at {where}: {e.caught.message}"
        ) from None


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
