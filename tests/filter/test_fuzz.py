"""A seeded, bounded fuzz pass through the real module (the shipped build and a safety-checked
one, where any overflow or bad index traps): the config parser, the usage scanners (JSON and
SSE, split anywhere), the request scanner and its rewrites, the RESP reader and the budget
math. A few hundred cases each, seconds in all; the same seed gives the same cases. A failure
found here becomes a named regression vector next to the code it concerns."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from support.proxywasm_host import Clock, Host

MakeHost = Callable[..., Host]
SEED = 0x9_0009
CASES = 500

STRUCTURAL = b'{}[]":,\\ \r\n0123456789etnfa'
NUMBERS = [b"18446744073709551615", b"18446744073709551616", b"-1", b"0", b"1e999", b"3.5"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte-level changes: flips, insertions, deletions, duplications, extreme
    numbers, truncation."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        choice = rng.randrange(6)
        if choice == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif choice == 1:
            out[at:at] = bytes([rng.choice(STRUCTURAL)])
        elif choice == 2 and out:
            del out[min(at, len(out) - 1)]
        elif choice == 3:
            out[at:at] = out[at : at + rng.randrange(32)]
        elif choice == 4:
            out[at:at] = rng.choice(NUMBERS)
        elif out:
            del out[at:]
    return bytes(out)


def split(rng: random.Random, data: bytes) -> list[bytes]:
    if len(data) < 2:
        return [data] if data else []
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def clock() -> Clock:
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)


BASE_CONFIG = {
    "rule_name": "fuzz",
    "rule_items": [
        {
            "limit_by_per_header": "x-api-key",
            "limit_keys": [{"key": "*", "token_per_minute": 10**6, "request_per_second": 50}],
        },
        {
            "limit_by_header": "x-team",
            "limit_keys": [{"key": "regexp:^t[0-9]+$", "token_per_hour": 9}],
        },
    ],
    "admission": "reserve",
    "algorithm": "sliding",
    "weights": {"input": 1, "output": 4, "cached": 0.5},
    "show_limit_headers": True,
}

RESPONSES = [
    (b"application/json", json.dumps({"usage": {"prompt_tokens": 12, "completion_tokens": 30}})),
    (b"text/event-stream", 'data: {"choices":[],"usage":{"prompt_tokens":7}}\n\ndata: [DONE]\n\n'),
    (b"text/event-stream", 'event: m\r\ndata: {"usage":{"output_tokens":15}}\r\n\r\n'),
    (b"application/json", '{"usageMetadata":{"promptTokenCount":5,"thoughtsTokenCount":3}}'),
]

REQUESTS = [
    b'{"model":"m","stream":true,"messages":[],"n":3,"max_tokens":10}',
    b'{"stream":true,"stream_options":{"include_usage":false,"x":1}}',
    b'{"stream":true,"stream_options":null,"best_of":4}',
    b'{"generationConfig":{"candidateCount":2,"maxOutputTokens":18446744073709551615}}',
]


def is_json(body: bytes) -> bool:
    """Valid JSON (latin-1: string bytes that are not UTF-8 pass upstream parsers as they do the
    filter)."""
    try:
        json.loads(body.decode("latin-1"))
    except ValueError:
        return False
    return True


def request_headers(rng: random.Random, body: bytes) -> dict[str, str]:
    return {
        ":method": "POST",
        ":path": rng.choice(["/v1/chat/completions", "/v1/messages", "/v1/completions?x"]),
        ":authority": "x",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-api-key": f"k{rng.randrange(4)}",
        "x-team": f"t{rng.randrange(3)}",
    }


def test_fuzz_config_parser(make_any_host: MakeHost) -> None:
    rng = random.Random(SEED)
    h = make_any_host()
    base = json.dumps(BASE_CONFIG).encode()
    for case in range(CASES * 2):
        document = mutate(rng, base) if case % 4 else bytes(rng.randbytes(rng.randrange(64)))
        h.configure(document)
        assert h.trap is None, document
    assert h.configure(BASE_CONFIG)  # still configurable afterwards


def test_fuzz_request_and_response_scanners_through_the_filter(make_any_host: MakeHost) -> None:
    rng = random.Random(SEED + 1)
    c = clock()
    h = make_any_host(clock=c)
    assert h.configure(BASE_CONFIG)
    for case in range(CASES):
        body = mutate(rng, rng.choice(REQUESTS))
        content_type, answer = rng.choice(RESPONSES)
        answer_bytes = mutate(rng, answer.encode() if isinstance(answer, str) else answer)
        stream = h.http_stream()
        response = {":status": "200", "content-type": content_type.decode()}
        stream.complete(request_headers(rng, body), response, split(rng, answer_bytes), body)
        assert h.trap is None, (case, body, answer_bytes)
        forwarded = b"".join(stream.request_body_chunks_forwarded)
        if forwarded and forwarded != body and is_json(body):
            # A rewrite of valid JSON is valid JSON that asks for usage, however it was hidden.
            rewritten = json.loads(forwarded.decode("latin-1"))
            assert rewritten["stream_options"]["include_usage"] is True, forwarded
        if rng.random() < 0.1:
            c.advance(rng.choice([0.001, 1, 61, 3601, 86_401]))


def test_fuzz_resp_replies_through_the_bridge_transport(make_any_host: MakeHost) -> None:
    rng = random.Random(SEED + 2)
    seeds = [
        b"*5\r\n:0\r\n:1700000000000\r\n:40\r\n:300\r\n:5000\r\n",
        b"*5\r\n:1\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n:0\r\n",
        b"-NOSCRIPT No matching script\r\n",
        b":3\r\n",
    ]
    c = clock()
    h = make_any_host(clock=c)
    config = {**BASE_CONFIG, "redis": {"service_name": "tokenlimit-bridge", "timeout": 500}}
    assert h.configure(config)
    for case in range(CASES):
        reply = mutate(rng, rng.choice(seeds)) if case % 5 else rng.randbytes(rng.randrange(80))
        stream = h.http_stream()
        headers = {":method": "GET", ":path": "/", ":authority": "x", "x-api-key": "k"}
        stream.request_headers(headers, end_of_stream=True)
        for call_id in h.pending_http_calls():
            h.respond_http_call(call_id, 200, reply)
        assert h.trap is None, reply
        stream.log()
        stream.done()
        for call_id in h.pending_http_calls():
            h.respond_http_call(call_id, 200, reply)
        c.advance(2)  # past any circuit back-off
        h.tick()
        for call_id in h.pending_http_calls():
            h.fail_http_call(call_id)


def test_fuzz_budget_math_with_extreme_usage(make_any_host: MakeHost) -> None:
    rng = random.Random(SEED + 3)
    extremes = [0, 1, 2**53, 2**63, 2**64 - 1, 10**15, 10**9 + 1]
    for case in range(CASES // 5):
        c = clock()
        h = make_any_host(clock=c)
        algorithm = ["fixed", "sliding", "token_bucket"][case % 3]
        window = rng.choice(["second", "minute", "hour", "day"])
        limit = rng.choice([1, 7, 10**6, 10**15])
        key = {"key": "*", f"token_per_{window}": limit}
        config = {
            "rule_name": "b",
            "rule_items": [{"limit_by_per_header": "x-api-key", "limit_keys": [key]}],
            "algorithm": algorithm,
            "admission": rng.choice(["reserve", "postpaid"]),
        }
        assert h.configure(config), config
        for _ in range(8):
            usage = {
                "prompt_tokens": rng.choice(extremes),
                "completion_tokens": rng.choice(extremes),
            }
            body = json.dumps({"usage": usage}).encode()
            headers = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
            headers |= {"content-type": "application/json", "x-api-key": "k"}
            h.http_stream().complete(
                headers, {":status": "200", "content-type": "application/json"}, [body]
            )
            assert h.trap is None, (config, usage)
            c.advance(rng.choice([0, 0.5, 59, 3600, 5 * 3600, 40 * 86400]))
