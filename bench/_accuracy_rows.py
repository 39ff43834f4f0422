"""The two adversarial rows of bench/accuracy.py (issue 9: counting that cannot be dodged).

`n8`: every request asks for 8 outputs (`"n": 8`), and the mock bills 8 completions (each
25-100 % of `max_tokens`, summed into `x-mock-completion-tokens`). Under `reserve` the filter
must reserve `max_tokens` for every output, or concurrent clients overshoot the budget by up
to 8x. Reported as admitted tokens ÷ budget (target: at most 1.05).

`dodge`: clients that try not to pay, in turn: a stream with `stream_options.include_usage:
false`, a stream with `stream_options: null` (both would get no usage from an OpenAI-style
upstream if the gateway let them decide), and a client that disconnects after sending its
request, before any answer (the provider bills the prompt). The budget is far out of reach:
this row measures what is charged, Envoy's `tokenlimit.tokens_charged`, against the true usage
(prompt + completion the mock bills; the prompt only for a disconnect). Target: at least 0.95.

`cost` (issue 12): the plain requests under a dollar budget in `reserve`; the helpers below
give the rule's price and what an admitted answer cost. Target: at most 1.05.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from typing import Any, Protocol

import aiohttp
from tokenlimit.model.prices import Price, TokenUsage, cost_micro_usd

N_OUTPUTS = 8
DODGES = ("include_usage_false", "stream_options_null", "disconnect")
DISCONNECT_AFTER_S = 0.1  # well before the mock's 200-500 ms delay ends
DODGE_BUDGET = 10**9
# The cost row's price for the requests' model (gpt-4o's list price, USD per 1M tokens): high
# enough that one request is thousands of micro-USD, so per-request rounding does not matter.
COST_PRICE = {"input": 2.5, "output": 10.0}
COST_MODEL = "gpt-4o-mini"  # every request's model
MICRO_USD = 1_000_000
_PRICE = Price(**COST_PRICE, cached=COST_PRICE["input"], cache_write=COST_PRICE["input"])


def cost_limits(limit: dict[str, object], doc: dict[str, object], budget_micro_usd: int) -> None:
    """Turns a plain row's rule into the cost row's: the limit in USD, the model priced."""
    limit.pop("token_per_minute")
    limit["cost_per_minute"] = budget_micro_usd / MICRO_USD
    doc["prices"] = {COST_MODEL: COST_PRICE}


def answer_cost(usage: dict[str, int]) -> int:
    """What an answer's usage costs at COST_PRICE, in micro-USD, rounded up as the filter does."""
    spent = TokenUsage(input=usage["prompt_tokens"], output=usage["completion_tokens"])
    return cost_micro_usd(spent, _PRICE)


class Result(Protocol):
    clients: int
    admitted: int
    rejected: int
    errors: int
    tokens: int
    error_samples: list[str]


def prompt_words(rng: random.Random, target_bytes: int, words: tuple[str, ...]) -> str:
    chosen: list[str] = []
    while sum(len(w) + 1 for w in chosen) < target_bytes:
        chosen.append(rng.choice(words))
    return " ".join(chosen)


def n8_plan(
    rng: random.Random,
    delay_ms: tuple[int, int],
    api_key: str,
    words: tuple[str, ...],
    max_tokens_choices: tuple[int, ...],
) -> tuple[bytes, dict[str, str]]:
    """A chat completion asking for 8 outputs; the mock bills all 8."""
    max_tokens = rng.choice(max_tokens_choices)
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt_words(rng, 600, words)}],
            "max_tokens": max_tokens,
            "n": N_OUTPUTS,
        },
        separators=(",", ":"),
    ).encode()
    completion = sum(rng.randint(max_tokens // 4, max_tokens) for _ in range(N_OUTPUTS))
    headers = {
        "content-type": "application/json",
        "x-api-key": api_key,
        "x-mock-completion-tokens": str(completion),
        "x-mock-delay-ms": str(rng.randint(*delay_ms)),
    }
    return body, headers


def dodge_plan(
    rng: random.Random,
    behaviour: str,
    delay_ms: tuple[int, int],
    api_key: str,
    words: tuple[str, ...],
) -> tuple[bytes, dict[str, str], int, int]:
    """A streamed request that would dodge its usage; returns body, headers, prompt and
    completion tokens the mock bills (the prompt is set explicitly: the gateway rewrites the
    body, and the truth must not depend on that)."""
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt_words(rng, rng.randint(200, 1200), words)}],
        "max_tokens": 256,
        "stream": True,
    }
    if behaviour == "include_usage_false":
        request["stream_options"] = {"include_usage": False}
    elif behaviour == "stream_options_null":
        request["stream_options"] = None
    body = json.dumps(request, separators=(",", ":")).encode()
    prompt, completion = math.ceil(len(body) / 4), rng.randint(64, 256)
    headers = {
        "content-type": "application/json",
        "x-api-key": api_key,
        "x-mock-prompt-tokens": str(prompt),
        "x-mock-completion-tokens": str(completion),
        "x-mock-delay-ms": str(rng.randint(*delay_ms)),
    }
    return body, headers, prompt, completion


async def drive_dodgers(
    url: str,
    result: Result,
    seconds: float,
    seed: int,
    delay_ms: tuple[int, int],
    api_key: str,
    words: tuple[str, ...],
) -> None:
    """`result.tokens` becomes the true usage of every request that reached the upstream."""
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=result.clients)
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(rng: random.Random, behaviour: str) -> None:
            body, headers, prompt, completion = dodge_plan(rng, behaviour, delay_ms, api_key, words)
            post = session.post(url + "/v1/chat/completions", data=body, headers=headers)
            if behaviour == "disconnect":
                try:
                    async with asyncio.timeout(DISCONNECT_AFTER_S):
                        async with post as response:
                            await response.read()
                except TimeoutError:
                    result.admitted += 1  # sent and abandoned: the upstream bills the prompt
                    result.tokens += prompt
                    return
                result.errors += 1  # answered within 100 ms: the mock delay is too short
                return
            async with post as response:
                payload = await response.read()
            if response.status != 200 or b"data: [DONE]" not in payload:
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{response.status}: {payload[:120]!r}")
                return
            if b'"prompt_tokens"' in payload:  # the client did not ask: it must not see usage
                result.errors += 1
                result.error_samples.append("usage shown to a client that did not ask")
            result.admitted += 1
            result.tokens += prompt + completion

        async def client(index: int) -> None:
            rng = random.Random(seed * 100_003 + index)
            turn = index
            while time.monotonic() < stop_at:
                try:
                    await one(rng, DODGES[turn % len(DODGES)])
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}")
                turn += 1

        await asyncio.gather(*(client(i) for i in range(result.clients)))
