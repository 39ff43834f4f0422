"""Benchmark: what the Redis store's call pattern costs Redis at fleet scale (issue 17).

What it answers: for G gateways x R requests/s over K keys, how many budget-script calls a
second reach Redis, how much Redis CPU they take, how many Redis Cluster shards that needs, and
whether every charge lands exactly once -- for the call pattern before issue 17 (an admit and a
settle call per request) and after it (settlements queued per worker and carried by the next
admission or a 50 ms tick; with and without the per-worker cache of exhausted counters; and
with leases for hot keys: each worker takes a slice of a key's budget in one `lease` call and
admits against it locally, filter/src/store/lease.zig).

How (nothing mocked: a real redis-server from tests/support/redis_server.py and the real
contract/budget.lua, called with exactly the arguments the filter sends, request markers
included): gateway workers are simulated in virtual time. Each sampled worker runs at the full
per-worker rate (R / workers per gateway) and every Redis call it would make is made, one round
trip each as a gateway makes them, with the virtual clock passed to the script (so windows are
deterministic). Python cannot issue a million calls a second, so the run is scaled down in the
NUMBER of workers simulated, never in the per-worker rate (which decides how many settlements a
call carries); the report then extrapolates linearly to the whole fleet: calls/s and Redis CPU
per request are measured, multiplied by G x R. What does not extrapolate linearly is said where
it matters: the overshoot past a hot key's limit grows with the number of workers (each may admit
for up to one settle delay before it sees the others' charges), and all counters of one rule
share one hash tag, so one rule lives on ONE cluster shard whatever the key count.

    .venv/bin/python bench/redis_scale.py [--gateways 100] [--rps 10000] [--workers-per-gateway 4]
        [--sample-workers 8] [--seconds 2] [--keys 1000000]

Prints a Markdown report on stdout, progress on stderr. About a minute.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.redis_server import RedisServer  # noqa: E402

SCRIPT = (ROOT / "contract" / "min" / "calendar.lua").read_text() + (
    ROOT / "contract" / "min" / "budget.lua"
).read_text()
FLUSH_PERIOD_MS = 50  # filter/src/store/batch.zig flush_period_ms
REFUNDABLE_HOLD_MS = 1000  # filter/src/store/refusals.zig (not used: postpaid fixed windows)
WINDOW_MS = 60_000
TOKENS_PER_REQUEST = 100
SERVICE_MS = 200  # how long a request is with the upstream between admit and settle
EPOCH_MS = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS + 1_000  # a window just began
CORE_TARGET = 0.7  # a Redis shard (one core) run at most 70 % busy


@dataclass
class Scenario:
    name: str
    keys: int
    limit: int  # tokens a minute per key


@dataclass
class Mode:
    name: str
    batched: bool
    refusal_cache: bool
    lease_fraction: float = 0.0  # leases for hot keys (store/lease.zig); 0: none


LEASE_FRACTION = 0.05
MODES = [
    Mode("before: admit + settle per request", batched=False, refusal_cache=False),
    Mode("after: batched settlements", batched=True, refusal_cache=False),
    Mode("after: batched + refusal cache", batched=True, refusal_cache=True),
    Mode(
        f"after: + leases ({LEASE_FRACTION})",
        batched=True,
        refusal_cache=True,
        lease_fraction=LEASE_FRACTION,
    ),
]


@dataclass
class Worker:
    """One gateway worker's Redis state: its queue of settlements (per rule: one rule here)
    and its cache of exhausted counters."""

    index: int
    queued: list[tuple[str, str]] = field(default_factory=list)  # (counter key, marker)
    sent_ms: int | None = None
    refused_until: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> until, used
    # Leases: key -> [remaining, window end ms] of this worker's slice.
    slices: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Result:
    requests: int = 0
    admitted: int = 0
    refused_locally: int = 0
    calls: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    charged_expected: int = 0
    charged_in_redis: int = 0
    hot_used: int = 0
    limit: int = 0
    held: int = 0  # leases: granted to workers, not spent when the run ended


class Simulation:
    def __init__(self, client: redis.Redis, sha: str, scenario: Scenario, mode: Mode) -> None:
        self.client, self.sha, self.scenario, self.mode = client, sha, scenario, mode
        self.result = Result(limit=scenario.limit)
        self.rule = f"{{scale{abs(hash((scenario.name, mode.name))) % 10**6}}}"
        self.ids = itertools.count()
        self.order = itertools.count()
        self.heap: list[tuple[int, int, str, Worker, tuple[str, str]]] = []

    def key(self, index: int) -> str:
        return f"tokenlimit:{self.rule}:per_header:x-api-key:tokens:60:{index:07d}"

    def marker(self) -> str:
        return f"tokenlimit:{self.rule}:req:{next(self.ids)}"

    def call(self, keys: list[str], args: list[int | str]) -> object:
        self.result.calls += 1
        return self.client.evalsha(self.sha, len(keys), *keys, *args)

    # -- what the filter sends (filter/src/store/script.zig) ------------------------------------
    def admission_args(self) -> list[int | str]:
        return [0, 0, WINDOW_MS, self.scenario.limit, 0]  # force, fixed, window, limit, amount

    def entry(self, key: str, marker: str, now_ms: int) -> tuple[list[str], list[int | str]]:
        marker, _, covered = marker.partition("|")  # leases: what the slice covered
        args: list[int | str] = ["settle", 1, now_ms - SERVICE_MS, ""]
        args += [0, WINDOW_MS, self.scenario.limit, int(covered or 0), TOKENS_PER_REQUEST]
        return [key, marker], args

    def lease(self, worker: Worker, key: str, now_ms: int) -> tuple[bool, str]:
        """A request its worker's slice cannot cover: one `lease` call carries the slice's
        remainder back and takes the next slice (postpaid: the request needs nothing)."""
        marker = self.marker()
        remaining, end_ms = worker.slices.get(key, [0, 0])
        carry = remaining if now_ms < end_ms else 0
        want = max(1, int(self.scenario.limit * self.mode.lease_fraction))
        args: list[int | str] = ["lease", now_ms, 0, WINDOW_MS, self.scenario.limit, want, 0]
        reply = self.call([key, marker], [*args, carry, end_ms if carry else 0])
        assert isinstance(reply, list)
        refused, used, limit, reset_ms, grant = reply[0], reply[2], reply[3], reply[4], reply[5]
        worker.slices[key] = [grant, now_ms + reset_ms]
        if used >= limit:
            worker.refused_until[key] = (now_ms + reset_ms, used)
        return refused == 0, marker

    def leased(self, worker: Worker, key: str, now_ms: int) -> bool:
        """Admitted against the worker's slice (postpaid: while anything is left)."""
        held = worker.slices.get(key)
        return held is not None and held[0] >= 1 and now_ms < held[1]

    def settle_leased(self, worker: Worker, key: str, marker: str, now_ms: int) -> None:
        """The charge comes out of the slice; what the slice cannot cover goes to Redis as a
        settlement (its reservation raised by what the slice gave), queued as any other."""
        self.result.charged_expected += TOKENS_PER_REQUEST
        held = worker.slices.setdefault(key, [0, 0])
        if now_ms < held[1] and held[0] >= TOKENS_PER_REQUEST:
            held[0] -= TOKENS_PER_REQUEST
            return
        covered = held[0] if now_ms < held[1] else 0
        held[0] -= covered
        worker.queued.append((key, f"{marker}|{covered}"))
        idle = worker.sent_ms is None or now_ms - worker.sent_ms >= FLUSH_PERIOD_MS
        if len(worker.queued) == 1 and idle:
            self.flush(worker, now_ms)

    def admit(self, worker: Worker, key: str, now_ms: int) -> tuple[bool, str]:
        if self.mode.lease_fraction > 0:
            return self.lease(worker, key, now_ms)
        marker = self.marker()
        if self.mode.batched and worker.queued:
            keys: list[str] = []
            args: list[int | str] = ["batch_admit", now_ms, len(worker.queued)]
            for queued_key, queued_marker in worker.queued:
                entry_keys, entry_args = self.entry(queued_key, queued_marker, now_ms)
                keys += entry_keys
                args += entry_args
            worker.queued.clear()
            worker.sent_ms = now_ms
            reply = self.call([*keys, key, marker], [*args, *self.admission_args()])
        else:
            reply = self.call([key, marker], ["admit", now_ms, *self.admission_args()])
        assert isinstance(reply, list)
        refused, used, limit, reset_ms = reply[0], reply[2], reply[3], reply[4]
        if self.mode.refusal_cache and used >= limit:
            worker.refused_until[key] = (now_ms + reset_ms, used)
        return refused == 0, marker

    def settle(self, worker: Worker, key: str, marker: str, now_ms: int) -> None:
        self.result.charged_expected += TOKENS_PER_REQUEST
        if not self.mode.batched:
            args: list[int | str] = ["settle", now_ms, 0, WINDOW_MS, self.scenario.limit, 0]
            self.call([key, marker], [*args, TOKENS_PER_REQUEST, now_ms - SERVICE_MS])
            return
        worker.queued.append((key, marker))
        idle = worker.sent_ms is None or now_ms - worker.sent_ms >= FLUSH_PERIOD_MS
        if len(worker.queued) == 1 and idle:
            self.flush(worker, now_ms)

    def flush(self, worker: Worker, now_ms: int) -> None:
        if not worker.queued:
            return
        keys: list[str] = []
        args: list[int | str] = ["settle_batch", now_ms, len(worker.queued)]
        for key, marker in worker.queued:
            entry_keys, entry_args = self.entry(key, marker, now_ms)
            keys += entry_keys
            args += entry_args
        worker.queued.clear()
        worker.sent_ms = now_ms
        self.call(keys, args)

    # -- the run -----------------------------------------------------------------------------
    def schedule(self, workers: list[Worker], rate: float, seconds: float, seed: int) -> None:
        """Requests (Poisson arrivals per worker) and each worker's ticks, in virtual time;
        settlements are added as requests are admitted (SERVICE_MS later)."""
        rng = random.Random(seed)
        end_ms = EPOCH_MS + int(seconds * 1000)
        for worker in workers:
            t = EPOCH_MS + rng.expovariate(rate / 1000)
            while t < end_ms:
                self.push(int(t), "request", worker, (self.pick_key(rng), ""))
                t += rng.expovariate(rate / 1000)
            tick = EPOCH_MS + rng.randrange(FLUSH_PERIOD_MS)
            while tick < end_ms + SERVICE_MS + FLUSH_PERIOD_MS:
                self.push(tick, "tick", worker, ("", ""))
                tick += FLUSH_PERIOD_MS

    def push(self, at_ms: int, kind: str, worker: Worker, payload: tuple[str, str]) -> None:
        heapq.heappush(self.heap, (at_ms, next(self.order), kind, worker, payload))

    def pick_key(self, rng: random.Random) -> str:
        return self.key(0 if self.scenario.keys == 1 else rng.randrange(self.scenario.keys))

    def run(self, workers_count: int, rate: float, seconds: float, seed: int) -> Result:
        workers = [Worker(i) for i in range(workers_count)]
        self.schedule(workers, rate, seconds, seed)
        before = cpu_seconds(self.client)
        started = time.perf_counter()
        while self.heap:
            now_ms, _, kind, worker, (key, marker) = heapq.heappop(self.heap)
            if kind == "tick":
                if self.mode.batched:
                    self.flush(worker, now_ms)
                continue
            if kind == "settle":
                if self.mode.lease_fraction > 0:
                    self.settle_leased(worker, key, marker, now_ms)
                else:
                    self.settle(worker, key, marker, now_ms)
                continue
            self.result.requests += 1
            if self.mode.lease_fraction > 0 and self.leased(worker, key, now_ms):
                self.result.admitted += 1
                self.push(now_ms + SERVICE_MS, "settle", worker, (key, self.marker()))
                continue
            cached = worker.refused_until.get(key)
            if cached is not None and now_ms < cached[0]:
                self.result.refused_locally += 1
                continue
            admitted, marker = self.admit(worker, key, now_ms)
            if admitted:
                self.result.admitted += 1
                self.push(now_ms + SERVICE_MS, "settle", worker, (key, marker))
        self.result.wall_s = time.perf_counter() - started
        self.result.cpu_s = cpu_seconds(self.client) - before
        self.result.charged_in_redis = self.charged()
        self.result.held = sum(max(held[0], 0) for w in workers for held in w.slices.values())
        return self.result

    def charged(self) -> int:
        total = 0
        for key in self.client.scan_iter(f"tokenlimit:{self.rule}:per_header:*", count=10_000):
            used = self.client.hget(key, "u")
            total += int(used or 0)
            self.result.hot_used = max(self.result.hot_used, int(used or 0))
        return total


def cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def report(args: argparse.Namespace, rows: list[tuple[Scenario, Mode, Result]]) -> str:
    fleet_rps = args.gateways * args.rps
    workers_total = args.gateways * args.workers_per_gateway
    per_worker = args.rps / args.workers_per_gateway
    lines = [
        "## Redis at fleet scale (`bench/redis_scale.py`)",
        "",
        f"Fleet: {args.gateways} gateways x {args.rps:,} requests/s = {fleet_rps:,} requests/s, "
        f"{args.workers_per_gateway} workers each ({workers_total} workers, "
        f"{per_worker:,.0f} requests/s per worker). Simulated: {args.sample_workers} workers at "
        f"that per-worker rate for {args.seconds} s of virtual time, every call made on a real "
        f"redis-server; extrapolated x{workers_total / args.sample_workers:,.0f}. Each request "
        f"charges {TOKENS_PER_REQUEST} tokens (postpaid, fixed minute window), "
        f"{SERVICE_MS} ms after its admission.",
        "",
        "| keys | call pattern | requests | calls / request | refused w/o call "
        "| Redis CPU µs / request | fleet calls/s | fleet Redis cores | shards (70 %) "
        "| charges landed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario, mode, result in rows:
        per_request = result.calls / max(result.requests, 1)
        cpu_us = result.cpu_s * 1e6 / max(result.requests, 1)
        cores = cpu_us * fleet_rps / 1e6
        shards = max(1, math.ceil(cores / CORE_TARGET))
        # Leases: Redis counts every slice granted; what workers still hold is not spent.
        landed = result.charged_in_redis - result.held
        exact = (
            "exact"
            if landed == result.charged_expected
            else (f"{landed:,} of {result.charged_expected:,}")
        )
        if result.held:
            exact += f" (+{result.held:,} held in slices)"

        lines.append(
            f"| {scenario.name} | {mode.name} | {result.requests:,} | {per_request:.3f} "
            f"| {result.refused_locally:,} | {cpu_us:.1f} | {per_request * fleet_rps:,.0f} "
            f"| {cores:.1f} | {shards}{'*' if shards > 1 else ''} | {exact} |"
        )
    lines += [
        "",
        "`*` Every counter of a rule carries the rule's hash tag (one Redis Cluster slot, so one "
        "script call can touch all of a request's counters atomically): ONE rule lives on ONE "
        "shard, however many keys it has. More shards help only across rules; a single rule "
        "past one shard's CPU needs fewer calls (leases: a hot key's calls fall to one per "
        "slice) or a per-key tag. Leases do not help a key seen once a window: its first "
        "request is one lease call, as it was one admission.",
        "",
        "Hot key accuracy (limit reached mid-run): the limit, what Redis counted, overshoot:",
        "",
    ]
    for scenario, mode, result in rows:
        if scenario.keys == 1:
            spent = result.hot_used - result.held  # leases: what the slices still hold is unspent
            over = (spent - result.limit) / result.limit * 100
            lines.append(
                f"- {mode.name}: limit {result.limit:,}, used {spent:,} "
                f"({over:+.2f} %), {result.admitted:,} of {result.requests:,} admitted"
            )
    lines += [
        "",
        f"Overshoot is postpaid's: requests admitted while earlier ones are still with the "
        f"upstream ({SERVICE_MS} ms here) are charged past the limit, whatever the store. It "
        f"grows with the number of workers admitting at once, and batching adds at most one "
        f"settle delay ({FLUSH_PERIOD_MS} ms) to the {SERVICE_MS} ms; the rows above compare "
        f"the call patterns at the same {args.sample_workers} workers. `reserve` admission "
        "bounds it (bench/accuracy.py).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--rps", type=int, default=10_000, help="requests/s per gateway")
    parser.add_argument("--workers-per-gateway", type=int, default=4)
    parser.add_argument("--sample-workers", type=int, default=8, help="workers simulated")
    parser.add_argument("--seconds", type=float, default=2.0, help="virtual seconds")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the wide scenario")
    args = parser.parse_args()
    per_worker = args.rps / args.workers_per_gateway
    demand = int(args.sample_workers * per_worker * args.seconds * TOKENS_PER_REQUEST)
    scenarios = [
        Scenario("1 hot key", keys=1, limit=demand // 4),  # exhausted a quarter of the way in
        Scenario(f"{args.keys:,} keys", keys=args.keys, limit=1_000_000),
    ]
    rows: list[tuple[Scenario, Mode, Result]] = []
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        sha = client.script_load(SCRIPT)
        for scenario in scenarios:
            for mode in MODES:
                print(f"{scenario.name} / {mode.name} ...", file=sys.stderr, flush=True)
                simulation = Simulation(client, sha, scenario, mode)
                result = simulation.run(args.sample_workers, per_worker, args.seconds, seed=17)
                rows.append((scenario, mode, result))
                print(
                    f"  {result.requests} requests, {result.calls} calls in {result.wall_s:.1f} s",
                    file=sys.stderr,
                )
                client.flushall()
    print(report(args, rows))


if __name__ == "__main__":
    main()
