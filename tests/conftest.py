"""Shared fixtures: the built filter modules and a proxy-wasm host around them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WASM_DIR = ROOT / "controlplane" / "tokenlimit" / "wasm"
VECTORS = ROOT / "contract"


def require_file(path: Path, hint: str) -> Path:
    """A missing build product fails the test with the command that makes it (never skips)."""
    if not path.is_file():
        pytest.fail(f"{path} is missing: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def filter_wasm() -> Path:
    return require_file(WASM_DIR / "tokenlimit.wasm", "run `make wasm` (or `make test`)")


@pytest.fixture(scope="session")
def higress_wasm() -> Path:
    return require_file(WASM_DIR / "tokenlimit-higress.wasm", "run `make wasm` (or `make test`)")


@pytest.fixture(scope="session")
def config_vectors() -> list[dict]:
    return json.loads((VECTORS / "config.json").read_text())


@pytest.fixture
def make_host(filter_wasm: Path) -> Callable[..., object]:
    """Builds a Host running the real filter; keyword arguments go to Host."""
    from support.proxywasm_host import Host

    def make(**kwargs: object) -> Host:
        return Host(filter_wasm, **kwargs)

    return make
