"""What a Higress user keeps when tokenlimit replaces ai-token-ratelimit (issue 11): rules per
route prefix, the reply, metric and log field Higress produces, and its cookie reading.

Each expectation is read from Higress's code (alibaba/higress 1.0.0 and higress-group/higress
2.0.1, `plugins/wasm-go/extensions/ai-token-ratelimit`, and the wasm-go rule matcher both pin,
v1.0.6-0.20251103065747-41d65dbb2f9e); where tokenlimit differs on purpose the test says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.filter_requests import chat_request, exchange
from support.proxywasm_host import Clock, Host
from test_match_higress import configured, route_rule, rule_applies


@pytest.mark.parametrize(
    ("prefixes", "route", "applies"),
    [
        (["api-"], "api-chat", True),
        (["api-"], "web-chat", False),
        (["web-", "api-"], "api-chat", True),
        (["", "api-"], "api-chat", True),  # empty prefixes are dropped, as Higress drops them
        (["api-chat"], "api-chat", True),  # a prefix may be the whole name
        (["api-"], "", False),
    ],
)
def test_match_route_prefix_selects_the_rule_by_route_name_prefix(
    make_host: Any, prefixes: list[str], route: str, applies: bool
) -> None:
    h = configured(make_host, route_rule({"_match_route_prefix_": prefixes}))
    assert rule_applies(h, chat_request(), {"route_name": route}) is applies


def test_route_names_decide_before_route_prefixes(make_host: Any) -> None:
    # Higress's matcher files an entry with routes under "route": its prefixes are never read.
    h = configured(
        make_host, route_rule({"_match_route_": ["chat"], "_match_route_prefix_": ["api-"]})
    )
    assert rule_applies(h, chat_request(), {"route_name": "api-chat"}) is False
    assert rule_applies(h, chat_request(), {"route_name": "chat"}) is True


def test_an_imported_route_prefix_rule_renders_to_a_plugin_that_limits_those_routes(
    make_host: Any,
) -> None:
    # `tokenlimit import` keeps a `_match_route_prefix_` rule: WasmPlugin matchRules have no
    # prefix field, so the policy's targetRef.routePrefixes renders into defaultConfig's _rules_.
    from tokenlimit.importer import import_documents
    from tokenlimit.loader import policy_from_data
    from tokenlimit.render.higress import HigressOptions, render
    from tokenlimit.render.kube import WasmModule

    config = {
        "_rules_": [
            {
                "_match_route_prefix_": ["api-"],
                "rule_name": "matched",
                "global_threshold": {"token_per_minute": 20},
            }
        ]
    }
    (document,) = import_documents([config], "c.yaml", name="gw").documents
    assert document["spec"]["targetRef"] == {"gateway": "higress", "routePrefixes": ["api-"]}
    policy = policy_from_data(document, "imported").policy
    assert policy is not None
    (plugin,) = render(policy, HigressOptions(module=WasmModule("oci://x/tokenlimit:1", None)))
    assert "matchRules" not in plugin["spec"]
    assert plugin["spec"]["defaultConfigDisable"] is False
    rendered = plugin["spec"]["defaultConfig"]
    assert list(rendered) == ["_rules_"]
    assert rendered["_rules_"][0]["_match_route_prefix_"] == ["api-"]
    h = configured(make_host, rendered)
    on_prefix = {"route_name": "api-chat"}
    assert exchange(h, chat_request(), 20, 0, properties=on_prefix).local_response is None
    assert exchange(h, chat_request(), 1, 0, properties=on_prefix).local_response is not None
    other = {"route_name": "chat"}
    for _ in range(3):  # no rule on other routes: nothing is limited there
        assert exchange(h, chat_request(), 20, 0, properties=other).local_response is None


def test_match_consumer_is_not_a_higress_field_and_narrows_nothing(make_host: Any) -> None:
    # wasm-go's matcher reads _match_route_, _match_domain_, _match_service_ and
    # _match_route_prefix_ only: `_match_consumer_` is an unknown field, ignored (with a
    # warning), so the rule applies to every consumer on the prefixed routes, as on Higress.
    h = configured(
        make_host, route_rule({"_match_route_prefix_": ["api-"], "_match_consumer_": ["alice"]})
    )
    bob = chat_request(**{"x-mse-consumer": "bob"})
    assert rule_applies(h, bob, {"route_name": "api-chat"}) is True
    assert any("_match_consumer_" in line for line in h.log_messages())


# ---- what a Higress user sees of a refusal ------------------------------------------------------

TEN_TOKENS = {"rule_name": "r", "global_threshold": {"token_per_minute": 10}}
CHAT_ROUTE = {"route_name": "default/chat", "cluster_name": "outbound|80||llm.ns.svc.cluster.local"}
METRIC = "route.{}.upstream.{}.model.none.consumer.{}.metric.token_ratelimit_count"


def refused_on(h: Host, request: dict[str, str], properties: dict[str, str] | None = None) -> Any:
    """Spends the 10-token budget, then returns the refused request's stream."""
    exchange(h, request, 10, 0, properties=properties)
    stream = exchange(h, request, properties=properties)
    assert stream.local_response is not None
    return stream


