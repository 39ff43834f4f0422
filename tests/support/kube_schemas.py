"""Schema checks for rendered Kubernetes objects.

- TokenRateLimitPolicy: the committed CRD's openAPIV3Schema, made strict the way `kubectl
  apply` (server-side field validation `Strict`, kubectl's default) treats unknown fields.
- WasmPlugin (Higress, Istio), ServiceEntry, DestinationRule: tests/schemas/*.yaml, written
  for these tests from the projects' API references (see tests/schemas/README.md).

CEL rules (`x-kubernetes-validations`) are not evaluated here: no CEL engine is installed.
tests/test_crd.py checks instead that every rule names only fields its schema has.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
CRD_FILE = ROOT / "deploy/helm/tokenlimit/crds/tokenlimit.io_tokenratelimitpolicies.yaml"
BY_KIND = {
    ("extensions.higress.io/v1alpha1", "WasmPlugin"): "higress-wasmplugin.yaml",
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): "istio-wasmplugin.yaml",
    ("networking.istio.io/v1", "ServiceEntry"): "istio-serviceentry.yaml",
    ("networking.istio.io/v1", "DestinationRule"): "istio-destinationrule.yaml",
}


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.yaml")):
        contents = yaml.safe_load(path.read_text())
        resources.append((path.name, Resource.from_contents(contents, DRAFT202012)))
    return Registry().with_resources(resources)


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A structural schema that refuses unknown fields (objects with `properties`)."""
    schema = copy.deepcopy(schema)
    pending = [schema]
    while pending:
        node = pending.pop()
        if "properties" in node:
            node.setdefault("additionalProperties", False)
            pending.extend(node["properties"].values())
        if isinstance(node.get("items"), dict):
            pending.append(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            pending.append(node["additionalProperties"])
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
    }
    return schema


@cache
def crd_validator() -> jsonschema.Draft202012Validator:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft202012Validator(schema)


def errors(obj: dict[str, Any]) -> list[str]:
    """Why `obj` does not fit its kind's schema ([] when it does)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key == ("tokenlimit.io/v1alpha1", "TokenRateLimitPolicy"):
        validator = crd_validator()
    elif key in BY_KIND:
        validator = _validator(BY_KIND[key])
    else:
        return [f"no schema for {key}"]
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def assert_valid(obj: dict[str, Any]) -> None:
    found = errors(obj)
    assert not found, "\n".join(found)
