"""A share of each budget left to interactive traffic: workers stop before the gateway would
refuse, and wait for the budget's reset (the gateway reports what is left on admitted
answers with show_limit_headers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from jobs_support import Services, chat_lines, jsonl, wait_for
from support.redis_server import RedisServer
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config

LINES = 6


@pytest.fixture
def reporting_gateway(filter_wasm: Path) -> Iterator[Gateway]:
    config = parse_filter_config(
        {
            "rule_name": "jobs",
            "show_limit_headers": True,
            "rule_items": [
                {
                    "limit_by_per_header": "authorization",
                    "limit_keys": [{"key": "*", "token_per_second": 120}],
                }
            ],
        }
    )
    with Gateway(config, wasm_path=filter_wasm) as gw:
        yield gw


@pytest.mark.parametrize(("share", "refused"), [("0.5", False), ("0", True)])
def test_interactive_share_keeps_the_workers_below_the_limit(
    reporting_gateway: Gateway, redis_server: RedisServer, tmp_path: Path, share: str, refused: bool
) -> None:
    redis_server.command("FLUSHALL")
    services = Services(reporting_gateway, redis_server.url, tmp_path)
    try:
        # One worker: its requests are sequential, so what it reads is what it acts on.
        _proc, url = services.start(1, "--interactive-share", share)
        client = openai.OpenAI(base_url=url + "/v1", api_key=f"share-{share}", max_retries=0)
        uploaded = client.files.create(file=("in.jsonl", jsonl(chat_lines(LINES))), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        # 6 lines at 120 tokens a second take a few seconds; the margin is for a loaded
        # machine (this wait once ran out at 30 s in a full CI run, and never alone).
        wait_for(
            lambda: client.batches.retrieve(batch.id).status == "completed",
            90,
            "the batch",
            services,
        )
        time.sleep(0.3)  # the access log reaches its file within 0.1 s
        assert ("status=429" in reporting_gateway.logs().stdout) is refused
    finally:
        services.stop()
