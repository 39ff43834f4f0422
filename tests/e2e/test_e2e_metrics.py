"""End to end, labelled metrics (issue 16): real Envoy (2 workers) with the rendered bootstrap's
stats_tags, the real filter, the mock LLM. /stats/prometheus shows tokenlimit_requests,
tokenlimit_tokens and tokenlimit_cost_microusd with rule, model and outcome labels after a few
requests; the model label stays bounded with many distinct models; caller keys never appear."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config
from tokenlimit.model.limits import LIMITS
from tokenlimit.model.metrics_contract import METRICS

CONFIG = {
    "rule_name": "chat",
    "admission": "reserve",
    "default_output_tokens": 0,
    "warn_at": 0.5,
    "prices": {"*": {"input": 1.0, "output": 2.0}},
    "rule_items": [
        {
            "limit_by_per_header": "x-api-key",
            "limit_keys": [{"key": "*", "token_per_minute": 250, "cost_per_day": 100.0}],
        }
    ],
}


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    with Gateway(parse_filter_config(CONFIG), wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def post(gw: Gateway, api_key: str, model: str, status: int = 200) -> int:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": "40",
            "x-mock-completion-tokens": "60",
            **({"x-mock-status": str(status)} if status != 200 else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def prometheus(gw: Gateway) -> str:
    with urllib.request.urlopen(gw.admin_url + "/stats/prometheus", timeout=5) as response:
        return str(response.read().decode())


def samples(text: str, metric: str) -> dict[frozenset[tuple[str, str]], int]:
    """`metric{a="x",b="y"} 3` lines as {labels: value}."""
    found: dict[frozenset[tuple[str, str]], int] = {}
    for labels, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\d+)$", text, re.M):
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels))
        found[pairs] = found.get(pairs, 0) + int(value)
    return found


def avoid_minute_boundary(seconds_needed: float = 8.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


def test_prometheus_shows_rule_model_and_outcome_labels(gateway: Gateway) -> None:
    avoid_minute_boundary()
    statuses = [post(gateway, "sk-alice-secret", "gpt-4o") for _ in range(4)]
    # 100 tokens an answer on 250 a minute: the third is admitted at 200, the fourth refused.
    assert statuses.count(200) >= 2 and statuses[-1] == 429, statuses
    text = prometheus(gateway)
    requests = samples(text, METRICS.prometheus_name("requests"))
    allowed = frozenset({("rule", "chat"), ("model", "gpt-4o"), ("outcome", "allowed")})
    rejected = frozenset({("rule", "chat"), ("model", "gpt-4o"), ("outcome", "rejected")})
    assert requests[allowed] == statuses.count(200), text[-3000:]
    assert requests[rejected] == statuses.count(429)
    tokens = samples(text, METRICS.prometheus_name("tokens"))
    assert tokens[frozenset({("rule", "chat"), ("model", "gpt-4o")})] == 100 * statuses.count(200)
    cost = samples(text, METRICS.prometheus_name("cost_microusd"))
    # 40 prompt tokens at $1/M and 60 completion tokens at $2/M: 160 micro-USD an answer.
    assert cost[frozenset({("rule", "chat"), ("model", "gpt-4o")})] == 160 * statuses.count(200)
    # Past half of the budget, admissions are warned: counted by rule alone.
    warned = samples(text, METRICS.prometheus_name("budget_warned"))
    assert warned[frozenset({("rule", "chat")})] >= 1
    # The unlabelled counters are still there; no caller key reached a metric.
    assert re.search(r"^tokenlimit_requests_allowed\{\} \d+", text, re.M)
    assert "alice" not in text


def test_upstream_429s_are_counted_by_rule_and_model(gateway: Gateway) -> None:
    # Before the cap test below fills every worker's model set.
    assert post(gateway, "sk-limited", "qwen-max", status=429) == 429
    limited = samples(prometheus(gateway), METRICS.prometheus_name("upstream_rate_limited"))
    assert limited[frozenset({("rule", "chat"), ("model", "qwen-max")})] == 1


def test_the_model_label_is_capped_with_many_distinct_models(gateway: Gateway) -> None:
    cap = LIMITS.metrics_models_max
    # Each worker VM keeps its own set: 2 workers can label at most 2 x cap distinct models.
    for index in range(2 * cap + 40):
        post(gateway, f"caller-{index}", f"random-model-{index}")
    requests = samples(prometheus(gateway), METRICS.prometheus_name("requests"))
    models = {dict(labels)["model"] for labels in requests}
    assert len(models) <= 2 * cap + 2, len(models)  # + gpt-4o and other
    assert METRICS.model_other in models
    assert not any(dict(labels).get("rule") != "chat" for labels in requests)
