"""The field types of model-aware budgets (docs/design-model-budgets.md §1): which model a
request is for, what its tokens cost, and in which time zone calendar windows turn over.

Kept apart from filter_config so the rule and item models only gain fields; every check here
is one the filter makes too (contract/config.json holds the vectors both halves pass).

Money is USD with at most 6 decimals everywhere (limits and prices): the filter reads such a
number's digits into whole micro-dollars, never through a float, so a seventh decimal would be
rounded there and is refused here instead.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final

from pydantic import Field, ValidationError, WrapValidator

from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._regexp import regexp_problem
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model.calendar import CalendarTable, render_table
from tokenlimit.model.fields import Present, text
from tokenlimit.model.limits import KEY_BYTES_MAX, LIMIT_KEYS_MAX, LIMIT_MAX, SOURCE_NAME_BYTES_MAX
from tokenlimit.model.prices import PRICE_DECIMALS, PRICE_USD_MAX

REGEXP_PREFIX: Final = "regexp:"
MICRO: Final = 1_000_000
# Cost limits are counted in micro-USD against the same bound as every other limit.
COST_USD_MAX: Final = Decimal(LIMIT_MAX) / MICRO
# The calendar windows this feature adds, and the cost windows (second .. month).
LONG_WINDOWS: Final = ("token_per_week", "token_per_month", "request_per_week", "request_per_month")
COST_WINDOWS: Final = (
    "cost_per_second",
    "cost_per_minute",
    "cost_per_hour",
    "cost_per_day",
    "cost_per_week",
    "cost_per_month",
)
MODEL_KINDS: Final = ("limit_by_model", "limit_by_per_model")
GENAI_PRICES: Final = "genai-prices"


def usd_decimal(value: object) -> Decimal | None:
    """A JSON number as the exact decimal it spells (a float through its shortest repr), or
    None when it is not a number (booleans are not numbers)."""
    if type(value) is int:
        return Decimal(value)
    if type(value) is float:
        try:
            return Decimal(repr(value))
        except InvalidOperation:
            return None
    return None


def _decimals(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _usd(low_exclusive: bool, high: Decimal, what: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        amount = usd_decimal(value)
        ok = (
            amount is not None
            and amount.is_finite()
            and (amount > 0 if low_exclusive else amount >= 0)
            and amount <= high
            and _decimals(amount.normalize()) <= PRICE_DECIMALS
        )
        if not ok:
            low = "greater than 0" if low_exclusive else "from 0"
            raise _error(
                f"must be {what} {low} to {high:f} with at most {PRICE_DECIMALS} decimals, "
                f"got {show(value)}"
            )
        return handler(value)

    return WrapValidator(check)


OptCost = Annotated[
    Annotated[
        float | int,
        Field(gt=0, le=float(COST_USD_MAX)),
        _usd(True, COST_USD_MAX, "a USD amount"),
    ]
    | None,
    Present,
]
PriceUsd = Annotated[
    float | int,
    Field(ge=0, le=float(PRICE_USD_MAX)),
    _usd(False, PRICE_USD_MAX, "USD per 1M tokens"),
]
OptPriceUsd = Annotated[PriceUsd | None, Present]


def _fraction(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths, like local_share; 1 would warn only when the hard limit already refuses.
    ok = type(value) in (int, float) and 0 < value < 1
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6
    if not ok:
        raise _error(
            f"must be a number greater than 0 and less than 1, with at most 3 decimals, "
            f"got {show(value)}"
        )
    return handler(value)


OptWarnAt = Annotated[Annotated[float, Field(gt=0, lt=1), WrapValidator(_fraction)] | None, Present]


def time_zone_problem(name: str) -> str | None:
    """Why `name` is not a time zone the control plane can render, or None."""
    try:
        render_table(name, 0, 0)
    except ValueError as exc:
        return str(exc).replace("time_zone ", "", 1)
    return None


def _time_zone(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not value:
        raise _error(f"must be an IANA time zone name such as Europe/Berlin, got {show(value)}")
    problem = time_zone_problem(value)
    if problem is not None:
        raise _error(problem)
    return handler(value)


OptTimeZone = Annotated[
    Annotated[str, Field(min_length=1, max_length=SOURCE_NAME_BYTES_MAX), WrapValidator(_time_zone)]
    | None,
    Present,
]
# A header name, as limit_by_header's.
OptModelHeader = Annotated[
    Annotated[
        str, Field(min_length=1, max_length=SOURCE_NAME_BYTES_MAX), text(1, SOURCE_NAME_BYTES_MAX)
    ]
    | None,
    Present,
]


def model_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot name models (exact name, `*` or `regexp:<RE2>`), or None."""
    if pattern.startswith(REGEXP_PREFIX):
        return regexp_problem(pattern[len(REGEXP_PREFIX) :])
    return None


