"""A chat request keeps its `Content-Length` (issue 17): the filter may add
`stream_options.include_usage` to an OpenAI-style body (or rename its model for a downgrade), so
where Envoy lets it hold the request headers (`allow_on_headers_stop_iteration`, as tokenlimit
renders Envoy) they wait with the body and reach the upstream with the length of the body that
goes with them: unchanged for a request nothing rewrites, the new one for a rewritten body.
Without that setting the headers go on first and the length, no longer known, is dropped
(test_filter_accounting.py). tests/e2e/test_e2e_content_length.py shows the upstream's side in
real Envoy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from support.filter_requests import JSON_RESPONSE, PER_KEY, chat_request, openai_body
from support.proxywasm_host import Action, Host

MakeHost = Callable[..., Host]
SSE = {":status": "200", "content-type": "text/event-stream"}


def held_host(make_any_host: MakeHost, config: dict[str, Any] | None = None) -> Host:
    h = make_any_host(allow_on_headers_stop_iteration=True)
    assert h.configure(config or PER_KEY), h.log_messages()
    return h


def exchange(h: Host, body: dict[str, Any], path: str = "/v1/chat/completions") -> Any:
    raw = json.dumps(body).encode()
    headers = {**chat_request("alice", **{"content-length": str(len(raw))}), ":path": path}
    stream = h.http_stream()
    assert stream.request_headers(headers) == Action.PAUSE  # the headers wait for the body
    assert stream.request_body(raw, True) == Action.CONTINUE
    h.run_pending()
    assert not stream.request_paused and stream.local_response is None
    return stream, raw


def forwarded(stream: Any) -> bytes:
    return b"".join(stream.request_body_chunks_forwarded)


def test_a_request_nothing_rewrites_keeps_its_length_and_bytes(make_any_host: MakeHost) -> None:
    h = held_host(make_any_host)
    for body in [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "stream": False, "messages": []},
        {"model": "m", "stream": True, "stream_options": {"include_usage": True}},
    ]:
        stream, raw = exchange(h, body)
        assert forwarded(stream) == raw
        assert stream.request_header_map.get("content-length") == str(len(raw))
        stream.response_headers(JSON_RESPONSE)
        stream.response_body(openai_body(3, 4), True)
        stream.log()
        assert stream.properties_set["tokenlimit_usage"] == b"reported"
    assert h.metrics.get("tokenlimit.include_usage_added", 0) == 0


def test_a_body_that_gains_include_usage_declares_its_new_length(
    make_any_host: MakeHost,
) -> None:
    h = held_host(make_any_host)
    stream, raw = exchange(h, {"model": "m", "stream": True, "messages": []})
    sent = forwarded(stream)
    assert json.loads(sent)["stream_options"] == {"include_usage": True}
    assert len(sent) > len(raw)
    assert stream.request_header_map.get("content-length") == str(len(sent))
    assert h.metrics["tokenlimit.include_usage_added"] == 1


def test_a_downgraded_body_declares_its_new_length(make_any_host: MakeHost) -> None:
    item = {"limit_by_per_model": "", "limit_keys": [{"key": "gpt-4o", "request_per_minute": 1}]}
    h = held_host(
        make_any_host,
        {
            "rule_name": "models",
            "rule_items": [item],
            "when_exhausted": {"action": "downgrade", "model": "gpt-4o-mini-2024-07-18"},
        },
    )
    lengths = []
    for _ in range(2):  # the second finds gpt-4o spent and goes as the longer-named model
        stream, raw = exchange(h, {"model": "gpt-4o", "messages": []})
        sent = forwarded(stream)
        assert stream.request_header_map.get("content-length") == str(len(sent))
        lengths.append((len(raw), len(sent), json.loads(sent)["model"]))
    assert lengths[0] == (lengths[0][0], lengths[0][0], "gpt-4o")
    assert lengths[1][1] > lengths[1][0] and lengths[1][2] == "gpt-4o-mini-2024-07-18"


def test_a_refused_request_sends_nothing_upstream(make_any_host: MakeHost) -> None:
    item = {"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", "request_per_hour": 1}]}
    h = held_host(make_any_host, {"rule_name": "one", "rule_items": [item]})
    exchange(h, {"model": "m", "messages": []})
    raw = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    refused = h.http_stream()
    headers = chat_request("alice", **{"content-length": str(len(raw))})
    assert refused.request_headers(headers) == Action.PAUSE
    refused.request_body(raw, True)
    assert refused.local_response is not None and refused.local_response.status == 429
    assert refused.request_body_chunks_forwarded == [] and refused.continued == []
