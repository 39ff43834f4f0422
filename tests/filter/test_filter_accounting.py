"""The real tokenlimit.wasm: the accounting extensions beyond Higress -- reserve, request
limits, algorithms, weights, shadow mode, limit headers, every dialect's usage, the upstream
filter role. Split from test_filter.py (same fixtures: tests/filter/conftest.py)."""

from __future__ import annotations

import json
import struct

import pytest
from support.filter_requests import (
    JSON_RESPONSE,
    PER_KEY,
    chat_request,
    exchange,
    openai_body,
)
from support.proxywasm_host import Action, Clock, Host, SharedData

# ---- accounting extensions (reserve, algorithms, weights, shadow, request limits) -------------


def chat_with_body(api_key: str, body: dict) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return chat_request(api_key, **{"content-length": str(len(raw))}), raw


def test_streaming_completions_gain_include_usage(host: Host):
    headers, body = chat_with_body("alice", {"model": "m", "stream": True, "messages": []})
    stream = host.http_stream()
    stream.complete(headers, {":status": "200", "content-type": "text/event-stream"}, [], body)
    forwarded = json.loads(b"".join(stream.request_body_chunks_forwarded))
    assert forwarded["stream_options"] == {"include_usage": True}
    assert "content-length" not in stream.request_header_map  # the body grew
    assert host.metrics["tokenlimit.include_usage_added"] == 1


def test_an_explicit_include_usage_and_other_apis_are_left_alone(host: Host):
    # include_usage false/null is overridden (test_counting.py); true needs nothing.
    for path, body in [
        ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/chat/completions", {"stream": False}),
        ("/v1/messages", {"stream": True}),
    ]:
        headers, raw = chat_with_body("alice", body)
        headers[":path"] = path
        stream = host.http_stream()
        stream.complete(headers, JSON_RESPONSE, [openai_body(1, 1)], raw)
        assert b"".join(stream.request_body_chunks_forwarded) == raw
    assert host.metrics.get("tokenlimit.include_usage_added", 0) == 0


def reserve_host(make_host, clock: Clock, **options) -> Host:
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "admission": "reserve", "default_output_tokens": 50, **options})
    return h


def test_reserve_rejects_when_the_estimate_does_not_fit(make_host, clock: Clock):
    h = reserve_host(make_host, clock)
    headers, body = chat_with_body("alice", {"model": "m", "max_tokens": 60, "messages": []})
    # Two requests in flight at once: 2 x (body/4 + 60) > 100, so the second is refused
    # before either has answered (postpaid would admit both).
    first = h.http_stream()
    assert first.request_headers(headers) == Action.CONTINUE
    assert first.request_body(body, True) == Action.CONTINUE
    second = h.http_stream()
    second.request_headers(headers)
    second.request_body(body, True)
    rejection = second.local_response
    assert rejection is not None and rejection.status == 429
    reserved = 100 - int(dict(rejection.headers)["x-ratelimit-remaining-tokens"])
    assert reserved == -(-len(body) // 4) + 60  # the first request's reservation


def test_reserve_settles_the_difference_when_usage_arrives(make_host, clock: Clock):
    h = reserve_host(make_host, clock, show_limit_headers=True)
    headers, body = chat_with_body("alice", {"model": "m", "max_tokens": 60, "messages": []})
    stream = h.http_stream()
    stream.complete(headers, JSON_RESPONSE, [openai_body(5, 5)], body)
    # The first reservation (~75) was replaced by the real 10; the probe's own reservation
    # (its body / 4 + max_tokens 1) shows in what remains.
    probe = h.http_stream()
    probe_headers, probe_body = chat_with_body("alice", {"max_tokens": 1})
    probe.complete(probe_headers, JSON_RESPONSE, [openai_body(0, 0)], probe_body)
    probe_reserved = -(-len(probe_body) // 4) + 1
    remaining = 100 - 10 - probe_reserved
    assert probe.response_header_map["x-ratelimit-remaining-tokens"] == str(remaining)


def test_request_limits_count_requests_not_tokens(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure(
        {
            "rule_name": "rpm",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "request_per_minute": 2}],
                }
            ],
        }
    )
    assert exchange(h, chat_request("a"), 1000, 1000).local_response is None
    assert exchange(h, chat_request("a"), 1000, 1000).local_response is None
    rejection = exchange(h, chat_request("a")).local_response
    assert rejection is not None
    headers = dict(rejection.headers)
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_token_bucket_refills_continuously(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "algorithm": "token_bucket"})  # 100 per minute
    exchange(h, chat_request("b"), 100, 0)
    rejection = exchange(h, chat_request("b")).local_response
    assert rejection is not None
    assert dict(rejection.headers)["retry-after"] == "1"  # one token refills in 0.6 s
    clock.advance(0.6)
    assert exchange(h, chat_request("b"), 0, 0).local_response is None


def test_sliding_window_remembers_the_previous_window(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "algorithm": "sliding"})
    clock.advance(40)  # 50 s into the minute
    exchange(h, chat_request("s"), 120, 0)
    clock.advance(15)  # 5 s into the next minute: 55/60 of 120 = 110 still weighs in
    assert exchange(h, chat_request("s")).local_response is not None
    clock.advance(50)  # 55 s in: 5/60 of 120 = 10
    assert exchange(h, chat_request("s")).local_response is None


