"""The bridge's own HTTP/1.1 server (tokenlimit/bridge/http.py) on raw sockets: what a client
on a keep-alive connection sees -- answers in request order, refusals before the body, bounds on
heads and bodies, the read deadline on a body, HEAD, Expect: 100-continue, chunked bodies, and
garbage answered with 400. Real sockets and a real Redis (tests/support/bridge_harness.py)."""

from __future__ import annotations

import asyncio
import time

from support.bridge_harness import SLACK, async_test, bridge_client
from support.redis_server import RedisServer
from tokenlimit.bridge.resp import encode_command

PING = encode_command("PING")


def post(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return b"POST /v1/resp HTTP/1.1\r\nhost: b\r\n%scontent-length: %d\r\n\r\n%s" % (
        head.encode(),
        len(body),
        body,
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True


@async_test
async def test_pipelined_requests_are_answered_in_order(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        slow = encode_command("EVAL", "return tonumber(ARGV[1]) * 2", 0, 21)
        writer.write(post(slow) + b"GET /healthz HTTP/1.1\r\n\r\n" + post(b"junk") + post(PING))
        answers = [await read_answer(reader) for _ in range(4)]
        assert [(s, b) for s, _, b in answers] == [
            (200, b":42\r\n"),
            (200, b"ok\n"),
            (400, b"bad RESP: expected '*' (command array '*N') at byte 0, got b'j'\n"),
            (200, b"+PONG\r\n"),
        ]
        writer.close()


@async_test
async def test_a_client_that_pipelines_hundreds_gets_every_answer_in_order(
    redis_server: RedisServer,
) -> None:
    # past PIPELINE_MAX owed answers the bridge stops reading until it has answered; nothing is
    # lost or reordered, and a client that reads late still gets everything
    async with bridge_client(redis_server.url) as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        calls = [encode_command("EVAL", "return ARGV[1]", 0, f"n{i}") for i in range(300)]
        writer.write(b"".join(post(call) for call in calls))
        await asyncio.sleep(0.3)
        for i in range(300):
            assert (await read_answer(reader))[::2] == (
                200,
                b"$%d\r\nn%d\r\n" % (len(str(i)) + 1, i),
            )
        writer.close()


@async_test
async def test_a_bad_token_is_refused_before_the_body_and_the_connection_stays(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url, token="t0ken") as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        # the head only: the 401 must not wait for a body that has not come
        writer.write(
            b"POST /v1/resp HTTP/1.1\r\nauthorization: Bearer no\r\ncontent-length: 14\r\n\r\n"
        )
        status, headers, _ = await read_answer(reader)
        assert (status, headers["x-tokenlimit-bridge-error"]) == (401, "unauthorized")
        writer.write(PING + post(PING, "authorization: Bearer t0ken"))
        assert (await read_answer(reader))[::2] == (200, b"+PONG\r\n")
        writer.close()


@async_test
async def test_bodies_past_the_bound_are_413_and_the_connection_closes(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url, max_body=4096) as c:
        for request in [
            b"POST /v1/resp HTTP/1.1\r\ncontent-length: 4097\r\n\r\n",
            b"POST /v1/resp HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"800\r\n" + b"x" * 2048 + b"\r\n" + b"801\r\n" + b"x" * 2049 + b"\r\n0\r\n\r\n",
        ]:  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
            writer.write(request)
            status, headers, _ = await read_answer(reader)
            assert (status, headers["x-tokenlimit-bridge-error"]) == (413, "bad-request")
            assert headers["connection"] == "close"
            assert await closed(reader)
            writer.close()


@async_test
async def test_a_chunked_body_and_expect_continue_are_understood(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url) as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        writer.write(
            b"POST /v1/resp HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\n*1\r\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(PING) - 3, PING[3:])
        )
        assert (await read_answer(reader))[::2] == (200, b"+PONG\r\n")
        writer.write(
            b"POST /v1/resp HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 14\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(PING)
        assert (await read_answer(reader))[::2] == (200, b"+PONG\r\n")
        writer.close()


@async_test
async def test_a_body_that_stops_coming_is_408_within_the_read_deadline(
    redis_server: RedisServer,
) -> None:
    async with bridge_client(redis_server.url, read_timeout_ms=300) as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        started = time.monotonic()
        writer.write(b"POST /v1/resp HTTP/1.1\r\ncontent-length: 14\r\n\r\n*1\r\n")
        status, headers, body = await read_answer(reader)
        assert (status, headers["x-tokenlimit-bridge-error"]) == (408, "bad-request")
        assert body == b"the body did not arrive in time\n"
        assert 0.3 <= time.monotonic() - started < 0.3 + SLACK
        assert await closed(reader)
        m = await c.metrics()
        assert m['tokenlimit_bridge_requests_total{outcome="bad_request"}'] == 1


@async_test
async def test_garbage_and_huge_heads_are_400_and_closed(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        for request in [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n",
        ]:
            reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
            writer.write(request)
            status, headers, _ = await read_answer(reader)
            assert status == 400 and headers["connection"] == "close"
            assert await closed(reader)
            writer.close()


@async_test
async def test_head_and_http_1_0(redis_server: RedisServer) -> None:
    async with bridge_client(redis_server.url) as c:
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        writer.write(b"HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 3\r\n" in head
        assert (await read_answer(reader))[::2] == (200, b"ok\n")  # HEAD sent no body
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", c.bridge.port)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, body = await read_answer(reader)
        assert (status, body, headers["connection"]) == (200, b"ok\n", "close")
        assert await closed(reader)
        writer.close()
