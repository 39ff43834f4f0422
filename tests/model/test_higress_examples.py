"""Higress's own README examples, verbatim (tests/fixtures/higress/<version>/), in tokenlimit.

Every fenced YAML config in the README.md and README_EN.md of ai-token-ratelimit 1.0.x
(alibaba/higress) and 2.0.1 (higress-group/higress) is loaded by the model (`tokenlimit
validate`'s loader) and by both filter builds, then driven through a short request sequence.
The expected outcomes are derived from Higress's code (main.go, both versions):

- a request is refused when a matched counter holds more than its threshold (`current >
  threshold`); the charge, input + output tokens, lands when the response ends;
- 2.0.1 checks `global_threshold` and every rule item that matches; 1.0.x the first match.
  The sequences below are chosen so both versions give the same outcome (docs/higress-compat.md
  lists where they differ), and stay away from a threshold reached exactly (tokenlimit refuses
  at the limit, Higress above it) and from per-second windows;
- the refusal is `rejected_code` with `rejected_msg` (429, "Too many requests" by default).

The Higress build runs against a real Redis through Higress's Redis ABI (the config's `redis`
as written); the Envoy build runs the same config on its local store (its `redis` would name
the bridge's cluster).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from support.proxywasm_host import Clock, Host
from support.redis_server import RedisServer
from support.redis_wire import redis_wire
from tokenlimit import loader
from tokenlimit.model.filter_config import parse_filter_config_with_warnings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "higress"
EXAMPLES = sorted(FIXTURES.glob("*/*.yaml"))
IDS = [f"{p.parent.name}/{p.stem}" for p in EXAMPLES]


@dataclass(frozen=True)
class Ask:
    """One request: where its key is, the tokens its response reports, what Higress answers."""

    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    tokens: int = 30
    limited: bool = False


def header(name: str, value: str, tokens: int = 30, limited: bool = False) -> Ask:
    return Ask(headers=((name, value),), tokens=tokens, limited=limited)


# Per example (recognised by what it limits): requests in order. Thresholds from the config.
SEQUENCES: dict[str, list[Ask]] = {
    # global_threshold token_per_minute 1000: 600 + 600 = 1200 > 1000 refuses the third.
    "global": [Ask(tokens=600), Ask(tokens=600), Ask(limited=True)],
    # limit_by_param apikey: the exact key 9a34... has 10/minute: 30 > 10 refuses the second;
    # "bob" is no exact key, per_param `regexp:^b.*` gives it 100/minute; no apikey: no limit.
    "param": [
        Ask(query="?apikey=9a342114-ba8a-11ec-b1bf-00163e1250b5"),
        Ask(query="?apikey=9a342114-ba8a-11ec-b1bf-00163e1250b5", limited=True),
        Ask(query="?apikey=bob", tokens=60),
        Ask(query="?apikey=bob", tokens=60),
        Ask(query="?apikey=bob", limited=True),
        Ask(tokens=5000),
        Ask(),
    ],
    # limit_by_header x-ca-key: key 102234 (a YAML integer) has 10/minute; `^b` 100/minute.
    "header": [
        header("x-ca-key", "102234"),
        header("x-ca-key", "102234", limited=True),
        header("x-ca-key", "bob", 60),
        header("x-ca-key", "bob", 60),
        header("x-ca-key", "bob", limited=True),
        header("x-ca-key", "308239"),  # 10/hour, its own counter
        header("x-ca-key", "308239", limited=True),
    ],
    # limit_by_per_ip from-header-x-forwarded-for: 1.1.1.1 10/day, 1.1.1.0/24 100/day per IP,
    # 0.0.0.0/0 1000/day per IP; the first address of the header counts.
    "ip": [
        header("x-forwarded-for", "1.1.1.1"),
        header("x-forwarded-for", "1.1.1.1", limited=True),
        header("x-forwarded-for", "1.1.1.7, 10.0.0.1", 60),
        header("x-forwarded-for", "1.1.1.7", 60),
        header("x-forwarded-for", "1.1.1.7", limited=True),
        header("x-forwarded-for", "8.8.8.8", 600),
        header("x-forwarded-for", "8.8.8.8", 600),
        header("x-forwarded-for", "8.8.8.8", limited=True),
    ],
    # limit_by_consumer (x-mse-consumer): consumer2 100/hour; per_consumer `^b` 100/minute.
    "consumer": [
        header("x-mse-consumer", "consumer2", 60),
        header("x-mse-consumer", "consumer2", 60),
        header("x-mse-consumer", "consumer2", limited=True),
        header("x-mse-consumer", "bob", 60),
        header("x-mse-consumer", "bob", 60),
        header("x-mse-consumer", "bob", limited=True),
        Ask(),  # no consumer: no limit
    ],
    # limit_by_cookie key1: value1 10/minute; per_cookie `^b` 100/minute; rejected_code 200.
    "cookie": [
        header("cookie", "key1=value1"),
        header("cookie", "key1=value1", limited=True),
        header("cookie", "other=1; key1=bob", 60),
        header("cookie", "key1=bob", 60),
        header("cookie", "key1=bob", limited=True),
    ],
    # The WasmPlugin's defaultConfig: limit_by_param apikey, key 123456 (an integer), 200/minute.
    "wasmplugin": [
        Ask(query="?apikey=123456", tokens=150),
        Ask(query="?apikey=123456", tokens=100),
        Ask(query="?apikey=123456", limited=True),
        Ask(query="?apikey=654321", tokens=500),
        Ask(query="?apikey=654321"),
    ],
}


def body_of(path: Path) -> str:
    """The README block as copied (the provenance header is comments)."""
    return path.read_text(encoding="utf-8")


def configs_of(path: Path) -> dict[str, Any]:
    """The ai-token-ratelimit config a fixture holds (a WasmPlugin's defaultConfig)."""
    for document in yaml.safe_load_all(body_of(path)):
        if isinstance(document, dict) and document.get("kind") == "WasmPlugin":
            if document["metadata"]["name"] == "ai-token-ratelimit":
                config = document["spec"]["defaultConfig"]
                assert isinstance(config, dict)
                return config
        elif isinstance(document, dict) and "rule_name" in document:
            return document
    raise AssertionError(f"{path}: no ai-token-ratelimit config")


def kind_of(path: Path, config: dict[str, Any]) -> str:
    if "WasmPlugin" in body_of(path):
        return "wasmplugin"
    if "global_threshold" in config:
        return "global"
    first = config["rule_items"][0]
    for kind in ("param", "header", "ip", "consumer", "cookie"):
        if any(k.endswith(kind) for k in first):
            return kind
    raise AssertionError(f"{path}: unknown example")


def is_pitfall(path: Path) -> bool:
    return "✅" in body_of(path)


def is_broken_yaml(path: Path) -> bool:
    try:
        list(yaml.safe_load_all(body_of(path)))
    except yaml.YAMLError:
        return True
    return False


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_every_readme_config_block_is_here() -> None:
    # Both versions, both READMEs: 6 configs + the WasmPlugin example each; 2.0.1 adds three
    # "Common Pitfalls" blocks per README.
    per_version = {v.name: len(list(v.glob("*.yaml"))) for v in FIXTURES.iterdir()}
    assert per_version == {"1.0.x": 14, "2.0.1": 20}
    for path in EXAMPLES:
        assert body_of(path).startswith("# Source: https://github.com/"), path


def run(host: Host, asks: list[Ask], config: dict[str, Any]) -> list[str]:
    outcomes = []
    code = int(config.get("rejected_code", 429))
    message = str(config.get("rejected_msg", "Too many requests")).encode()
    for ask in asks:
        headers = {
            ":method": "POST",
            ":path": "/v1/chat/completions" + ask.query,
            ":authority": "llm.example.com",
            "content-type": "application/json",
            **dict(ask.headers),
        }
        usage = {"usage": {"prompt_tokens": ask.tokens // 3, "completion_tokens": ask.tokens}}
        usage["usage"]["completion_tokens"] = ask.tokens - usage["usage"]["prompt_tokens"]
        stream = host.http_stream().complete(
            headers,
            {":status": "200", "content-type": "application/json"},
            [json.dumps(usage).encode()],
        )
        refusal = stream.local_response
        if refusal is None:
            outcomes.append("admitted")
        else:
            assert (refusal.status, refusal.body) == (code, message), refusal
            outcomes.append("limited")
    return outcomes


def expected(asks: list[Ask]) -> list[str]:
    return ["limited" if ask.limited else "admitted" for ask in asks]


CONFIG_EXAMPLES = [p for p in EXAMPLES if not is_pitfall(p) and not is_broken_yaml(p)]


@pytest.mark.parametrize(
    "path", CONFIG_EXAMPLES, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIG_EXAMPLES]
)
def test_readme_example_loads_and_limits_as_higress_does(
    path: Path, filter_wasm: Path, higress_wasm: Path, redis_server: RedisServer
) -> None:
    config = configs_of(path)
    # The model (what `tokenlimit validate` runs): loads, nothing ignored.
    _, warnings = parse_filter_config_with_warnings(config)
    assert warnings == ()
    if "WasmPlugin" not in body_of(path):
        assert loader.load_policy(path).warnings == ()
    asks = SEQUENCES[kind_of(path, config)]

    # The Higress build, against Redis as the config names it.
    redis.Redis.from_url(redis_server.url).flushall()
    higress = Host(higress_wasm, clock=Clock(), redis_handler=redis_wire(redis_server))
    assert higress.configure(json.dumps(config)), higress.log_messages()
    assert run(higress, asks, config) == expected(asks)
    assert redis.Redis.from_url(redis_server.url).keys("tokenlimit:*")  # counted in Redis

    # The Envoy build: the same config, budgets in its local store.
    envoy = Host(filter_wasm, clock=Clock())
    assert envoy.configure(json.dumps(config)), envoy.log_messages()  # loads with `redis` too
    local = {k: v for k, v in config.items() if k != "redis"}
    envoy = Host(filter_wasm, clock=Clock())
    assert envoy.configure(json.dumps(local)), envoy.log_messages()
    assert run(envoy, asks, config) == expected(asks)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if is_broken_yaml(p)], ids=str)
