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


# ---- 2. include_usage decided by the gateway ---------------------------------------------------

CONTENT_EVENT = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
)
USAGE_EVENT = (
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9}}\n\n'
)
DONE_EVENT = b"data: [DONE]\n\n"


def streamed(h: Host, body: bytes, events: bytes, split: int) -> tuple[dict[str, object], bytes]:
    """One streamed completion; returns the body the upstream got and what the client got."""
    headers = chat_request("s", **{"content-length": str(len(body))})
    stream = h.http_stream()
    chunks = [events[i : i + split] for i in range(0, len(events), split)]
    stream.complete(headers, SSE_RESPONSE, chunks, body)
    forwarded = json.loads(b"".join(stream.request_body_chunks_forwarded))
    assert stream.properties_set["tokenlimit_tokens"] == b"21"
    return forwarded, stream.forwarded_response_body


def test_include_usage_is_forced_and_the_usage_chunk_hidden_from_clients_that_did_not_ask(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    events = CONTENT_EVENT + USAGE_EVENT + DONE_EVENT
    declined: list[object] = [
        None,  # no stream_options at all
        {"include_usage": False},
        "null",  # stream_options: null
        {"include_usage": None, "other": 1},
        {"x": 1},
    ]
    for options in declined:
        request: dict[str, object] = {"model": "m", "stream": True, "messages": []}
        if options == "null":
            request["stream_options"] = None
        elif options is not None:
            request["stream_options"] = options
        for split in (1, 7, 64, len(events)):
            forwarded, received = streamed(h, json.dumps(request).encode(), events, split)
            stream_options = forwarded["stream_options"]
            assert isinstance(stream_options, dict)
            assert stream_options["include_usage"] is True, (options, forwarded)
            if isinstance(options, dict):
                for key, value in options.items():
                    if key != "include_usage":
                        assert stream_options[key] == value
            # The client sees every event but the usage-only one, byte for byte.
            assert received == CONTENT_EVENT + DONE_EVENT, (options, split, received)
    assert h.trap is None


def test_a_client_that_asked_for_usage_gets_it_and_its_body_is_untouched(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    body = json.dumps(request).encode()
    events = CONTENT_EVENT + USAGE_EVENT + DONE_EVENT
    forwarded, received = streamed(h, body, events, 5)
    assert forwarded == request
    assert received == events


def test_duplicate_stream_options_keys_cannot_hide_a_false(make_any_host: MakeHost) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    body = (
        b'{"stream":true,"stream_options":{"include_usage":false},'
        b'"stream_options":{"include_usage":false,"include_usage":null}}'
    )
    headers = chat_request("d", **{"content-length": str(len(body))})
    stream = h.http_stream()
    stream.complete(headers, SSE_RESPONSE, [CONTENT_EVENT + USAGE_EVENT + DONE_EVENT], body)
    sent = b"".join(stream.request_body_chunks_forwarded)
    assert b"false" not in sent and b"null" not in sent, sent
    assert stream.forwarded_response_body == CONTENT_EVENT + DONE_EVENT


# ---- 3. missing usage is never free ------------------------------------------------------------


def prompt_body(prompt_bytes: int, **extra: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "p" * prompt_bytes}], **extra}
    return json.dumps(body).encode()


