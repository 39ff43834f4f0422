"""The TokenRateLimitPolicy CustomResourceDefinition, generated from the pydantic model.

`generate()` returns the CRD as a dict; `tokenlimit crd` prints it as YAML, and the committed
copy at the chart's
crds/tokenlimit.io_tokenratelimitpolicies.yaml (the only copy) is pinned by a test, so the CRD
can never drift from the model that the loader, the renderers and the operator use.

The OpenAPI schema is pydantic's JSON schema of `PolicySpec` made *structural* (what
apiextensions.k8s.io/v1 requires): `$ref`s inlined, `Optional` unions collapsed to their type,
no `title`/`default: null`/`additionalProperties: false` (the API server prunes or, with
kubectl's strict field validation, refuses unknown fields itself). Bounds, patterns and enums
come from the model's `Field(...)` metadata; the few cross-field rules that CEL says simply
(`x-kubernetes-validations`) come from the models' `json_schema_extra`. Checks CEL cannot say
cheaply (regexp keys, CIDRs, Higress service names) stay in the loader, which the operator runs
before anything reaches a gateway; it reports a refusal in `status.conditions`.

`status` follows Kubernetes conventions: `observedGeneration` and `conditions` in the shape of
metav1.Condition (`Condition` below), keyed by `type`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenlimit.model import API_VERSION, KIND, PolicySpec

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "tokenratelimitpolicies"
SINGULAR = "tokenratelimitpolicy"
SHORT_NAMES = ("trlp",)
CATEGORIES = ("tokenlimit",)
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_PATH = f"deploy/helm/tokenlimit/crds/{GROUP}_{PLURAL}.yaml"
CONDITIONS_MAX = 8
# The condition types the operator reports (Gateway API's policy vocabulary).
CONDITION_ACCEPTED = "Accepted"  # the policy is valid and the gateway kind is served
CONDITION_PROGRAMMED = "Programmed"  # the rendered objects were applied to the cluster

# metav1.Condition's own validation, as Kubernetes' generated CRDs spell it.
_CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
_KEPT_KEYS = (
    "description",
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
)


class Condition(BaseModel):
    """One aspect of the policy's state (metav1.Condition)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    type: Annotated[str, Field(max_length=316, pattern=_CONDITION_TYPE)]
    """Accepted (valid, and the gateway kind is served) or Programmed (objects applied)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    observedGeneration: Annotated[int, Field(ge=0)] | None = None  # the API's name
    """The .metadata.generation the condition was set for."""
    lastTransitionTime: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When the status last changed."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=_CONDITION_REASON)]
    """CamelCase reason, e.g. Invalid, UnsupportedGateway, Applied, ApplyFailed."""
    message: Annotated[str, Field(max_length=32768)]
    """Human-readable details, e.g. the field the loader refused and why."""


class PolicyStatus(BaseModel):
    """Written by the operator; ignored when a policy is read."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    observedGeneration: Annotated[int, Field(ge=0)] | None = None  # the API's name
    """The .metadata.generation the operator last reconciled."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=CONDITIONS_MAX,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = []
    """Accepted and Programmed, each with a reason and a message."""


def generate() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) as a dict, in a fixed order."""
    spec = structural(PolicySpec.model_json_schema(by_alias=True, mode="validation"))
    # The filter config's `calendar` is rendered from timeZone; a policy never holds one.
    del spec["properties"]["calendar"]
    status = structural(PolicyStatus.model_json_schema(by_alias=True, mode="validation"))
    root = {
        "description": (
            "A token budget for LLM traffic: who is limited (rules), where (targetRef), and "
            "the shared store (redis). Rendered into a Higress or Istio WasmPlugin or a "
            "standalone Envoy filter config by the tokenlimit operator or `tokenlimit render`."
        ),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"tokenlimit.io/generated-by": "tokenlimit crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _printer_columns() -> list[dict[str, Any]]:
    def condition(kind: str) -> dict[str, Any]:
        return {
            "name": kind,
            "type": "string",
            "jsonPath": f'.status.conditions[?(@.type=="{kind}")].status',
        }

    return [
        {"name": "Rule", "type": "string", "jsonPath": ".spec.ruleName"},
        {"name": "Gateway", "type": "string", "jsonPath": ".spec.targetRef.gateway"},
        condition(CONDITION_ACCEPTED),
        condition(CONDITION_PROGRAMMED),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema as a Kubernetes structural schema (see the module docstring)."""
    definitions = schema.get("$defs", {})
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = _resolved(node, definitions)
    out: dict[str, Any] = {}
    for key in _KEPT_KEYS:
        if key not in node:
            continue
        value = node[key]
        if key == "description":
            out[key] = _one_paragraph(value)
        elif key == "properties":
            out[key] = {name: _convert(sub, definitions) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _convert(value, definitions)
        elif key == "additionalProperties":
            continue  # `false`: unknown fields are the API server's to prune or refuse
        else:
            out[key] = value
    if "properties" in out or "additionalProperties" in out:
        out["type"] = "object"
    return out


def _resolved(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """`$ref` inlined and `X | None` unions collapsed; the outer node's keys win."""
    node = dict(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolved(target, definitions), **node}
    if "anyOf" in node:
        choices = [c for c in node.pop("anyOf") if c.get("type") != "null"]
        choices = [_resolved(c, definitions) for c in choices]
        if len(choices) == 1:
            merged = {**choices[0], **node}
        elif {c.get("type") for c in choices} == {"number", "integer"}:
            merged = {**choices[0], **choices[1], **node, "type": "number"}
        else:
            raise ValueError(f"no structural form for anyOf {choices}")
        node = merged
    if node.get("default", "absent") is None:
        del node["default"]
    return node


def _one_paragraph(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
