"""Model prices (tokenlimit.model.prices): filled from the installed genai-prices data, and the
integer micro-dollar cost the filter will charge.

The genai-prices numbers change between package versions, so the tests on real data assert
structure and relationships (and agreement with genai-prices' own cost calculation); the cost
arithmetic is pinned exactly on fixed prices."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from pydantic import ValidationError
from tokenlimit.model.prices import (
    COST_MICRO_USD_MAX,
    PRICE_USD_MAX,
    TOKENS_MAX,
    Price,
    TokenUsage,
    cost_micro_usd,
    prices_from_genai,
)

WELL_KNOWN = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "o1"]
FIXED = Price(
    input=Decimal("2.5"), output=Decimal(10), cached=Decimal("1.25"), cache_write=Decimal("3.75")
)


def test_well_known_models_have_sane_prices() -> None:
    prices = prices_from_genai(WELL_KNOWN)
    assert list(prices) == WELL_KNOWN
    for model, price in prices.items():
        assert price.input > 0, model
        assert price.output >= price.input, model  # output tokens never cost less
        assert price.cached <= price.input, model  # a cache read never costs more
        assert all(isinstance(micro, int) for micro in price.micro_usd_per_mtok())
    mini, full = prices["gpt-4o-mini"], prices["gpt-4o"]
    assert mini.input < full.input and mini.output < full.output
    # Anthropic prices cache writes above plain input; genai-prices has that rate.
    assert prices["claude-3-5-sonnet"].cache_write > prices["claude-3-5-sonnet"].input


@pytest.mark.parametrize("model", WELL_KNOWN)
def test_cost_agrees_with_genai_prices_own_calculation(model: str) -> None:
    """genai-prices' `input_tokens` includes cache reads and writes; ours are disjoint. The
    same request costs the same, ours rounded up to the micro-dollar."""
    price = prices_from_genai([model])[model]
    usage = TokenUsage(input=12_345, cached=4_000, cache_write=0, output=987)
    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=16_345, cache_read_tokens=4_000, output_tokens=987), model
    ).total_price
    assert cost_micro_usd(usage, price) == math.ceil(theirs * 1_000_000)


def test_tiered_prices_take_the_base_rate_unless_asked_for_the_highest() -> None:
    base = prices_from_genai(["gemini-2.5-pro"])["gemini-2.5-pro"]
    highest = prices_from_genai(["gemini-2.5-pro"], tiers="highest")["gemini-2.5-pro"]
    assert highest.input > base.input and highest.output > base.output


def test_overrides_take_precedence_and_price_unknown_models() -> None:
    own = Price(input=Decimal(1), output=Decimal(2), cached=Decimal(1), cache_write=Decimal(1))
    prices = prices_from_genai(["gpt-4o", "our-finetune"], {"gpt-4o": own, "our-finetune": own})
    assert prices == {"gpt-4o": own, "our-finetune": own}


def test_an_unknown_model_is_named_with_close_matches() -> None:
    with pytest.raises(LookupError) as caught:
        prices_from_genai(["gpt-4o", "gpt-4-o"])
    message = str(caught.value)
    assert "model 'gpt-4-o' is not in genai-prices" in message
    assert "did you mean 'gpt-4o'" in message
    assert "overrides" in message


def test_prices_are_looked_up_as_of_a_given_time() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert prices_from_genai(["gpt-4o"], at=at) == prices_from_genai(["gpt-4o"], at=at)


# ---- exact arithmetic on fixed prices ----------------------------------------------------------


def test_micro_dollars_per_million_tokens_are_exact_integers() -> None:
    assert FIXED.micro_usd_per_mtok() == (2_500_000, 10_000_000, 1_250_000, 3_750_000)
    tiny = Price(
        input=Decimal("0.000001"), output=Decimal("0.1"), cached=Decimal(0), cache_write=Decimal(0)
    )
    assert tiny.micro_usd_per_mtok() == (1, 100_000, 0, 0)


@pytest.mark.parametrize(
    ("usage", "micro_usd"),
    [
        (TokenUsage(), 0),
        # 1000 x 2.5 + 500 x 10 + 200 x 1.25 + 100 x 3.75 = 8125 USD per 1M tokens: 8125 micro-USD
        (TokenUsage(input=1000, output=500, cached=200, cache_write=100), 8125),
        (TokenUsage(output=1), 10),  # exactly $0.00001
        (TokenUsage(input=1), 3),  # $0.0000025 rounds up to 3 micro-dollars
        (TokenUsage(cached=1), 2),  # $0.00000125 rounds up to 2
        (TokenUsage(input=1_000_000), 2_500_000),  # a million tokens cost the listed price
        # The sum is rounded once: 2 x $0.0000025 is exactly 5 micro-dollars, not 3 + 3.
        (TokenUsage(input=2), 5),
    ],
)
def test_cost_is_integer_micro_dollars_rounded_up_once(usage: TokenUsage, micro_usd: int) -> None:
    assert cost_micro_usd(usage, FIXED) == micro_usd


def test_cost_saturates_where_the_filter_counters_do() -> None:
    dearest = Price(
        input=PRICE_USD_MAX, output=PRICE_USD_MAX, cached=PRICE_USD_MAX, cache_write=PRICE_USD_MAX
    )
    usage = TokenUsage(input=TOKENS_MAX, output=TOKENS_MAX)
    assert cost_micro_usd(usage, dearest) == COST_MICRO_USD_MAX


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": Decimal("0.0000001")}, "6 decimal places"),
        ({"input": Decimal(-1)}, "greater than or equal to 0"),
        ({"output": PRICE_USD_MAX + 1}, "less than or equal to 10000"),
        ({"cached": "free"}, "valid decimal"),
        ({"tokens": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_price_is_refused(fields: dict[str, Any], message: str) -> None:
    valid: dict[str, Any] = {"input": 1, "output": 2, "cached": 1, "cache_write": 1}
    with pytest.raises(ValidationError, match=message):
        Price.model_validate(valid | fields)


def test_prices_read_from_json_numbers_are_exact() -> None:
    price = Price.model_validate_json(
        '{"input": 0.1, "output": 0.3, "cached": 0, "cache_write": 0}'
    )
    assert price.micro_usd_per_mtok() == (100_000, 300_000, 0, 0)
