"""Benchmark: Envoy with the tokenlimit filter vs. the same Envoy without it, in one run.

What it answers: how much throughput, latency, CPU and memory the filter costs a gateway on
the request path, when the upstream is not the bottleneck.

Setup (all on 127.0.0.1, started and stopped by this script):

- an upstream Envoy answering every request itself (`direct_response`) with a realistic OpenAI
  chat completion (JSON, `usage` included) — far faster than any Python server, so it never
  limits the gateway;
- two gateway Envoys rendered by `tokenlimit.render.envoy.bootstrap` from the same options,
  identical except that one has the wasm filter (tokenlimit.wasm, a per-key budget of 10^15
  tokens a minute: every request is matched, counted, admitted and charged from the response's
  usage) and the other has no wasm filter at all;
- wrk (one thread) POSTing a chat completion request with `x-api-key` cycling over 8 keys.

Both gateways are driven alternately by the same load — per round and per connection count,
with the order flipped every round (ABBA) so drift hits both alike — after a warm-up that is
not measured (connections, V8 tier-up). Per variant it reports requests/s, p50/p99 latency
(median over rounds of wrk's per-run percentiles), the gateway's CPU time per request (from
/proc/<pid>/stat: the cleanest cost number when client, gateway and upstream share few cores),
and the with/without ratios. It also reports the module size and the gateway's memory
(`server.memory_allocated`, RSS) after start, after warm-up and at the end, for both variants.

    .venv/bin/python bench/overhead.py [--rounds 3] [--seconds 5] [--connections 1,16]
        [--admission postpaid|reserve] [--breakdown] [--path /v1/chat/completions]
        [--method POST|GET] [--wasm PATH]

`--breakdown` adds a third gateway whose filter is loaded but matches no request, separating
the cost of the Wasm plumbing (V8 contexts, callbacks) from the filter's own work. `--trivial`
adds one running a filter that does nothing at all (bench/trivial_filter.zig, built with
ziglang): the floor any proxy-wasm filter costs, and issue 17's "trivial filter".
About 75 s with the defaults (110 s with --breakdown).

Needs wrk (`apt-get install -y wrk`). Prints a Markdown report on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from _overhead_redis import calls_per_request, redis_and_bridge, redis_filter_config
from _overhead_setup import (
    COMPLETION_TOKENS,
    FEATURES,
    KEYS,
    PROMPT_TOKENS,
    REQUEST_BODY,
    RESPONSE_BODY,
    WARMUP_S,
    build_bench_filter,
    filter_config,
    gateway_bootstrap,
    upstream_bootstrap,
    wrk_script,
)
from tokenlimit.dev.process import free_port
from tokenlimit.wasm import filter_path

# --- measurement -----------------------------------------------------------------------------


@dataclass
class Series:
    """The rounds of one (variant, connection count)."""

    runs: list[h.LoadResult] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def rps(self) -> float:
        return self.requests / sum(r.seconds for r in self.runs)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in self.runs)


def memory(envoy: h.Envoy) -> tuple[int, int]:
    return envoy.stats().get("server.memory_allocated", 0), h.rss_bytes(envoy.pid)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> str:
    wrk = h.require_wrk()
    wasm = Path(args.wasm).resolve() if args.wasm else filter_path("envoy")
    work = h.work_dir("overhead")
    script = wrk_script(work / "chat.lua", args.path, args.method, args.stream)
    variants: tuple[str, ...] = ("with", "without", *(("idle",) if args.breakdown else ()))
    variants += ("redis",) if args.redis else ()
    variants += tuple(f"feature:{name}" for name in args.features)
    variants += ("baseline",) if args.baseline_wasm else ()
    variants += ("trivial",) if args.trivial or args.floor else ()
    variants += ("floor",) if args.floor else ()
    modules = {v: wasm for v in variants}
    if args.baseline_wasm:
        modules["baseline"] = Path(args.baseline_wasm).resolve()
    for bench_filter in ("trivial", "floor"):
        if bench_filter in variants:
            modules[bench_filter] = build_bench_filter(work, f"{bench_filter}_filter")
    configs = {
        **{
            f"feature:{name}": filter_config(args.admission, feature=name) for name in args.features
        },
        "with": filter_config(args.admission),
        "without": None,
        "idle": filter_config(args.admission, idle=True),
        "redis": redis_filter_config(filter_config(args.admission), args.lease),
        "baseline": filter_config(args.admission),
        "trivial": filter_config(args.admission),  # ignored by the module
        "floor": filter_config(args.admission),  # ignored by the module
    }
    envoys: list[h.Envoy] = []
    watch = h.CpuWatch()
    done = False
    stack = contextlib.ExitStack()
    try:
        bridge, bridge_pid = (
            stack.enter_context(redis_and_bridge(work)) if args.redis else (None, 0)
        )
        up = h.Envoy("upstream", {}, free_port(), free_port(), work)
        up.config = upstream_bootstrap(up.listen_port, up.admin_port, args.stream)
        envoys.append(up.start())
        gw = {}
        for v in variants:
            listen, admin = free_port(), free_port()
            doc = gateway_bootstrap(
                up.url, modules[v], configs[v], listen, admin, bridge if v == "redis" else None
            )
            gw[v] = h.Envoy(f"gateway-{v}", doc, listen, admin, work, concurrency=1)
        for v in variants:
            envoys.append(gw[v].start())
        time.sleep(1.0)  # let them settle before the first memory reading
        mem = {v: {"start": memory(gw[v])} for v in variants}
        stats_before = gw["with"].stats()
        redis_before = gw["redis"].stats() if args.redis else {}
        bridge_cpu = h.cpu_seconds(bridge_pid) if args.redis else 0.0

        log(f"warm-up {WARMUP_S:g}s per gateway and connection count")
        for conns in args.connections:
            for v in variants:
                h.run_wrk(wrk, gw[v].url, script, seconds=WARMUP_S, connections=conns)
        for v in variants:
            mem[v]["warm"] = memory(gw[v])

        series = {(v, c): Series() for v in variants for c in args.connections}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]  # ABBA: drift hits all alike
            for conns in args.connections:
                for v in order:
                    cpu0 = h.cpu_seconds(gw[v].pid)
                    result = h.run_wrk(
                        wrk, gw[v].url, script, seconds=args.seconds, connections=conns
                    )
                    series[v, conns].cpu_s += h.cpu_seconds(gw[v].pid) - cpu0
                    series[v, conns].runs.append(result)
                    log(
                        f"round {r + 1}/{args.rounds} c={conns:<3} {v:<7} "
                        f"{result.rps:8.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                        f"p99 {result.p99_ms:.3f} ms  non-2xx {result.non_2xx}"
                    )
        for v in variants:
            mem[v]["end"] = memory(gw[v])
        stats_after = gw["with"].stats()
        text = report(args, wasm, series, mem, stats_before, stats_after)
        if args.trivial or args.floor:
            text += "\n\n" + trivial_report(args, series)
        if args.floor:
            text += "\n\n" + floor_report(args, series)
        if args.redis:
            bridge_cpu = h.cpu_seconds(bridge_pid) - bridge_cpu
            redis_after = gw["redis"].stats()
            text += "\n\n" + redis_report(args, series, redis_before, redis_after, bridge_cpu)
        done = True
        return text + "\n\n" + watch.summary()
    finally:
        for envoy in reversed(envoys):
            envoy.stop()
        stack.close()
        if done:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"Envoy configs and logs kept in {work}")


# --- report ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "—"


LABELS = {
    **{f"feature:{name}": f"with filter + {name}" for name in FEATURES},
    "without": "without filter",
    "with": "with filter",
    "idle": "filter, no rule matches",
    "redis": "with filter, Redis store",
    "baseline": "with filter, baseline module",
    "trivial": "trivial filter (does nothing)",
    "floor": "floor filter (host calls only)",
}
WASM_STATS_SHOWN = (
    "wasm.wasm_vm_count",
    "wasm.envoy.wasm.runtime.v8.active",
    "wasm.envoy.wasm.runtime.v8.created",
)


def report(
    args: argparse.Namespace,
    wasm: Path,
    series: dict[tuple[str, int], Series],
    mem: dict[str, dict[str, tuple[int, int]]],
    before: dict[str, int],
    after: dict[str, int],
) -> str:
    features = (f"feature:{name}" for name in FEATURES)
    known = ("without", "with", "baseline", "trivial", "floor", "idle", "redis", *features)
    variants = [v for v in known if (v, args.connections[0]) in series]
    out: list[str] = []
    out.append("### Overhead: Envoy with vs. without the tokenlimit filter\n")
    out.append(h.machine_summary() + "\n")
    out.append(
        f"Gateway Envoys: 1 worker each, the project's bootstrap (access log on, to /dev/null); "
        f"upstream: Envoy `direct_response` (1 worker) with a {len(RESPONSE_BODY)}-byte chat "
        f"completion; client: wrk, 1 thread, {args.method} {args.path}"
        f"{f' with a {len(REQUEST_BODY)}-byte body' if args.method == 'POST' else ''}, "
        f"{len(KEYS)} API keys; admission `{args.admission}`. "
        f"{args.rounds} interleaved rounds x {args.seconds:g} s per variant and connection "
        f"count, after {WARMUP_S:g} s warm-up. Client, gateways and upstream share the same "
        f"{h.core_count()} cores. req/s: all rounds together (per-round range beside it); "
        "p50/p99: median of the rounds' wrk percentiles; CPU: the gateway process's CPU time "
        "per request.\n"
    )
    rows = []
    for conns in args.connections:
        for v in variants:
            s = series[v, conns]
            lo, hi = min(r.rps for r in s.runs), max(r.rps for r in s.runs)
            rows.append(
                [
                    conns,
                    LABELS[v],
                    f"{s.rps:.0f}",
                    f"{lo:.0f}-{hi:.0f}",
                    f"{s.median('p50_ms'):.3f}",
                    f"{s.median('p99_ms'):.3f}",
                    f"{s.cpu_us_per_request:.1f}",
                    s.non_2xx,
                ]
            )
    out.append(
        h.markdown_table(
            [
                "connections",
                "gateway",
                "req/s",
                "req/s per round",
                "p50 ms",
                "p99 ms",
                "CPU µs/req",
                "errors",
            ],
            rows,
        )
    )
    out.append("")
    rows = []
    for conns in args.connections:
        for v in variants[1:]:
            w, wo = series[v, conns], series["without", conns]
            rows.append(
                [
                    conns,
                    LABELS[v],
                    ratio(w.rps, wo.rps),
                    ratio(w.median("p50_ms"), wo.median("p50_ms")),
                    ratio(w.median("p99_ms"), wo.median("p99_ms")),
                    ratio(w.cpu_us_per_request, wo.cpu_us_per_request),
                    f"{w.cpu_us_per_request - wo.cpu_us_per_request:+.1f}",
                    f"{(w.median('p50_ms') - wo.median('p50_ms')) * 1e3:+.0f}",
                ]
            )
    out.append(
        h.markdown_table(
            [
                "connections",
                "÷ without filter",
                "req/s ratio",
                "p50 ratio",
                "p99 ratio",
                "CPU/req ratio",
                "CPU µs/req added",
                "p50 µs added",
            ],
            rows,
        )
    )
    out.append("")

    def delta(name: str) -> int:
        key = f"wasmcustom.tokenlimit.{name}"
        return after.get(key, 0) - before.get(key, 0)

    allowed, rejected = delta("requests_allowed"), delta("requests_rejected")
    charged = delta("tokens_charged")
    measured = sum(s.requests for (v, _), s in series.items() if v == "with")
    per = PROMPT_TOKENS + COMPLETION_TOKENS
    out.append(
        f"Filter check (gateway with filter, warm-up included): {allowed} requests allowed, "
        f"{rejected} rejected, {charged} tokens charged = "
        f"{charged / allowed if allowed else 0:.2f} per allowed request (each response "
        f"reports {per}; requests still in flight when wrk stops are allowed but never "
        f"charged); {measured} measured requests.\n"
    )
    rows = []
    for v in variants:
        m = mem[v]
        rows.append(
            [
                LABELS[v],
                *(mib(m[p][0]) for p in ("start", "warm", "end")),
                *(mib(m[p][1]) for p in ("start", "warm", "end")),
            ]
        )
    for v in variants[1:]:
        rows.append(
            [
                f"{LABELS[v]} - without",
                *(mib(mem[v][p][0] - mem["without"][p][0]) for p in ("start", "warm", "end")),
                *(mib(mem[v][p][1] - mem["without"][p][1]) for p in ("start", "warm", "end")),
            ]
        )
    out.append(
        h.markdown_table(
            [
                "gateway",
                "allocated MiB: start",
                "after warm-up",
                "end",
                "RSS MiB: start",
                "after warm-up",
                "end",
            ],
            rows,
        )
    )
    out.append("")
    shown = ", ".join(f"`{k}` {after[k]}" for k in WASM_STATS_SHOWN if k in after) or "none"
    out.append(
        f"Module: `{wasm.name}`, {wasm.stat().st_size:,} bytes"
        + (
            f" (baseline: `{Path(args.baseline_wasm).name}`, "
            f"{Path(args.baseline_wasm).stat().st_size:,} bytes)"
            if args.baseline_wasm
            else ""
        )
        + ". Memory: `allocated` is "
        "Envoy's `server.memory_allocated` (its tcmalloc heap); V8's heaps and the module's "
        "linear memory are mapped outside it and show only in RSS (/proc/<pid>/status). "
        f"Envoy wasm stats of the gateway with the filter (1 worker): {shown}."
    )
    return "\n".join(out)


def redis_report(
    args: argparse.Namespace,
    series: dict[tuple[str, int], Series],
    before: dict[str, int],
    after: dict[str, int],
    bridge_cpu_s: float,
) -> str:
    """--redis: the Redis store's throughput beside the local store's, and its calls."""
    ratios = ", ".join(
        f"{c} connections {ratio(series['redis', c].rps, series['with', c].rps)}"
        for c in args.connections
    )
    calls = calls_per_request(before, after, bridge_cpu_s)
    return f"Redis store ÷ local store, req/s: {ratios}. {calls}"


def trivial_report(args: argparse.Namespace, series: dict[tuple[str, int], Series]) -> str:
    """--trivial: the filter's throughput and CPU beside a filter that does nothing."""
    parts = []
    for c in args.connections:
        w, t = series["with", c], series["trivial", c]
        parts.append(
            f"{c} connections {ratio(w.rps, t.rps)} "
            f"({w.cpu_us_per_request - t.cpu_us_per_request:+.1f} µs CPU per request)"
        )
    return "With filter ÷ trivial filter, req/s: " + ", ".join(parts) + "."