def higress_host(higress_wasm: Path, clock: Clock) -> Host:
    h = Host(higress_wasm, clock=clock)
    assert h.configure(TEN_TOKENS), h.log_messages()
    return h


def test_a_refusal_on_higress_carries_higress_reset_header_and_details(
    higress_wasm: Path, clock: Clock
) -> None:
    # main.go rejected(): SendHttpResponseWithDetail(code, "ai-token-ratelimit.rejected",
    # {X-TokenRateLimit-Reset: <TTL of the refusing counter, seconds>}, rejected_msg).
    stream = refused_on(higress_host(higress_wasm, clock), chat_request())
    reply = stream.local_response
    assert reply.details == "ai-token-ratelimit.rejected"
    headers = dict(reply.headers)
    assert headers["x-tokenratelimit-reset"] == "50"  # 10 s into the minute: 50 s left
    assert (reply.status, reply.body) == (429, b"Too many requests")
    assert headers["retry-after"] == "50"  # tokenlimit's own headers stay


def test_a_refusal_on_envoy_keeps_tokenlimit_details(make_host: Any, clock: Clock) -> None:
    h = make_host(clock=clock)
    assert h.configure(TEN_TOKENS)
    reply = refused_on(h, chat_request()).local_response
    assert reply.details == "tokenlimit_rejected"
    assert "x-tokenratelimit-reset" not in dict(reply.headers)


def test_a_refusal_on_higress_counts_token_ratelimit_count_by_route_and_consumer(
    higress_wasm: Path, clock: Clock
) -> None:
    h = higress_host(higress_wasm, clock)
    alice = chat_request(**{"x-mse-consumer": "alice"})
    refused_on(h, alice, CHAT_ROUTE)
    exchange(h, alice, properties=CHAT_ROUTE)
    name = METRIC.format("default/chat", CHAT_ROUTE["cluster_name"], "alice")
    assert h.metrics[name] == 2
    assert h.metric_types[name].name == "COUNTER"
    # Without a route, a cluster or a consumer: Higress's "-", "-" and "none".
    h.clock.advance(60)
    refused_on(h, chat_request())
    assert h.metrics[METRIC.format("-", "-", "none")] == 1


def test_a_refusal_on_higress_writes_token_ratelimit_status_into_ai_log(
    higress_wasm: Path, clock: Clock
) -> None:
    h = higress_host(higress_wasm, clock)
    stream = refused_on(h, chat_request())
    # wasm-go's WriteUserAttributeToLogWithKey: a JSON object, escaped as a JSON string body.
    assert stream.properties_set["ai_log"] == b'{\\"token_ratelimit_status\\":\\"limited\\"}'
    # Fields other plugins wrote before are kept.
    h.clock.advance(60)
    earlier = {"ai_log": '{\\"model\\":\\"qwen\\",\\"n\\":2}'}
    stream = refused_on(h, chat_request(), earlier)
    assert stream.properties_set["ai_log"] == (
        b'{\\"model\\":\\"qwen\\",\\"n\\":2,\\"token_ratelimit_status\\":\\"limited\\"}'
    )


