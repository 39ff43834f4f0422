"""Higress's matching semantics (issue 11), through the real filter in wasmtime.

Each case is what Higress (alibaba/higress 1.0.x, higress-group/higress 2.0.1, the wasm-go rule
matcher they share) does with the same config and request; where tokenlimit deliberately does
otherwise, the test says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.filter_requests import chat_request, exchange
from support.proxywasm_host import Host


def configured(make_host: Any, config: dict[str, Any]) -> Host:
    h: Host = make_host()
    assert h.configure(config), h.log_messages()
    return h


def per_item(item: dict[str, Any], key: str = "*") -> dict[str, Any]:
    return {
        "rule_name": "r",
        "rule_items": [{**item, "limit_keys": [{"key": key, "token_per_minute": 20}]}],
    }


def shares_budget(h: Host, first: dict[str, str], second: dict[str, str], **kw: Any) -> bool:
    assert exchange(h, first, 20, 0, **kw).local_response is None
    return exchange(h, second, 1, 0, **kw).local_response is not None


def path(query: str) -> dict[str, str]:
    return chat_request(**{":path": f"/v1/chat/completions?{query}"})


@pytest.mark.parametrize(
    "other",
    [
        "apikey=team%20one",
        "apikey=team%20one&apikey=other",  # the first value, as Go's query[key][0]
        "api%6Bey=team+one",  # keys are decoded too
        "a=1;b=2&apikey=team+one",  # Go skips a pair holding ';' and reads the rest
        "apikey=%zz&apikey=team+one",  # and a pair that does not unescape
        "x=1&apikey=team+one#apikey=other",
    ],
)
def test_query_values_are_decoded_as_go_url_parse_query(make_host: Any, other: str) -> None:
    h = configured(make_host, per_item({"limit_by_per_param": "apikey"}))
    assert shares_budget(h, path("apikey=team+one"), path(other))


def test_a_pair_with_a_semicolon_is_not_the_parameter(make_host: Any) -> None:
    h = configured(make_host, per_item({"limit_by_param": "apikey"}, key="team;one"))
    for _ in range(3):  # Go never yields `team;one`: the item never applies
        assert exchange(h, path("apikey=team;one"), 20, 0).local_response is None


def test_an_ipv4_zero_range_also_holds_ipv6_clients(make_host: Any) -> None:
    h = configured(
        make_host, per_item({"limit_by_per_ip": "from-header-x-forwarded-for"}, "0.0.0.0/0")
    )
    v6 = chat_request(**{"x-forwarded-for": "2001:db8::7"})
    assert shares_budget(h, v6, v6)


def route_rule(match: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule_name": "default",
        "global_threshold": {"token_per_minute": 1000},
        "_rules_": [
            {**match, "rule_name": "matched", "global_threshold": {"token_per_minute": 20}}
        ],
    }


def rule_applies(h: Host, request: dict[str, str], properties: dict[str, str]) -> bool:
    """True when the matched rule's 20-token budget (not the default's 1000) holds."""
    h.clock.advance(60)  # a fresh window for each probe
    exchange(h, request, 20, 0, properties=properties)
    return exchange(h, request, 1, 0, properties=properties).local_response is not None


CLUSTER = "outbound|80||llm.ns.svc.cluster.local"


@pytest.mark.parametrize(
    ("domains", "authority", "applies"),
    [
        (["*"], "anything.example:8080", True),
        (["api.*"], "api.example.com", True),
        (["api.*"], "www.api.example.com", False),
        (["*.example.com"], "a.example.com", True),
        (["*.example.com"], "example.com", False),
        (["*example.com"], "example.com", True),
        (["llm.example.com"], "LLM.example.com:443", True),  # tokenlimit: case-insensitive
    ],
)
def test_domain_patterns_as_higress_matches_them(
    make_host: Any, domains: list[str], authority: str, applies: bool
) -> None:
    h = configured(make_host, route_rule({"_match_domain_": domains}))
    assert rule_applies(h, chat_request(**{":authority": authority}), {}) is applies


@pytest.mark.parametrize(
    ("match", "route", "authority", "cluster", "applies"),
    [
        # route + domain: the route alone decides (Higress ignores the domains).
        (
            {"_match_route_": ["chat"], "_match_domain_": ["a.example"]},
            "chat",
            "b.example",
            "c",
            True,
        ),
        (
            {"_match_route_": ["chat"], "_match_domain_": ["a.example"]},
            "other",
            "a.example",
            "c",
            False,
        ),
        # route + service: both.
        (
            {"_match_route_": ["chat"], "_match_service_": ["llm.ns.svc.cluster.local"]},
            "chat",
            "x",
            CLUSTER,
            True,
        ),
        (
            {"_match_route_": ["chat"], "_match_service_": ["llm.ns.svc.cluster.local"]},
            "chat",
            "x",
            "outbound|80||other",
            False,
        ),
        (
            {"_match_route_": ["chat"], "_match_service_": ["llm.ns.svc.cluster.local"]},
            "other",
            "x",
            CLUSTER,
            False,
        ),
        # domain + service: the domain alone decides.
        (
            {"_match_domain_": ["a.example"], "_match_service_": ["llm.ns.svc.cluster.local"]},
            "r",
            "a.example",
            "c",
            True,
        ),
        (
            {"_match_domain_": ["a.example"], "_match_service_": ["llm.ns.svc.cluster.local"]},
            "r",
            "b.example",
            CLUSTER,
            False,
        ),
        # service alone.
        ({"_match_service_": ["llm.ns.svc.cluster.local:80"]}, "r", "x", CLUSTER, True),
    ],
)
def test_route_domain_and_service_combine_as_higress_combines_them(
    make_host: Any, match: dict[str, Any], route: str, authority: str, cluster: str, applies: bool
) -> None:
    h = configured(make_host, route_rule(match))
    request = chat_request(**{":authority": authority})
    properties = {"route_name": route, "cluster_name": cluster}
    assert rule_applies(h, request, properties) is applies


@pytest.mark.parametrize(
    ("pattern", "consumer", "matches"),
    [
        ("^.{3}$", "专用1", True),  # by character, as Go's regexp: 3 runes, 7 bytes
        ("^\\p{Han}+$", "专用", True),
        ("^\\p{Han}+$", "专用1", False),
        ("^[[:alpha:]]+$", "team", True),
        ("^[[:alpha:]]+$", "team1", False),
        ("\\bvip\\b", "the vip team", True),
        ("\\bvip\\b", "vipteam", False),
        ("^(?P<team>[a-z]+)-(?<tier>\\d)$", "red-1", True),
        ("^[^a]$", "专", True),
        ("^\\x{4e13}", "专用", True),
    ],
)
def test_regexps_match_by_character_with_go_syntax(
    make_host: Any, pattern: str, consumer: str, matches: bool
) -> None:
    h = configured(make_host, per_item({"limit_by_per_consumer": ""}, key=f"regexp:{pattern}"))
    request = chat_request(**{"x-mse-consumer": consumer})
    exchange(h, request, 20, 0)
    assert (exchange(h, request, 1, 0).local_response is not None) is matches
