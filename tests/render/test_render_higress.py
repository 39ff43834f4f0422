"""The Higress renderer: golden files, the WasmPlugin schema, and the real filter accepting
the config Higress would hand it.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_render_higress.py
and review the diff like code.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.kube_schemas import assert_valid
from support.proxywasm_host import Host
from tokenlimit.cli import main
from tokenlimit.loader import load_policy, policy_from_data
from tokenlimit.model import SecretKeyRef, TokenRateLimitPolicy, parse_filter_config
from tokenlimit.render.higress import HigressOptions, plugin_config, render
from tokenlimit.render.kube import RenderError, WasmModule, load_yaml_documents, to_yaml_documents

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLE = ROOT / "deploy" / "examples" / "higress.yaml"
MODULE = WasmModule(
    "oci://registry.example.com/tokenlimit-higress:0.1.0",
    "0d3c5f7a8e2b4a6c9d1e3f5a7b9c2d4e6f8a1b3c5d7e9f2a4b6c8d1e3f5a7b9c",
)
PASSWORD = "s3cret-for-golden"


def secrets(namespace: str | None, ref: SecretKeyRef) -> str:
    assert (namespace, ref.name, ref.key) == ("llm", "redis-auth", "password")
    return PASSWORD


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


def global_policy(**spec: Any) -> TokenRateLimitPolicy:
    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "all", "namespace": "llm"},
        "spec": {
            "ruleName": "all",
            "globalThreshold": {"tokenPerHour": 100000},
            "targetRef": {"gateway": "higress"},
            **spec,
        },
    }
    loaded = policy_from_data(document, "all.yaml")
    assert loaded.policy is not None
    return loaded.policy


def higress_plugin_config(spec: dict[str, Any]) -> dict[str, Any]:
    """What Higress hands the filter for a WasmPlugin spec (its controller's conversion):
    defaultConfig unless disabled, plus one `_rules_` entry per enabled match rule."""
    config = {} if spec.get("defaultConfigDisable") else copy.deepcopy(spec["defaultConfig"])
    rules = []
    for rule in spec.get("matchRules", []):
        if rule.get("configDisable"):
            continue
        entry = copy.deepcopy(rule["config"])
        for theirs, key in (
            ("ingress", "_match_route_"),
            ("domain", "_match_domain_"),
            ("service", "_match_service_"),
        ):
            if rule.get(theirs):
                entry[key] = rule[theirs]
        rules.append(entry)
    if rules:
        config["_rules_"] = rules
    return config


def test_golden_example() -> None:
    objects = render(example(), HigressOptions(module=MODULE), secrets)
    check_golden("higress-wasmplugin.yaml", to_yaml_documents(objects))


def test_golden_global_policy() -> None:
    policy = global_policy(
        failureMode="closed",
        redis={"host": "redis.static", "timeoutMs": 100},
    )
    objects = render(policy, HigressOptions(module=WasmModule(MODULE.url)))
    check_golden("higress-wasmplugin-global.yaml", to_yaml_documents(objects))


def test_rendering_is_deterministic() -> None:
    first = to_yaml_documents(render(example(), HigressOptions(module=MODULE), secrets))
    assert first == to_yaml_documents(render(example(), HigressOptions(module=MODULE), secrets))


def test_rendered_objects_fit_the_higress_schema() -> None:
    for policy in (example(), global_policy()):
        for obj in render(policy, HigressOptions(module=MODULE), secrets):
            assert_valid(obj)


def test_one_match_rule_per_attachment_kind() -> None:
    (plugin,) = render(example(), HigressOptions(module=MODULE), secrets)
    spec = plugin["spec"]
    assert spec["defaultConfigDisable"] is True and "defaultConfig" not in spec
    assert [sorted(set(r) - {"config", "configDisable"}) for r in spec["matchRules"]] == [
        ["ingress"],
        ["domain"],
    ]
    assert plugin["metadata"]["namespace"] == "higress-system"
    assert plugin["metadata"]["name"] == "tokenlimit-llm-chat-per-key"
    assert (spec["phase"], spec["priority"], spec["failStrategy"]) == (
        "UNSPECIFIED_PHASE",
        600,
        "FAIL_OPEN",
    )


def test_the_real_higress_filter_accepts_what_higress_would_hand_it(higress_wasm: Path) -> None:
    for policy in (example(), global_policy(redis={"host": "redis.static"})):
        (plugin,) = render(policy, HigressOptions(module=MODULE), secrets)
        config = higress_plugin_config(plugin["spec"])
        parse_filter_config(config)  # the Python half of the contract
        host = Host(higress_wasm)
        assert host.configure(config), host.logs


def test_the_password_comes_from_the_secret_only_at_apply_time() -> None:
    config = plugin_config(example(), secrets)
    assert config["redis"]["password"] == PASSWORD
    with pytest.raises(RenderError) as refused:
        plugin_config(example())
    assert str(refused.value).startswith(
        "spec.redis.passwordSecretRef: the Redis password is in Secret llm/redis-auth key "
        "password and is read only when the policy is applied"
    )


def test_fail_strategy_follows_failure_mode_unless_chosen() -> None:
    closed = global_policy(failureMode="closed")
    (plugin,) = render(closed, HigressOptions(module=MODULE))
    assert plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    (plugin,) = render(closed, HigressOptions(module=MODULE, fail_strategy="FAIL_OPEN"))
    assert plugin["spec"]["failStrategy"] == "FAIL_OPEN"


def test_a_policy_for_another_gateway_is_refused() -> None:
    istio = load_policy(ROOT / "deploy" / "examples" / "istio.yaml").policy
    assert istio is not None
    with pytest.raises(RenderError, match="attaches to istio, not higress: render it with"):
        render(istio, HigressOptions(module=MODULE))


def test_module_url_and_sha_are_checked() -> None:
    with pytest.raises(RenderError, match="module URL must start with oci://"):
        WasmModule("registry.example.com/x:1")
    with pytest.raises(RenderError, match="sha256 must be 64 lowercase hex digits"):
        WasmModule("oci://r/x:1", "abc")


def test_cli_render(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    args = ["render", "--target", "higress", str(EXAMPLE), "--wasm-url", MODULE.url]
    args += ["--sha256", str(MODULE.sha256), "--redis-password-file", str(password)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "higress-wasmplugin.yaml").read_text()
    assert [d["kind"] for d in load_yaml_documents(result.stdout)] == ["WasmPlugin"]


def test_cli_render_needs_the_module_url_and_the_password() -> None:
    result = CliRunner().invoke(main, ["render", "--target", "higress", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "--target higress needs --wasm-url URL" in result.stderr
    result = CliRunner().invoke(
        main, ["render", "--target", "higress", str(EXAMPLE), "--wasm-url", MODULE.url]
    )
    assert result.exit_code == 1
    assert f"{EXAMPLE}: spec.redis.passwordSecretRef: the Redis password is in" in result.stderr


def test_cli_render_refuses_a_bare_config_with_the_way_forward() -> None:
    bare = ROOT / "deploy" / "examples" / "higress-config.yaml"
    result = CliRunner().invoke(
        main, ["render", "--target", "higress", str(bare), "--wasm-url", MODULE.url]
    )
    assert result.exit_code == 1
    assert f"convert it with `tokenlimit import {bare}`" in result.stderr


def test_the_operator_renders_with_this_renderer() -> None:
    from tokenlimit.operator.reconcile import Module, Settings
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(gateway="higress", module=Module(MODULE.url, str(MODULE.sha256)))
    loaded = load_policy(EXAMPLE)
    with pytest.raises(RenderError, match="passwordSecretRef"):  # no secret reader given
        renderer_for("higress").render(loaded, {}, settings)
    objects = renderer_for("higress", secrets).render(loaded, {}, settings)
    assert objects == render(example(), HigressOptions(module=MODULE), secrets)
    # The fallback's redirect EnvoyFilters are the operator's objects too (listed, cleaned up).
    assert [str(k) for k in renderer_for("higress").kinds] == [
        "WasmPlugin.extensions.higress.io",
        "EnvoyFilter.networking.istio.io",
    ]
