"""The real tokenlimit.wasm driven through request/response lifecycles in wasmtime.

Each test is one behaviour a gateway user would notice: who is admitted, who gets 429 with
which headers, what is charged, and what never happens (credentials in logs, leaks, crashes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.config_needs import judged_vectors
from support.filter_requests import (
    JSON_RESPONSE,
    MINUTE,
    PER_KEY,
    chat_request,
    exchange,
    openai_body,
)
from support.proxywasm_host import Action, Clock, Host, LogLevel, SharedData

# ---- config ------------------------------------------------------------------------------------


def test_every_config_vector_is_judged_as_the_contract_says(make_host, config_vectors):
    # Vectors marked `needs` wait for fields the filter ignores today (reported, never silent).
    for vector in judged_vectors(make_host(), config_vectors):
        h = make_host()
        accepted = h.configure(json.dumps(vector["config"]))
        assert accepted == vector["valid"], (vector["name"], h.log_messages())
        if not vector["valid"]:
            errors = [m for m in h.log_messages(LogLevel.ERROR) if "invalid config" in m]
            assert len(errors) == 1, (vector["name"], h.log_messages())
            prefix = (
                f"invalid config: {vector['field']}: " if vector["field"] else "invalid config: "
            )
            assert errors[0].startswith(prefix), (vector["name"], errors[0])


def test_a_bad_config_is_refused_and_the_previous_one_keeps_working(host: Host):
    for _ in range(3):
        exchange(host, chat_request("alice"), 10, 30)
    broken = json.loads(json.dumps(PER_KEY))
    broken["rule_items"][0]["limit_keys"][0]["token_per_minute"] = "lots"
    assert host.configure(broken) is False
    assert any("token_per_minute: must be an integer" in m for m in host.log_messages())
    stream = exchange(host, chat_request("alice"))
    assert stream.local_response is not None and stream.local_response.status == 429
    assert host.metrics["tokenlimit.config_rejected"] == 1


def test_non_json_config_is_refused_with_a_reason(make_host):
    h = make_host()
    assert h.configure(b"rule_name: yaml-is-not-json") is False
    assert any("not valid JSON" in m for m in h.log_messages(LogLevel.ERROR))


# ---- admission ---------------------------------------------------------------------------------


def test_requests_are_admitted_until_the_budget_is_spent_then_rejected(host: Host):
    statuses = []
    for _ in range(4):
        stream = exchange(host, chat_request("alice"), prompt=10, completion=30)
        statuses.append(stream.local_response.status if stream.local_response else 200)
    # 3 x 40 = 120 ≥ 100 after the third; the fourth is refused (postpaid: spend, then stop).
    assert statuses == [200, 200, 200, 429]
    assert host.metrics["tokenlimit.requests_allowed"] == 3
    assert host.metrics["tokenlimit.requests_rejected"] == 1
    assert host.metrics["tokenlimit.tokens_charged"] == 120


def test_rejection_carries_retry_after_and_openai_rate_limit_headers(host: Host):
    exchange(host, chat_request("alice"), prompt=60, completion=40)
    stream = exchange(host, chat_request("alice"))
    rejection = stream.local_response
    assert rejection is not None
    assert rejection.status == 429
    assert rejection.body == b"Too many requests"
    headers = dict(rejection.headers)
    assert headers["retry-after"] == "50"  # 10 s into the minute
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-reset-tokens"] == "50s"
    assert stream.properties_set["tokenlimit_decision"] == b"rejected"
    # The request stops in the filter: the upstream never sees it.
    assert stream.actions[0] == ("proxy_on_request_headers", Action.PAUSE)


def test_keys_have_independent_budgets(host: Host):
    exchange(host, chat_request("alice"), prompt=100, completion=0)
    assert exchange(host, chat_request("alice")).local_response is not None
    assert exchange(host, chat_request("bob")).local_response is None


def test_a_request_without_the_key_is_not_limited_by_that_item(host: Host):
    for _ in range(5):
        assert exchange(host, chat_request(None), 100, 100).local_response is None


def test_the_window_resets_at_the_minute_boundary(host: Host, clock: Clock):
    exchange(host, chat_request("alice"), prompt=100, completion=0)
    assert exchange(host, chat_request("alice")).local_response is not None
    clock.advance(49.5)
    assert exchange(host, chat_request("alice")).local_response is not None
    clock.advance(0.5)
    assert exchange(host, chat_request("alice")).local_response is None


def test_custom_rejected_code_and_message(make_host):
    h = make_host()
    assert h.configure(
        {
            "rule_name": "g",
            "rejected_code": 503,
            "rejected_msg": "budget spent",
            "global_threshold": {"token_per_hour": 5},
        }
    )
    exchange(h, chat_request(), 5, 0)
    rejection = exchange(h, chat_request()).local_response
    assert (rejection.status, rejection.body) == (503, b"budget spent")


def test_every_matching_item_applies_not_only_the_first(make_host):
    h = make_host()
    assert h.configure(
        {
            "rule_name": "r",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": 1000}],
                },
                {
                    "limit_by_header": "x-team",
                    "limit_keys": [{"key": "red", "token_per_minute": 50}],
                },
            ],
        }
    )
    exchange(h, chat_request("alice", **{"x-team": "red"}), 30, 20)
    # alice has 950 left, but team red is spent: the team's budget refuses, with its headers.
    rejection = exchange(h, chat_request("alice", **{"x-team": "red"})).local_response
    assert rejection is not None
    assert dict(rejection.headers)["x-ratelimit-limit-tokens"] == "50"
    assert exchange(h, chat_request("alice", **{"x-team": "blue"})).local_response is None


def test_several_windows_on_one_key_are_all_enforced(make_host, clock: Clock):
    h = make_host(clock=clock)
    assert h.configure(
        {
            "rule_name": "w",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": 100, "token_per_hour": 150}],
                }
            ],
        }
    )
    exchange(h, chat_request("k"), 100, 0)
    clock.advance(MINUTE)
    exchange(h, chat_request("k"), 50, 0)  # minute budget fresh; hour now at 150
    clock.advance(MINUTE)
    rejection = exchange(h, chat_request("k")).local_response
    assert rejection is not None
    assert dict(rejection.headers)["x-ratelimit-limit-tokens"] == "150"


def test_regexp_keys_pick_the_first_matching_entry(make_host):
    h = make_host()
    assert h.configure(
        {
            "rule_name": "re",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [
                        {"key": "regexp:^vip-", "token_per_minute": 1000},
                        {"key": "*", "token_per_minute": 10},
                    ],
                }
            ],
        }
    )
    exchange(h, chat_request("vip-1"), 50, 0)
    exchange(h, chat_request("basic-1"), 50, 0)
    assert exchange(h, chat_request("vip-1")).local_response is None
    assert exchange(h, chat_request("basic-1")).local_response is not None


@pytest.mark.parametrize(
    ("item", "request_extra", "properties"),
    [
        ({"limit_by_per_param": "team"}, {":path": "/v1/chat/completions?team=red&x=1"}, None),
        ({"limit_by_per_cookie": "session"}, {"cookie": "a=1; session=s1"}, None),
        ({"limit_by_per_consumer": ""}, {"x-mse-consumer": "consumer-a"}, None),
        (
            {"limit_by_per_ip": "from-header-x-forwarded-for"},
            {"x-forwarded-for": "10.1.1.1, 2.2.2.2"},
            None,
        ),
        ({"limit_by_per_ip": "from-remote-addr"}, {}, {"source.address": "10.1.1.1:5555"}),
    ],
    ids=["param", "cookie", "consumer", "ip-from-header", "ip-from-remote-addr"],
)
def test_each_key_source_limits_its_own_callers(make_host, item, request_extra, properties):
    h = make_host()
    key = "10.0.0.0/8" if "limit_by_per_ip" in item else "*"
    assert h.configure(
        {
            "rule_name": "src",
            "rule_items": [{**item, "limit_keys": [{"key": key, "token_per_minute": 20}]}],
        }
    )
    exchange(h, chat_request(**request_extra), 20, 0, properties=properties)
    assert (
        exchange(h, chat_request(**request_extra), properties=properties).local_response is not None
    )
    # The same request without the key value is someone else (or no one) and passes.
    assert (
        exchange(h, chat_request(), properties={"source.address": "192.168.0.1:1"}).local_response
        is None
    )


def test_higress_route_rules_apply_by_route_name_and_domain(make_host):
    h = make_host()
    assert h.configure(
        {
            "rule_name": "default",
            "global_threshold": {"token_per_minute": 1000},
            "_rules_": [
                {
                    "_match_route_": ["default/chat"],
                    "rule_name": "chat-route",
                    "global_threshold": {"token_per_minute": 10},
                },
                {
                    "_match_domain_": ["*.internal.example"],
                    "rule_name": "internal",
                    "global_threshold": {"token_per_minute": 20},
                },
            ],
        }
    )
    chat = {"route_name": "default/chat"}
    exchange(h, chat_request(), 10, 0, properties=chat)
    assert exchange(h, chat_request(), properties=chat).local_response is not None
    internal = chat_request(**{":authority": "a.internal.example"})
    assert exchange(h, internal, 15, 0).local_response is None
    assert exchange(h, internal, 5, 0).local_response is None
    assert exchange(h, internal).local_response is not None
    assert exchange(h, chat_request(), properties={"route_name": "other"}).local_response is None


# ---- charging ----------------------------------------------------------------------------------


def test_usage_split_across_many_body_chunks_is_charged_exactly(host: Host):
    body = openai_body(37, 21)
    stream = host.http_stream()
    stream.complete(
        chat_request("alice"), JSON_RESPONSE, [body[i : i + 7] for i in range(0, len(body), 7)]
    )
    assert host.metrics["tokenlimit.tokens_charged"] == 58
    assert stream.properties_set["tokenlimit_tokens"] == b"58"
    assert stream.properties_set["tokenlimit_usage"] == b"reported"
    # Chunks are forwarded as they arrive, unchanged.
    assert stream.forwarded_response_body == body


def test_streamed_sse_usage_is_charged(host: Host):
    events = (
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9}}\n\n'
        b"data: [DONE]\n\n"
    )
    stream = host.http_stream()
    stream.complete(
        chat_request("alice"),
        {":status": "200", "content-type": "text/event-stream"},
        [events[i : i + 5] for i in range(0, len(events), 5)],
    )
    assert host.metrics["tokenlimit.tokens_charged"] == 21


def test_upstream_errors_are_not_charged(host: Host):
    stream = host.http_stream()
    stream.complete(
        chat_request("alice"),
        {":status": "429", "content-type": "application/json"},
        [b'{"error":{"message":"slow down"}}'],
    )
    assert host.metrics.get("tokenlimit.tokens_charged", 0) == 0


def test_a_response_without_usage_is_charged_an_estimate(host: Host):
    stream = host.http_stream()
    stream.complete(chat_request("alice"), JSON_RESPONSE, [b'{"text":"' + b"x" * 389 + b'"}'])
    assert host.metrics["tokenlimit.tokens_charged"] == 100  # 400 bytes / 4
    assert host.metrics["tokenlimit.usage_estimated"] == 1
    assert stream.properties_set["tokenlimit_usage"] == b"estimated"


def test_a_client_abort_mid_stream_still_charges(host: Host):
    stream = host.http_stream()
    stream.request_headers(chat_request("alice"), end_of_stream=True)
    stream.response_headers({":status": "200", "content-type": "text/event-stream"})
    stream.response_body(
        b'data: {"choices":[{"delta":{"content":"' + b"y" * 200 + b'"}}]}\n\n', False
    )
    stream.log()  # the downstream went away: no end_of_stream ever arrives
    stream.done()
    assert host.metrics["tokenlimit.tokens_charged"] > 0
    assert host.metrics["tokenlimit.usage_estimated"] == 1


def test_malformed_and_hostile_bodies_never_crash_and_charge_once(host: Host):
    bodies = [b"\x00\xff" * 1000, b"{" * 100_000, b'{"usage":{"prompt_tokens":1e999}}', b"]" * 10]
    for body in bodies:
        stream = host.http_stream()
        stream.complete(chat_request("mallory"), JSON_RESPONSE, [body])
        assert host.trap is None
    assert host.metrics["tokenlimit.requests_allowed"] >= 1


def test_concurrent_workers_share_one_budget_through_cas(make_host, clock: Clock):
    shared = SharedData()
    workers = [make_host(clock=clock, shared_data=shared) for _ in range(2)]
    for w in workers:
        assert w.configure(PER_KEY)
    # Admit on both workers before either response arrives (the race postpaid allows) ...
    streams = []
    for w in workers:
        s = w.http_stream()
        assert s.request_headers(chat_request("alice"), end_of_stream=True) == Action.CONTINUE
        streams.append(s)
    # ... then make every charge collide with a concurrent write once.
    shared.inject_cas_mismatch(times=2)
    for s in streams:
        s.response_headers(JSON_RESPONSE)
        s.response_body(openai_body(30, 20), True)
        s.log()
        s.done()
    # Both charges landed: 100 used, so the next request on either worker is refused.
    assert exchange(workers[0], chat_request("alice")).local_response is not None
    assert exchange(workers[1], chat_request("alice")).local_response is not None


# ---- security and resources --------------------------------------------------------------------


def test_credentials_never_appear_in_store_keys_logs_or_access_log_fields(host: Host):
    secret = "sk-live-0123456789abcdef"
    stream = exchange(host, chat_request(f"Bearer {secret}"), 10, 10)
    exchange(host, chat_request(f"Bearer {secret}"), 90, 0)
    stream = exchange(host, chat_request(f"Bearer {secret}"))
    store_keys = host.shared_data.keys()
    everything = b" ".join(store_keys).decode() + " ".join(host.log_messages())
    everything += " ".join(v.decode() for v in stream.properties_set.values())
    assert secret not in everything
    # The local store keeps counters in a fixed table (store/local.zig): slot names and the
    # digest of each counter's name, never the name or the value itself.
    assert store_keys and all(k.startswith(b"tokenlimit:slot:") for k in store_keys)
    values = b" ".join(host.shared_data.get(k)[0] for k in store_keys)  # type: ignore[index]
    assert secret.encode() not in values


def test_hostile_header_values_do_not_stall_or_crash(make_host):
    h = make_host()
    assert h.configure(
        {
            "rule_name": "re",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "regexp:(a|aa)*(b|ab)*c$", "token_per_minute": 10}],
                }
            ],
        }
    )
    for value in ["a" * 4000, "a" * 100_000, "\x7f" * 5000, ""]:
        stream = exchange(h, chat_request(value), 1, 1)
        assert stream.local_response is None
        assert h.trap is None


def test_memory_does_not_grow_across_thousands_of_requests(host: Host, clock: Clock):
    for i in range(200):
        exchange(host, chat_request(f"warm-{i % 20}"), 1, 1)
    before = host.memory_bytes_used()
    for i in range(3000):
        exchange(host, chat_request(f"key-{i % 20}"), 1, 1)
        if i % 500 == 0:
            clock.advance(MINUTE)
    assert host.memory_bytes_used() == before


def test_the_higress_build_behaves_the_same_on_the_local_store(higress_wasm: Path):
    h = Host(higress_wasm)
    assert h.configure(PER_KEY)
    exchange(h, chat_request("alice"), 100, 0)
    assert exchange(h, chat_request("alice")).local_response.status == 429
