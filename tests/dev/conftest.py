"""Fixtures for the dev tools' tests: one mock LLM per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tokenlimit.dev.mockllm import RunningMock, start_in_thread


@pytest.fixture(scope="module")
def mock() -> Iterator[RunningMock]:
    m = start_in_thread(name="primary")
    try:
        yield m
    finally:
        m.stop()
