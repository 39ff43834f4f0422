"""One `tokenlimit jobs` process: the API and `workers` consumers on one event loop.

Every replica is the same process: the API on any of them serves any batch (all state is in
Redis) and their workers share one consumer group, so scaling out is adding replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

import aiohttp
from aiohttp import web

from tokenlimit.jobs.api import make_app
from tokenlimit.jobs.config import JobsConfig
from tokenlimit.jobs.credentials import CredentialBox
from tokenlimit.jobs.metrics import Metrics
from tokenlimit.jobs.queue import Queue
from tokenlimit.jobs.store import Store
from tokenlimit.jobs.worker import Worker

log = logging.getLogger("tokenlimit.jobs")
READY_LINE = "tokenlimit jobs listening on"
#: Connections to the gateway each process keeps at most (beyond it, workers queue).
GATEWAY_CONNECTIONS_MAX = 64


async def serve(config: JobsConfig, box: CredentialBox, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; prints the ready line once the API accepts connections.
    Credentials are kept encrypted with `box`'s first key (credentials.py)."""
    store = Store(config, box)
    queue = Queue(store.redis, config.prefix, config.claim_idle_ms)
    metrics = Metrics()
    await queue.ensure_group()
    runner = web.AppRunner(make_app(store, queue, metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    connector = aiohttp.TCPConnector(limit=GATEWAY_CONNECTIONS_MAX)
    session = aiohttp.ClientSession(connector=connector)
    # Consumer names are unique per process: a restarted process is a new consumer, and
    # what the old one held is taken over after claim_idle_ms.
    base = f"{socket.gethostname()}-{os.getpid()}"
    workers = [
        Worker(f"{base}-{i}", config, store, queue, metrics, session) for i in range(config.workers)
    ]
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    host, port = runner.addresses[0][:2]
    log.info(
        "credentials at rest: encrypted with the first of %d key(s) in %s",
        box.key_count,
        box.source,
    )
    print(
        f"{READY_LINE} http://{host}:{port} -> gateway {config.gateway}, {config.workers} workers",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
        await runner.cleanup()
        await store.close()


def run(config: JobsConfig, box: CredentialBox) -> None:
    """Serve until SIGINT or SIGTERM (blocking)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await serve(config, box, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
