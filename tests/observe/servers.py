"""Local servers for the observe tests: a Prometheus text page standing in for Envoy's admin
(the filter's labelled metrics are another helper's work; real Envoy has its own test in
test_observe_envoy.py) and an aiohttp webhook receiver recording what it is sent."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web


class Served:
    """An aiohttp app on 127.0.0.1, run on its own loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FakeEnvoy:
    """/stats/prometheus with counters a test sets; `admin_url` is what --envoy-admin takes."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {"tokenlimit_redis_circuit_open": 0}
        app = web.Application()
        app.router.add_get("/stats/prometheus", self._stats)
        self.served = Served(app)
        self.admin_url = self.served.url

    def add(self, series: str, n: float = 1) -> None:
        self.counters[series] = self.counters.get(series, 0) + n

    def text(self) -> str:
        lines = []
        for kind, values in (("counter", self.counters), ("gauge", self.gauges)):
            names = sorted({s.partition("{")[0] for s in values})
            for name in names:
                lines.append(f"# TYPE {name} {kind}")
                for series, value in sorted(values.items()):
                    if series.partition("{")[0] == name:
                        labelled = series if "{" in series else series + "{}"
                        lines.append(f"{labelled} {value:g}")
        return "\n".join(lines) + "\n"

    async def _stats(self, _: web.Request) -> web.Response:
        return web.Response(text=self.text())


class Receiver:
    """A webhook endpoint recording (path with query, JSON body); answers as robots do."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        self.served = Served(app)
        self.url = self.served.url

    async def _post(self, request: web.Request) -> web.Response:
        self.received.append((request.path_qs, json.loads(await request.read())))
        if request.path.startswith("/slack"):
            return web.Response(text="ok")  # Slack answers plain "ok"
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    def bodies(self, prefix: str) -> list[dict[str, Any]]:
        return [body for path, body in self.received if path.startswith(prefix)]
