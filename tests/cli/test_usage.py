"""`tokenlimit usage` reads what the filter wrote to Redis, and finds a caller by key value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from support.proxywasm_host import Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from tokenlimit.cli import main
from tokenlimit.usage import hash_value, parse_counter_key, read_usage, table_rows


def test_hash_matches_the_filters_pinned_vector() -> None:
    # The same vector is pinned in filter/src/match.zig.
    assert hash_value("Bearer sk-secret") == "afa6f8ec47e70b6579157f844acfdd33"
    assert hash_value("x") == hashlib.sha256(b"x").hexdigest()[:32]


def test_counter_keys_parse_with_and_without_a_source() -> None:
    header = parse_counter_key("tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + "a" * 32)
    assert header is not None
    assert (header.rule, header.limit_type, header.source, header.unit, header.window_s) == (
        "chat",
        "per_header",
        "x-api-key",
        "tokens",
        60,
    )
    assert header.hashed
    ip = parse_counter_key("tokenlimit:{chat}:per_ip:from-remote-addr:requests:3600:10.0.0.1")
    assert ip is not None and ip.identity == "10.0.0.1" and not ip.hashed
    glob = parse_counter_key("tokenlimit:{g}:global:tokens:86400:global")
    assert glob is not None and glob.source == "" and glob.identity == "global"
    assert parse_counter_key("tokenlimit:{g}:global:bytes:1:x") is None
    assert parse_counter_key("other:key") is None


def test_usage_rows_come_from_redis_and_a_key_is_found_by_its_value() -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        start = now_ms - now_ms % 60_000
        alice = "tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + hash_value("alice-key")
        bob = "tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + hash_value("bob-key")
        stale = "tokenlimit:{chat}:per_ip:from-remote-addr:tokens:60:10.0.0.9"
        client.hset(alice, mapping={"s": start, "u": 250, "p": 0})
        client.hset(bob, mapping={"s": start, "u": 10, "p": 0})
        client.hset(stale, mapping={"s": start - 60_000, "u": 999, "p": 0})
        rows = read_usage(client)
        assert {r.counter.key: r.used for r in rows} == {alice: 250, bob: 10, stale: 0}
        (only,) = read_usage(client, key_value="alice-key")
        assert only.counter.key == alice and only.used == 250
        assert read_usage(client, rule="other") == []
        cells = table_rows([only])[0]
        assert cells[0] == "chat" and cells[1] == "per_header x-api-key" and cells[4] == "250"
        assert "alice-key" not in " ".join(cells)


# ---- counters the real filter wrote: every algorithm, read through budget.lua's peek ---------


def policy_file(tmp_path: Path, **rule: object) -> tuple[dict[str, Any], Path]:
    """A filter config (what `tokenlimit usage --policy` reads) with the Higress Redis store."""
    config: dict[str, Any] = {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_day": 1000}],
            }
        ],
        "redis": {"service_name": "redis.default.svc.cluster.local", "service_port": 6379},
        **rule,
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(config))
    return config, path


def spend(host: Host, api_key: str, prompt: int, completion: int) -> None:
    """One chat request through the filter, answered with this much usage."""
    body = json.dumps({"usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    stream = host.http_stream().complete(
        {
            ":method": "POST",
            ":path": "/v1/chat/completions",
            ":authority": "x",
            "x-api-key": api_key,
        },
        {":status": "200", "content-type": "application/json"},
        [body.encode()],
    )
    assert stream.local_response is None, host.log_messages()


def test_usage_shows_what_a_token_bucket_used(higress_wasm: Path, tmp_path: Path) -> None:
    # A day's bucket refills one token every 86.4 s: the 500 spent are all still used when read.
    config, path = policy_file(tmp_path, algorithm="token_bucket")
    with RedisServer() as server:
        host = Host(higress_wasm, redis_handler=redis_wire(server))
        assert host.configure(config), host.log_messages()
        spend(host, "alice-key", 300, 200)
        result = CliRunner().invoke(
            main, ["usage", "--redis", server.url, "--policy", str(path), "--key", "alice-key"]
        )
    assert result.exit_code == 0, result.output
    (row,) = [line.split("│") for line in result.output.splitlines() if "chat" in line]
    used_limit_left = [cell.strip() for cell in row[5:8]]
    assert used_limit_left == ["500", "1000", "500"], result.output
