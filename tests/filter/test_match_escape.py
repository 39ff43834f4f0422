"""No key value escapes its budget (issue 10 item 3), through the real filter in wasmtime.

A value too long to classify, an X-Forwarded-For entry that does not parse, and other spellings
of one address or one credential are all counted: never a free pass, never a fresh budget.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.filter_requests import chat_request, exchange
from support.proxywasm_host import Host

PEER = {"source.address": "192.0.2.7:40000"}


def per_ip_host(make_host: Any, key: str = "0.0.0.0/0") -> Host:
    h: Host = make_host()
    assert h.configure(
        {
            "rule_name": "ip",
            "rule_items": [
                {
                    "limit_by_per_ip": "from-header-x-forwarded-for",
                    "limit_keys": [{"key": key, "token_per_minute": 20}],
                }
            ],
        }
    ), h.log_messages()
    return h


def spend_then_refused(h: Host, first: dict[str, str], second: dict[str, str]) -> bool:
    """Spends the whole budget as `first`; True when `second` is then refused (same budget)."""
    assert exchange(h, first, 20, 0, properties=PEER).local_response is None
    return exchange(h, second, 1, 0, properties=PEER).local_response is not None


def test_a_value_longer_than_the_match_bound_is_still_limited(make_host: Any) -> None:
    h: Host = make_host()
    assert h.configure(
        {
            "rule_name": "long",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "regexp:^sk-", "token_per_minute": 20}],
                }
            ],
        }
    )
    padded = "sk-" + "a" * 5000
    assert spend_then_refused(h, chat_request(padded), chat_request(padded))
    # Hashed whole: another long value is another caller with its own budget.
    assert exchange(h, chat_request("sk-" + "b" * 5000), 1, 0).local_response is None


@pytest.mark.parametrize("garbage", ["unknown", "garbage", "[v6", "1.2.3.4:port", ""])
def test_an_unparsable_forwarded_address_is_limited_under_the_peer(
    make_host: Any, garbage: str
) -> None:
    h = per_ip_host(make_host)
    first = chat_request(**{"x-forwarded-for": f"{garbage}, 198.51.100.1"})
    # The same peer with another unparsable spelling shares the budget...
    assert spend_then_refused(h, first, chat_request(**{"x-forwarded-for": "nonsense"}))
    # ...and the peer's own address is that budget.
    refused = exchange(h, chat_request(**{"x-forwarded-for": "192.0.2.7"}), properties=PEER)
    assert refused.local_response is not None


@pytest.mark.parametrize(
    ("spelling_a", "spelling_b"),
    [
        ("10.1.1.1", "::ffff:10.1.1.1"),
        ("10.1.1.1", "10.1.1.1:5555"),
        ("2001:db8::1", "2001:DB8:0:0:0:0:0:0001"),
        ("2001:db8::1", "[2001:db8::1]:443"),
        ("2001:db8::1", "[2001:db8::1]"),
    ],
)
def test_spellings_of_one_address_share_one_budget(
    make_host: Any, spelling_a: str, spelling_b: str
) -> None:
    h = per_ip_host(make_host, "::/0" if ":" in spelling_a else "10.0.0.0/8")
    a = chat_request(**{"x-forwarded-for": spelling_a})
    b = chat_request(**{"x-forwarded-for": spelling_b})
    assert spend_then_refused(h, a, b)


def test_the_auth_scheme_is_compared_case_insensitively(make_host: Any) -> None:
    h: Host = make_host()
    assert h.configure(
        {
            "rule_name": "auth",
            "rule_items": [
                {
                    "limit_by_per_header": "authorization",
                    "limit_keys": [{"key": "*", "token_per_minute": 20}],
                },
                {
                    "limit_by_header": "proxy-authorization",
                    "limit_keys": [{"key": "Bearer team-key", "token_per_minute": 20}],
                },
            ],
        }
    )
    assert spend_then_refused(
        h, chat_request(authorization="Bearer sk-1"), chat_request(authorization="bEARER sk-1")
    )
    # The credential itself stays case-sensitive: another key, another budget.
    assert exchange(h, chat_request(authorization="Bearer SK-1"), 1, 0).local_response is None
    # A literal key matches any spelling of its scheme.
    team = {"proxy-authorization": "bearer team-key"}
    assert spend_then_refused(h, chat_request(**team), chat_request(**team))