def test_a_client_that_leaves_before_the_answer_pays_for_its_prompt(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    body = prompt_body(4000)
    stream = h.http_stream()
    stream.request_headers(chat_request("gone", **{"content-length": str(len(body))}))
    stream.request_body(body, True)  # the request went upstream ...
    stream.log()  # ... and the client left before any answer
    stream.done()
    assert stream.properties_set["tokenlimit_tokens"] == str(-(-len(body) // 4)).encode()
    assert stream.properties_set["tokenlimit_usage"] == b"estimated"
    assert h.metrics["tokenlimit.usage_estimated"] == 1


def test_a_request_that_never_went_upstream_is_not_charged(make_any_host: MakeHost) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    stream = h.http_stream()
    stream.request_headers(chat_request("early", **{"content-length": "5000"}))
    stream.request_body(b"{" * 100, False)  # the client left while sending its body
    stream.log()
    stream.done()
    assert h.metrics.get("tokenlimit.tokens_charged", 0) == 0


def test_an_answer_without_usage_is_charged_prompt_plus_output(make_any_host: MakeHost) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    body = prompt_body(2000)
    answer = b'{"text":"' + b"x" * 389 + b'"}'  # 400 bytes, no usage
    stream = h.http_stream()
    headers = chat_request("quiet", **{"content-length": str(len(body))})
    stream.complete(headers, JSON_RESPONSE, [answer], body)
    assert stream.properties_set["tokenlimit_tokens"] == str(-(-len(body) // 4) + 100).encode()
    assert stream.properties_set["tokenlimit_usage"] == b"estimated"


def test_reserve_never_refunds_below_the_prompt_of_an_abandoned_request(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    options = {"admission": "reserve", "show_limit_headers": True}
    assert h.configure(limited("minute", 10_000, **options))
    body = prompt_body(4000, max_tokens=1000)
    prompt = -(-len(body) // 4)
    stream = h.http_stream()
    stream.request_headers(chat_request("r", **{"content-length": str(len(body))}))
    stream.request_body(body, True)
    stream.log()  # gone before the answer
    stream.done()
    assert stream.properties_set["tokenlimit_tokens"] == str(prompt).encode()
    probe_body = b'{"max_tokens":1}'
    probe = h.http_stream()
    probe_headers = chat_request("r", **{"content-length": str(len(probe_body))})
    probe.complete(probe_headers, JSON_RESPONSE, [usage_body(0, 0)], probe_body)
    probe_reserved = -(-len(probe_body) // 4) + 1
    remaining = 10_000 - prompt - probe_reserved
    assert probe.response_header_map["x-ratelimit-remaining-tokens"] == str(remaining)


# ---- 4. compressed answers ---------------------------------------------------------------------


def test_metered_requests_ask_the_upstream_for_identity_encoding(make_any_host: MakeHost) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    for accepted in ["gzip", "deflate", "br", "zstd", "gzip, deflate, br, zstd", None]:
        extra = {} if accepted is None else {"accept-encoding": accepted}
        stream = h.http_stream()
        stream.complete(chat_request("z", **extra), JSON_RESPONSE, [usage_body(3, 4)])
        assert stream.request_header_map["accept-encoding"] == "identity", accepted
    # A request no rule meters is left as the client sent it.
    unmetered = {**chat_request("z", **{"accept-encoding": "gzip"})}
    del unmetered["x-api-key"]
    stream = h.http_stream()
    stream.complete(unmetered, JSON_RESPONSE, [usage_body(3, 4)])
    assert stream.request_header_map["accept-encoding"] == "gzip"


def test_an_answer_encoded_anyway_is_estimated_not_misread(make_any_host: MakeHost) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    stream = h.http_stream()
    encoded = {**JSON_RESPONSE, "content-encoding": "gzip"}
    # Bytes that happen to look like usage must not be believed inside an encoded body.
    stream.complete(chat_request("z"), encoded, [usage_body(999_999, 0)])
    assert stream.properties_set["tokenlimit_usage"] == b"estimated"
    assert any("content-encoding" in m for m in h.log_messages(LogLevel.WARN))


# ---- 6. reserve sizes every output -------------------------------------------------------------


def test_reserve_estimates_every_output_the_request_asks_for(make_any_host: MakeHost) -> None:
    cases: list[dict[str, object]] = [
        {"n": 8, "max_tokens": 100},
        {"best_of": 8, "n": 2, "max_tokens": 100},  # best_of generates 8, returns 2
        {"generationConfig": {"candidateCount": 8, "maxOutputTokens": 100}},
    ]
    for fields in cases:
        h = make_any_host(clock=clock())
        assert h.configure(limited("minute", 1000, admission="reserve"))
        body = json.dumps({"model": "m", "messages": [], **fields}).encode()
        headers = chat_request("n", **{"content-length": str(len(body))})
        first = h.http_stream()
        first.request_headers(headers)
        first.request_body(body, True)
        assert first.local_response is None
        second = h.http_stream()
        second.request_headers(headers)
        second.request_body(body, True)
        rejection = second.local_response
        assert rejection is not None, fields  # 2 x (prompt + 800) > 1000
        reserved = 1000 - int(dict(rejection.headers)["x-ratelimit-remaining-tokens"])
        assert reserved == -(-len(body) // 4) + 800, fields


# ---- response parsing edges --------------------------------------------------------------------


def test_deep_nesting_before_usage_does_not_turn_it_into_an_estimate(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    deep = "[" * 100 + "1" + "]" * 100  # structured output nested 100 levels
    answer = (
        '{"output":' + deep + ',"usage":{"prompt_tokens":30,"completion_tokens":10}}'
    ).encode()
    stream = h.http_stream()
    stream.complete(chat_request("deep"), JSON_RESPONSE, [answer])
    assert stream.properties_set["tokenlimit_tokens"] == b"40"
    assert stream.properties_set["tokenlimit_usage"] == b"reported"


def test_a_usage_object_nested_in_content_does_not_override_the_real_one(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(clock=clock())
    assert h.configure(limited("minute", 10**6))
    fake = {"usage": {"input_tokens": 1, "output_tokens": 1}}
    anthropic = {
        "usage": {"input_tokens": 500, "output_tokens": 300},
        "content": [{"type": "tool_use", "name": "f", "input": fake}],
    }
    gemini_args = {
        "functionCall": {"name": "f", "args": {"usageMetadata": {"promptTokenCount": 1}}}
    }
    gemini = {
        "usageMetadata": {"promptTokenCount": 500, "candidatesTokenCount": 300},
        "candidates": [{"content": {"parts": [gemini_args]}}],
    }
    for body in (anthropic, gemini):
        stream = h.http_stream()
        stream.complete(chat_request("nest"), JSON_RESPONSE, [json.dumps(body).encode()])
        assert stream.properties_set["tokenlimit_tokens"] == b"800", body
