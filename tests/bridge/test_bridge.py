"""Tests for the RESP-over-HTTP bridge (tokenlimit.bridge), against real redis-server processes:
pipelines come back byte for byte, in order, from the right database; probes and metrics; the
command line.

Nothing is mocked: every test talks HTTP over real sockets to an in-process bridge, which talks
to a real Redis (tests/support/redis_server.py). What it refuses is in test_bridge_refusals.py,
how it answers when Redis misbehaves in test_bridge_faults.py, the security boundary in
test_bridge_guard.py; the shared harness is tests/support/bridge_harness.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import redis as redis_py
from support.bridge_harness import NEVER_LOADED, async_test, bridge_client, direct
from support.redis_server import RedisServer
from tokenlimit.bridge.resp import encode_command, encode_commands, parse_replies

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- round trips

SCRIPT = "return {1, 'two', ARGV[1], {KEYS[1], false}, redis.status_reply('ok')}"


@async_test
async def test_eval_evalsha_byte_exact(redis_server: RedisServer) -> None:
    sha = parse_replies(redis_server.command("SCRIPT", "LOAD", SCRIPT))[0].value
    assert isinstance(sha, bytes)
    body = encode_commands(
        [
            ("EVAL", SCRIPT, 1, "{k}", "arg"),
            ("evalsha", sha, 1, "{k}", "arg\r\nwith crlf"),
            ("EVALSHA", hashlib.sha1(NEVER_LOADED.encode()).hexdigest(), 0),  # NOSCRIPT: a reply
            ("EVAL", "return redis.error_reply('MYERR custom')", 0),
            ("EVAL", "return nil", 0),
            ("EVAL", "return string.rep('x', 100000)", 0),
            ("SCRIPT", "EXISTS", sha, "0" * 40),
            ("script", "load", "return 7"),
            ("PING",),
            ("PING", "hello"),
        ]
    )
    async with bridge_client(redis_server.url) as c:
        a = await c.post(body)
    assert a.status == 200, a
    assert a.headers["content-type"] == "application/x-redis-resp"
    assert a.body == direct(redis_server, body, 10)
    replies = parse_replies(a.body)
    assert len(replies) == 10
    assert replies[0].to_python() == [1, b"two", b"arg", [b"{k}", None], "ok"]
    assert replies[2].raw == b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    assert replies[3].raw == b"-MYERR custom\r\n"
    assert replies[4].raw == b"$-1\r\n"
    assert replies[6].to_python() == [1, 0]
    assert replies[8].raw == b"+PONG\r\n"


@async_test
async def test_pipeline_order_and_time(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        a = await c.run(*[("EVAL", "return tonumber(ARGV[1]) * 2", 0, i) for i in range(64)])
        assert a.status == 200, a
        assert [r.to_python() for r in parse_replies(a.body)] == [i * 2 for i in range(64)]
        t = await c.run(("TIME",))
        time_reply = parse_replies(t.body)[0].to_python()
        assert isinstance(time_reply, list)
        seconds, micros = time_reply
        assert abs(int(seconds) - time.time()) < 5 and 0 <= int(micros) < 1_000_000


@async_test
async def test_selects_database(redis_server: RedisServer) -> None:
    key = "{tl}:db-test"
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    async with bridge_client(url) as c:
        a = await c.run(("EVAL", "return redis.call('SET', KEYS[1], 'v')", 1, key))
        assert a.body == b"+OK\r\n"
    client = redis_py.Redis(port=redis_server.port, db=3)
    try:
        assert client.get(key) == b"v"
        assert redis_py.Redis(port=redis_server.port, db=0).get(key) is None
    finally:
        client.delete(key)


@async_test
async def test_many_concurrent_callers_share_pipelined_connections(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url, pool_size=2) as c:

        async def one(i: int) -> None:
            if i % 3 == 0:  # some callers send a two-command pipeline
                a = await c.run(("EVAL", "return ARGV[1]", 0, f"a{i}"), ("PING", f"p{i}"))
                assert a.body == f"$%d\r\na{i}\r\n$%d\r\np{i}\r\n".encode() % (
                    len(str(i)) + 1,
                    len(str(i)) + 1,
                ), a
            else:
                a = await c.run(("EVAL", "return ARGV[1]", 0, f"v{i}"))
                assert a.body == b"$%d\r\nv%d\r\n" % (len(str(i)) + 1, i), a

        await asyncio.gather(*(one(i) for i in range(400)))
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="ok"}'] == 400
        idle = m['tokenlimit_bridge_pool_connections{state="idle"}']
        busy = m['tokenlimit_bridge_pool_connections{state="busy"}']
        assert 1 <= idle + busy <= 2


# --------------------------------------------------------------------------- probes, metrics


@async_test
async def test_readyz_and_metrics(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        assert (await c.get("/healthz")).status == 200
        ready = await c.get("/readyz")
        assert ready.status == 200 and ready.body == b"ready\n"
        sha = parse_replies((await c.run(("SCRIPT", "LOAD", "return 1"))).body)[0].value
        for _ in range(3):
            await c.run(("EVALSHA", sha, 0), ("EVAL", "return 2", 0))
        await c.run(("SET", "k", "v"))
        m = await c.get("/metrics")
        assert m.status == 200
        assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = m.body.decode()
        for outcome in ["ok", "unauthorized", "forbidden", "bad_request", "redis_unreachable",
                        "redis_auth_failed", "redis_timeout", "redis_error"]:  # fmt: skip
            assert f'tokenlimit_bridge_requests_total{{outcome="{outcome}"}} ' in text
        assert "# TYPE tokenlimit_bridge_request_seconds histogram" in text
        values = await c.metrics()
        assert values['tokenlimit_bridge_requests_total{outcome="ok"}'] == 4
        assert values['tokenlimit_bridge_requests_total{outcome="forbidden"}'] == 1
        assert values['tokenlimit_bridge_commands_total{command="evalsha"}'] == 3
        assert values['tokenlimit_bridge_commands_total{command="eval"}'] == 3
        assert values['tokenlimit_bridge_commands_total{command="script_load"}'] == 1
        assert values["tokenlimit_bridge_request_seconds_count"] == 5
        assert values['tokenlimit_bridge_request_seconds_bucket{le="+Inf"}'] == 5
        buckets = [
            v for k, v in values.items() if k.startswith("tokenlimit_bridge_request_seconds_bucket")
        ]
        assert buckets == sorted(buckets)
        assert values['tokenlimit_bridge_pool_connections{state="idle"}'] >= 1
        assert values['tokenlimit_bridge_pool_connections{state="busy"}'] == 0


# --------------------------------------------------------------------------- the command


def test_command_line(redis_server: RedisServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret-token\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "controlplane"), PYTHONUNBUFFERED="1")
    env.pop("TOKENLIMIT_BRIDGE_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenlimit.bridge", "--redis", redis_server.url,
         "--listen", "0", "--token-file", str(token_file), "--timeout-ms", "400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.fullmatch(
            r"tokenlimit bridge listening on http://127\.0\.0\.1:(\d+) → redis "
            r"127\.0\.0\.1:(\d+)/0\n",
            line,
        )
        assert m, line
        assert int(m.group(2)) == redis_server.port

        async def call() -> tuple[int, bytes, int]:
            url = f"http://127.0.0.1:{m.group(1)}/v1/resp"
            async with aiohttp.ClientSession() as s:
                async with s.post(url, data=encode_command("PING")) as r:
                    denied = r.status
                async with s.post(
                    url,
                    data=encode_command("PING"),
                    headers={"authorization": "Bearer cli-secret-token"},
                ) as r:
                    return r.status, await r.read(), denied

        status, body, denied = asyncio.run(call())
        assert (status, body, denied) == (200, b"+PONG\r\n", 401)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert "redis connected" in err
        assert "cli-secret-token" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
