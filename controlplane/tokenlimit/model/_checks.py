"""Value checks shared by every model of the package (the filter config, the policy, fallback).

Each check refuses a value with the project's error shape — a message that quotes the bad value
and names what is valid — which `tokenlimit.model.problems` turns into `FIELD: REASON` lines.
Kept apart from the models so none has to import another to share them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, WrapValidator
from pydantic_core import PydanticCustomError

SHOWN_CHARS_MAX = 40  # longer bad values are cut in error messages


def show(value: object) -> str:
    """A bad value as an error message quotes it: JSON spelling, cut when long."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= SHOWN_CHARS_MAX:
        return text
    cut = text[: SHOWN_CHARS_MAX - 4] + "..."
    return cut + '"' if text.startswith('"') else cut


def refusal(message: str, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """A refusal; `at` extends the error's location below the object that raised it."""
    # Braces in a message would be read as placeholders by pydantic: pass it through ctx.
    return PydanticCustomError("tokenlimit", "{reason}", {"reason": message, "at": at})


def int_in(low: int, high: int) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        # `type(...) is int` refuses true/false, which Python counts as integers.
        if type(value) is not int or not low <= value <= high:
            raise refusal(f"must be an integer from {low} to {high}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


def one_of(options: tuple[str, ...] | dict[str, str]) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value not in options:
            raise refusal(f"must be one of {', '.join(options)}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


def array(low: int, high: int | None, noun: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(value, list):
            raise refusal(f"must be an array of {noun}, got {show(value)}")
        if len(value) < low or (high is not None and len(value) > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            raise refusal(f"must hold {bounds} {noun}, got {len(value)}")
        return handler(value)

    return WrapValidator(check)


def an_object(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict | BaseModel):
        raise refusal(f"must be an object, got {show(value)}")
    return handler(value)
