"""End to end, real Envoy: under `reserve` admission the upstream sees nothing of a request the
budget refuses (issue 10, item 8). The request headers are held with the body until the
decision, local store and Redis alike; admitted bodies, up to and past the 1 MiB the filter reads,
reach the upstream whole.

The upstream here counts request *heads* as they arrive, before any body is read: a request
Envoy opened and then aborted (headers sent, body never) counts too, which an upstream that
counts only whole requests (the mock LLM) would miss."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.http_body import read_body
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import FilterConfig, parse_filter_config

BODY_BYTES_MAX = 1024 * 1024  # filter/src/http/rewrite.zig request_body_bytes_max
SPENDING_USAGE = 10**6  # tokens the first answer reports: the budget is spent after it
REFUSED = 40


class CountingUpstream(ThreadingHTTPServer):
    """An OpenAI-style upstream counting request heads by `x-api-key` the moment a head has
    been parsed, and keeping every body it read in full."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.heads: Counter[str] = Counter()
        self.bodies: dict[str, list[bytes]] = {}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingUpstream

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:  # the head is in: count it before the body (which may never come)
            with self.server.lock:
                self.server.heads[self.headers.get("x-api-key", "")] += 1
        return parsed

    def do_POST(self) -> None:
        try:
            body = read_body(self)
        except ValueError:  # the connection closed mid-body: Envoy aborted the request
            self.close_connection = True
            return
        with self.server.lock:
            self.server.bodies.setdefault(self.headers.get("x-api-key", ""), []).append(body)
        tokens = int(self.headers.get("x-usage-tokens", "10"))
        answer = json.dumps(
            {
                "id": "c",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def reserve_config(redis: bool = False) -> FilterConfig:
    document: dict[str, Any] = {
        "rule_name": "hold",
        "admission": "reserve",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 100_000}],
            }
        ],
    }
    if redis:
        document["redis"] = {"service_name": "placeholder", "timeout": 1000}
    return parse_filter_config(document)


def chat_body(total_bytes: int) -> bytes:
    """A chat request of exactly `total_bytes` bytes (JSON)."""

    def body(content: str) -> bytes:
        message = {"role": "user", "content": content}
        return json.dumps({"model": "m", "max_tokens": 10, "messages": [message]}).encode()

    padding = total_bytes - len(body(""))
    assert padding >= 0
    padded = body("x" * padding)
    assert len(padded) == total_bytes
    return padded


def post(gw: Gateway, api_key: str, body: bytes, usage_tokens: int = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(
        gw.listen_url + "/v1/chat/completions",
        data=body,
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-usage-tokens": str(usage_tokens),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def avoid_minute_boundary(seconds_needed: float = 20.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - seconds_needed:
        time.sleep(60 - into_minute + 0.2)


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    server = CountingUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_gateway(filter_wasm: Path, upstream: CountingUpstream) -> Iterator[Gateway]:
    with Gateway(
        reserve_config(), upstream=upstream.url, wasm_path=filter_wasm, concurrency=2
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def redis_gateway(filter_wasm: Path, upstream: CountingUpstream) -> Iterator[Gateway]:
    with (
        RedisServer() as redis_server,
        Gateway(
            reserve_config(redis=True),
            upstream=upstream.url,
            wasm_path=filter_wasm,
            concurrency=2,
            redis=redis_server.url,
        ) as gw,
    ):
        yield gw


def spend_then_refuse(gw: Gateway, upstream: CountingUpstream, key: str, body: bytes) -> None:
    avoid_minute_boundary()
    status, _ = post(gw, key, chat_body(200), usage_tokens=SPENDING_USAGE)
    assert status == 200
    assert upstream.heads[key] == 1
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: post(gw, key, body)[0], range(REFUSED)))
    assert statuses == [429] * REFUSED
    time.sleep(0.3)  # a head Envoy sent would have arrived by now
    assert upstream.heads[key] == 1, f"{upstream.heads[key] - 1} refused requests reached it"


@pytest.mark.parametrize(
    "body_bytes",
    [1_000, 512 * 1024, BODY_BYTES_MAX - 64, 2 * BODY_BYTES_MAX],
    ids=["1k", "512k", "at-bound", "past-bound"],
)
@pytest.mark.parametrize("store", ["local", "redis"])
def test_refused_requests_never_reach_the_upstream(
    request: pytest.FixtureRequest, upstream: CountingUpstream, store: str, body_bytes: int
) -> None:
    gw: Gateway = request.getfixturevalue(f"{store}_gateway")
    spend_then_refuse(gw, upstream, f"refused-{store}-{body_bytes}", chat_body(body_bytes))


@pytest.mark.parametrize(
    "body_bytes",
    [1_000, BODY_BYTES_MAX, BODY_BYTES_MAX + 1, 3 * BODY_BYTES_MAX],
    ids=["1k", "at-bound", "past-bound", "3MiB"],
)
@pytest.mark.parametrize("store", ["local", "redis"])
def test_admitted_bodies_reach_the_upstream_whole(
    request: pytest.FixtureRequest, upstream: CountingUpstream, store: str, body_bytes: int
) -> None:
    gw: Gateway = request.getfixturevalue(f"{store}_gateway")
    key = f"admitted-{store}-{body_bytes}"
    body = chat_body(body_bytes)
    status, answer = post(gw, key, body)
    assert status == 200, answer[:300]
    assert upstream.heads[key] == 1
    [received] = upstream.bodies[key]
    if body_bytes > BODY_BYTES_MAX:  # past what the filter reads: passed on as sent
        assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    else:  # read whole (the filter may add `stream_options`): the prompt arrives unchanged
        assert json.loads(received)["messages"] == json.loads(body)["messages"]
