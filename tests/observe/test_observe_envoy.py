"""Against real Envoy running the real filter: the stats reader on today's unlabelled counters,
and `tokenlimit logs` on the access log the rendered bootstrap writes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tokenlimit.cli import main
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config
from tokenlimit.observe import prom
from tokenlimit.observe.logs import parse_line, summarise
from tokenlimit.usage import hash_value

BUDGET = 100


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    config = parse_filter_config(
        {
            "rule_name": "observe",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": BUDGET}],
                }
            ],
        }
    )
    with Gateway(config, wasm_path=filter_wasm) as gw:
        yield gw


def post(gw: Gateway, api_key: str, prompt: int, completion: int) -> int:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
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
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_stats_and_access_log_of_real_envoy(gateway: Gateway) -> None:
    if time.time() % 60 > 50:  # the minute window must not reset mid-test
        time.sleep(60 - time.time() % 60 + 0.2)
    statuses = [post(gateway, "observe-alice", 40, 20) for _ in range(3)]
    statuses.append(post(gateway, "observe-bob", 5, 5))
    assert statuses == [200, 200, 429, 200]

    stats, errors = prom.read([gateway.admin_url])
    assert errors == []
    assert stats.requests_by("allowed") == 3 and stats.requests_by("rejected") == 1
    # The labelled series (by rule), not also the unlabelled ones: nothing counted twice.
    assert stats.rules() == ["observe"], stats
    assert sum(stats.tokens.values()) == 130
    assert stats.redis_circuit_open == 0

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in gateway.logs().stdout.splitlines() if parse_line(line)]
        if len(lines) >= 4:
            break
        time.sleep(0.1)
    entries = [parse_line(line) for line in lines]
    ids = {e["request_id"] for e in entries if e is not None}
    assert len(ids) == 4 and "-" not in ids  # Envoy's x-request-id: one per call
    summary = summarise(lines)
    assert (summary.total.requests, summary.total.refused, summary.total.tokens) == (4, 1, 130)
    alice = hash_value("observe-alice")
    assert summary.callers[alice].requests == 3 and summary.callers[alice].refused == 1
    assert summary.decisions == {"allowed": 3, "rejected": 1}
    assert summary.total.upstream_429 == 0  # the 429 was the limiter's (details=tokenlimit_...)
    assert "observe-alice" not in gateway.logs().stdout

    result = CliRunner().invoke(main, ["logs", str(gateway.access_log_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("4 requests (0 other lines skipped), 1 refused by the limiter")
    assert alice in result.output