def _model_pattern(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, str):
        problem = model_pattern_problem(value)
        if problem is not None:
            raise _error(problem)
    return handler(value)


ModelPattern = Annotated[
    str,
    Field(min_length=1, max_length=KEY_BYTES_MAX),
    text(1, KEY_BYTES_MAX),
    WrapValidator(_model_pattern),
]
OptModels = Annotated[
    Annotated[
        list[ModelPattern],
        Field(min_length=1, max_length=LIMIT_KEYS_MAX),
        _array(1, LIMIT_KEYS_MAX, "model names or patterns"),
    ]
    | None,
    Present,
]


def _empty_source(value: Any, handler: Callable[[Any], Any]) -> Any:
    # The model comes from the request (model_header, the path or the body), never from this
    # value: a name here would read as "only this model" and silently mean every model.
    if value != "":
        raise _error(
            f'must be "" (the model is read from the request; name models in the limit '
            f"keys), got {show(value)}"
        )
    return handler(value)


OptModelSource = Annotated[
    Annotated[str, Field(max_length=0), WrapValidator(_empty_source)] | None, Present
]


class ModelPrice(_Model):
    """USD per 1M tokens of one model (or pattern). `cached` (cache reads) and `cache_write`
    default to `input`: a cache token never costs less than the filter was told."""

    input: PriceUsd
    """USD per 1M input (prompt) tokens, cache reads and writes excluded."""
    output: PriceUsd
    """USD per 1M output (completion) tokens."""
    cached: OptPriceUsd = None
    """USD per 1M cache-read tokens (default: input)."""
    cache_write: OptPriceUsd = None
    """USD per 1M cache-write tokens (default: input)."""


def _prices(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict):
        raise _error(f"must be an object of model name to price, got {show(value)}")
    if not 1 <= len(value) <= LIMIT_KEYS_MAX:
        raise _error(f"must hold 1 to {LIMIT_KEYS_MAX} prices, got {len(value)}")
    for name in value:
        size = len(str(name).encode())
        if not 1 <= size <= KEY_BYTES_MAX:
            raise _error(f"model names are 1 to {KEY_BYTES_MAX} bytes, got {size}", (name,))
        problem = model_pattern_problem(str(name))
        if problem is not None:
            raise _error(problem, (name,))
    return handler(value)


OptPrices = Annotated[Annotated[dict[str, ModelPrice], WrapValidator(_prices)] | None, Present]


def _calendar(value: Any, handler: Callable[[Any], Any]) -> Any:
    """A hand-written table is checked as strictly as a rendered one (calendar.zig's Table.init
    refuses the same)."""
    if isinstance(value, CalendarTable):
        return handler(value)
    if not isinstance(value, dict):
        raise _error(f"must be an object with zone and transitions, got {show(value)}")
    unknown = [k for k in value if k not in ("zone", "transitions")]
    if unknown:
        raise _error("unknown field", (unknown[0],))
    zone, transitions = value.get("zone"), value.get("transitions")
    if not isinstance(zone, str):
        raise _error(f"must be a time zone name, got {show(zone)}", ("zone",))
    if not isinstance(transitions, list) or not transitions:
        raise _error("must be a non-empty array of [from_ms, offset_s] pairs", ("transitions",))
    pairs: list[tuple[int, int]] = []
    for index, pair in enumerate(transitions):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _error(
                f"must be a [from_ms, offset_s] pair of integers, got {show(pair)}",
                ("transitions", index),
            )
        for part, number in enumerate(pair):
            if type(number) is not int:
                raise _error(
                    f"must be an integer, got {show(number)}", ("transitions", index, part)
                )
        pairs.append((pair[0], pair[1]))
    try:
        table = CalendarTable(zone=zone, transitions=tuple(pairs))
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = str(first["msg"]).removeprefix("Value error, ")
        at = tuple(first["loc"])[:3] or ("transitions",)
        raise _error(f"{reason}, got {show(first['input'])}", at) from None
    return handler(table)


OptCalendar = Annotated[Annotated[CalendarTable, WrapValidator(_calendar)] | None, Present]


def is_pattern(name: str) -> bool:
    """Whether a model name in a config is a pattern (`*`, `regexp:`) rather than a name."""
    return name == "*" or name.startswith(REGEXP_PREFIX)
