"""The bridge as a security boundary: only tokenlimit's own scripts run, a token is required,
the Redis password never travels on a command line, and held connections cannot starve it.

Real sockets, a real Redis, and for the connection tests the real `tokenlimit bridge` process
with the file-descriptor limit most hosts default to (1024).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.redis_server import RedisServer
from tokenlimit.bridge.config import BridgeConfig
from tokenlimit.bridge.resp import encode_command, encode_commands, parse_replies
from tokenlimit.bridge.server import start

ROOT = Path(__file__).resolve().parents[2]
BUDGET_LUA = (ROOT / "contract" / "min" / "budget.lua").read_bytes()  # as the filter sends it
ERR = "x-tokenlimit-bridge-error"
TOKEN = "guard-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/resp", data=body, headers=headers) as r,
    ):
        return r.status, r.headers.get(ERR, "") + " " + (await r.read()).decode()


def test_only_tokenlimits_own_scripts_run(redis_server: RedisServer) -> None:
    sentinel = "{tl}:must-survive"
    redis_server.command("SET", sentinel, "1")

    async def scenario() -> None:
        bridge = await start(BridgeConfig(redis=redis_server.url, token=TOKEN))
        try:
            hostile: list[tuple[str | int, ...]] = [
                ("EVAL", "return redis.call('FLUSHALL')", 0),
                ("EVAL", "while true do end", 0),
                ("EVALSHA", hashlib.sha1(b"return redis.call('FLUSHALL')").hexdigest(), 0),
                ("SCRIPT", "LOAD", "return redis.call('KEYS', '*')"),
            ]
            for command in hostile:
                status, text = await _post(bridge.url, encode_commands([command]), AUTH)
                assert (status, text.split()[0]) == (403, "script-not-allowed"), (command, text)
            sha = hashlib.sha1(BUDGET_LUA).hexdigest()
            body = encode_commands([("SCRIPT", "LOAD", BUDGET_LUA), ("SCRIPT", "EXISTS", sha)])
            async with (
                aiohttp.ClientSession() as session,
                session.post(bridge.url + "/v1/resp", data=body, headers=AUTH) as r,
            ):
                assert r.status == 200
                replies = parse_replies(await r.read())
            assert replies[0].to_python() == sha.encode() and replies[1].to_python() == [1]
        finally:
            await bridge.stop()

    asyncio.run(scenario())
    assert redis_server.command("EXISTS", sentinel) == b":1\r\n"


def test_no_token_no_bridge_unless_insecure_on_loopback() -> None:
    with pytest.raises(ValueError, match="--insecure"):
        BridgeConfig(redis="redis://h:1")
    with pytest.raises(ValueError, match="loopback"):
        BridgeConfig(redis="redis://h:1", host="0.0.0.0", insecure=True)
    assert BridgeConfig(redis="redis://h:1", insecure=True).token is None
    env = dict(os.environ, PYTHONPATH=str(ROOT / "controlplane"))
    env.pop("TOKENLIMIT_BRIDGE_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "tokenlimit.bridge", "--redis", "redis://127.0.0.1:1",
         "--listen", "0"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert "token" in result.stderr and "--insecure" in result.stderr


def test_the_redis_password_never_comes_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TOKENLIMIT_REDIS_PASSWORD"):
        BridgeConfig.from_options(redis="redis://:pw@h:1", port=0, environ={"X": "y"})
    config = BridgeConfig.from_options(
        redis="redis://h:1",
        port=0,
        environ={"TOKENLIMIT_BRIDGE_TOKEN": "t", "TOKENLIMIT_REDIS_PASSWORD": "from-env"},
    )
    assert config.target().password == "from-env"


def _spawn_bridge(redis_url: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`tokenlimit bridge` with the 1024 descriptors most hosts give a process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "controlplane"), PYTHONUNBUFFERED="1")
    env["TOKENLIMIT_BRIDGE_TOKEN"] = TOKEN

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenlimit.bridge", "--redis", redis_url, "--listen", "0",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        preexec_fn=limit_descriptors,
    )  # fmt: skip
    assert proc.stdout is not None
    found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline().decode())
    assert found, "the bridge did not start"
    return proc, f"http://127.0.0.1:{found.group(1)}"


def _hold(port: int, count: int) -> list[socket.socket]:
    """Connections that start a request and never finish it (slowloris)."""
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /v1/resp HTTP/1.1\r\nHost: bridge\r\nContent-Length: 14\r\n")
        held.append(s)
    return held


def _raise_own_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def test_held_partial_requests_do_not_starve_real_calls(redis_server: RedisServer) -> None:
    _raise_own_descriptor_limit(4096)
    proc, url = _spawn_bridge(redis_server.url, "--read-timeout-ms", "1000")
    port = int(url.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        held = _hold(port, 1020)
        started = time.monotonic()
        status = 0
        while time.monotonic() - started < 5 and status != 200:
            try:
                status, _ = asyncio.run(
                    asyncio.wait_for(_post(url, encode_command("PING"), AUTH), 2)
                )
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            if status != 200:
                time.sleep(0.1)
        assert status == 200, "real calls starved behind held connections"
        assert time.monotonic() - started < 3  # the read deadline (1 s) plus slack
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_a_full_bridge_answers_503_at_once(redis_server: RedisServer) -> None:
    proc, url = _spawn_bridge(redis_server.url, "--max-connections", "8")
    port = int(url.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        held = _hold(port, 8)
        time.sleep(0.2)
        started = time.monotonic()
        status, text = asyncio.run(_post(url, encode_command("PING"), AUTH))
        assert (status, text.split()[0]) == (503, "bridge-full")
        assert time.monotonic() - started < 1
        for s in held:
            s.close()
        held = []
        time.sleep(0.2)
        assert asyncio.run(_post(url, encode_command("PING"), AUTH))[0] == 200
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
