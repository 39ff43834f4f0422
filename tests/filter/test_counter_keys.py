"""The counter-key format (contract/counter_keys.json) on both sides of the contract:

- the control plane's builder and parser (tokenlimit.usage, what `tokenlimit usage --key` uses)
  give and read every vector's key;
- the real filter (tokenlimit-higress.wasm in the test host, its Redis calls on a real
  redis-server) charges exactly that key for a request carrying the vector's key value.

So a change to match.zig's `counterKey`/`identity` or to usage.py fails here until both agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from support.proxywasm_host import Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from tokenlimit.usage import (
    UNITS,
    WINDOWS_S,
    counter_key,
    identity,
    key_source,
    parse_counter_key,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS: list[dict[str, Any]] = json.loads((ROOT / "contract" / "counter_keys.json").read_text())
LIMIT_TYPES = {
    "global",
    "header",
    "param",
    "cookie",
    "consumer",
    "per_header",
    "per_param",
    "per_cookie",
    "per_consumer",
    "per_ip",
}
LIMIT_MAX = 1_000_000  # never reached: the test is about names, not refusals
IDS = [v["name"] for v in VECTORS]


def test_the_vectors_cover_every_limit_type_unit_and_window() -> None:
    assert {v["limit_type"] for v in VECTORS} == LIMIT_TYPES
    assert {v["unit"] for v in VECTORS} == set(UNITS)
    assert {v["window_s"] for v in VECTORS} == set(WINDOWS_S.values())
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_python_builds_and_parses_the_key(vector: dict[str, Any]) -> None:
    rule, limit_type, value = vector["rule"], vector["limit_type"], vector["value"]
    built = counter_key(
        rule, limit_type, vector["source"], vector["unit"], vector["window_s"], value
    )
    assert built == vector["key"]
    parsed = parse_counter_key(vector["key"])
    assert parsed is not None
    assert (parsed.rule, parsed.limit_type, parsed.source) == (
        rule,
        limit_type,
        key_source(limit_type, vector["source"]),
    )
    assert (parsed.unit, parsed.window_s) == (vector["unit"], vector["window_s"])
    assert parsed.identity == identity(limit_type, value)  # how `usage --key VALUE` finds it


# ---- the real filter ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def filter_config(vector: dict[str, Any]) -> dict[str, Any]:
    """A rule that charges only the vector's counter: one limit, in its unit and window."""
    window = next(name for name, s in WINDOWS_S.items() if s == vector["window_s"])
    limits = {f"{UNITS[vector['unit']]}_per_{window}": LIMIT_MAX}
    limit_type = vector["limit_type"]
    config: dict[str, Any] = {
        "rule_name": vector["rule"],
        "redis": {"service_name": "redis.default.svc.cluster.local", "service_port": 6379},
    }
    if limit_type == "global":
        config["global_threshold"] = limits
    else:
        # per_* items take any value; the others compare literally.
        key = "*" if limit_type.startswith("per_") else vector["value"]
        config["rule_items"] = [
            {f"limit_by_{limit_type}": vector["source"], "limit_keys": [{"key": key, **limits}]}
        ]
    return config


def request(vector: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Request headers and stream properties that carry the vector's key value where the
    filter reads it for the item's type."""
    headers = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "x"}
    properties: dict[str, str] = {}
    limit_type, source, value = vector["limit_type"], vector["source"], vector["value"]
    if limit_type in ("header", "per_header"):
        headers[source.lower()] = value
    elif limit_type in ("param", "per_param"):
        headers[":path"] += f"?other=1&{source}={quote(value)}"  # the filter decodes it
    elif limit_type in ("cookie", "per_cookie"):
        headers["cookie"] = f"other=1; {source}={value}"
    elif limit_type in ("consumer", "per_consumer"):
        headers["x-mse-consumer"] = value
    elif limit_type == "per_ip" and source == "from-remote-addr":
        address = f"[{value}]" if ":" in value else value
        properties["source.address"] = f"{address}:40000"
    elif limit_type == "per_ip":
        headers[source.removeprefix("from-header-").lower()] = value
    return headers, properties


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_the_filter_charges_exactly_the_key(
    higress_wasm: Path, server: RedisServer, vector: dict[str, Any]
) -> None:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    host = Host(higress_wasm, redis_handler=redis_wire(server))
    assert host.configure(filter_config(vector)), host.log_messages()
    headers, properties = request(vector)
    body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    stream = host.http_stream(properties=properties).complete(
        headers, {":status": "200", "content-type": "application/json"}, [body.encode()]
    )
    assert stream.local_response is None, host.log_messages()
    keys = {k.decode() for k in client.scan_iter(match="*")}
    # Beside the counter: the request's marker (settlements apply once), under its hash tag.
    markers = {k for k in keys if ":req:" in k}
    assert keys - markers == {vector["key"]}, host.log_messages()
    tag = vector["key"][: vector["key"].index("}:") + 2]
    assert all(marker.startswith(tag + "req:") for marker in markers), markers
