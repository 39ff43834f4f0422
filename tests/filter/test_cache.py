"""The response cache (issue 15) through the real filter in the test host, local store: a
repeated question is answered by the filter at 0 tokens, per caller unless shared by the rule,
until its TTL; what must never be stored is not; Cache-Control bypasses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.filter_requests import JSON_RESPONSE, chat_request, openai_body
from support.proxywasm_host import Clock, Host
from support.proxywasm_host.stream import HttpStream
from tokenlimit.model import filter_json, parse_policy, policy_filter_config

QUESTION = {"model": "m", "messages": [{"role": "user", "content": "last quarter's results?"}]}
# The same question, members in another order and spaced out: the same key.
SAME_QUESTION = (
    b'{ "messages" : [ { "content": "last quarter\'s results?", "role": "user" } ],\n'
    b'  "model": "m" }'
)
SSE = {":status": "200", "content-type": "text/event-stream"}
SSE_BODY = [
    b'data: {"choices":[{"delta":{"content":"up"}}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\ndata: [DONE]\n\n',
]


def cached_rule(**cache: Any) -> dict[str, Any]:
    return {
        "rule_name": "faq",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 10_000, "request_per_minute": 100}],
            }
        ],
        "cache": {"ttl_seconds": 60, **cache},
    }


def ask(
    host: Host,
    api_key: str = "alice",
    body: bytes | None = None,
    response: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpStream:
    payload = json.dumps(QUESTION).encode() if body is None else body
    request = {**chat_request(api_key), "content-length": str(len(payload)), **(headers or {})}
    answer = [openai_body(10, 30)] if chunks is None else chunks
    return host.http_stream().complete(request, response or JSON_RESPONSE, answer, payload)


def make(make_host: Any, clock: Clock, **cache: Any) -> Host:
    host: Host = make_host(clock=clock)
    assert host.configure(cached_rule(**cache)), host.log_messages()
    return host


def test_a_repeated_question_is_answered_by_the_filter_at_no_token_cost(
    make_host: Any, clock: Clock
) -> None:
    host = make(make_host, clock)
    first = ask(host)
    assert first.local_response is None
    assert first.response_header_map.get("x-tokenlimit-cache") == "miss"
    assert first.properties_set["tokenlimit_cache"] == b"miss"
    clock.advance(7)
    again = ask(host, body=SAME_QUESTION)
    hit = again.local_response
    assert hit is not None and hit.status == 200
    assert hit.body == openai_body(10, 30)
    assert again.response_header_map.get("x-tokenlimit-cache") == "hit"
    assert again.response_header_map.get("age") == "7"
    assert again.response_header_map.get_all("content-type") == ["application/json"]
    assert again.properties_set["tokenlimit_cache"] == b"hit"
    assert again.properties_set["tokenlimit_decision"] == b"cached"
    assert again.properties_set["tokenlimit_tokens"] == b"0"
    metrics = host.metrics
    assert metrics["tokenlimit.cache_hits"] == 1
    assert metrics["tokenlimit.cache_misses"] == 1
    assert metrics["tokenlimit.cache_tokens_saved"] == 40
    assert metrics["tokenlimit.tokens_charged"] == 40  # the first answer only
    assert metrics["tokenlimit.cache_bytes_stored"] > len(openai_body(10, 30))


def test_a_hit_still_counts_as_a_request_and_a_spent_request_budget_refuses_it(
    make_host: Any, clock: Clock
) -> None:
    host: Host = make_host(clock=clock)
    rule = cached_rule()
    rule["rule_items"][0]["limit_keys"][0]["request_per_minute"] = 2
    assert host.configure(rule), host.log_messages()
    assert ask(host).local_response is None
    assert ask(host).local_response.status == 200  # type: ignore[union-attr]
    refused = ask(host).local_response
    assert refused is not None and refused.status == 429


def test_a_spent_token_budget_does_not_refuse_a_hit(make_host: Any, clock: Clock) -> None:
    host: Host = make_host(clock=clock)
    rule = cached_rule()
    rule["rule_items"][0]["limit_keys"][0]["token_per_minute"] = 40
    assert host.configure(rule), host.log_messages()
    assert ask(host).local_response is None  # 40 tokens: the budget is spent
    other = ask(host, body=b'{"model":"m","messages":[]}').local_response
    assert other is not None and other.status == 429
    hit = ask(host).local_response
    assert hit is not None and hit.status == 200 and hit.body == openai_body(10, 30)


def test_another_callers_identical_question_is_a_miss(make_host: Any, clock: Clock) -> None:
    host = make(make_host, clock)
    ask(host, "alice")
    bob = ask(host, "bob")
    assert bob.local_response is None
    assert bob.response_header_map.get("x-tokenlimit-cache") == "miss"
    assert ask(host, "bob").local_response is not None


def test_scope_rule_shares_answers_between_callers(make_host: Any, clock: Clock) -> None:
    host = make(make_host, clock, scope="rule")
    ask(host, "alice")
    assert ask(host, "bob").local_response is not None


def test_an_answer_expires_with_its_ttl(make_host: Any, clock: Clock) -> None:
    host = make(make_host, clock, ttl_seconds=30)
    ask(host)
    clock.advance(29)
    assert ask(host).local_response is not None
    clock.advance(1)
    expired = ask(host)
    assert expired.local_response is None
    assert expired.response_header_map.get("x-tokenlimit-cache") == "miss"


def test_cache_control_no_store_or_no_cache_bypasses_lookup_and_store(
    make_host: Any, clock: Clock
) -> None:
    host = make(make_host, clock)
    for directive in ("no-store", "max-age=0, No-Cache"):
        bypassed = ask(host, headers={"cache-control": directive})
        assert bypassed.local_response is None
        assert bypassed.response_header_map.get("x-tokenlimit-cache") == "bypass"
        assert bypassed.properties_set["tokenlimit_cache"] == b"bypass"
    assert ask(host).local_response is None  # nothing was stored
    assert ask(host, headers={"cache-control": "no-cache"}).local_response is None  # nor looked up
    assert host.metrics["tokenlimit.cache_bypasses"] == 3


def test_errors_answers_without_usage_and_large_answers_are_never_stored(
    make_host: Any, clock: Clock
) -> None:
    host = make(make_host, clock, max_entry_bytes=200)
    error = {":status": "500", "content-type": "application/json"}
    ask(host, response=error, chunks=[b'{"error":"boom"}'])
    assert ask(host, response=error).local_response is None
    host = make(make_host, clock, max_entry_bytes=200)
    ask(host, chunks=[b'{"choices":[]}'])  # no usage: its cost was estimated
    assert ask(host, chunks=[b'{"choices":[]}']).local_response is None
    host = make(make_host, clock, max_entry_bytes=200)
    large = json.dumps({"pad": "x" * 300, "usage": {"prompt_tokens": 1}}).encode()
    ask(host, chunks=[large])
    assert ask(host, chunks=[large]).local_response is None


def test_an_aborted_stream_is_not_stored(make_host: Any, clock: Clock) -> None:
    host = make(make_host, clock)
    payload = json.dumps(QUESTION).encode()
    stream = host.http_stream()
    stream.request_headers({**chat_request("alice"), "content-length": str(len(payload))})
    stream.request_body(payload, True)
    stream.response_headers(SSE)
    stream.response_body(SSE_BODY[1], False)  # usage seen, but the stream never ends
    stream.log()
    stream.done()
    assert ask(host, response=SSE, chunks=SSE_BODY).local_response is None


def test_an_event_stream_is_replayed_as_the_same_events(make_host: Any, clock: Clock) -> None:
    host = make(make_host, clock)
    first = ask(host, response=SSE, chunks=SSE_BODY)
    assert first.forwarded_response_body == b"".join(SSE_BODY)
    hit = ask(host, response=SSE, chunks=SSE_BODY)
    assert hit.local_response is not None
    assert hit.local_response.body == b"".join(SSE_BODY)
    assert hit.response_header_map.get_all("content-type") == ["text/event-stream"]
    assert host.metrics["tokenlimit.cache_tokens_saved"] == 10


def test_shadow_mode_counts_hits_but_serves_nothing(make_host: Any, clock: Clock) -> None:
    host: Host = make_host(clock=clock)
    assert host.configure({**cached_rule(), "shadow": True}), host.log_messages()
    ask(host)
    again = ask(host)
    assert again.local_response is None
    assert again.properties_set["tokenlimit_cache"] == b"hit"
    assert "x-tokenlimit-cache" not in again.response_header_map
    assert host.metrics["tokenlimit.cache_hits"] == 1
    assert host.metrics["tokenlimit.tokens_charged"] == 80


def test_a_rule_without_cache_adds_nothing(make_host: Any, clock: Clock) -> None:
    host: Host = make_host(clock=clock)
    rule = cached_rule()
    del rule["cache"]
    assert host.configure(rule), host.log_messages()
    ask(host)
    again = ask(host)
    assert again.local_response is None
    assert "x-tokenlimit-cache" not in again.response_header_map
    assert "tokenlimit_cache" not in again.properties_set


def test_hostile_bodies_are_bypassed_or_keyed_never_crash(make_any_host: Any, clock: Clock) -> None:
    # Also the ReleaseSafe build: any overflow or out-of-bounds index in the canonicaliser traps.
    host = make(make_any_host, clock)
    deep = b"[" * 100_000 + b"]" * 100_000  # past the nesting bound: not cached
    stream = ask(host, body=deep)
    assert stream.local_response is None
    assert stream.properties_set["tokenlimit_cache"] == b"bypass"
    broken = ask(host, body=b'{"messages": [1, 2,')
    assert broken.properties_set["tokenlimit_cache"] == b"bypass"
    # A body near the 1 MiB bound with 50,000 members is keyed (sorted in O(n log n)).
    wide = json.dumps({f"k{i:05d}": i for i in range(50_000)}).encode()
    assert ask(host, body=wide).properties_set["tokenlimit_cache"] == b"miss"
    assert ask(host, body=wide).local_response is not None


def test_the_higress_build_serves_hits_from_its_local_store(
    higress_wasm: Path, clock: Clock
) -> None:
    host = Host(higress_wasm, clock=clock)
    assert host.configure(cached_rule()), host.log_messages()
    assert ask(host).local_response is None
    hit = ask(host).local_response
    assert hit is not None and hit.body == openai_body(10, 30)


def test_a_policys_camelcase_cache_reaches_the_filter(make_host: Any, clock: Clock) -> None:
    spec = {
        "ruleName": "faq",
        "globalThreshold": {"requestPerMinute": 100},
        "cache": {"ttlSeconds": 60, "scope": "rule", "maxEntryBytes": 4096},
        "targetRef": {"gateway": "envoy"},
    }
    policy = parse_policy(
        {
            "apiVersion": "tokenlimit.io/v1alpha1",
            "kind": "TokenRateLimitPolicy",
            "metadata": {"name": "p"},
            "spec": spec,
        }
    )
    document = json.loads(filter_json(policy_filter_config(policy.spec)))
    assert document["cache"] == {"ttl_seconds": 60, "scope": "rule", "max_entry_bytes": 4096}
    host: Host = make_host(clock=clock)
    assert host.configure(document), host.log_messages()
    ask(host, "alice")
    assert ask(host, "bob").local_response is not None  # scope rule: shared


def test_a_stream_is_replayed_as_the_client_saw_it_without_the_gateways_usage_event(
    make_host: Any, clock: Clock
) -> None:
    host = make(make_host, clock)
    streaming = json.dumps({**QUESTION, "stream": True}).encode()
    first = ask(host, body=streaming, response=SSE, chunks=SSE_BODY)
    seen = first.forwarded_response_body
    assert b"usage" not in seen and seen.endswith(b"data: [DONE]\n\n")  # the gateway asked
    hit = ask(host, body=streaming, response=SSE, chunks=SSE_BODY).local_response
    assert hit is not None and hit.body == seen
