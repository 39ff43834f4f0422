"""Counting that a hostile client or a faulty network cannot dodge, double or overflow
(issue 9), through the real module: the shipped build and a safety-checked one."""

from __future__ import annotations

import json
from collections.abc import Callable

from support.proxywasm_host import Clock, Host, LogLevel

MakeHost = Callable[..., Host]
U64_MAX = 2**64 - 1
VALUE_TOKENS_MAX = 1_000_000_000  # usage.zig value_tokens_max, documented in docs/config.md


def chat_request(api_key: str, **extra: str) -> dict[str, str]:
    return {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "llm.example.com",
        "content-type": "application/json",
        "x-api-key": api_key,
        **extra,
    }


JSON_RESPONSE = {":status": "200", "content-type": "application/json"}
SSE_RESPONSE = {":status": "200", "content-type": "text/event-stream"}


def limited(per: str, limit: int, **options: object) -> dict[str, object]:
    key = {"key": "*", f"token_per_{per}": limit}
    item = {"limit_by_per_header": "x-api-key", "limit_keys": [key]}
    return {"rule_name": "chat", "rule_items": [item], **options}


def usage_body(prompt: int, completion: int) -> bytes:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return json.dumps({"choices": [], "usage": usage}).encode()


def clock() -> Clock:
    return Clock(now_ns=(1_767_225_600 + 10) * 10**9)


# ---- 1. overflow safety ------------------------------------------------------------------------


def test_usage_near_2_64_is_clamped_logged_and_the_bucket_math_holds(
    make_any_host: MakeHost,
) -> None:
    c = clock()
    h: Host = make_any_host(clock=c)
    assert h.configure(limited("second", 10**15, algorithm="token_bucket"))
    stream = h.http_stream()
    stream.complete(chat_request("big"), JSON_RESPONSE, [usage_body(U64_MAX, U64_MAX)])
    assert h.trap is None
    # Two values clamped to the per-request ceiling each.
    assert stream.properties_set["tokenlimit_tokens"] == str(2 * VALUE_TOKENS_MAX).encode()
    assert any("clamped" in m for m in h.log_messages(LogLevel.WARN)), h.log_messages()
    # The next request is admitted (2e9 of 1e15 used) and so is one 5 h later, when a
    # refill of 10^15 a second has long passed 2^64.
    assert h.http_stream().complete(chat_request("big"), JSON_RESPONSE, [usage_body(1, 1)])
    c.advance(5 * 3600)
    later = h.http_stream().complete(chat_request("big"), JSON_RESPONSE, [usage_body(1, 1)])
    assert later.local_response is None
    assert h.trap is None


def test_an_overdrawn_bucket_refuses_with_a_sane_retry_after(make_any_host: MakeHost) -> None:
    c = clock()
    h: Host = make_any_host(clock=c)
    assert h.configure(limited("minute", 100, algorithm="token_bucket"))
    h.http_stream().complete(chat_request("o"), JSON_RESPONSE, [usage_body(U64_MAX, 0)])
    rejection = h.http_stream().complete(chat_request("o"), JSON_RESPONSE, []).local_response
    assert rejection is not None and rejection.status == 429
    # 10^9 tokens at 100 a minute: about 19 years, a number, not a wrapped one.
    retry_after = int(dict(rejection.headers)["retry-after"])
    assert 10**8 < retry_after < 10**9
    assert h.trap is None
