"""End to end, real Envoy (issue 17): a chat request reaches the upstream with a declared
`Content-Length` that matches the body it gets. The filter may add
`stream_options.include_usage` to a streaming OpenAI-style body; the request headers wait with
the body (as the rendered Envoy config allows) and carry the length of the body that goes with
them -- unchanged for a request nothing rewrites, the new one for a rewritten body -- instead of
losing it to a chunked body. Local store and Redis store (where admission waits for the bridge
with the headers still held). The clients are the real `openai` SDK."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from support.http_body import is_chunked, read_body
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config


class RecordingUpstream(ThreadingHTTPServer):
    """An OpenAI-style upstream that keeps each request's headers and body as they arrived
    (a chunked body decoded, and marked so), and answers JSON or SSE with usage."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.seen: list[tuple[dict[str, str], bytes, bool]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def last(self) -> tuple[dict[str, str], bytes, bool]:
        with self.lock:
            return self.seen[-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingUpstream

    def do_POST(self) -> None:
        chunked = is_chunked(self)
        body = read_body(self)
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.seen.append((headers, body, chunked))
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        message = {"role": "assistant", "content": "ok"}
        if json.loads(body).get("stream"):
            delta = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            events = [
                {**delta, "choices": [{"index": 0, "delta": message, "finish_reason": "stop"}]},
                {**delta, "choices": [], "usage": usage},
            ]
            answer = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            answer += b"data: [DONE]\n\n"
            content_type = "text/event-stream"
        else:
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            whole = {"id": "c", "object": "chat.completion", "created": 1, "model": "m"}
            answer = json.dumps({**whole, "choices": [choice], "usage": usage}).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def config(redis: bool) -> FilterConfig:
    document: dict[str, Any] = {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "authorization",
                "limit_keys": [{"key": "*", "token_per_minute": 1_000_000}],
            }
        ],
    }
    if redis:
        document["redis"] = {"service_name": "placeholder", "timeout": 1000}
    return parse_filter_config(document)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=["local", "redis"])
def gateway(request: Any, filter_wasm: Path, upstream: RecordingUpstream) -> Iterator[Gateway]:
    if request.param == "local":
        with Gateway(config(False), upstream=upstream.url, wasm_path=filter_wasm) as gw:
            yield gw
        return
    with (
        RedisServer() as redis_server,
        Gateway(
            config(True), upstream=upstream.url, wasm_path=filter_wasm, redis=redis_server.url
        ) as gw,
    ):
        yield gw


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.listen_url + "/v1", api_key="sk-length", max_retries=0)


MESSAGES: Any = [{"role": "user", "content": "How long is this request?"}]


def test_a_request_nothing_rewrites_arrives_with_its_length(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    answer = client(gateway).chat.completions.create(model="m", messages=MESSAGES)
    assert answer.usage is not None and answer.usage.total_tokens == 10
    headers, body, chunked = upstream.last()
    assert not chunked and "transfer-encoding" not in headers
    assert headers["content-length"] == str(len(body))
    assert "stream_options" not in json.loads(body)


def test_a_stream_that_gains_include_usage_arrives_with_the_new_length(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    chunks = list(
        client(gateway).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    )
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["ok"]
    assert all(c.usage is None for c in chunks)  # the usage event the gateway asked for is hidden
    headers, body, chunked = upstream.last()
    assert not chunked and "transfer-encoding" not in headers
    assert headers["content-length"] == str(len(body))
    assert json.loads(body)["stream_options"] == {"include_usage": True}
