"""Higress's Redis ABI (`proxy_redis_call`) wired to a real redis-server, for the test host.

The Higress build of the filter sends its RESP commands through the host; handing them to a
real Redis over a socket lets a test drive the real .wasm against real Redis with no bridge in
between:

    host = Host(higress_wasm, redis_handler=redis_wire(server))
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tokenlimit.bridge.resp import ReplyParser

from support.redis_server import RedisServer

RECEIVE_BYTES = 65536
TIMEOUT_S = 2.0


def redis_wire(server: RedisServer) -> Callable[[bytes], bytes | None]:
    """A `redis_handler` for `Host`: one connection per command; None (a failed call, as Envoy
    reports a dead upstream) when Redis does not answer."""
    port = urlsplit(server.url).port
    assert port is not None, server.url

    def call(query: bytes) -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
                sock.sendall(query)
                parser, data = ReplyParser(), b""
                while True:
                    chunk = sock.recv(RECEIVE_BYTES)
                    if not chunk:
                        return None
                    data += chunk
                    if parser.feed(chunk):
                        return data
        except OSError:
            return None

    return call
