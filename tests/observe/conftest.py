"""Fixtures for the observe tests: the local servers of servers.py, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from observe.servers import FakeEnvoy, Receiver


@pytest.fixture
def envoy() -> Iterator[FakeEnvoy]:
    fake = FakeEnvoy()
    yield fake
    fake.served.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.served.close()
