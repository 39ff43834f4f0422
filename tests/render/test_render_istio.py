"""The Istio renderer: golden files, the Istio schemas, cluster naming for the bridge, and the
real filter accepting the pluginConfig.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render_istio.py
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.kube_schemas import assert_valid
from support.proxywasm_host import Host
from tokenlimit.cli import main
from tokenlimit.loader import load_policy, policy_from_data
from tokenlimit.model import TokenRateLimitPolicy, parse_filter_config
from tokenlimit.render.istio import IstioOptions, render
from tokenlimit.render.kube import RenderError, WasmModule, to_yaml_documents

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLE = ROOT / "deploy" / "examples" / "istio.yaml"
MODULE = WasmModule(
    "https://tokenlimit-module.tokenlimit-system.svc.cluster.local/tokenlimit.wasm",
    "4e6f8a1b3c5d7e9f2a4b6c8d1e3f5a7b9c0d3c5f7a8e2b4a6c9d1e3f5a7b9c2d",
)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__}", pytrace=False)
    assert text == path.read_text(), f"{name} changed: review, then UPDATE_GOLDEN=1 to accept"


def example() -> TokenRateLimitPolicy:
    loaded = load_policy(EXAMPLE)
    assert loaded.policy is not None
    return loaded.policy


def istio_policy(**spec: Any) -> TokenRateLimitPolicy:
    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "chat", "namespace": "llm"},
        "spec": {
            "ruleName": "chat",
            "ruleItems": [
                {
                    "limitByPerHeader": "x-api-key",
                    "limitKeys": [{"key": "*", "tokenPerMinute": 1000}],
                }
            ],
            "targetRef": {"gateway": "istio", "gatewayRef": {"name": "llm-gateway"}},
            **spec,
        },
    }
    loaded = policy_from_data(document, "chat.yaml")
    assert loaded.policy is not None
    return loaded.policy


EXTERNAL_TLS_BRIDGE = {"bridge": {"host": "bridge.example.com", "port": 443, "tls": True}}


def test_golden_example() -> None:
    check_golden(
        "istio-wasmplugin.yaml", to_yaml_documents(render(example(), IstioOptions(MODULE)))
    )


def test_golden_external_bridge_over_tls() -> None:
    objects = render(istio_policy(redis=EXTERNAL_TLS_BRIDGE), IstioOptions(MODULE, priority=10))
    check_golden("istio-external-bridge.yaml", to_yaml_documents(objects))


def test_rendered_objects_fit_the_istio_schemas() -> None:
    for policy in (example(), istio_policy(), istio_policy(redis=EXTERNAL_TLS_BRIDGE)):
        for obj in render(policy, IstioOptions(MODULE)):
            assert_valid(obj)


def test_in_mesh_bridge_needs_no_extra_objects() -> None:
    (plugin,) = render(example(), IstioOptions(MODULE))
    assert plugin["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert plugin["spec"]["pluginConfig"]["redis"] == {
        "service_name": "outbound|8080||tokenlimit-bridge.tokenlimit-system.svc.cluster.local",
        "service_port": 8080,
        "timeout": 200,
    }


def test_bridge_outside_the_mesh_gets_a_service_entry_and_tls_a_destination_rule() -> None:
    plugin, entry, rule = render(istio_policy(redis=EXTERNAL_TLS_BRIDGE), IstioOptions(MODULE))
    assert plugin["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "llm-gateway"}
    ]
    assert plugin["spec"]["pluginConfig"]["redis"]["service_name"] == (
        "outbound|443||bridge.example.com"
    )
    assert (entry["kind"], entry["spec"]["hosts"], entry["spec"]["exportTo"]) == (
        "ServiceEntry",
        ["bridge.example.com"],
        ["."],
    )
    assert rule["kind"] == "DestinationRule"
    assert rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"] == {
        "mode": "SIMPLE",
        "sni": "bridge.example.com",
    }
    plain = render(
        istio_policy(redis={"bridge": {"host": "bridge.example.com", "port": 80}}),
        IstioOptions(MODULE),
    )
    assert [o["kind"] for o in plain] == ["WasmPlugin", "ServiceEntry"]


def test_bridge_by_address_is_refused() -> None:
    with pytest.raises(Exception, match="Istio names clusters by host, not address"):
        istio_policy(redis={"bridge": {"host": "10.0.0.5", "port": 8080}})


def test_the_real_filter_accepts_the_plugin_config(filter_wasm: Path) -> None:
    for policy in (example(), istio_policy(redis=EXTERNAL_TLS_BRIDGE)):
        config = render(policy, IstioOptions(MODULE))[0]["spec"]["pluginConfig"]
        parse_filter_config(config)
        host = Host(filter_wasm)
        assert host.configure(config), host.logs


def test_an_istio_policy_needs_a_target() -> None:
    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "x"},
        "spec": {"ruleName": "x", "globalThreshold": {"tokenPerDay": 1}},
    }
    policy = policy_from_data(document, "x").policy
    assert policy is not None
    with pytest.raises(RenderError, match="an Istio policy needs targetRef"):
        render(policy, IstioOptions(MODULE))


def test_cli_render() -> None:
    args = ["render", "--target", "istio", str(EXAMPLE), "--wasm-url", MODULE.url]
    result = CliRunner().invoke(main, [*args, "--sha256", str(MODULE.sha256)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "istio-wasmplugin.yaml").read_text()


def test_the_operator_renders_with_this_renderer() -> None:
    from tokenlimit.operator.reconcile import Module, Settings
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(gateway="istio", module=Module(MODULE.url, str(MODULE.sha256)))
    renderer = renderer_for("istio")
    assert renderer.render(load_policy(EXAMPLE), {}, settings) == render(
        example(), IstioOptions(MODULE)
    )
    assert [str(k) for k in renderer.kinds] == [
        "WasmPlugin.extensions.istio.io",
        "ServiceEntry.networking.istio.io",
        "DestinationRule.networking.istio.io",
    ]
