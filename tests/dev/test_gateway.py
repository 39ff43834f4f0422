"""The local gateway (real Envoy + the real filter + the mock LLM) starts, reloads, stops."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tokenlimit.dev.gateway import Gateway, GatewayError
from tokenlimit.model import FilterConfig, parse_filter_config

ECDS_RELOADS = "extension_config_discovery.http_filter.tokenlimit.config_reload"


def per_key(tokens_per_minute: int) -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "chat",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": tokens_per_minute}],
                }
            ],
        }
    )


def chat(gateway: Gateway, api_key: str, completion_tokens: int = 10) -> int:
    request = urllib.request.Request(
        gateway.listen_url + "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-completion-tokens": str(completion_tokens),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_gateway_limits_reloads_and_cleans_up(filter_wasm: Path) -> None:
    with Gateway(per_key(100), wasm_path=filter_wasm) as gateway:
        assert gateway.uses_mock and gateway.upstream_url.startswith("http://127.0.0.1:")
        # Postpaid: the first request spends the budget, the next one is refused.
        assert chat(gateway, "k1", completion_tokens=200) == 200
        assert chat(gateway, "k1") == 429
        assert chat(gateway, "k2") == 200

        reloads = gateway.stats()[ECDS_RELOADS]
        gateway.update_policy(per_key(1_000_000))
        assert gateway.stats()[ECDS_RELOADS] == reloads + 1
        assert gateway.config == per_key(1_000_000)

        pids = [proc.pid for proc in (gateway._envoy, gateway._mock) if proc is not None]
        work_dir = gateway.work_dir
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert not work_dir.exists()
    access = gateway.logs().stdout  # logs survive stop
    assert "status=429" in access and "status=200" in access


def test_gateway_same_policy_is_a_no_op(filter_wasm: Path) -> None:
    with Gateway(per_key(100), wasm_path=filter_wasm, upstream="http://127.0.0.1:9") as gateway:
        reloads = gateway.stats()[ECDS_RELOADS]
        gateway.update_policy(per_key(100))
        assert gateway.stats()[ECDS_RELOADS] == reloads


def test_gateway_reports_a_busy_port_with_envoys_words(filter_wasm: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gateway = Gateway(
            per_key(100), wasm_path=filter_wasm, upstream="http://127.0.0.1:9", listen_port=port
        )
        with pytest.raises(GatewayError, match=f"cannot bind '127.0.0.1:{port}'"):
            gateway.start()


def test_gateway_reports_a_module_envoy_cannot_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"not wasm")
    gateway = Gateway(per_key(100), wasm_path=broken, upstream="http://127.0.0.1:9")
    with pytest.raises(GatewayError, match="Envoy refused the filter config") as refused:
        gateway.start()
    assert "Unable to create Wasm plugin tokenlimit" in str(refused.value)


def test_rotating_x_forwarded_for_does_not_escape_a_per_ip_limit(filter_wasm: Path) -> None:
    """A client that sends a new X-Forwarded-For each time is still one peer address."""
    config = parse_filter_config(
        {
            "rule_name": "per-ip",
            "rule_items": [
                {
                    "limit_by_per_ip": "from-remote-addr",
                    "limit_keys": [{"key": "0.0.0.0/0", "request_per_minute": 2}],
                }
            ],
        }
    )

    def spoofed(i: int) -> int:
        request = urllib.request.Request(
            gateway.listen_url + "/v1/chat/completions",
            data=b'{"model":"m","messages":[]}',
            headers={"content-type": "application/json", "x-forwarded-for": f"198.51.100.{i}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    with Gateway(config, wasm_path=filter_wasm) as gateway:
        assert [spoofed(i) for i in range(1, 5)] == [200, 200, 429, 429]


def test_a_gateway_on_redis_makes_a_bridge_token_and_keeps_the_password_off_argv(
    filter_wasm: Path,
) -> None:
    """`tokenlimit up --redis` must not start an open bridge, nor show the password in ps."""
    from support.redis_server import RedisServer

    with RedisServer(password="pw-not-in-ps") as redis_server:
        url = redis_server.url.replace("redis://", "redis://:pw-not-in-ps@")
        with Gateway(per_key(1000), wasm_path=filter_wasm, redis=url) as gateway:
            assert gateway.bridge_token and gateway.bridge_url and gateway._bridge is not None
            assert chat(gateway, "k1") == 200  # Envoy has the token, the bridge the password
            request = urllib.request.Request(
                gateway.bridge_url + "/v1/resp", data=b"*1\r\n$4\r\nPING\r\n"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 401
            argv = Path(f"/proc/{gateway._bridge.pid}/cmdline").read_bytes()
            assert b"pw-not-in-ps" not in argv


def test_the_access_log_leaves_out_query_strings(filter_wasm: Path) -> None:
    """`?key=` API keys (Gemini, some proxies) must not land in the info-level access log."""
    with Gateway(per_key(1000), wasm_path=filter_wasm) as gateway:
        request = urllib.request.Request(
            gateway.listen_url + "/v1/chat/completions?key=sk-query-secret&alt=sse",
            data=json.dumps({"model": "m", "messages": []}).encode(),
            headers={"content-type": "application/json", "x-api-key": "k"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    access = gateway.logs().stdout
    assert "POST /v1/chat/completions status=200" in access
    assert "sk-query-secret" not in access
