"""The two spellings of one set of fields, and the base class every policy model shares.

A bare filter config (what the filter reads; Higress's ai-token-ratelimit names) is validated
by field name: `rule_items[0].limit_by_per_header`, plus the Higress-injected `_rules_` and
`_match_route_` (aliases, since Python names cannot start with `_`). A TokenRateLimitPolicy's
`spec` is validated by camelCase alias: `ruleItems[0].limitByPerHeader`.

Pydantic reports errors at the key it actually read, so error paths come out in the document's
own spelling. Since a bare config needs `by_alias` for `_rules_`, `Model` refuses camelCase keys
there (the filter would refuse them as unknown fields). Validation says which spelling it reads
through its context: `{"naming": "snake"}` or `{"naming": "camel"}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

Naming = Literal["snake", "camel"]
Loc = tuple[str | int, ...]

# Kubernetes spells initialisms in one case (`podIP`); pydantic's to_camel would say `limitByPerIp`.
_CAMEL_EXCEPTIONS = {"limit_by_per_ip": "limitByPerIP"}


def camel_name(name: str) -> str:
    """A filter config field's name in a policy (`limit_by_per_ip` → `limitByPerIP`)."""
    return _CAMEL_EXCEPTIONS.get(name, to_camel(name))


class Model(BaseModel):
    """A policy model: strict, frozen, unknown keys refused, read in either spelling."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=AliasGenerator(
            validation_alias=camel_name, serialization_alias=lambda n: n
        ),
        validate_by_name=True,
        validate_by_alias=True,
        # Field docstrings become schema descriptions: `kubectl explain` shows them.
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any, info: ValidationInfo) -> Any:
        """In a bare config, refuse camelCase keys (and `rules` for `_rules_`)."""
        naming = naming_of(info)
        if naming != "snake" or not isinstance(data, dict):
            return data
        wanted = set(keys(cls, naming))
        foreign = [k for k in data if k not in wanted and k in keys(cls, "any")]
        if foreign:
            raise PydanticCustomError("unknown_field", "unknown field", {"at": (foreign[0],)})
        return data


def naming_of(info: ValidationInfo) -> Naming:
    """The spelling a validation reads (snake unless the context says camel)."""
    context = info.context or {}
    return "camel" if context.get("naming") == "camel" else "snake"


def doc_key(model: type[BaseModel], name: str, naming: Naming) -> str:
    """The key that spells field `name` in a document of this naming."""
    alias = model.model_fields[name].validation_alias
    assert isinstance(alias, str)
    return alias if naming == "camel" or alias.startswith("_") else name


def keys(model: type[BaseModel], naming: Naming | Literal["any"]) -> list[str]:
    """Every key a document of this naming may use for the model's fields."""
    if naming == "any":
        return [k for n in model.model_fields for k in (n, doc_key(model, n, "camel"))]
    return [doc_key(model, n, naming) for n in model.model_fields]


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """CRD validation rules (CEL) for a model's schema: the server-side half of a check the
    model also makes, so `kubectl apply` refuses what the loader would refuse."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}
