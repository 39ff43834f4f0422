"""Fixtures for the filter's tests: a safety-checked build of the module beside the shipped one.

The shipped module is ReleaseSmall: an integer overflow there is undefined behaviour, not a
trap, so a bound that is wrong may go unnoticed. The same source built ReleaseSafe traps on any
overflow, out-of-bounds index or bad cast, so tests at the bounds (and the fuzz pass) run
through both.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.filter_requests import PER_KEY
from support.proxywasm_host import Clock, Host

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def safe_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenlimit.wasm built ReleaseSafe (zig's cache makes a rebuild of unchanged source fast)."""
    prefix = tmp_path_factory.mktemp("safe-build")
    command = [sys.executable, "-m", "ziglang", "build", "-Doptimize=ReleaseSafe"]
    subprocess.run(
        [*command, "--prefix", str(prefix), "--summary", "none"],
        cwd=ROOT / "filter",
        check=True,
        timeout=600,
    )
    return prefix / "bin" / "tokenlimit.wasm"


@pytest.fixture(params=["shipped", "safe"])
def any_build(request: pytest.FixtureRequest, filter_wasm: Path) -> Iterator[Path]:
    """The shipped module, then the safety-checked one."""
    yield filter_wasm if request.param == "shipped" else request.getfixturevalue("safe_wasm")


@pytest.fixture
def make_any_host(any_build: Path) -> Callable[..., Any]:
    from support.proxywasm_host import Host

    def make(**kwargs: Any) -> Host:
        return Host(any_build, **kwargs)

    return make


@pytest.fixture
def clock() -> Clock:
    # 10 s into a minute, so a per-minute window has 50 s left.
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)


@pytest.fixture
def host(make_host, clock: Clock) -> Host:
    h = make_host(clock=clock)
    assert h.configure(PER_KEY), h.log_messages()
    return h
