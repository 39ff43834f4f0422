"""Labelled metrics (issue 16) through the real filter in the test host, both builds: requests by
rule, model and outcome, tokens and cost by rule and model, upstream 429s, warn_at crossings;
the model label capped per VM; caller keys never in a metric name. The names are the ones
contract/metrics.json describes (Envoy's stats_tags turn them into labels: test_e2e_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.filter_requests import JSON_RESPONSE, chat_request, openai_body
from support.proxywasm_host import Host
from tokenlimit.model.limits import LIMITS


@pytest.fixture(params=["tokenlimit.wasm", "tokenlimit-higress.wasm"])
def build(request: pytest.FixtureRequest, filter_wasm: Path, higress_wasm: Path) -> Path:
    return filter_wasm if request.param == "tokenlimit.wasm" else higress_wasm


def body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def send(host: Host, api_key: str, model: str, status: int = 200, prompt: int = 10) -> object:
    request = body(model)
    return host.http_stream().complete(
        chat_request(api_key, **{"content-length": str(len(request))}),
        {**JSON_RESPONSE, ":status": str(status)},
        [openai_body(prompt, 30)] if status == 200 else [b"{}"],
        request_body=request,
    )


def per_key(tokens_per_minute: int) -> dict[str, object]:
    return {
        "limit_by_per_header": "x-api-key",
        "limit_keys": [{"key": "*", "token_per_minute": tokens_per_minute}],
    }


def labelled(host: Host, prefix: str) -> dict[str, int]:
    return {name: value for name, value in host.metrics.items() if name.startswith(prefix)}


PRICED = {
    "rule_name": "chat.v1",  # a dot cannot reach the name: sanitised to chat_v1
    "admission": "reserve",
    "default_output_tokens": 0,  # reserve the prompt's estimate only
    "prices": {"*": {"input": 1.0, "output": 2.0}},
    "rule_items": [
        {
            "limit_by_per_header": "x-api-key",
            "limit_keys": [{"key": "*", "token_per_minute": 80, "cost_per_day": 5.0}],
        }
    ],
}


def test_requests_tokens_and_cost_are_counted_by_rule_model_and_outcome(build: Path) -> None:
    host = Host(build)
    assert host.configure(PRICED), host.log_messages()
    for _ in range(3):
        send(host, "alice-secret", "gpt-4o")  # 40 tokens each: the third is refused at 80+
    send(host, "alice-secret", "gpt-3.5-turbo", status=429)
    base = "tokenlimit.requests.rule.chat_v1.model."
    assert labelled(host, base) == {
        base + "gpt-4o.outcome.allowed": 2,
        base + "gpt-4o.outcome.rejected": 1,
        base + "gpt-3_5-turbo.outcome.rejected": 1,
    }
    assert host.metrics["tokenlimit.tokens.rule.chat_v1.model.gpt-4o"] == 80
    # 10 prompt tokens at $1/M and 30 completion tokens at $2/M: 70 micro-USD a request.
    assert host.metrics["tokenlimit.cost_microusd.rule.chat_v1.model.gpt-4o"] == 140
    # The unlabelled counters stay as they were.
    assert host.metrics["tokenlimit.requests_allowed"] == 2
    assert host.metrics["tokenlimit.requests_rejected"] == 2
    assert not any("alice" in name for name in host.metrics)


def test_an_upstream_429_and_an_estimated_charge_are_counted(build: Path) -> None:
    host = Host(build)
    config = {
        "rule_name": "chat",
        "rule_items": [per_key(10**6)],
        "model_header": "x-model",
    }
    assert host.configure(config), host.log_messages()
    stream = host.http_stream()
    stream.complete({**chat_request("k"), "x-model": "m1"}, {":status": "429"}, [b"{}"])
    # A success whose answer names no usage: charged an estimate.
    host.http_stream().complete(
        {**chat_request("k"), "x-model": "m1"}, JSON_RESPONSE, [b'{"choices": []}'], b"{}"
    )
    # A rule without model conditions still labels the model its header names.
    assert host.metrics["tokenlimit.upstream_rate_limited.rule.chat.model.m1"] == 1
    assert host.metrics["tokenlimit.requests.rule.chat.model.m1.outcome.allowed"] == 2
    assert host.metrics["tokenlimit.requests.rule.chat.model.m1.outcome.estimated"] == 1
    assert host.metrics["tokenlimit.tokens.rule.chat.model.m1"] > 0


def test_shadow_refusals_and_warn_at_are_counted(build: Path) -> None:
    host = Host(build)
    config = {
        "rule_name": "soft",
        "shadow": True,
        "warn_at": 0.5,
        "rule_items": [per_key(50)],
    }
    assert host.configure(config), host.log_messages()
    for _ in range(3):
        host.http_stream().complete(chat_request("k"), JSON_RESPONSE, [openai_body(10, 30)])
    base = "tokenlimit.requests.rule.soft.model.none.outcome."
    assert host.metrics[base + "shadow_rejected"] == 1
    assert host.metrics[base + "allowed"] == 3  # a shadow refusal is admitted
    assert host.metrics["tokenlimit.budget_warned.rule.soft"] == 2


def test_distinct_models_past_the_cap_count_as_other(build: Path) -> None:
    host = Host(build)
    config = {
        "rule_name": "m",
        "admission": "reserve",
        "rule_items": [per_key(10**9)],
    }
    assert host.configure(config), host.log_messages()
    cap = LIMITS.metrics_models_max
    for index in range(cap + 20):
        send(host, "k", f"model-{index}")
    names = labelled(host, "tokenlimit.requests.rule.m.model.")
    models = {name.split(".")[5] for name in names}
    assert len(models) == cap + 1
    assert "other" in models
    assert names["tokenlimit.requests.rule.m.model.other.outcome.allowed"] == 20
    assert sum(names.values()) == cap + 20


def test_higress_token_metrics_count_reported_usage_under_ai_statistics_names(build: Path) -> None:
    host = Host(build)
    config = {"rule_name": "r", "rule_items": [per_key(10**6)], "model_header": "x-model"}
    request = {**chat_request("k"), "x-model": "qwen-max", "x-mse-consumer": "team-a"}
    where = {"route_name": "chat-route", "cluster_name": "outbound|443||qwen.dns"}

    def answer(body: bytes) -> None:
        host.http_stream(properties=where).complete(request, JSON_RESPONSE, [body])

    assert host.configure(config), host.log_messages()
    answer(openai_body(10, 30))
    assert not any(".metric." in name for name in host.metrics)  # off by default
    assert host.configure({**config, "higress_token_metrics": True}), host.log_messages()
    answer(openai_body(10, 30))
    answer(b'{"choices": []}')  # no usage reported: ai-statistics records nothing either
    base = "route.chat-route.upstream.outbound|443||qwen.dns.model.qwen-max.consumer.team-a.metric."
    assert host.metrics[base + "input_token"] == 10
    assert host.metrics[base + "output_token"] == 30
    assert host.metrics[base + "total_token"] == 40


def test_a_request_admitted_before_its_body_is_read_is_counted_under_its_model(
    build: Path,
) -> None:
    # A postpaid rule with no model condition admits on the request headers, before the body
    # names the model; the request is counted when its model is known, as its tokens are, so
    # both series carry the same model label.
    host = Host(build)
    assert host.configure({"rule_name": "plain", "rule_items": [per_key(10_000)]})
    send(host, "bob-secret", "gpt-4o-mini")
    assert labelled(host, "tokenlimit.requests.rule.plain.") == {
        "tokenlimit.requests.rule.plain.model.gpt-4o-mini.outcome.allowed": 1
    }
    assert host.metrics["tokenlimit.tokens.rule.plain.model.gpt-4o-mini"] == 40
