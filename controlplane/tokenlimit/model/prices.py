"""Model prices for cost budgets: the `Price` of a rule's `prices` entry, filled from the
`genai-prices` package or written by hand, and the integer cost arithmetic the filter repeats.

The filter never fetches prices: the control plane renders them into its config as numbers.
A price is USD per 1M tokens with at most 6 decimals, so it is an exact whole number of
micro-dollars per 1M tokens (`Price.micro_usd_per_mtok`); the filter reads the JSON number's
digits into that integer (never through a float), and a request's cost is

    cost_micro_usd = ceil((input * p_in + cached * p_cached + cache_write * p_write
                           + output * p_out) / 1_000_000)

with every p in micro-USD per 1M tokens: one exact integer sum, rounded up once per request.
Rounding up means a budget never under-counts spend; the over-count is below one micro-dollar
($0.000001) per request. The filter holds the sum in u128 and saturates the result at u64's
maximum, which `cost_micro_usd` reproduces.

The four token counts are disjoint (the filter normalizes what each API reports): `input` is
the prompt tokens billed at the input price, *excluding* cache reads and writes (OpenAI's
`prompt_tokens` includes `cached_tokens`, so the filter subtracts them; Anthropic reports them
apart already).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from genai_prices.types import ModelPrice

PRICE_USD_MAX: Final = Decimal(10_000)  # per 1M tokens; the dearest models today cost $600
PRICE_DECIMALS: Final = 6
MICRO: Final = 1_000_000  # micro-dollars per dollar, and tokens per price unit
COST_MICRO_USD_MAX: Final = 2**64 - 1  # the filter's u64 counters saturate here
TOKENS_MAX: Final = 2**64 - 1

UsdPerMtok = Annotated[Decimal, Field(ge=0, le=PRICE_USD_MAX, decimal_places=PRICE_DECIMALS)]
Tokens = Annotated[int, Field(ge=0, le=TOKENS_MAX)]


class Price(BaseModel):
    """USD per 1M tokens. `cached` prices cache reads, `cache_write` cache writes; the filter
    config always carries all four (`prices_from_genai` fills a missing one with `input`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: UsdPerMtok
    output: UsdPerMtok
    cached: UsdPerMtok
    cache_write: UsdPerMtok

    def micro_usd_per_mtok(self) -> tuple[int, int, int, int]:
        """(input, output, cached, cache_write) in micro-USD per 1M tokens: exact integers."""
        return (
            _micro(self.input),
            _micro(self.output),
            _micro(self.cached),
            _micro(self.cache_write),
        )


class TokenUsage(BaseModel):
    """One request's tokens, in disjoint classes (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Tokens = 0
    output: Tokens = 0
    cached: Tokens = 0
    cache_write: Tokens = 0


def _micro(usd: Decimal) -> int:
    micro = usd * MICRO
    assert micro == micro.to_integral_value()  # decimal_places=6 guarantees it
    return int(micro)


def cost_micro_usd(usage: TokenUsage, price: Price) -> int:
    """What `usage` costs at `price`, in micro-USD: integer arithmetic, rounded up once."""
    p_input, p_output, p_cached, p_write = price.micro_usd_per_mtok()
    total = (
        usage.input * p_input
        + usage.output * p_output
        + usage.cached * p_cached
        + usage.cache_write * p_write
    )
    return min(-(-total // MICRO), COST_MICRO_USD_MAX)


Tiers = Literal["base", "highest"]


def prices_from_genai(
    models: list[str],
    overrides: Mapping[str, Price] | None = None,
    *,
    tiers: Tiers = "base",
    at: datetime | None = None,
) -> dict[str, Price]:
    """The installed genai-prices data's price of each model, as of `at` (default now),
    with `overrides` taking precedence (and pricing models genai-prices does not know).

    A model priced in tiers (Gemini's dearer rate past 200k prompt tokens) takes its `base`
    rate by default: the filter has one rate per model, and charging every request the
    long-prompt rate would exhaust a budget at half the real spend. `tiers="highest"` takes
    the dearest tier instead (a budget that must never be under-counted). A missing cache
    price is the input price: cache reads then cost what uncached input costs, never less.

    A rate with more than 6 decimals is rounded up to the micro-dollar.
    LookupError names a model genai-prices does not know, with close matches."""
    import genai_prices  # its data is a 30k-line module: loaded only when prices are filled

    overrides = dict(overrides or {})
    when = at or datetime.now(UTC)
    prices: dict[str, Price] = {}
    for model in models:
        if model in overrides:
            prices[model] = overrides[model]
            continue
        try:
            found = genai_prices.calc_price(
                genai_prices.Usage(input_tokens=0, output_tokens=0),
                model,
                genai_request_timestamp=when,
            )
        except LookupError:
            raise LookupError(_unknown_model(model)) from None
        price = _price_of(found.model_price, tiers)
        if price is None:
            raise LookupError(
                f"pricesFrom genai-prices: model {model!r} ({found.model.id}) has no input and "
                "output token price there; give its price in the overrides"
            )
        prices[model] = price
    prices.update(overrides)
    return prices


def _price_of(model_price: ModelPrice, tiers: Tiers) -> Price | None:
    """The token prices of a genai-prices entry; None when it has no input or output rate."""
    from genai_prices.types import TieredPrices

    def rate(key: str) -> Decimal | None:
        value = getattr(model_price, key, None)
        if isinstance(value, TieredPrices):
            rates = (
                [value.base] if tiers == "base" else [value.base, *(t.price for t in value.tiers)]
            )
            value = max(rates)
        if not isinstance(value, Decimal):
            return None
        return value.quantize(Decimal(1).scaleb(-PRICE_DECIMALS), rounding=ROUND_CEILING)

    input_rate, output_rate = rate("input_mtok"), rate("output_mtok")
    if input_rate is None or output_rate is None:
        return None
    cached, cache_write = rate("cache_read_mtok"), rate("cache_write_mtok")
    return Price(
        input=input_rate,
        output=output_rate,
        cached=input_rate if cached is None else cached,
        cache_write=input_rate if cache_write is None else cache_write,
    )


def known_models() -> list[str]:
    """Every model id in the installed genai-prices data (for suggestions)."""
    from genai_prices.data import providers as genai_providers

    return sorted({model.id for provider in genai_providers for model in provider.models})


def _unknown_model(model: str) -> str:
    import genai_prices

    close = difflib.get_close_matches(model.lower(), known_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(name) for name in close)}?" if close else ""
    return (
        f"pricesFrom genai-prices: model {model!r} is not in genai-prices "
        f"{genai_prices.__version__}{hint} (or give its price in the overrides)"
    )
