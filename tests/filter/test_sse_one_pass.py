"""A streamed answer read once (issue 17): the usage-event filter takes the usage scanner's verdict
on each event. Through the real module (the shipped build and a safety-checked one): the client
gets exactly the stream it asked for, event for event as the upstream wrote them, and the
usage is charged, however the stream is split."""

from __future__ import annotations

import json
from collections.abc import Callable

from support.proxywasm_host import Clock, Host

MakeHost = Callable[..., Host]
SSE_RESPONSE = {":status": "200", "content-type": "text/event-stream"}
RULE = {
    "rule_name": "chat",
    "rule_items": [
        {
            "limit_by_per_header": "x-api-key",
            "limit_keys": [{"key": "*", "token_per_minute": 10**9}],
        }
    ],
}
HEAD = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,'
    '"model":"gpt-4o-mini","choices":'
)


def chunk_event(delta: str, end: str = "\n\n") -> bytes:
    choice = f'[{{"index":0,"delta":{delta},"finish_reason":null}}]'
    return f'data: {HEAD}{choice},"usage":null}}{end}'.encode()


def usage_event(prompt: int, completion: int, end: str = "\n\n") -> bytes:
    usage = json.dumps({"prompt_tokens": prompt, "completion_tokens": completion})
    return f'data: {HEAD}[],"usage":{usage}}}{end}'.encode()


def host_for(make_any_host: MakeHost) -> Host:
    h = make_any_host(clock=Clock(now_ns=(1_767_225_600 + 10) * 10**9))
    assert h.configure(RULE), h.log_messages()
    return h


def streamed(h: Host, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """A streamed chat request that did not ask for usage; what the client got, chunk by chunk,
    and the tokens charged."""
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}).encode()
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "llm.example.com",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-api-key": "k",
    }
    stream = h.http_stream()
    stream.complete(headers, SSE_RESPONSE, chunks, body)
    assert h.trap is None
    assert stream.properties_set["tokenlimit_usage"] == b"reported"
    return stream.response_body_chunks_forwarded, stream.properties_set["tokenlimit_tokens"]


def test_one_event_a_chunk_reaches_the_client_event_for_event(make_any_host: MakeHost) -> None:
    h = host_for(make_any_host)
    words = [chunk_event(json.dumps({"content": w})) for w in ("The", " customer", " was")]
    events = [chunk_event('{"role":"assistant","content":""}'), *words, usage_event(52, 118)]
    events.append(b"data: [DONE]\n\n")
    received, tokens = streamed(h, events)
    # Each chunk as the upstream wrote it; the usage chunk's bytes, and only those, left out.
    assert received == [*events[:-2], b"", events[-1]]
    assert tokens == b"170"


def test_a_crlf_stream_split_at_every_offset_reads_and_hides_the_same(
    make_any_host: MakeHost,
) -> None:
    h = host_for(make_any_host)
    content = chunk_event('{"content":"Hi"}', "\r\n\r\n")
    stream = content + usage_event(12, 9, "\r\n\r\n") + b"data: [DONE]\r\n\r\n"
    for split in range(len(stream) + 1):
        received, tokens = streamed(h, [stream[:split], stream[split:]])
        assert b"".join(received) == content + b"data: [DONE]\r\n\r\n", split
        assert tokens == b"21", split