def test_an_admitted_request_on_higress_leaves_ai_log_alone(
    higress_wasm: Path, clock: Clock
) -> None:
    stream = exchange(higress_host(higress_wasm, clock), chat_request(), 1, 0)
    assert stream.local_response is None
    assert "ai_log" not in stream.properties_set


# ---- cookies and empty values, as Higress reads them --------------------------------------------


def per_item(item: dict[str, Any], key: str = "*") -> dict[str, Any]:
    return {
        "rule_name": "r",
        "rule_items": [{**item, "limit_keys": [{"key": key, "token_per_minute": 20}]}],
    }


def limited(h: Host, request: dict[str, str]) -> bool:
    """Whether `request` spends a budget: 20 tokens, then one more is refused."""
    h.clock.advance(60)
    exchange(h, request, 20, 0)
    return exchange(h, request, 1, 0).local_response is not None


def cookie(value: str) -> dict[str, str]:
    return chat_request(cookie=value)


def test_a_cookie_value_keeps_its_quotes_as_higress_reads_it(make_host: Any) -> None:
    # util.ExtractCookieValueByKey: the text after the first `=`, quotes and all; so `"q"` and
    # `q` are two callers, and a literal key `q` does not hold `"q"`.
    h = configured(make_host, per_item({"limit_by_per_cookie": "session"}))
    exchange(h, cookie('session="q"'), 20, 0)
    assert exchange(h, cookie("session=q"), 1, 0).local_response is None
    assert exchange(h, cookie('a=1; session="q"'), 1, 0).local_response is not None
    h = configured(make_host, per_item({"limit_by_cookie": "session"}, key='"q"'))
    assert limited(h, cookie('session="q"')) is True
    assert limited(h, cookie("session=q")) is False


@pytest.mark.parametrize(
    ("header", "key", "is_limited"),
    [
        ("session=a=b", "a=b", True),  # 2.0.1: the rest after the first `=`
        ("x=1;  session=a=b ;y", "a=b", True),  # pairs trimmed; a pair without `=` skipped
        ("session; session=a=b", "a=b", True),
        ("session=a; session=a=b", "a=b", False),  # the first pair named so wins
        ("Session=a=b", "a=b", False),  # names are case-sensitive
    ],
)
def test_cookie_pairs_are_split_as_higress_2_0_1_splits_them(
    make_host: Any, header: str, key: str, is_limited: bool
) -> None:
    h = configured(make_host, per_item({"limit_by_cookie": "session"}, key=key))
    assert limited(h, cookie(header)) is is_limited


@pytest.mark.parametrize(
    ("item", "request_headers", "is_limited"),
    [
        # An empty header, parameter or consumer is a value: Higress's `*` holds it.
        ({"limit_by_per_header": "x-api-key"}, {"x-api-key": ""}, True),
        ({"limit_by_per_consumer": ""}, {"x-mse-consumer": ""}, True),
        ({"limit_by_per_param": "apikey"}, {":path": "/v1/chat/completions?apikey="}, True),
        ({"limit_by_per_param": "apikey"}, {":path": "/v1/chat/completions?apikey"}, True),
        # An empty cookie is not (Higress skips the item), nor is an absent header.
        ({"limit_by_per_cookie": "session"}, {"cookie": "session="}, False),
        ({"limit_by_per_header": "x-api-key"}, {}, False),
    ],
)
def test_empty_values_are_limited_where_higress_limits_them(
    make_host: Any, item: dict[str, Any], request_headers: dict[str, str], is_limited: bool
) -> None:
    h = configured(make_host, per_item(item))
    assert limited(h, chat_request(**request_headers)) is is_limited


def test_an_empty_value_matches_a_regexp_that_matches_empty(make_host: Any) -> None:
    h = configured(make_host, per_item({"limit_by_per_header": "x-api-key"}, "regexp:^$"))
    assert limited(h, chat_request(**{"x-api-key": ""})) is True
