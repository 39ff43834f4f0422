"""The bridge refuses what it must: commands outside its list, malformed RESP, a missing or wrong
token -- and nothing reaches Redis when it does. Real sockets and a real Redis, as in
tests/bridge/test_bridge.py; the config half reads token and password from files or env.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.bridge_harness import async_test, bridge_client
from support.redis_server import RedisServer
from tokenlimit.bridge.config import BridgeConfig
from tokenlimit.bridge.resp import encode_command

# --------------------------------------------------------------------------- refusals


@async_test
async def test_disallowed_commands_are_403_and_nothing_runs(redis_server: RedisServer) -> None:
    key = "{tl}:must-not-exist"
    async with bridge_client(redis_server.url) as c:
        for command, name in [
            (("SET", "a", "b"), "SET"),
            (("flushall",), "flushall"),
            (("SCRIPT", "FLUSH"), "SCRIPT FLUSH"),
            (("SCRIPT",), "SCRIPT"),
            (("CONFIG", "SET", "requirepass", "x"), "CONFIG"),
            (("DEBUG", "SLEEP", "1"), "DEBUG"),
            (("HELLO", "3"), "HELLO"),
            (("x" * 100,), "x" * 64 + "..."),
        ]:
            a = await c.run(command)
            assert a.status == 403, a
            assert a.error == "command-not-allowed"
            assert a.body.decode() == f"command not allowed: {name}\n"
        # one bad command refuses the whole pipeline before anything is sent
        a = await c.run(
            ("EVAL", "return redis.call('SET', KEYS[1], '1')", 1, key), ("SET", key, "2")
        )
        assert a.status == 403 and a.error == "command-not-allowed"
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="forbidden"}'] == 9
        assert m['tokenlimit_bridge_commands_total{command="eval"}'] == 0
    assert redis_server.command("EXISTS", key) == b":0\r\n"


@async_test
async def test_malformed_requests_are_400(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url, max_body=4096) as c:
        for body in [
            b"",
            b"PING\r\n",
            b"*1\r\n$4\r\nPING",
            b"*1\r\n$5\r\nPING\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$4\r\nPING\r\ngarbage",
            encode_command("PING") * 65,
            b"GET / HTTP/1.1\r\n\r\n",
        ]:
            a = await c.post(body)
            assert a.status == 400, (body, a)
            assert a.error == "bad-request"
            assert a.body.startswith(b"bad RESP: ")
        a = await c.post(encode_command("EVAL", "x" * 5000, 0))
        assert a.status == 413 and a.error == "bad-request", a
        a = await c.run(("PING",), headers={"x-tokenlimit-timeout-ms": "soon"})
        assert a.status == 400 and a.error == "bad-request", a
        assert (await c.get("/v1/resp")).status == 405
        assert (await c.get("/nope")).status == 404
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="bad_request"}'] == 10
        # the bridge is still fine
        assert (await c.run(("PING",))).body == b"+PONG\r\n"


@async_test
async def test_bearer_token(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url, token="t0k3n-value") as c:
        for headers in [None, {"authorization": "Bearer wrong"}, {"authorization": "t0k3n-value"}]:
            a = await c.run(("PING",), headers=headers)
            assert a.status == 401 and a.error == "unauthorized", a
            assert b"t0k3n" not in a.body
        a = await c.run(("PING",), headers={"authorization": "Bearer t0k3n-value"})
        assert a.status == 200 and a.body == b"+PONG\r\n"
        assert (await c.get("/healthz")).status == 200  # probes need no token
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="unauthorized"}'] == 3


def test_token_and_password_come_from_files_or_env(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    pw_file = tmp_path / "pw"
    pw_file.write_text("pw-from-file\n")
    config = BridgeConfig.from_options(
        redis="redis://u@h:1/2",
        port=0,
        token_file=token_file,
        redis_password_file=pw_file,
        environ={"TOKENLIMIT_BRIDGE_TOKEN": "from-env"},
    )
    assert config.token == "from-file"
    target = config.target()
    assert (target.host, target.port, target.db, target.username) == ("h", 1, 2, "u")
    assert target.password == "pw-from-file"
    assert "pw-from-file" not in repr(config) and "from-file" not in repr(target)
    env_config = BridgeConfig.from_options(
        redis="redis://h:1", port=0, environ={"TOKENLIMIT_BRIDGE_TOKEN": "from-env"}
    )
    assert env_config.token == "from-env"
    assert env_config.target().password is None
    with pytest.raises(ValueError, match="no token"):
        BridgeConfig.from_options(redis="redis://h", port=0, environ={})
    with pytest.raises(ValueError):
        BridgeConfig(redis="rediss://h:1", token="t")
    with pytest.raises(ValueError):
        BridgeConfig(redis="redis://h:1/x", token="t")
