"""Benchmark: Envoy's heap under a flood of distinct keys, local store.

What it answers: does an attacker who rotates API keys grow the gateway's memory? The local
store keeps its counters in a fixed table (filter/src/store/local.zig, `local_counters_max`
slots in contract/limits.json), so past the table the heap should stay flat.

Setup (all on 127.0.0.1, started and stopped by this script): the upstream Envoy of
overhead.py (answers every request itself) and one gateway Envoy (1 worker) rendered by
`tokenlimit.render.envoy.bootstrap` with a per-key budget (`limit_by_per_header: x-api-key`,
`*`): every distinct `x-api-key` is its own counter. A few client threads send `--keys`
requests, each with a new key, over keep-alive connections, and the script samples Envoy's
`server.memory_allocated` every `--every` keys.

    .venv/bin/python bench/local_heap.py [--keys 1000000] [--every 50000] [--threads 4]
        [--wasm PATH]

`--wasm` runs another build of the filter (e.g. an older one, to see the heap it grows).
Time: about 1 ms per key with Python as the client (1M keys: ~15-20 min on 2 cores).
Prints a Markdown table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from _overhead_setup import REQUEST_BODY, filter_config, gateway_bootstrap, upstream_bootstrap
from tokenlimit.dev.process import free_port
from tokenlimit.wasm import filter_path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def send_keys(port: int, first: int, last: int, statuses: dict[int, int]) -> None:
    """One keep-alive connection sending keys first..last-1 (reconnects if Envoy closes it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"}
    for i in range(first, last):
        headers["x-api-key"] = f"rotating-key-{i:08d}"
        try:
            conn.request("POST", "/v1/chat/completions", REQUEST_BODY, headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            statuses[0] = statuses.get(0, 0) + 1
    conn.close()


def run(args: argparse.Namespace) -> str:
    wasm = Path(args.wasm).resolve() if args.wasm else filter_path("envoy")
    work = h.work_dir("local-heap")
    envoys: list[h.Envoy] = []
    rows: list[list[object]] = []
    try:
        up = h.Envoy("upstream", {}, free_port(), free_port(), work)
        up.config = upstream_bootstrap(up.listen_port, up.admin_port)
        envoys.append(up.start())
        gw = h.Envoy("gateway", {}, free_port(), free_port(), work)
        gw.config = gateway_bootstrap(
            up.url, wasm, filter_config("postpaid"), gw.listen_port, gw.admin_port
        )
        envoys.append(gw.start())
        statuses: dict[int, int] = {}
        start_heap = gw.stats().get("server.memory_allocated", 0)
        rows.append([0, f"{start_heap / 2**20:.1f}", f"{h.rss_bytes(gw.pid) / 2**20:.1f}", "-"])
        started = time.monotonic()
        for done in range(0, args.keys, args.every):
            last = min(done + args.every, args.keys)
            share = (last - done + args.threads - 1) // args.threads
            threads = [
                threading.Thread(
                    target=send_keys,
                    args=(gw.listen_port, a, min(a + share, last), statuses),
                )
                for a in range(done, last, share)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            heap = gw.stats().get("server.memory_allocated", 0)
            rss = h.rss_bytes(gw.pid)
            rate = last / (time.monotonic() - started)
            rows.append([last, f"{heap / 2**20:.1f}", f"{rss / 2**20:.1f}", f"{rate:.0f}"])
            log(f"{last} keys: heap {heap / 2**20:.1f} MiB, rss {rss / 2**20:.1f} MiB, {statuses}")
    finally:
        for e in reversed(envoys):
            e.stop()
    table = h.markdown_table(["distinct keys", "heap MiB", "RSS MiB", "keys/s so far"], rows)
    return (
        f"# Envoy heap under {args.keys:,} distinct keys (local store)\n\n"
        f"{h.machine_summary()}\n\nFilter: `{wasm}`. Replies: {statuses}\n\n{table}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--wasm", help="another build of tokenlimit.wasm")
    print(run(parser.parse_args()))


if __name__ == "__main__":
    main()
