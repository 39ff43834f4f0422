"""Model-aware budgets in a policy (docs/design-model-budgets.md): what a policy renders into
the filter config (calendar from timeZone, prices from genai-prices), what it refuses, and the
`needs` markers of contract vectors the filter does not parse yet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.config_needs import PROBES, judged_vectors
from tokenlimit.model import ConfigInvalid, filter_json, parse_filter_config, parse_policy
from tokenlimit.model.calendar import render_current, window_bounds
from tokenlimit.model.policy import policy_filter_config

_PROBE_BASE = {"rule_name": "probe", "global_threshold": {"token_per_minute": 1}}

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "p"},
        "spec": {"ruleName": "team-a", **spec},  # a spec's own ruleName wins
    }


def refused(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigInvalid) as error:
        policy_filter_config(parse_policy(document), now_ms=NOW_MS)
    return [str(p) for p in error.value.problems]


def test_time_zone_renders_the_calendar_and_the_month_ends_on_the_first_local() -> None:
    spec = {"timeZone": "America/New_York", "globalThreshold": {"tokenPerMonth": 1000}}
    config = policy_filter_config(parse_policy(policy(**spec)), now_ms=NOW_MS)
    assert config.calendar == render_current("America/New_York", NOW_MS)
    assert config.time_zone == "America/New_York"
    # Mid-March (after the DST change): the month runs to April 1st 00:00 New York time (EDT).
    start, end = window_bounds(ms("2026-03-20T12:00:00+00:00"), "month", config.calendar)
    assert start == ms("2026-03-01T00:00:00-05:00") and end == ms("2026-04-01T00:00:00-04:00")
    # What the filter reads is the rendered table, not the zone name alone.
    document = json.loads(filter_json(config))
    assert document["calendar"]["zone"] == "America/New_York"
    assert len(document["calendar"]["transitions"]) == 23


def test_utc_needs_no_calendar_and_a_bare_config_needs_one_for_another_zone() -> None:
    utc = policy(timeZone="UTC", globalThreshold={"requestPerWeek": 5})
    assert policy_filter_config(parse_policy(utc)).calendar is None
    bare = {"rule_name": "r", "time_zone": "Asia/Kolkata", "global_threshold": {"token_per_day": 1}}
    with pytest.raises(ConfigInvalid) as error:
        parse_filter_config(bare)
    assert str(error.value).startswith("time_zone: needs calendar, the zone's UTC offsets")


def test_a_policy_never_holds_a_calendar() -> None:
    table = {"zone": "UTC", "transitions": [[946684800000, 0]]}
    document = policy(calendar=table, globalThreshold={"tokenPerDay": 1})
    with pytest.raises(ConfigInvalid) as error:
        parse_policy(document)
    assert "spec.calendar: is rendered from timeZone" in str(error.value)


def test_prices_from_genai_prices_are_numbers_own_entries_first_catch_all_last() -> None:
    spec = {
        "pricesFrom": "genai-prices",
        "priceModels": ["gpt-4o-mini"],
        "prices": {"*": {"input": 5, "output": 20}, "gpt-4o-mini": {"input": 1, "output": 2}},
        "globalThreshold": {"costPerMonth": 200, "warnAt": 0.8},
        "ruleItems": [
            {
                "limitByPerModel": "",
                "limitKeys": [{"key": "gpt-4o", "tokenPerMinute": 150000}],
            }
        ],
    }
    config = policy_filter_config(parse_policy(policy(**spec)), now_ms=NOW_MS)
    prices = json.loads(filter_json(config))["prices"]
    assert list(prices) == ["gpt-4o-mini", "gpt-4o", "*"]
    assert prices["gpt-4o-mini"] == {"input": 1, "output": 2}  # the policy's own wins
    assert prices["gpt-4o"] == {"input": 2.5, "output": 10, "cached": 1.25, "cache_write": 2.5}


def test_an_unknown_model_in_prices_from_is_named_with_close_matches() -> None:
    spec = {
        "pricesFrom": "genai-prices",
        "priceModels": ["gpt-4o-minii"],
        "globalThreshold": {"costPerDay": 1},
    }
    (problem,) = refused(policy(**spec))
    assert problem.startswith("spec.pricesFrom: pricesFrom genai-prices: model 'gpt-4o-minii'")
    assert "did you mean" in problem and "'gpt-4o-mini'" in problem


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"globalThreshold": {"costPerMonth": 200}},
            "spec.prices: cost limits need prices",
        ),
        (
            {"priceModels": ["gpt-4o"], "globalThreshold": {"tokenPerDay": 1}},
            "spec.priceModels: needs pricesFrom: genai-prices",
        ),
        (
            {
                "pricesFrom": "genai-prices",
                "priceModels": ["regexp:^gpt"],
                "globalThreshold": {"tokenPerDay": 1},
            },
            "spec.priceModels[0]: must be a model name genai-prices knows, not a pattern",
        ),
        (
            {"pricesFrom": "genai-prices", "globalThreshold": {"costPerDay": 1}},
            "spec.pricesFrom: names no model to price",
        ),
        (
            {"pricesFrom": "litellm", "globalThreshold": {"tokenPerDay": 1}},
            "spec.pricesFrom: must be one of genai-prices",
        ),
    ],
)
def test_a_policy_refuses_budgets_it_could_not_price(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigInvalid) as error:
        parse_policy(policy(**spec))
    assert any(str(p).startswith(problem) for p in error.value.problems), error.value


def test_fractions_of_a_dollar_are_written_in_plain_decimals() -> None:
    config = parse_filter_config(
        {
            "rule_name": "r",
            "prices": {"*": {"input": 0.000001, "output": 0.00005}},
            "global_threshold": {"cost_per_second": 0.000001},
        }
    )
    text = filter_json(config)
    assert '"cost_per_second":0.000001' in text and '"output":0.00005' in text
    assert "e-" not in text


# ---- contract vectors marked `needs` -------------------------------------------------------


def test_every_probe_is_judged_by_the_model_as_the_filter_will_once_it_parses_it() -> None:
    # Loaded when the field is understood, except a second limit_by_* kind beside
    # limit_by_header: refused then, ignored (so loaded) by a filter that does not know it.
    for field, (config, _) in PROBES.items():
        if field.startswith("limit_by_"):
            with pytest.raises(ConfigInvalid, match="needs exactly one limit_by"):
                parse_filter_config(config)
        else:
            assert parse_filter_config(config), field


def test_a_needs_marker_on_fields_the_filter_parses_fails(make_host: Any) -> None:
    host = make_host()
    stale = {"name": "stale", "valid": True, "needs": ["time_zone"], "config": {}}
    PROBES["shadow"] = ({"rule_name": "p", "global_threshold": {"token_per_minute": 1}}, "x")
    try:
        stale["needs"] = ["shadow"]  # a probe of a field the filter has always parsed
        with pytest.raises(AssertionError, match="the filter parses"):
            list(judged_vectors(host, [stale]))
    finally:
        del PROBES["shadow"]
    stale["needs"] = ["no_such_field"]
    with pytest.raises(AssertionError, match="without a probe"):
        list(judged_vectors(host, [stale]))


def test_vectors_needing_an_ignored_field_are_skipped_and_reported(
    make_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filter parses every model-budget field now: a field it does not know stands in for
    # the next one a vector will need before the filter learns it.
    monkeypatch.setitem(PROBES, "next_field", ({**_PROBE_BASE, "next_field": 1}, "next_field"))
    waiting = {"name": "waiting", "valid": False, "field": "next_field", "needs": ["next_field"]}
    plain = {"name": "plain", "valid": True, "config": {}}
    with pytest.warns(UserWarning, match="1 config vectors skipped"):
        judged = list(judged_vectors(make_host(), [waiting, plain]))
    assert judged == [plain]


def test_now_is_a_real_instant() -> None:
    assert datetime.fromtimestamp(NOW_MS / 1000, UTC).isoformat() == "2026-01-01T00:00:00+00:00"


def test_the_readme_examples_are_policies_that_render() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Budgets per model")[1].split("```yaml")[1].split("```")[0]
    examples = list(yaml.safe_load_all(block))
    assert len(examples) == 5
    for example in examples:
        document = policy(**example["spec"])
        config = policy_filter_config(parse_policy(document), now_ms=NOW_MS)
        assert parse_filter_config(json.loads(filter_json(config))) == config
