"""bench/overhead.py's Redis mode (`--redis`, issue 17): a real redis-server and the tokenlimit
bridge in front of it, and the filter config that keeps the same budget there. The gateway
with this config is measured beside the one with the local store, in the same rounds, so
`redis ÷ local` is the Redis store's throughput cost, and the gateway's own counters say how
many budget-script calls an admitted request made."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenlimit.dev import process
from tokenlimit.model import ENVOY_BRIDGE_CLUSTER, FilterConfig, parse_filter_config
from tokenlimit.render.envoy import Upstream

ROOT = Path(__file__).resolve().parents[1]
BRIDGE_READY = r"tokenlimit bridge listening on (http://\S+)"


@contextlib.contextmanager
def redis_and_bridge(work: Path) -> Iterator[tuple[Upstream, int]]:
    """A redis-server and a bridge (loopback, no token) in front of it; yields the bridge and
    its pid (its CPU time is the Redis store's biggest cost on stock Envoy)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.redis_server import RedisServer

    with RedisServer() as server:
        log = work / "bridge.log"
        argv = [sys.executable, "-m", "tokenlimit.bridge", "--redis", server.url]
        argv += ["--host", "127.0.0.1", "--listen", str(process.free_port()), "--insecure"]
        bridge = process.spawn(argv, log, cwd=work)
        try:
            found = process.wait_for_line(bridge, log, re.compile(BRIDGE_READY), 20, "the bridge")
            yield Upstream.parse(found.group(1)), bridge.pid
        finally:
            process.terminate(bridge)


def redis_filter_config(base: FilterConfig, lease_fraction: float = 0.0) -> FilterConfig:
    """`base` (the local-store config) with its budget kept in Redis through the bridge;
    `lease_fraction` > 0 (`--lease`, issue 17): with leases for hot keys, each worker taking
    that share of the budget at a time (docs/redis.md, "Leases")."""
    document: dict[str, Any] = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["redis"] = {"service_name": ENVOY_BRIDGE_CLUSTER, "timeout": 500}
    if lease_fraction > 0:
        document["lease"] = {"fraction": lease_fraction}
    return parse_filter_config(document)


def calls_per_request(before: dict[str, int], after: dict[str, int], bridge_cpu_s: float) -> str:
    """Budget-script calls and bridge CPU per admitted request (the gateway's own counters and
    the bridge process's CPU time, warm-up included); admissions coalesced: those that went in
    another's call (admit_many, docs/redis.md)."""

    def delta(name: str) -> int:
        key = f"wasmcustom.tokenlimit.{name}"
        return after.get(key, 0) - before.get(key, 0)

    calls, allowed = delta("redis_calls"), delta("requests_allowed")
    batched, coalesced = delta("redis_settles_batched"), delta("redis_admissions_coalesced")
    return (
        f"Redis gateway: {calls} budget-script calls for {allowed} admitted requests = "
        f"{calls / allowed if allowed else 0:.3f} per request ({batched} settlements batched, "
        f"{coalesced} admissions coalesced, "
        f"{delta('redis_failures')} failed calls, {delta('store_fallbacks')} fallbacks); "
        f"bridge CPU {bridge_cpu_s * 1e6 / allowed if allowed else 0:.0f} µs per request."
    )
