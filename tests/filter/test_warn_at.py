"""Soft limits (`warn_at`, issue 12) through the real filter in the test host: once a budget is
past its warning fraction, admitted responses carry x-tokenlimit-warning, the
tokenlimit.budget_warnings metric counts them and one log line per window says so."""

from __future__ import annotations

import json

from support.proxywasm_host import Clock, Host, LogLevel


def ask(host: Host, api_key: str = "alice", tokens: int = 30):
    headers = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
    body = json.dumps({"usage": {"prompt_tokens": tokens, "completion_tokens": 0}})
    return host.http_stream().complete(
        {**headers, "x-api-key": api_key},
        {":status": "200", "content-type": "application/json"},
        [body.encode()],
    )


def test_a_budget_past_warn_at_warns_admitted_responses_and_logs_once(make_host) -> None:
    clock = Clock(now_ns=(1_767_225_600 + 10) * 10**9)
    host = make_host(clock=clock)
    config = {
        "rule_name": "soft",
        "warn_at": 0.5,
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 100}],
            }
        ],
    }
    assert host.configure(config), host.log_messages()
    # Admission sees 0 and 30 used: no warning; the third request is admitted at 60 (60%).
    warnings = [ask(host).response_header_map.get("x-tokenlimit-warning") for _ in range(4)]
    assert warnings == [None, None, "tokens per minute: 60% used", "tokens per minute: 90% used"]
    assert host.metrics["tokenlimit.budget_warnings"] == 2
    logged = [m for m in host.log_messages(LogLevel.WARN) if "past its warn_at" in m]
    assert len(logged) == 1 and "rule soft" in logged[0]
    # Another caller's budget is not past it.
    assert ask(host, "bob").response_header_map.get("x-tokenlimit-warning") is None
    # A new window: fresh budgets, and one more log line once it is crossed again.
    clock.advance(60)
    for _ in range(3):
        ask(host)
    logged = [m for m in host.log_messages(LogLevel.WARN) if "past its warn_at" in m]
    assert len(logged) == 2


def test_warn_at_on_an_item_and_its_bounds(make_host) -> None:
    host = make_host()
    item = {
        "limit_by_per_header": "x-api-key",
        "warn_at": 0.9,
        "limit_keys": [{"key": "*", "token_per_minute": 100}],
    }
    assert host.configure({"rule_name": "soft", "rule_items": [item]}), host.log_messages()
    assert not host.configure({"rule_name": "soft", "rule_items": [{**item, "warn_at": 1.5}]})
    assert any("rule_items[0].warn_at: must be a fraction" in m for m in host.log_messages())
