"""End to end, real Envoy in front of the mock LLM: answers an upstream would compress are
counted exactly (issue 9), because the filter asks the upstream for identity encoding."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config


@pytest.fixture(scope="module")
def gateway(filter_wasm: Path) -> Iterator[Gateway]:
    config = parse_filter_config(
        {
            "rule_name": "enc",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": 10**9}],
                }
            ],
        }
    )
    with Gateway(config, wasm_path=filter_wasm, concurrency=2) as gw:
        yield gw


def charged_in_access_log(gw: Gateway, marker: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in gw.logs().stdout.splitlines() if marker in line]
        if lines:
            return lines[-1]
        time.sleep(0.1)
    raise AssertionError(gw.logs().stdout[-2000:])


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_would_compress_is_counted_exactly(
    gateway: Gateway, encoding: str, stream: bool
) -> None:
    prompt, completion = 51_000 + len(encoding), 700 + int(stream)
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x" * 400}]}
    request = urllib.request.Request(
        gateway.listen_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": f"enc-{encoding}",
            "accept-encoding": encoding,
            "x-mock-compress": "1",  # the mock compresses whenever the request allows it
            "x-mock-prompt-tokens": str(prompt),
            "x-mock-completion-tokens": str(completion),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        response.read()
    # Compressed bytes / 4 would be a few hundred tokens; the reported usage is charged.
    assert "status=200" in charged_in_access_log(gateway, f"tokens={prompt + completion} ")