def test_a_readme_block_that_is_not_yaml_is_refused_with_its_line(path: Path) -> None:
    # The Chinese README's apikey example indents with a tab: no YAML parser (Kubernetes',
    # Higress console's) reads it. The loader says where.
    with pytest.raises(loader.PolicyError) as refused:
        loader.load_policy(path)
    assert "not valid YAML or JSON: line 16 column 8" in str(refused.value), refused.value


PITFALLS = [p for p in EXAMPLES if is_pitfall(p)]


@pytest.mark.parametrize("path", PITFALLS, ids=[f"{p.parent.name}/{p.stem}" for p in PITFALLS])
def test_readme_pitfalls_are_refused_and_their_fixes_load(
    path: Path, filter_wasm: Path, higress_wasm: Path
) -> None:
    # Each block holds a fragment marked wrong and its fix (rule_items only): with a rule_name
    # added, the wrong one is refused by Higress (config.go) and by tokenlimit, the fix loads.
    wrong, right = body_of(path).split("# ✅")
    for fragment, loads in ((wrong, False), ("#" + right, True)):
        config = {"rule_name": "r", **yaml.safe_load(fragment)}
        try:
            parse_filter_config_with_warnings(config)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted is loads, (path, fragment)
        for wasm in (filter_wasm, higress_wasm):
            assert Host(wasm).configure(json.dumps(config)) is loads, (wasm, fragment)
