"""Under `reserve` the request headers wait with the body until admission (issue 10, item 8),
through the real module in the test host. The host runs as tokenlimit renders Envoy
(`allow_on_headers_stop_iteration: true`, announced to the filter in its VM environment); without
that Envoy makes a paused headers phase StopAllIteration, and the filter lets the headers go on
as before (tests/e2e/test_e2e_reserve_holds.py shows the upstream's side in real Envoy)."""

from __future__ import annotations

import json
from collections.abc import Callable

from support.proxywasm_host import Action, Host

MakeHost = Callable[..., Host]


def reserve(limit: int) -> dict[str, object]:
    item = {
        "limit_by_per_header": "x-api-key",
        "limit_keys": [{"key": "*", "token_per_hour": limit}],
    }
    return {"rule_name": "hold", "admission": "reserve", "rule_items": [item]}


def chat(api_key: str, body: bytes) -> dict[str, str]:
    return {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "llm.example.com",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-api-key": api_key,
    }


BODY = json.dumps({"model": "m", "max_tokens": 50, "messages": []}).encode()


def test_headers_wait_for_the_decision_and_a_refusal_releases_nothing(
    make_any_host: MakeHost,
) -> None:
    h = make_any_host(allow_on_headers_stop_iteration=True)
    assert h.configure(reserve(100))
    first = h.http_stream()
    assert first.request_headers(chat("k", BODY)) == Action.PAUSE
    assert first.request_paused  # the headers wait ...
    assert first.request_body(BODY, True) == Action.CONTINUE  # ... until admitted
    assert not first.request_paused and first.local_response is None

    refused = h.http_stream()
    assert refused.request_headers(chat("k", BODY)) == Action.PAUSE
    assert refused.request_body(BODY[:10], False) == Action.PAUSE  # buffered, not forwarded
    refused.request_body(BODY[10:], True)
    assert refused.local_response is not None and refused.local_response.status == 429
    assert refused.request_body_chunks_forwarded == [] and refused.continued == []
    assert h.trap is None


def test_without_the_envoy_setting_the_headers_go_on_as_before(make_any_host: MakeHost) -> None:
    # StopAllIteration would keep the body from the filter: the request would wait forever.
    h = make_any_host()
    assert h.configure(reserve(100))
    stream = h.http_stream()
    assert stream.request_headers(chat("k", BODY)) == Action.CONTINUE
    assert stream.request_body(BODY, True) == Action.CONTINUE


def test_requests_that_need_no_body_are_not_held(make_any_host: MakeHost) -> None:
    h = make_any_host(allow_on_headers_stop_iteration=True)
    assert h.configure({**reserve(100), "admission": "postpaid"})
    # Postpaid, and a body nothing rewrites (a chat body may gain include_usage: held,
    # tests/filter/test_content_length.py).
    embeddings = {**chat("k", BODY), ":path": "/v1/embeddings"}
    assert h.http_stream().request_headers(embeddings) == Action.CONTINUE
    assert h.configure(reserve(100))
    get = {":method": "GET", ":path": "/v1/models", ":authority": "a", "x-api-key": "g"}
    assert h.http_stream().request_headers(get, end_of_stream=True) == Action.CONTINUE
    # Past the 1 MiB the filter reads: decided on the headers from the declared length.
    large = chat("l", b"")
    large["content-length"] = str(1024 * 1024 + 1)
    stream = h.http_stream()
    assert stream.request_headers(large) == Action.CONTINUE
    assert stream.local_response is None
