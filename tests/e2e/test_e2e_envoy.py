"""End to end: real Envoy (2 workers) running the real filter, configured by the project's own
renderer, in front of the mock LLM upstream. What a client and an operator observe."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config
from tokenlimit.render.envoy import FILTER_NAME

BUDGET = 300


def config(**extra: object) -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "e2e",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": BUDGET}],
                }
            ],
            **extra,
        }
    )


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    with Gateway(config(), wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def post(
    gw: Gateway,
    api_key: str,
    *,
    path: str = "/v1/chat/completions",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    payload = (
        body
        if body is not None
        else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    request = urllib.request.Request(
        gw.listen_url + path,
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json", "x-api-key": api_key, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as refused:
        return refused.code, {k.lower(): v for k, v in refused.headers.items()}, refused.read()


def tokens(prompt: int, completion: int) -> dict[str, str]:
    return {"x-mock-prompt-tokens": str(prompt), "x-mock-completion-tokens": str(completion)}


def avoid_minute_boundary(seconds_needed: float = 8.0) -> None:
    """Budgets reset at each whole minute: start a multi-request scenario well inside one."""
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


def test_budget_per_key_then_429_with_headers(gateway: Gateway) -> None:
    avoid_minute_boundary()
    statuses = [post(gateway, "e2e-alice", headers=tokens(50, 50))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, headers, body = post(gateway, "e2e-alice", headers=tokens(50, 50))
    assert status == 429
    assert body == b"Too many requests"
    assert headers["x-ratelimit-limit-tokens"] == str(BUDGET)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    retry_after = int(headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert re.fullmatch(r"(\d+m)?\d+s", headers["x-ratelimit-reset-tokens"])
    # Another key is untouched by alice's spending.
    assert post(gateway, "e2e-bob", headers=tokens(50, 50))[0] == 200


def test_decisions_reach_metrics_and_access_log(gateway: Gateway) -> None:
    avoid_minute_boundary()
    post(gateway, "e2e-metrics", headers=tokens(7, 5))
    prometheus = urllib.request.urlopen(gateway.admin_url + "/stats/prometheus", timeout=5).read()
    assert re.search(rb"^tokenlimit_requests_allowed\{\} [1-9]", prometheus, re.M)
    assert re.search(rb"^tokenlimit_tokens_charged\{\} [1-9]", prometheus, re.M)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in gateway.logs().stdout.splitlines() if "tokens=12" in line]
        if lines:
            break
        time.sleep(0.1)
    assert lines, gateway.logs().stdout[-2000:]
    assert "decision=allowed" in lines[-1]
    assert "rule=e2e" in lines[-1]
    assert "e2e-metrics" not in gateway.logs().stdout  # the key itself is hashed


def test_streamed_usage_split_across_chunks_is_charged(gateway: Gateway) -> None:
    # Hundreds of 7-byte chunks per answer through the filter: on a loaded machine the three
    # requests can take longer than the default margin, and a new minute would reset the budget.
    avoid_minute_boundary(25.0)
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    headers = {**tokens(100, 100), "x-mock-chunk-bytes": "7"}
    status, _, stream = post(gateway, "e2e-stream", body=body, headers=headers)
    assert status == 200 and b"data: [DONE]" in stream
    assert post(gateway, "e2e-stream", body=body, headers=headers)[0] == 200
    assert post(gateway, "e2e-stream", headers=tokens(1, 1))[0] == 429  # 400 >= 300


def test_include_usage_is_added_so_openai_streams_are_counted(gateway: Gateway) -> None:
    avoid_minute_boundary()
    body = {"model": "m", "stream": True, "messages": []}  # no stream_options: OpenAI omits usage
    status, _, stream = post(gateway, "e2e-inject", body=body, headers=tokens(150, 150))
    assert status == 200 and stream.endswith(b"data: [DONE]\n\n")
    # Counted (the gateway asked for usage) but not shown: this client did not ask for it.
    assert b"prompt_tokens" not in stream
    assert post(gateway, "e2e-inject", headers=tokens(1, 1))[0] == 429


def test_window_resets_at_the_boundary(filter_wasm: Path) -> None:
    per_second = parse_filter_config(
        {"rule_name": "sec", "global_threshold": {"token_per_second": 10}}
    )
    with Gateway(per_second, wasm_path=filter_wasm, concurrency=2) as gw:
        time.sleep(1 - time.time() % 1 + 0.05)  # start just after a second boundary
        assert post(gw, "k", headers=tokens(10, 0))[0] == 200
        assert post(gw, "k", headers=tokens(1, 0))[0] == 429
        time.sleep(1 - time.time() % 1 + 0.05)
        assert post(gw, "k", headers=tokens(1, 0))[0] == 200


def test_invalid_config_is_refused_and_envoy_keeps_serving(filter_wasm: Path) -> None:
    with Gateway(config(), wasm_path=filter_wasm, concurrency=2) as gw:
        avoid_minute_boundary()
        for _ in range(3):
            post(gw, "keep", headers=tokens(50, 50))
        # Bypass the control plane's own validation to show the filter refuses it too.
        text = gw.ecds_path.read_text()
        broken = text.replace('"token_per_minute":300', '"token_per_minute":-1')
        assert broken != text
        before = gw.stats()[f"extension_config_discovery.http_filter.{FILTER_NAME}.config_fail"]
        tmp = gw.ecds_path.with_suffix(".tmp")
        tmp.write_text(broken)
        tmp.replace(gw.ecds_path)
        deadline = time.monotonic() + 10
        key = f"extension_config_discovery.http_filter.{FILTER_NAME}.config_fail"
        while gw.stats()[key] == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.stats()[key] == before + 1
        assert "invalid config: rule_items[0].limit_keys[0].token_per_minute" in gw.logs().stderr
        # The previous config still limits, and Envoy still serves.
        assert post(gw, "keep", headers=tokens(1, 1))[0] == 429
        assert post(gw, "other", headers=tokens(1, 1))[0] == 200


def test_valid_update_applies_without_restart(filter_wasm: Path) -> None:
    with Gateway(config(), wasm_path=filter_wasm, concurrency=2) as gw:
        avoid_minute_boundary()
        assert post(gw, "grow", headers=tokens(200, 200))[0] == 200
        assert post(gw, "grow", headers=tokens(1, 1))[0] == 429
        raised = parse_filter_config(
            {
                "rule_name": "e2e",
                "rule_items": [
                    {
                        "limit_by_per_header": "x-api-key",
                        "limit_keys": [{"key": "*", "token_per_minute": 1000}],
                    }
                ],
            }
        )
        gw.update_policy(raised)
        # Same rule name: usage so far (400) carries over under the raised limit.
        assert post(gw, "grow", headers=tokens(1, 1))[0] == 200


def test_reserve_keeps_concurrent_requests_near_the_budget(filter_wasm: Path) -> None:
    reserve = config(admission="reserve", default_output_tokens=50)
    with Gateway(reserve, wasm_path=filter_wasm, concurrency=2) as gw:
        avoid_minute_boundary(15)
        results: list[int] = []
        lock = threading.Lock()

        def client() -> None:
            status = post(gw, "crowd", headers={**tokens(25, 50), "x-mock-delay-ms": "300"})[0]
            with lock:
                results.append(status)

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted = results.count(200)
        # Each request reserves its body/4 (~20) + 50 and really costs 75: admitted tokens stay
        # within one request of the budget, where postpaid would admit all 16 (1200 tokens).
        assert 2 <= admitted <= 5, results
        assert admitted * 75 <= BUDGET + 75


DIALECTS = [
    ("openai-json", "/v1/chat/completions", {"model": "m", "messages": []}),
    ("openai-sse", "/v1/chat/completions", {"model": "m", "stream": True, "messages": []}),
    (
        "azure-sse",
        "/openai/deployments/d/chat/completions?api-version=2024-06-01",
        {"stream": True, "messages": []},
    ),
    ("responses-json", "/v1/responses", {"model": "m", "input": "hi"}),
    ("responses-sse", "/v1/responses", {"model": "m", "input": "hi", "stream": True}),
    ("anthropic-json", "/v1/messages", {"model": "m", "max_tokens": 9, "messages": []}),
    (
        "anthropic-sse",
        "/v1/messages",
        {"model": "m", "max_tokens": 9, "stream": True, "messages": []},
    ),
    ("gemini-json", "/v1beta/models/g:generateContent", {"contents": []}),
    ("gemini-sse", "/v1beta/models/g:streamGenerateContent?alt=sse", {"contents": []}),
    ("gemini-json-stream", "/v1beta/models/g:streamGenerateContent", {"contents": []}),
]


@pytest.mark.parametrize(("name", "path", "body"), DIALECTS, ids=[d[0] for d in DIALECTS])
def test_every_dialect_is_charged_its_real_usage_through_envoy(
    gateway: Gateway, name: str, path: str, body: dict[str, Any]
) -> None:
    headers = {**tokens(13, 29), "x-mock-chunk-bytes": "11"}  # events straddle chunks
    status, _, _ = post(gateway, f"dialect-{name}", path=path, body=body, headers=headers)
    assert status == 200
    # This request's line: its key, as the access log shows it (hashed; the log leaves out
    # query strings, so the key is the tag).
    tag = "x-api-key:tokens:60:" + hashlib.sha256(f"dialect-{name}".encode()).hexdigest()[:32]
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline and not lines:
        lines = [line for line in gateway.logs().stdout.splitlines() if f"{tag} " in line]
        time.sleep(0.05)
    assert lines, gateway.logs().stdout[-1500:]
    assert "tokens=42 " in lines[-1], lines[-1]  # 13 + 29, never an estimate
