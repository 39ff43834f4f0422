"""The Envoy renderer: byte-for-byte golden files, and Envoy 1.40 itself accepting the output.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_render_envoy.py
and review the diff like code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from tokenlimit.dev.gateway import GatewayError, envoy_binary
from tokenlimit.loader import load_policy
from tokenlimit.model import FilterConfig, Upstream, filter_json
from tokenlimit.render.envoy import (
    ACCESS_LOG_FORMAT,
    EcdsFilter,
    EnvoyOptions,
    InlineFilter,
    bootstrap,
    ecds_resource,
    filter_typed_config,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLE = ROOT / "deploy" / "examples" / "policy.yaml"
# Fixed inputs: the golden files must not depend on the machine.
GOLDEN_WASM = "/etc/envoy/tokenlimit.wasm"
GOLDEN_ECDS = "/etc/envoy/tokenlimit-ecds.yaml"
GOLDEN_UPSTREAM = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def example() -> FilterConfig:
    return load_policy(EXAMPLE).config


@pytest.fixture(scope="module")
def envoy() -> str:
    try:
        return envoy_binary()
    except GatewayError as exc:
        pytest.fail(str(exc), pytrace=False)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__}", pytrace=False)
    assert text == path.read_text(), f"{name} changed: review, then UPDATE_GOLDEN=1 to accept"


def ecds_options(ecds_path: str, upstream: str = GOLDEN_UPSTREAM) -> EnvoyOptions:
    return EnvoyOptions(upstream=Upstream.parse(upstream), filter=EcdsFilter(ecds_path))


def test_golden_bootstrap(example: FilterConfig) -> None:
    check_golden("envoy-bootstrap.yaml", to_yaml(bootstrap(ecds_options(GOLDEN_ECDS))))


def test_golden_ecds(example: FilterConfig) -> None:
    check_golden("envoy-ecds.yaml", to_yaml(ecds_resource(example, GOLDEN_WASM)))


def test_rendering_is_deterministic(example: FilterConfig) -> None:
    first = to_yaml(bootstrap(ecds_options(GOLDEN_ECDS)))
    assert first == to_yaml(bootstrap(ecds_options(GOLDEN_ECDS)))
    assert to_yaml(ecds_resource(example, GOLDEN_WASM)) == to_yaml(
        ecds_resource(example, GOLDEN_WASM)
    )


def test_filter_carries_the_policy_as_filter_json(example: FilterConfig) -> None:
    typed = filter_typed_config(example, GOLDEN_WASM)
    plugin = typed["config"]
    assert typed["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    assert (plugin["name"], plugin["root_id"], plugin["vm_config"]["vm_id"]) == ("tokenlimit",) * 3
    assert plugin["vm_config"]["code"]["local"]["filename"] == GOLDEN_WASM
    assert plugin["configuration"]["value"] == filter_json(example)


def test_access_log_prints_the_filters_decision_fields() -> None:
    for field in ("decision", "rule", "key", "tokens"):
        assert f"%FILTER_STATE(wasm.tokenlimit_{field}:PLAIN)%" in ACCESS_LOG_FORMAT
    assert "%RESPONSE_CODE%" in ACCESS_LOG_FORMAT


def test_yaml_has_no_aliases(example: FilterConfig) -> None:
    shared = {"same": "dict"}
    assert "&" not in to_yaml({"a": shared, "b": shared})
    assert yaml.safe_load(to_yaml(bootstrap(ecds_options(GOLDEN_ECDS)))) == bootstrap(
        ecds_options(GOLDEN_ECDS)
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "authority"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", 8000, False, "127.0.0.1:8000"),
        ("https://api.openai.com", "api.openai.com", 443, True, "api.openai.com"),
        ("http://[::1]:9000/", "::1", 9000, False, "[::1]:9000"),
    ],
)
def test_upstream_parse(url: str, host: str, port: int, tls: bool, authority: str) -> None:
    upstream = Upstream.parse(url)
    assert (upstream.host, upstream.port, upstream.tls, upstream.authority) == (
        host,
        port,
        tls,
        authority,
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com", "must be an http:// or https:// URL"),
        ("https://example.com/v1", "without a path"),
        ("http://example.com:http", "port is not a number"),
    ],
)
def test_upstream_parse_refuses(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Upstream.parse(url)


# --- Envoy 1.40 accepts what we render -------------------------------------------------------


def envoy_validate(envoy: str, config: Path) -> None:
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config), "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


@pytest.mark.parametrize("upstream", ["http://127.0.0.1:8000", "https://api.openai.com"])
def test_envoy_accepts_inline_bootstrap(
    envoy: str, filter_wasm: Path, example: FilterConfig, tmp_path: Path, upstream: str
) -> None:
    inline = InlineFilter(filter_typed_config(example, str(filter_wasm)))
    options = EnvoyOptions(upstream=Upstream.parse(upstream), filter=inline)
    config = tmp_path / "envoy.yaml"
    config.write_text(to_yaml(bootstrap(options)))
    envoy_validate(envoy, config)


def test_envoy_accepts_ecds_bootstrap(
    envoy: str, filter_wasm: Path, example: FilterConfig, tmp_path: Path
) -> None:
    ecds = tmp_path / "tokenlimit-ecds.yaml"
    ecds.write_text(to_yaml(ecds_resource(example, str(filter_wasm))))
    config = tmp_path / "envoy.yaml"
    config.write_text(to_yaml(bootstrap(ecds_options(str(ecds)))))
    envoy_validate(envoy, config)


def test_policy_options_name_the_listener_and_add_the_bridge_cluster(
    envoy: str, filter_wasm: Path, tmp_path: Path
) -> None:
    from tokenlimit.loader import policy_from_data
    from tokenlimit.model import ENVOY_BRIDGE_CLUSTER
    from tokenlimit.render.envoy import policy_options

    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "edge"},
        "spec": {
            "ruleName": "edge",
            "globalThreshold": {"tokenPerMinute": 1000},
            "targetRef": {"gateway": "envoy", "listener": "llm-edge"},
            "redis": {"bridge": {"host": "bridge.internal", "port": 8080}, "timeoutMs": 50},
        },
    }
    loaded = policy_from_data(document, "edge.yaml")
    assert loaded.policy is not None and loaded.config.redis is not None
    assert loaded.config.redis.service_name == ENVOY_BRIDGE_CLUSTER
    inline = InlineFilter(filter_typed_config(loaded.config, str(filter_wasm)))
    options = EnvoyOptions(
        upstream=Upstream.parse(GOLDEN_UPSTREAM),
        filter=inline,
        **policy_options(loaded.policy.spec),
    )
    rendered = bootstrap(options)
    assert rendered["static_resources"]["listeners"][0]["name"] == "llm-edge"
    bridge = rendered["static_resources"]["clusters"][1]
    assert bridge["name"] == ENVOY_BRIDGE_CLUSTER
    assert bridge["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"socket_address": {"address": "bridge.internal", "port_value": 8080}}
    }
    config = tmp_path / "envoy.yaml"
    config.write_text(to_yaml(rendered))
    envoy_validate(envoy, config)


def _hcm(rendered: dict[str, object]) -> dict[str, object]:
    listener = rendered["static_resources"]["listeners"][0]  # type: ignore[index]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def test_the_peer_address_comes_from_the_connection_not_from_x_forwarded_for(
    envoy: str, filter_wasm: Path, tmp_path: Path
) -> None:
    """Without use_remote_address Envoy takes the last X-Forwarded-For entry as the peer, so
    a client could pick its own per-IP budget; trusted proxy hops are an explicit option."""
    from tokenlimit.loader import policy_from_data
    from tokenlimit.render.envoy import policy_options

    hcm = _hcm(bootstrap(ecds_options(GOLDEN_ECDS)))
    assert hcm["use_remote_address"] is True
    assert hcm["xff_num_trusted_hops"] == 0
    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "edge"},
        "spec": {
            "ruleName": "edge",
            "globalThreshold": {"tokenPerMinute": 1000},
            "xffNumTrustedHops": 2,
        },
    }
    loaded = policy_from_data(document, "edge.yaml")
    assert loaded.policy is not None
    options = EnvoyOptions(
        upstream=Upstream.parse(GOLDEN_UPSTREAM),
        filter=InlineFilter(filter_typed_config(loaded.config, str(filter_wasm))),
        **policy_options(loaded.policy.spec),
    )
    rendered = bootstrap(options)
    assert _hcm(rendered)["xff_num_trusted_hops"] == 2
    config = tmp_path / "envoy.yaml"
    config.write_text(to_yaml(rendered))
    envoy_validate(envoy, config)