def test_weights_price_output_and_cached_tokens(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "weights": {"input": 1, "output": 4, "cached": 0.5}})
    body = json.dumps(
        {
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 10},
            }
        }
    ).encode()
    stream = h.http_stream()
    stream.complete(chat_request("w"), JSON_RESPONSE, [body])
    assert stream.properties_set["tokenlimit_tokens"] == b"35"  # 10 + 10*0.5 + 5*4


def test_shadow_mode_reports_but_never_rejects(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "shadow": True})
    exchange(h, chat_request("sh"), 100, 100)
    stream = exchange(h, chat_request("sh"))
    assert stream.local_response is None
    assert stream.properties_set["tokenlimit_decision"] == b"shadow_rejected"
    assert h.metrics["tokenlimit.requests_shadow_rejected"] == 1
    assert any("shadow: would reject" in m for m in h.log_messages())


def test_limit_headers_on_admitted_responses_when_enabled(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure({**PER_KEY, "show_limit_headers": True})
    exchange(h, chat_request("hd"), 30, 0)
    stream = exchange(h, chat_request("hd"), 1, 1)
    assert stream.response_header_map["x-ratelimit-limit-tokens"] == "100"
    assert stream.response_header_map["x-ratelimit-remaining-tokens"] == "70"
    assert stream.response_header_map["x-ratelimit-reset-tokens"] == "50s"


@pytest.mark.parametrize(
    ("content_type", "chunks", "expected"),
    [
        (
            "text/event-stream",
            [
                b'event: message_start\ndata: {"type":"message_start","message":{"usage":',
                b'{"input_tokens":25,"output_tokens":1}}}\n\nevent: message_delta\ndata: {"ty',
                b'pe":"message_delta","usage":{"output_tokens":15}}\n\n',
            ],
            40,
        ),
        (
            "text/event-stream",
            [
                b'event: response.completed\r\ndata: {"type":"response.completed","response":{"us',
                b'age":{"input_tokens":9,"output_tokens":4}}}\r\n\r\n',
            ],
            13,
        ),
        (
            "application/json",
            [b'{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":6}}'],
            11,
        ),
        (
            "text/event-stream",
            [
                b'data: {"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}\r\n\r\n',
                b'data: {"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":7}}\r\n\r\n',
            ],
            10,
        ),
    ],
    ids=["anthropic-stream", "responses-stream", "gemini-json", "gemini-stream"],
)
def test_each_dialect_is_charged_its_reported_usage(host: Host, content_type, chunks, expected):
    stream = host.http_stream()
    stream.complete(
        chat_request("dialect"), {":status": "200", "content-type": content_type}, chunks
    )
    assert stream.properties_set["tokenlimit_tokens"] == str(expected).encode()
    assert stream.properties_set["tokenlimit_usage"] == b"reported"


def test_upstream_filter_role_renames_the_model_and_limits_nothing(make_host):
    h = make_host()
    assert h.configure({"model_rewrite": "claude-3-5-haiku"})
    headers, body = chat_with_body("alice", {"model": "gpt-4o", "messages": [{"model": "x"}]})
    stream = h.http_stream()
    stream.complete(headers, JSON_RESPONSE, [openai_body(500, 500)], body)
    forwarded = json.loads(b"".join(stream.request_body_chunks_forwarded))
    assert forwarded["model"] == "claude-3-5-haiku"
    assert forwarded["messages"] == [{"model": "x"}]
    assert "content-length" not in stream.request_header_map
    assert h.metrics["tokenlimit.models_rewritten"] == 1
    assert h.metrics.get("tokenlimit.tokens_charged", 0) == 0
    assert not h.configure({"model_rewrite": "m", "rule_name": "r"})
    # A chunked body (no content-length, e.g. after the limiter added include_usage) too.
    del headers["content-length"]
    chunked = h.http_stream()
    chunked.complete(headers, JSON_RESPONSE, [openai_body(1, 1)], body)
    rewritten = json.loads(b"".join(chunked.request_body_chunks_forwarded))
    assert rewritten["model"] == "claude-3-5-haiku"


def test_a_counter_two_workers_create_at_once_keeps_both_reservations(make_host, clock: Clock):
    shared = SharedData()
    h = make_host(clock=clock, shared_data=shared)
    assert h.configure({**PER_KEY, "admission": "reserve", "default_output_tokens": 40})
    now_ms = clock.now_ns // 10**6
    # What another worker's admission wrote into the same slot (store/local.zig `Slot`): the
    # counter's digest and reuse time, then the record (format 2, window start, used 30).
    other_record = struct.pack("<BQQQ", 2, now_ms - now_ms % 60_000, 30, 0)
    created: list[bytes] = []

    def another_worker_creates_it_first(key: bytes, value: bytes, cas: int) -> None:
        if not created:
            created.append(key)
            shared.set(key, value[:24] + other_record)

    shared.before_set = another_worker_creates_it_first
    stream = h.http_stream()
    assert stream.request_headers(chat_request("race"), end_of_stream=True) == Action.CONTINUE
    shared.before_set = None
    value, _ = shared.get(created[0])
    assert struct.unpack("<BQQQ", value[24:])[2] == 30 + 40  # neither reservation was lost
