"""Fixtures for the Helm chart tests: the engine must be installed (helm_engine.py)."""

from __future__ import annotations

import pytest
from support import helm_engine


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    """A missing engine fails every test here with the install command (never a skip)."""
    try:
        helm_engine.helm()
        helm_engine.kubernetes_validate()
    except helm_engine.EngineMissing as e:
        pytest.fail(str(e), pytrace=False)
