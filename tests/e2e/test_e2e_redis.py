"""End to end with Redis: real Envoys running tokenlimit.wasm, each with its tokenlimit bridge,
sharing one real redis-server. One budget across gateways, and Redis faults survived."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config

COST = 100  # tokens per answer (prompt 40 + completion 60)


def config(failure_mode: str = "open", budget: int = 1000) -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "fleet",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": budget}],
                }
            ],
            "failure_mode": failure_mode,
            "redis": {"service_name": "placeholder", "timeout": 500},
        }
    )


def post(gw: Gateway, api_key: str, timeout_s: float = 5.0) -> tuple[int, float]:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": []}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": "40",
            "x-mock-completion-tokens": "60",
        },
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as refused:
        return refused.code, time.monotonic() - started


# A worker queues its settlements and sends them with its next admission or on its 50 ms tick
# (filter/src/store/batch.zig): that is how long another worker may not see a charge yet.
SETTLE_DELAY_S = 0.05


def spaced_post(gw: Gateway, api_key: str) -> int:
    """A request sent once the previous one's charge has surely landed, on any worker."""
    time.sleep(SETTLE_DELAY_S + 0.02)
    return post(gw, api_key)[0]


def avoid_minute_boundary(seconds_needed: float = 15.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_two_envoys_enforce_one_budget(filter_wasm: Path, redis_server: RedisServer) -> None:
    with (
        Gateway(config(), wasm_path=filter_wasm, concurrency=2, redis=redis_server.url) as a,
        Gateway(config(), wasm_path=filter_wasm, concurrency=2, redis=redis_server.url) as b,
    ):
        avoid_minute_boundary()
        alone = [spaced_post(a, "alone-key") for _ in range(14)]
        together = [spaced_post(gw, "shared-key") for gw in (a, b) * 7]
        # 100-token answers on a 1000 budget: one gateway alone admits 10, and two together
        # admit the same, not 20. (Postpaid charges land just after each answer -- within the
        # settle delay, SETTLE_DELAY_S, when another worker or gateway admits next; a request
        # can slip in before the last one lands, in either setup.)
        assert 10 <= alone.count(200) <= 11, alone
        assert abs(together.count(200) - alone.count(200)) <= 1, (alone, together)
        assert together[-3:] == [429] * 3
        for gw in (a, b):
            log = gw.logs().stderr
            assert "budgets in tokenlimit-bridge" in log


def test_redis_killed_under_load_then_restarted(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    with Gateway(
        config(budget=10**9), wasm_path=filter_wasm, concurrency=2, redis=redis_server.url
    ) as gw:
        results: list[tuple[int, float]] = []
        stop = threading.Event()
        lock = threading.Lock()

        def client(index: int) -> None:
            while not stop.is_set():
                outcome = post(gw, f"load-{index}")
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        redis_server.kill()
        time.sleep(2)
        redis_server.restart()
        time.sleep(2.5)  # back-off (1 s) passes, a probe succeeds, the circuit closes
        stop.set()
        for t in threads:
            t.join()

        statuses = {status for status, _ in results}
        slowest = max(duration for _, duration in results)
        assert statuses == {200}, statuses  # failure_mode open: served throughout
        assert slowest < 1.5, slowest  # never more than redis.timeout (0.5 s) plus slack
        assert gw.is_running()
        stats = gw.stats()
        assert stats["wasmcustom.tokenlimit.redis_circuit_opened"] >= 1
        assert stats["wasmcustom.tokenlimit.redis_circuit_open"] == 0  # recovered
        log = gw.logs().stderr
        opened = re.findall(r"redis store unavailable: (.*?);", log)
        assert opened and set(opened) <= {
            "Redis is unreachable",
            "Redis did not answer within redis.timeout",
            "Redis answered with an error",
        }
        assert len(opened) <= 2 * gw.concurrency  # once per worker per outage, not per request
        assert "redis store recovered" in log


def test_budgets_are_enforced_again_after_recovery(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    with Gateway(
        config(budget=300), wasm_path=filter_wasm, concurrency=1, redis=redis_server.url
    ) as gw:
        redis_server.kill()
        assert [post(gw, "k")[0] for _ in range(4)] == [200] * 4  # open, uncounted
        redis_server.restart()
        time.sleep(1.2)
        avoid_minute_boundary()
        statuses = [post(gw, "k")[0] for _ in range(6)]
        assert statuses.count(200) == 3 and statuses[-1] == 429, statuses


def test_failure_mode_closed_answers_503_without_waiting(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    with Gateway(
        config("closed"), wasm_path=filter_wasm, concurrency=1, redis=redis_server.url
    ) as gw:
        assert post(gw, "k")[0] == 200
        redis_server.kill()
        outcomes = [post(gw, "k") for _ in range(5)]
        assert {status for status, _ in outcomes} == {503}
        assert max(duration for _, duration in outcomes) < 1.0


def test_the_bridge_token_reaches_the_filter_from_envoys_environment(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    token = "s3cret-bridge-token"
    with Gateway(
        config(budget=200), wasm_path=filter_wasm, redis=redis_server.url, bridge_token=token
    ) as gw:
        avoid_minute_boundary()
        assert [post(gw, "tok")[0] for _ in range(3)] == [200, 200, 429]  # counted in Redis
        assert token not in gw.ecds_path.read_text()  # never in the config
    # Envoy without the token: the bridge refuses it, and the log says exactly that.
    with Gateway(
        config(),
        wasm_path=filter_wasm,
        redis=redis_server.url,
        bridge_token=token,
        envoy_env={"TOKENLIMIT_BRIDGE_TOKEN": "wrong"},
    ) as gw:
        for _ in range(4):
            assert post(gw, "tok2")[0] == 200  # failure_mode open
        assert "the bridge refused the filter's token" in gw.logs().stderr


def test_reserve_with_redis_holds_the_body_then_resumes(
    filter_wasm: Path, redis_server: RedisServer
) -> None:
    reserve = parse_filter_config(
        {
            "rule_name": "reserve-fleet",
            "admission": "reserve",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": 250}],
                }
            ],
        }
    )
    with Gateway(reserve, wasm_path=filter_wasm, concurrency=2, redis=redis_server.url) as gw:
        avoid_minute_boundary()
        body = {"model": "m", "max_tokens": 60, "messages": [{"role": "user", "content": "x" * 80}]}
        statuses = []
        for _ in range(4):
            request = urllib.request.Request(
                gw.listen_url + "/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={
                    "content-type": "application/json",
                    "x-api-key": "rk",
                    "x-mock-prompt-tokens": "40",
                    "x-mock-completion-tokens": "60",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    statuses.append(response.status)
                    assert json.loads(response.read())["usage"]["completion_tokens"] == 60
            except urllib.error.HTTPError as refused:
                statuses.append(refused.code)
        # Each answer really costs 100; the third reservation (body/4 ~ 33, plus max_tokens 60)
        # no longer fits in the 50 left of 250.
        assert statuses == [200, 200, 429, 429], statuses