def floor_report(args: argparse.Namespace, series: dict[tuple[str, int], Series]) -> str:
    """--floor: what the host calls alone cost over a filter that does nothing, and what the
    filter costs over them (its own work above the floor)."""
    parts = []
    for c in args.connections:
        w, f, t = series["with", c], series["floor", c], series["trivial", c]
        parts.append(
            f"{c} connections: floor minus trivial "
            f"{f.cpu_us_per_request - t.cpu_us_per_request:+.1f} µs, filter minus floor "
            f"{w.cpu_us_per_request - f.cpu_us_per_request:+.1f} µs, "
            f"filter ÷ floor req/s {ratio(w.rps, f.rps)}"
        )
    return "CPU per request: " + "; ".join(parts) + "."


def mib(n: int) -> str:
    return f"{n / 2**20:+.1f}" if n < 0 else f"{n / 2**20:.1f}"


def connection_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError("comma-separated connection counts from 1 to 1000")
    return values


def feature_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown feature {unknown[0]!r}: one of {list(FEATURES)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument(
        "--connections",
        type=connection_list,
        default=[1, 16],
        help="wrk connection counts, comma-separated (1,16): 1 shows the per-request latency "
        "added, 16 saturates the gateway",
    )
    parser.add_argument("--admission", choices=("postpaid", "reserve"), default="postpaid")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="add a third gateway whose filter is loaded but matches no request: the cost "
        "of the Wasm plumbing alone, apart from the filter's own work",
    )
    parser.add_argument(
        "--path",
        default="/v1/chat/completions",
        help="request path (/v1/chat/completions): on OpenAI completion paths the filter also "
        "reads the JSON request body (to add stream_options.include_usage when streaming)",
    )
    parser.add_argument(
        "--method",
        choices=("POST", "GET"),
        default="POST",
        help="POST (the chat body) or GET (no body: the filter's path without body work)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="POST chat asking for a stream (no stream_options): the upstream answers OpenAI's "
        "chunk stream (22 events, one write), the filter adds include_usage and hides the "
        "usage-only event from the client",
    )
    parser.add_argument(
        "--features",
        type=feature_list,
        default=[],
        help=f"add one gateway per feature switched on ({','.join(FEATURES)}), comma-separated: "
        "what each costs over the plain rule, in the same rounds",
    )
    parser.add_argument("--wasm", help="filter module (default: the one built into the package)")
    parser.add_argument(
        "--baseline-wasm",
        help="add a gateway running this other module with the same rule: a before/after of "
        "two builds in the same interleaved rounds",
    )
    parser.add_argument(
        "--trivial",
        action="store_true",
        help="add a gateway running a filter that does nothing (bench/trivial_filter.zig, "
        "built with ziglang): the floor any proxy-wasm filter costs, in the same rounds",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="add a gateway running only the host calls a token limiter needs (bench/"
        "floor_filter.zig: header, shared data, bodies; no work between them) and the trivial "
        "filter: the floor under the filter's own work, in the same rounds",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="add a gateway keeping the same budget in Redis (a real redis-server behind the "
        "tokenlimit bridge; bench/_overhead_redis.py)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=0.0,
        help="--redis with leases for hot keys: each worker takes this share of the budget at "
        "a time (e.g. 0.05; docs/redis.md)",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 60:
        parser.error("--rounds must be 1..20 and --seconds 1..60")
    print(run(args))


if __name__ == "__main__":
    main()
