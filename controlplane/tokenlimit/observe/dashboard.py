"""`tokenlimit dashboard`: a live panel over Envoy's stats and the Redis budgets.

One aiohttp app: `GET /` is page.html (inline script and SVG charts, nothing from a CDN: the
panel must work where the network is off), `GET /api/snapshot` the JSON it draws
(snapshot.py). A background task looks at the sources every `interval_s` (in a thread: the
Redis and admin reads block) and keeps the curves' history, so every browser sees the same
numbers and Envoy is polled once however many tabs are open.

Access: loopback by default. On any other address the command requires a token, and every
request must carry it (`Authorization: Bearer T`, or `?token=T`, which the page passes on to
its API calls), compared in constant time. The page shows callers only as hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from tokenlimit.observe import snapshot
from tokenlimit.observe.sources import Sources

LOG = logging.getLogger("tokenlimit.dashboard")
INTERVAL_S_DEFAULT = 5.0
SNAPSHOT_KEY = web.AppKey("snapshot", dict)
TOKEN_KEY = web.AppKey("token", str)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page() -> str:
    return (importlib.resources.files("tokenlimit.observe") / "page.html").read_text()


@web.middleware
async def _require_token(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if token:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        given = given or request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(status=401, text="a token is required: ?token=... or Bearer\n")
    response: web.StreamResponse = await handler(request)
    return response


async def _index(_: web.Request) -> web.Response:
    return web.Response(
        text=page(),
        content_type="text/html",
        headers={"cache-control": "no-store", "content-security-policy": _CSP},
    )


# Everything the page needs is inline; nothing may load from elsewhere.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:"
)


async def _snapshot(request: web.Request) -> web.Response:
    return web.json_response(request.app[SNAPSHOT_KEY], headers={"cache-control": "no-store"})


class Poller:
    """Looks at the sources on an interval and publishes the panel's JSON."""

    def __init__(self, sources: Sources, app: web.Application, interval_s: float) -> None:
        self.sources = sources
        self.app = app
        self.interval_s = interval_s
        self.history = snapshot.History()

    def look(self) -> dict[str, Any]:
        observation, rows, errors = self.sources.observe()
        if observation.stats is not None:
            self.history.add(observation.at, observation.stats)
        redis = "off" if self.sources.redis_url is None else "ok"
        if observation.store_error:
            redis = "unavailable"
        return snapshot.build(
            observation.at, observation.stats, rows, errors, self.history, redis=redis
        )

    async def run(self) -> None:
        while True:
            try:
                self.app[SNAPSHOT_KEY].update(await asyncio.to_thread(self.look))
            except Exception:  # keep the last picture; say why once per look
                LOG.exception("dashboard: looking at the sources failed")
            await asyncio.sleep(self.interval_s)


def make_app(
    sources: Sources, *, token: str = "", interval_s: float = INTERVAL_S_DEFAULT
) -> web.Application:
    app = web.Application(middlewares=[_require_token])
    app[TOKEN_KEY] = token
    app[SNAPSHOT_KEY] = {"at": None, "errors": ["no look yet"]}
    app.router.add_get("/", _index)
    app.router.add_get("/api/snapshot", _snapshot)
    poller = Poller(sources, app, interval_s)

    async def polling(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(poller.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(polling)
    return app


def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until Ctrl-C, printing the URL once bound (port 0: any free port)."""

    async def main() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        print(f"tokenlimit dashboard on http://{shown}:{bound}/", flush=True)
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


__all__ = ["is_loopback", "make_app", "serve"]
