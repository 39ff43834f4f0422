"""render(): what the filter cannot work out itself is rendered into its config, on every
target: the policy's timeZone as a `calendar` table, `pricesFrom: genai-prices` as numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kube_schemas import assert_valid
from tokenlimit.loader import load_policy
from tokenlimit.model import parse_filter_config, parse_policy
from tokenlimit.model.calendar import render_current
from tokenlimit.render.higress import HigressOptions
from tokenlimit.render.istio import IstioOptions
from tokenlimit.render.kube import WasmModule
from tokenlimit.render.pipeline import EnvoyConfigMapTarget, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "model-budgets.yaml"
TARGET_REFS: dict[str, dict[str, Any]] = {
    "envoy-configmap": {"gateway": "envoy", "listener": "tokenlimit"},
    "higress": {"gateway": "higress"},
    "istio": {"gateway": "istio", "selector": {"matchLabels": {"app": "gw"}}},
}
MODULE = WasmModule("oci://example.com/tokenlimit:1.0.0", "0" * 64)


def rendered_config(target: str) -> dict[str, Any]:
    """The filter config JSON the target's objects carry."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["targetRef"] = TARGET_REFS[target]
    policy = parse_policy(document)
    if target == "envoy-configmap":
        (config_map,) = render(policy, target, EnvoyConfigMapTarget(wasm_path="/w.wasm")).objects
        ecds = yaml.safe_load(config_map["data"]["tokenlimit-ecds.yaml"])
        typed = ecds["resources"][0]["typed_config"]["config"]["configuration"]
        return dict(json.loads(typed["value"]))
    options = HigressOptions(module=MODULE) if target == "higress" else IstioOptions(MODULE)
    (plugin,) = [o for o in render(policy, target, options).objects if o["kind"] == "WasmPlugin"]
    return dict(plugin["spec"]["defaultConfig" if target == "higress" else "pluginConfig"])


@pytest.mark.parametrize("target", ["envoy-configmap", "higress", "istio"])
def test_every_target_carries_the_calendar_and_the_prices_as_numbers(target: str) -> None:
    config = rendered_config(target)
    assert parse_filter_config(config)  # what the filter reads is a valid filter config
    zone = config["time_zone"]
    assert config["calendar"]["zone"] == zone == "Europe/Berlin"
    # Rendered as of now (a year back, ten ahead): the DST changes are the zone's.
    expected = render_current(zone).model_dump(mode="json")["transitions"]
    assert config["calendar"]["transitions"][1:] == expected[1:]
    prices = config["prices"]
    assert prices["gpt-4o"] == {"input": 2.5, "output": 10, "cached": 1.25, "cache_write": 2.5}
    assert prices["gpt-4o-mini"]["input"] == 0.15
    assert list(prices)[-1] == "*"  # the catch-all prices what no entry before it matches


def test_the_example_is_a_valid_policy_document() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert_valid(document)
    assert load_policy(str(EXAMPLE)).policy is not None
