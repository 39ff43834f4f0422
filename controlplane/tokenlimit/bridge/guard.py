"""What keeps the bridge alive under hostile connections and what it lets run on Redis.

Connections (`ConnectionGuard` here, the deadline in tokenlimit.bridge.http): a cap on open
connections and a read deadline. A client that
opens connections and sends a request slowly, or never finishes it (slowloris), held one file
descriptor each for as long as it liked: about 1,020 of them exhausted a process with the
usual 1,024 descriptors, and every filter call then timed out. Now each connection must
deliver a whole request head within `read_timeout` of its first byte (or of connecting), or
it is closed; and past `max_connections` a new connection is answered at once with a 503
(`x-tokenlimit-bridge-error: bridge-full`) and closed, so the bridge never runs out of
descriptors and a caller learns why instead of waiting.

Scripts (`Scripts`): `EVAL` runs any Lua, and Lua may call any Redis command (FLUSHALL, KEYS,
an endless loop that blocks Redis for every gateway). The bridge runs only the scripts it
knows by SHA-1: tokenlimit's own, shipped in the package as the filter embeds them,
contract/min/*.lua (budget.lua, higress_compat.lua, and cache.lua for the response cache: its
get and set are the only way the filter reads or writes cached answers through the bridge).
Those are contract/*.lua without comments (tokenlimit.contract_min); the readable sources are
not allowed, since nothing sends them.
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from typing import cast

from tokenlimit.contract_min import MIN_FOLDER

FULL_ERROR = "bridge-full"
# Descriptors kept for the Redis pool, the listening socket, logs and imports.
DESCRIPTORS_RESERVE = 128

Registry = dict[asyncio.BaseTransport, asyncio.Protocol]


def contract_scripts() -> tuple[bytes, ...]:
    """Every contract/min/*.lua shipped with the package (the filter embeds the same files),
    and calendar.lua + budget.lua joined: the script the filter sends (calendar.lua says why)."""
    folder = files("tokenlimit") / "contract" / MIN_FOLDER
    bodies = {entry.name: entry.read_bytes() for entry in folder.iterdir()}
    scripts = tuple(bodies[name] for name in sorted(bodies) if name.endswith(".lua"))
    if "calendar.lua" in bodies and "budget.lua" in bodies:
        scripts += (bodies["calendar.lua"] + bodies["budget.lua"],)
    return scripts


class Scripts:
    """The scripts `EVAL`, `EVALSHA` and `SCRIPT LOAD` may name, by SHA-1 (lowercase hex)."""

    def __init__(self, bodies: Iterable[bytes]) -> None:
        self.shas = frozenset(hashlib.sha1(body).hexdigest().encode() for body in bodies)

    def refusal(self, command: Sequence[bytes]) -> str | None:
        """Why this command may not run (its script is unknown), or None."""
        name = command[0].upper()
        if name == b"EVAL" and len(command) > 1:
            sha = hashlib.sha1(command[1]).hexdigest().encode()
        elif name == b"EVALSHA" and len(command) > 1:
            sha = command[1].lower()
        elif name == b"SCRIPT" and len(command) > 2 and command[1].upper() == b"LOAD":
            sha = hashlib.sha1(command[2]).hexdigest().encode()
        else:
            return None
        if sha in self.shas:
            return None
        shown = sha[:40].decode("ascii", "replace")
        return f"script not allowed: {shown} is not one of tokenlimit's scripts"


def _full_response(max_connections: int) -> bytes:
    body = f"the bridge has {max_connections} connections open (its cap); retry shortly\n"
    return (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"x-tokenlimit-bridge-error: {FULL_ERROR}\r\n"
        "connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n{body}"
    ).encode()


class _Full(asyncio.Protocol):
    """A connection past the cap: one 503, then closed."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        writer = cast(asyncio.Transport, transport)
        writer.write(self._answer)
        writer.close()


class ConnectionGuard:
    """The connection cap around the HTTP protocol's factory (the read deadline is kept by
    each connection itself: tokenlimit.bridge.http)."""

    def __init__(self, factory: Callable[[Registry], asyncio.Protocol], max_connections: int):
        self._factory = factory
        self.max_connections = max_connections
        self.open: Registry = {}  # every connection counted against the cap, while open
        self._full = _full_response(max_connections)

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self.max_connections:
            return _Full(self._full)
        return self._factory(self.open)


def ensure_descriptors(max_connections: int) -> None:
    """Raises the soft descriptor limit to fit the cap, or says why the cap cannot be met."""
    needed = max_connections + DESCRIPTORS_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(
            f"--max-connections {max_connections} needs {needed} file descriptors, but this "
            f"process may open at most {hard} (ulimit -Hn): lower --max-connections to "
            f"{max(1, hard - DESCRIPTORS_RESERVE)} or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
