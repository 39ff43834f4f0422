"""End to end, near the limit (issue 13): real Envoy (2 workers) running the real filter in front
of the mock LLM, with the local store and with Redis (through the bridge). A burst past a token
bucket waits for room instead of getting 429s; a wait past max_wait_ms gets today's 429; a
paced request is held for the bucket's natural interval; a low lane meets its smaller budget
while a high one still gets through."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config

PLACEHOLDER = {"rule_name": "placeholder", "global_threshold": {"token_per_minute": 10**6}}


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    config = parse_filter_config(PLACEHOLDER)
    with Gateway(config, wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


@pytest.fixture(scope="module")
def redis_gateway(filter_wasm: Path) -> Iterator[Gateway]:
    placeholder = {**PLACEHOLDER, "redis": {"service_name": "placeholder", "timeout": 1000}}
    with (
        RedisServer() as server,
        Gateway(
            parse_filter_config(placeholder),
            wasm_path=filter_wasm,
            concurrency=2,
            redis=server.url,
        ) as gw,
    ):
        yield gw


def configure(gw: Gateway, config: dict[str, Any]) -> None:
    if gw.redis_url is not None:
        config = {**config, "redis": {"service_name": "placeholder", "timeout": 1000}}
    gw.update_policy(parse_filter_config(config))


def post(gw: Gateway, key: str, lane: str | None = None) -> tuple[int, float, dict[str, str]]:
    """One chat completion (10 tokens): status, seconds taken, response headers."""
    headers = {
        "content-type": "application/json",
        "x-api-key": key,
        "x-mock-prompt-tokens": "5",
        "x-mock-completion-tokens": "5",
    }
    if lane is not None:
        headers["x-priority"] = lane
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": []}).encode(),
        headers=headers,
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            response.read()
            status, got = response.status, response.headers
    except urllib.error.HTTPError as refused:
        status, got = refused.code, refused.headers
    return status, time.monotonic() - started, {k.lower(): v for k, v in got.items()}


def bucket(limit: int, window: str = "minute", **fields: Any) -> dict[str, Any]:
    return {
        "rule_name": f"near-{time.monotonic_ns()}",  # fresh counters for every test
        "algorithm": "token_bucket",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", f"request_per_{window}": limit}],
            }
        ],
        **fields,
    }


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_burst_past_the_bucket_waits_for_room_instead_of_429s(
    request: pytest.FixtureRequest, store: str
) -> None:
    gw: Gateway = request.getfixturevalue("gateway" if store == "local" else "redis_gateway")
    # Two a second: of six sent at once, two go at once and four wait their turn (0.5 s each).
    configure(gw, bucket(2, "second", when_exhausted={"action": "wait", "max_wait_ms": 5000}))
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(gw, "burst"), range(6)))
    assert [status for status, _, _ in answers] == [200] * 6
    seconds = sorted(taken for _, taken, _ in answers)
    assert seconds[1] < 0.4 and seconds[-1] >= 1.5, seconds
    deadline = time.monotonic() + 5
    while gw.logs().stdout.count("decision=waited") < 4:
        assert time.monotonic() < deadline, gw.logs().stdout[-1500:]
        time.sleep(0.1)


def test_past_max_wait_ms_the_request_gets_todays_429(gateway: Gateway) -> None:
    configure(
        gateway,
        {**bucket(1, when_exhausted={"action": "wait", "max_wait_ms": 400}), "algorithm": "fixed"},
    )
    assert post(gateway, "late")[0] == 200
    status, seconds, headers = post(gateway, "late")
    assert status == 429
    assert 0.4 <= seconds < 2
    assert 1 <= int(headers["retry-after"]) <= 60


def test_pace_above_holds_a_request_for_the_buckets_natural_interval(gateway: Gateway) -> None:
    # 60 a minute: one a second. Past half of it, each admission is held one second.
    configure(gateway, bucket(60, pace_above=0.5, when_exhausted={"max_wait_ms": 5000}))
    taken = [post(gateway, "pace")[1] for _ in range(31)]  # at most half spent before each
    baseline = sorted(taken)[len(taken) // 2]
    # The next is past half (should the burst have been slow, the bucket refilled one more).
    for _ in range(3):
        status, seconds, _ = post(gateway, "pace")
        assert status == 200
        if seconds > baseline + 0.5:
            break
    added_ms = (seconds - baseline) * 1000
    assert 1000 - 50 <= added_ms <= 1000 + 150, added_ms


def test_a_low_lane_meets_its_smaller_budget_while_high_gets_through(gateway: Gateway) -> None:
    lanes = {"header": "x-priority", "reserved": {"high": 0.2}}
    configure(gateway, {**bucket(10, priority=lanes), "algorithm": "fixed"})
    statuses = [post(gateway, "lanes", "low")[0] for _ in range(9)]
    assert statuses == [200] * 8 + [429]  # low (and normal) see 80 %
    assert [post(gateway, "lanes", "high")[0] for _ in range(3)] == [200, 200, 429]


def ask_model(gw: Gateway, model: str, path: str) -> tuple[int, str, dict[str, str]]:
    """One request for `model`: status, the model the upstream answered as, headers."""
    request = urllib.request.Request(
        gw.listen_url + path,
        data=json.dumps({"model": model, "max_tokens": 5, "messages": []}).encode(),
        headers={"content-type": "application/json", "x-api-key": "dg"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            answer = json.loads(response.read())
            got = {k.lower(): v for k, v in response.headers.items()}
            return response.status, str(answer.get("model")), got
    except urllib.error.HTTPError as refused:
        return refused.code, "", {k.lower(): v for k, v in refused.headers.items()}


@pytest.mark.parametrize(
    ("store", "path"),
    [("local", "/v1/chat/completions"), ("local", "/v1/messages"), ("redis", "/v1/messages")],
)
def test_a_spent_model_is_served_by_the_downgrade_model(
    request: pytest.FixtureRequest, store: str, path: str
) -> None:
    # With Redis the refusal arrives after the body callback: Envoy keeps a body the filter
    # paused on writable until the request goes on.
    gateway: Gateway = request.getfixturevalue("gateway" if store == "local" else "redis_gateway")
    per_model = {
        "limit_by_per_model": "",
        "limit_keys": [
            {"key": "gpt-4o", "request_per_minute": 1},
            {"key": "gpt-4o-mini", "request_per_minute": 1},
        ],
    }
    configure(
        gateway,
        {
            "rule_name": f"downgrade-{time.monotonic_ns()}",
            "rule_items": [per_model],
            "when_exhausted": {"action": "downgrade", "model": "gpt-4o-mini"},
        },
    )
    status, served, headers = ask_model(gateway, "gpt-4o", path)
    assert (status, served, headers.get("x-tokenlimit-served-model")) == (200, "gpt-4o", None)
    # gpt-4o is spent: the upstream sees (and answers as) gpt-4o-mini, and the client is told.
    status, served, headers = ask_model(gateway, "gpt-4o", path)
    assert (status, served) == (200, "gpt-4o-mini")
    assert headers["x-tokenlimit-served-model"] == "gpt-4o-mini"
    # gpt-4o-mini's budget is spent too: today's 429.
    assert ask_model(gateway, "gpt-4o", path)[0] == 429
    deadline = time.monotonic() + 5
    while "decision=downgraded" not in gateway.logs().stdout:
        assert time.monotonic() < deadline, gateway.logs().stdout[-1500:]
        time.sleep(0.1)
