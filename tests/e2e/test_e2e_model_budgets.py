"""End to end, model-aware budgets (issue 12): real Envoy (2 workers) running the real filter in
front of the mock LLM. A per-model provider quota shared by two keys; key x model budgets; a
monthly budget whose Retry-After reaches the 1st of next month in a non-UTC zone; dollar
budgets priced by hand and from the genai-prices package.

The filter config is written into the ECDS file as the filter reads it (the policy model learns
these fields in the control-plane half of the issue), the way an operator's update reaches it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import genai_prices
import pytest
import yaml
from tokenlimit.dev.gateway import Gateway
from tokenlimit.loader import policy_from_data
from tokenlimit.model import filter_json, parse_filter_config
from tokenlimit.model.calendar import render_current
from tokenlimit.render.envoy import FILTER_NAME

ECDS = f"extension_config_discovery.http_filter.{FILTER_NAME}"


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    placeholder = parse_filter_config(
        {"rule_name": "placeholder", "global_threshold": {"token_per_minute": 1_000_000}}
    )
    with Gateway(placeholder, wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def configure(gw: Gateway, config: dict[str, Any]) -> None:
    """Replaces the filter's JSON config inside the ECDS resource; waits until Envoy loaded it."""
    resource = yaml.safe_load(gw.ecds_path.read_text())
    replaced = _replace_config(resource, json.dumps(config))
    assert replaced, "no filter config found in the ECDS resource"
    before = gw.stats()[f"{ECDS}.config_reload"]
    tmp = gw.ecds_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(resource))
    tmp.replace(gw.ecds_path)
    deadline = time.monotonic() + 10
    while gw.stats()[f"{ECDS}.config_reload"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.stats()[f"{ECDS}.config_reload"] > before, gw.logs().stderr[-2000:]


def _replace_config(node: Any, document: str) -> bool:
    """Swaps the one string that is the filter's JSON config (it names a `rule_name`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and '"rule_name"' in value:
                node[key] = document
                return True
            if _replace_config(value, document):
                return True
    elif isinstance(node, list):
        return any(_replace_config(entry, document) for entry in node)
    return False


def post(gw: Gateway, api_key: str, model: str, prompt: int = 50, completion: int = 50) -> int:
    return exchange(gw, api_key, model, prompt, completion)[0]


def exchange(
    gw: Gateway, api_key: str, model: str, prompt: int = 50, completion: int = 50
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": str(prompt),
            "x-mock-completion-tokens": str(completion),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as refused:
        return refused.code, {k.lower(): v for k, v in refused.headers.items()}


def avoid_minute_boundary(seconds_needed: float = 8.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


def test_a_per_model_provider_quota_is_shared_by_two_keys(gateway: Gateway) -> None:
    configure(
        gateway,
        {
            "rule_name": "provider",
            "rule_items": [
                {
                    "limit_by_per_model": "",
                    "limit_keys": [{"key": "gpt-4o", "token_per_minute": 300}],
                }
            ],
        },
    )
    avoid_minute_boundary()
    # 100 tokens a request; alice and bob together spend gpt-4o's 300.
    assert [post(gateway, "alice", "gpt-4o"), post(gateway, "bob", "gpt-4o")] == [200, 200]
    assert post(gateway, "alice", "gpt-4o") == 200
    assert post(gateway, "bob", "gpt-4o") == 429
    assert post(gateway, "alice", "gpt-4o") == 429
    # Other models are not under gpt-4o's quota.
    assert post(gateway, "bob", "gpt-4o-mini") == 200


def test_key_by_model_budgets(gateway: Gateway) -> None:
    configure(
        gateway,
        {
            "rule_name": "keys",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "per_model": True,
                    "limit_keys": [{"key": "*", "token_per_minute": 200}],
                },
                {
                    "limit_by_per_header": "x-api-key",
                    "models": ["regexp:^o[0-9]"],
                    "limit_keys": [{"key": "*", "request_per_minute": 1}],
                },
            ],
        },
    )
    avoid_minute_boundary()
    assert [post(gateway, "alice", "gpt-4o") for _ in range(3)] == [200, 200, 429]
    # The same key on another model, and another key on the same model: budgets of their own.
    assert [post(gateway, "alice", "gpt-4o-mini") for _ in range(3)] == [200, 200, 429]
    assert post(gateway, "bob", "gpt-4o") == 200
    # The reasoning models also get one request a minute per key.
    assert [post(gateway, "carol", "o1", 1, 1), post(gateway, "carol", "o3", 1, 1)] == [200, 429]


def test_a_monthly_budget_in_tokyo_retries_after_the_first_of_next_month(gateway: Gateway) -> None:
    table = render_current("Asia/Tokyo")
    configure(
        gateway,
        {
            "rule_name": "monthly",
            "time_zone": table.zone,
            "calendar": {"zone": table.zone, "transitions": table.transitions},
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_month": 150}],
                }
            ],
        },
    )
    now = datetime.now(ZoneInfo("Asia/Tokyo"))
    assert [post(gateway, "dave", "gpt-4o") for _ in range(2)] == [200, 200]
    status, headers = exchange(gateway, "dave", "gpt-4o")
    assert status == 429
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=now.tzinfo)
    expected = (first - now).total_seconds()
    assert expected - 5 <= int(headers["retry-after"]) <= expected + 5


def test_a_dollar_budget_with_a_price_table(gateway: Gateway) -> None:
    configure(
        gateway,
        {
            "rule_name": "dollars",
            "prices": {"gpt-4o": {"input": 2.5, "output": 10}},
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "cost_per_minute": 0.001}],
                }
            ],
        },
    )
    avoid_minute_boundary()
    # 100 prompt and 50 completion tokens of gpt-4o: 750 micro-USD a request.
    assert [post(gateway, "erin", "gpt-4o", 100, 50) for _ in range(2)] == [200, 200]
    status, headers = exchange(gateway, "erin", "gpt-4o", 100, 50)
    assert status == 429
    assert headers["x-ratelimit-limit-cost"] == "0.001000"
    assert headers["x-ratelimit-remaining-cost"] == "0.000000"
    # A model the table does not price is refused, never free.
    assert post(gateway, "frank", "o1") == 429
    # The access log carries each request's model and what it cost (USD).
    deadline = time.monotonic() + 5
    while "model=gpt-4o cost=0.000750" not in gateway.logs().stdout:
        assert time.monotonic() < deadline, gateway.logs().stdout[-1500:]
        time.sleep(0.1)


def test_a_dollar_budget_priced_from_genai_prices(gateway: Gateway) -> None:
    # The policy names no price: `pricesFrom: genai-prices` fills gpt-4o's from the installed
    # package when the policy is rendered. The expected cost is the package's own calc_price,
    # not ours, so a wrong price table or wrong arithmetic in either half shows here.
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=100, output_tokens=50),
        model_ref="gpt-4o",
        provider_id="openai",
    ).total_price
    assert expected > 0
    policy = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "genai", "namespace": "default"},
        "spec": {
            "ruleName": "genai",
            "pricesFrom": "genai-prices",
            "priceModels": ["gpt-4o"],
            "ruleItems": [
                {
                    "limitByPerHeader": "x-api-key",
                    # Two requests fit (admitted while spend is under the limit), a third not.
                    "limitKeys": [{"key": "*", "costPerMinute": float(round(expected * 3 / 2, 6))}],
                }
            ],
            "targetRef": {"gateway": "envoy", "listener": "tokenlimit"},
        },
    }
    configure(gateway, json.loads(filter_json(policy_from_data(policy, "test").config)))
    avoid_minute_boundary()
    assert [post(gateway, "hank", "gpt-4o", 100, 50) for _ in range(2)] == [200, 200]
    status, headers = exchange(gateway, "hank", "gpt-4o", 100, 50)
    assert status == 429
    assert headers["x-ratelimit-limit-cost"] == f"{round(expected * 3 / 2, 6):.6f}"
    # An unpriced model stays refused: genai-prices fills only the models the policy names.
    assert post(gateway, "ivan", "o1") == 429
    logged = f"model=gpt-4o cost={expected:.6f}"
    deadline = time.monotonic() + 5
    while logged not in gateway.logs().stdout:
        assert time.monotonic() < deadline, (logged, gateway.logs().stdout[-1500:])
        time.sleep(0.1)


def test_warn_at_marks_admitted_responses_past_the_fraction(gateway: Gateway) -> None:
    configure(
        gateway,
        {
            "rule_name": "soft",
            "warn_at": 0.8,
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": 500}],
                }
            ],
        },
    )
    avoid_minute_boundary()
    seen = [exchange(gateway, "gina", "gpt-4o")[1].get("x-tokenlimit-warning") for _ in range(6)]
    # 100 tokens a request: admission sees 0, 100, ... 500; warned from 400 (80%) on, until 500.
    assert seen[:4] == [None] * 4
    assert seen[4] == "tokens per minute: 80% used"
    prometheus = urllib.request.urlopen(gateway.admin_url + "/stats/prometheus", timeout=5).read()
    assert re.search(rb"^tokenlimit_budget_warnings\{\} [1-9]", prometheus, re.M)
    assert "budget per_header:x-api-key:tokens:60:" in gateway.logs().stderr
