"""Fixtures for the jobs service: a real Redis, a real Envoy gateway (the filter + the mock
LLM) with a tight per-caller budget, and `tokenlimit jobs` processes started on demand.

The budget is per `authorization` header (the OpenAI SDK's `Bearer KEY`), per second, small
enough that a batch of a few lines is refused by the gateway several times: the tests see the
workers wait and retry, and the mock LLM's request count says whether any line ran twice.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_support import Services, budget
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    with Gateway(budget(), wasm_path=filter_wasm) as gw:
        yield gw


@pytest.fixture
def mock_stats(gateway: Gateway) -> Callable[[], dict[str, Any]]:
    """The mock LLM's counts since this test started (it counts every request it answered)."""
    urllib.request.urlopen(
        urllib.request.Request(gateway.upstream_url + "/mock/reset", method="POST"), timeout=5
    ).close()

    def read() -> dict[str, Any]:
        with urllib.request.urlopen(gateway.upstream_url + "/mock/stats", timeout=5) as reply:
            return dict(json.load(reply))

    return read


@pytest.fixture
def services(gateway: Gateway, redis_server: RedisServer, tmp_path: Path) -> Iterator[Services]:
    redis_server.command("FLUSHALL")
    running = Services(gateway, redis_server.url, tmp_path)
    yield running
    running.stop()
