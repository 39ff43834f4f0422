"""The bridge with redis.asyncio (+ hiredis) in place of its own pool: the comparison that
decides whether ``tokenlimit.bridge.pool`` stays hand-written (bench/bridge.py --pools).

Run as a script it serves exactly like ``python -m tokenlimit.bridge`` (same options), with
:class:`RedisPyPool` swapped in. Two things it cannot do the same way, whatever it costs:
redis-py decodes replies into Python values, so the bytes are re-encoded here and a simple
string (``+OK``) comes back as a bulk string -- the bridge's byte-for-byte promise breaks;
and a connection is held for the whole request, so callers do not share a pipeline.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis.asyncio as aredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "controlplane"))

from tokenlimit.bridge.config import RedisTarget
from tokenlimit.bridge.connection import RedisFault
from tokenlimit.bridge.resp import Reply


def _reply(value: object) -> Reply:
    """A decoded redis-py value back into RESP2 (simple strings become bulk strings)."""
    if isinstance(value, ResponseError):
        text = str(value).encode()
        return Reply("-", text, b"-" + text + b"\r\n")
    if value is None:
        return Reply("$", None, b"$-1\r\n")
    if isinstance(value, int):
        return Reply(":", value, b":%d\r\n" % value)
    if isinstance(value, bytes):
        return Reply("$", value, b"$%d\r\n%s\r\n" % (len(value), value))
    if isinstance(value, list):
        items = [_reply(v) for v in value]
        return Reply("*", items, b"*%d\r\n" % len(items) + b"".join(i.raw for i in items))
    raise TypeError(f"unexpected reply {value!r}")


class RedisPyPool:
    """Same surface as tokenlimit.bridge.pool.RedisPool, on redis.asyncio's pool."""

    def __init__(self, target: RedisTarget, size: int, timeout: float, backoff_max: float):
        self.target = target
        self._pool = aredis.BlockingConnectionPool(
            max_connections=size,
            timeout=timeout,
            host=target.host,
            port=target.port,
            db=target.db,
            username=target.username,
            password=target.password,
            socket_connect_timeout=timeout,
        )

    async def execute(self, payload: bytes, count: int, timeout: float) -> list[bytes]:
        where = f"redis {self.target.describe()}"
        try:
            async with asyncio.timeout(timeout):
                conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    await conn.send_packed_command(payload, check_health=False)
                    replies = []
                    for _ in range(count):
                        try:
                            value = await conn.read_response(disable_decoding=True)
                        except ResponseError as exc:
                            value = exc
                        replies.append(_reply(value))
                except BaseException:
                    await conn.disconnect()
                    raise
                finally:
                    await self._pool.release(conn)
        except TimeoutError:
            raise RedisFault("redis-timeout", f"no reply from {where}") from None
        except AuthenticationError as exc:
            raise RedisFault("redis-auth-failed", f"{where}: {exc}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisFault("redis-unreachable", f"{where}: {exc}") from None
        return [reply.raw for reply in replies]  # the pool's contract: Redis' wire bytes

    def submit(self, *_args: object) -> bool:
        """No task-free path on redis.asyncio: the bridge then awaits execute()."""
        return False

    def counts(self) -> tuple[int, int]:
        idle = len(self._pool._available_connections)
        return idle, len(self._pool._in_use_connections)

    def warm_up(self) -> None:
        """redis.asyncio connects on first use."""

    async def close(self) -> None:
        await self._pool.disconnect()


if __name__ == "__main__":
    from tokenlimit.bridge import server
    from tokenlimit.cli.run import bridge_command

    setattr(server, "RedisPool", RedisPyPool)  # noqa: B010 (a benchmark swap)
    bridge_command(prog_name="bench/_redispy_pool.py")
