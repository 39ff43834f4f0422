"""A refused document as `field: reason` lines, in the document's own names.

`problems` turns a pydantic ValidationError into `Problem`s: the location respelled as the
document writes it (`rule_items[0].limit_keys[1].key` in a bare config, `ruleItems[0]...` in a
policy), the reason in the project's words, and for an unknown key the closest known one
("did you mean ...?"). `ConfigInvalid` carries them; its message is one line per problem.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Loc, Naming
from tokenlimit.model._spelling import doc_key as _doc_key
from tokenlimit.model._spelling import keys as _keys


@dataclass(frozen=True)
class Problem:
    """One reason a document is refused: where (in the document's names) and why."""

    loc: Loc
    reason: str

    @property
    def path(self) -> str:
        return field_path(self.loc)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.loc else self.reason


class ConfigInvalid(ValueError):
    """A document broke the contract; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def field_path(loc: Sequence[str | int]) -> str:
    """`('rule_items', 0, 'limit_keys', 1, 'key')` -> `rule_items[0].limit_keys[1].key`."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts)


def problems(exc: ValidationError, root: type[BaseModel], naming: Naming) -> list[Problem]:
    """The problems of a failed validation, in the document's names, with suggestions."""
    found: list[Problem] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        loc: Loc = tuple(error["loc"]) + tuple(ctx.get("at", ()))
        if error["type"] == "missing":
            loc = _respelled(root, loc, naming)
        problem = Problem(loc, _reason(error, root, loc, naming))
        if problem not in found:
            found.append(problem)
    return found


def _reason(error: Any, root: type[BaseModel], loc: Loc, naming: Naming) -> str:
    kind = error["type"]
    if kind in ("extra_forbidden", "unknown_field"):
        return _unknown_field(root, loc, naming)
    if kind == "tokenlimit":
        return str(error["ctx"]["reason"])
    if kind == "missing":
        return "required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be an object, got {show(error['input'])}"
    if kind == "list_type":
        return f"must be an array, got {show(error['input'])}"
    message = str(error["msg"])
    return f"{message[:1].lower()}{message[1:]}, got {show(error['input'])}"


def _unknown_field(root: type[BaseModel], loc: Loc, naming: Naming) -> str:
    model = _model_at(root, loc[:-1], naming)
    if model is None or not isinstance(loc[-1], str):
        return "unknown field"
    close = difflib.get_close_matches(loc[-1], _keys(model, naming), n=1, cutoff=0.6)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


def _respelled(root: type[BaseModel], loc: Loc, naming: Naming) -> Loc:
    """Pydantic names a missing field by its alias; say it as the document would."""
    model = _model_at(root, loc[:-1], naming)
    if model is None:
        return loc
    for name in model.model_fields:
        if loc[-1] in (name, _doc_key(model, name, "camel")):
            return (*loc[:-1], _doc_key(model, name, naming))
    return loc


def _model_at(root: type[BaseModel], loc: Loc, naming: Naming) -> type[BaseModel] | None:
    """The model class that validates the object at `loc` (document keys), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        names = {_doc_key(model, n, naming): n for n in model.model_fields}
        if part not in names:
            return None
        model = _model_in(model.model_fields[names[part]])
    return model


def _model_in(field: FieldInfo) -> type[BaseModel] | None:
    pending: list[Any] = [field.annotation]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
            pending.extend(typing.get_args(annotation))
    return None
