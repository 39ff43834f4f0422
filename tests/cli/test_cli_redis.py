"""`tokenlimit up --redis` and `tokenlimit usage`, as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.redis_server import RedisServer, free_port
from tokenlimit.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "examples" / "policy.yaml"


def chat(port: int, api_key: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": []}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": "100",
            "x-mock-completion-tokens": "50",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def spaced_chat(port: int, api_key: str) -> int:
    time.sleep(0.1)
    return chat(port, api_key)


def test_up_with_redis_then_usage_finds_the_key(filter_wasm: Path) -> None:
    listen, admin = free_port(), free_port()
    with RedisServer() as server:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenlimit.cli",
                "up",
                "--policy",
                str(POLICY),
                "--redis",
                server.url,
                "--listen",
                str(listen),
                "--admin-port",
                str(admin),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        try:
            assert up.stdout is not None
            ready = up.stdout.readline()
            assert "tokenlimit up: gateway" in ready and "redis via bridge" in ready, ready
            if time.time() % 60 > 50:
                time.sleep(61 - time.time() % 60)
            # Spaced past the filter's settle period (store/batch.zig, 50 ms): each charge has
            # landed in Redis before the next request asks.
            assert [spaced_chat(listen, "cli-user") for _ in range(3)] == [200, 200, 429]
            result = CliRunner().invoke(main, ["usage", "--redis", server.url, "--key", "cli-user"])
            assert result.exit_code == 0, result.output
            assert "per-api-key" in result.output and "300" in result.output
            assert "cli-user" not in result.output  # shown hashed
            other = CliRunner().invoke(main, ["usage", "--redis", server.url, "--key", "nobody"])
            assert other.output.strip() == "no budgets in use for key 'nobody'"
        finally:
            up.send_signal(signal.SIGINT)
            assert up.wait(timeout=15) == 0


def test_usage_names_an_unreachable_redis() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(main, ["usage", "--redis", url])
    assert result.exit_code == 1
    assert url in result.output and "Error" in result.output


def test_up_refuses_a_policy_naming_redis_without_a_redis() -> None:
    """Run as the README suggests, a Redis policy used to be admitted uncounted (fail-open)
    while the banner said "local store"; now `up` says how to run it."""
    policy = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "higress-config.yaml"
    argv = [sys.executable, "-m", "tokenlimit.cli", "up", "--policy", str(policy)]
    argv += ["--listen", str(free_port()), "--admin-port", str(free_port())]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("tokenlimit up started a gateway that counts nothing")
    assert result.returncode == 2, result
    assert "--redis redis://" in result.stderr and "redis" in result.stderr
