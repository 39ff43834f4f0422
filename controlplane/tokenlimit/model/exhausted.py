"""Near the limit (issue 13): what a rule does instead of an immediate 429.

`when_exhausted` (wait for room, or downgrade to a cheaper model), `pace_above` (space admissions
out above a share of a budget) and `priority` (lanes with reserved shares). Shared by the filter
config and a policy spec (camelCase there: `whenExhausted.maxWaitMs`), as every budget field is;
the filter's parser (filter/src/config/parse_exhausted.zig) refuses exactly what these models
refuse, pinned by the "near limit:" vectors in contract/config.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationInfo, WrapValidator, model_validator

from tokenlimit.model._checks import int_in, one_of, refusal
from tokenlimit.model._spelling import Model, doc_key, naming_of
from tokenlimit.model.fields import Present, text
from tokenlimit.model.limits import (
    MODEL_BYTES_MAX,
    SOURCE_NAME_BYTES_MAX,
    WAIT_MS_MAX,
    WAIT_QUEUED_MAX,
)
from tokenlimit.model.model_budgets import OptWarnAt

ACTIONS = ("reject", "wait", "downgrade")
MAX_WAIT_MS_DEFAULT = 5000
MAX_QUEUED_DEFAULT = 10000

# A fraction of a budget with at most 3 decimals (0 < x < 1): warn_at's type.
OptFraction = OptWarnAt


def _printable_model(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, str) and any(c < " " or c >= "\x7f" or c in '"\\' for c in value):
        raise refusal("must be printable ASCII without quotes or backslashes")
    return handler(value)


class WhenExhausted(Model):
    """What a request whose budget is spent gets instead of today's 429."""

    action: Annotated[
        Annotated[Literal["reject", "wait", "downgrade"], one_of(ACTIONS)] | None, Present
    ] = None
    """reject (default: today's 429), wait (held until its budgets have room, at most
    maxWaitMs) or downgrade (sent with `model` instead, charged to that model's budgets)."""
    max_wait_ms: Annotated[
        Annotated[int, Field(ge=1, le=WAIT_MS_MAX), int_in(1, WAIT_MS_MAX)] | None, Present
    ] = None
    """wait (and paceAbove): the longest a request is held (default 5000); past it, today's 429.
    downgrade: written, a downgrade whose budget is spent too waits this long (else rejected)."""
    max_queued: Annotated[
        Annotated[int, Field(ge=1, le=WAIT_QUEUED_MAX), int_in(1, WAIT_QUEUED_MAX)] | None,
        Present,
    ] = None
    """wait: requests one gateway worker holds at most (default 10000); past it, rejected at
    once. Each held request costs the filter under 2 KiB (docs/config.md)."""
    model: Annotated[
        Annotated[
            str,
            Field(min_length=1, max_length=MODEL_BYTES_MAX),
            text(1, MODEL_BYTES_MAX),
            WrapValidator(_printable_model),
        ]
        | None,
        Present,
    ] = None
    """downgrade: the model the request is sent with instead (e.g. gpt-4o-mini)."""

    @model_validator(mode="after")
    def _model_with_downgrade(self, info: ValidationInfo) -> Self:
        naming = naming_of(info)
        key = doc_key(type(self), "model", naming)
        if self.model is not None and self.action != "downgrade":
            action = self.action or "reject"
            raise refusal(f"is the model of action downgrade; action is {action}", (key,))
        if self.model is None and self.action == "downgrade":
            raise refusal(
                "is required with action downgrade (the model the request is sent with instead)",
                (key,),
            )
        return self


class Reserved(Model):
    """Shares of every budget kept back for a lane and the lanes above it."""

    high: OptFraction = None
    """Kept for high: normal and low requests see the budget less this share."""
    normal: OptFraction = None
    """Kept for normal (and high): low requests see the budget less this share too."""

    @model_validator(mode="after")
    def _leave_low_something(self) -> Self:
        total = round((self.high or 0) * 1000) + round((self.normal or 0) * 1000)
        if total >= 1000:
            raise refusal(
                f"the reserved shares add up to {total // 1000}.{total % 1000:03d}; they must "
                "leave the low lane something (less than 1 in all)"
            )
        return self


class Priority(Model):
    """Lanes: a request header names a request's lane (high, normal or low; absent: normal)."""

    header: Annotated[
        Annotated[
            str,
            Field(min_length=1, max_length=SOURCE_NAME_BYTES_MAX),
            text(1, SOURCE_NAME_BYTES_MAX),
        ]
        | None,
        Present,
    ] = None
    """The request header naming the lane (e.g. x-priority). Required."""
    reserved: Annotated[Reserved | None, Present] = None
    """Shares of every budget held back for higher lanes, e.g. {high: 0.2}."""

    @model_validator(mode="after")
    def _header_required(self, info: ValidationInfo) -> Self:
        if self.header is None:
            key = doc_key(type(self), "header", naming_of(info))
            raise refusal(
                "is required (the request header that names the lane: high, normal or low)",
                (key,),
            )
        return self


OptWhenExhausted = Annotated[WhenExhausted | None, Present]
OptPaceAbove = OptFraction
OptPriority = Annotated[Priority | None, Present]
