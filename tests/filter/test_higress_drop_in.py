"""What a Higress user keeps when tokenlimit replaces ai-token-ratelimit (issue 11): rules per
route prefix, the reply, metric and log field Higress produces, and its cookie reading.

Each expectation is read from Higress's code (alibaba/higress 1.0.0 and higress-group/higress
2.0.1, `plugins/wasm-go/extensions/ai-token-ratelimit`, and the wasm-go rule matcher both pin,
v1.0.6-0.20251103065747-41d65dbb2f9e); where tokenlimit differs on purpose the test says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.proxywasm_host import Host
from test_filter import chat_request, exchange
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
