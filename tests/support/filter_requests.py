"""Requests and answers the filter tests send through the Proxy-Wasm host: a chat request, an
OpenAI answer with usage, one whole exchange, and the per-key policy most tests start from."""

from __future__ import annotations

import json

from support.proxywasm_host import Host

MINUTE = 60


def chat_request(api_key: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "llm.example.com",
        "content-type": "application/json",
    }
    if api_key is not None:
        headers["x-api-key"] = api_key
    headers.update(extra)
    return headers


def openai_body(prompt: int, completion: int) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    ).encode()


JSON_RESPONSE = {":status": "200", "content-type": "application/json"}

PER_KEY = {
    "rule_name": "chat",
    "rule_items": [
        {"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*", "token_per_minute": 100}]}
    ],
}


def exchange(
    host: Host,
    request: dict[str, str],
    prompt: int = 10,
    completion: int = 30,
    *,
    properties: dict[str, str] | None = None,
):
    """One full request; returns the stream (local_response set when rejected)."""
    stream = host.http_stream(properties=properties)
    return stream.complete(request, JSON_RESPONSE, [openai_body(prompt, completion)])
