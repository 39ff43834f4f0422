"""Fixtures the bridge tests share: real redis-server processes (tests/support/redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_with_password() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret-pass") as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for tests that kill it or make it sleep."""
    with RedisServer(debug_command=True) as server:
        yield server
