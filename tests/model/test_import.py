"""`tokenlimit import`: Higress ai-token-ratelimit WasmPlugins become valid policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.kube_schemas import assert_valid
from tokenlimit.cli import main
from tokenlimit.importer import ImportFailed, import_documents
from tokenlimit.loader import PolicyError, policy_from_data
from tokenlimit.model import API_VERSION, KIND
from tokenlimit.render.kube import load_yaml_documents

ROOT = Path(__file__).resolve().parents[2]

# The shape of Higress's own example for ai-token-ratelimit, with route and domain rules.
WASM_PLUGIN = """\
apiVersion: extensions.higress.io/v1alpha1
kind: WasmPlugin
metadata:
  name: ai-token-ratelimit
  namespace: higress-system
spec:
  url: oci://higress-registry.cn-hangzhou.cr.aliyuncs.com/plugins/ai-token-ratelimit:1.0.0
  phase: UNSPECIFIED_PHASE
  priority: 600
  defaultConfig:
    rule_name: default_limit_by_param_apikey
    rule_items:
    - limit_by_param: apikey
      limit_keys:
      - key: "123456"
        token_per_minute: 200
    redis:
      service_name: redis.dns
      service_port: 6379
      password: hunter2
  matchRules:
  - ingress: [default/qwen]
    config:
      rule_name: qwen-per-key
      rule_items:
      - limit_by_per_header: x-api-key
        limit_keys:
        - key: "*"
          token_per_hour: 1000
          limit_type: request
      redis:
        service_name: redis.static
  - domain: [old.example.com]
    configDisable: true
    config:
      rule_name: off
      global_threshold: {token_per_day: 1}
"""


def run_import(text: str, tmp_path: Path, *args: str) -> Any:
    source = tmp_path / "plugin.yaml"
    source.write_text(text)
    return CliRunner().invoke(main, ["import", str(source), *args])


def test_wasm_plugin_becomes_policies_and_a_secret(tmp_path: Path) -> None:
    result = run_import(WASM_PLUGIN, tmp_path, "--namespace", "llm")
    assert result.exit_code == 0, result.output
    secret, default, qwen = load_yaml_documents(result.stdout)
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ai-token-ratelimit-redis", "namespace": "llm"},
        "type": "Opaque",
        "stringData": {"password": "hunter2"},
    }
    assert default["metadata"] == {"name": "ai-token-ratelimit", "namespace": "llm"}
    assert default["spec"] == {
        "ruleName": "default_limit_by_param_apikey",
        "ruleItems": [
            {"limitByParam": "apikey", "limitKeys": [{"key": "123456", "tokenPerMinute": 200}]}
        ],
        # Higress applies a route's rule instead of the default: the default skips that route.
        "targetRef": {"gateway": "higress", "exclude": {"ingresses": ["default/qwen"]}},
        "redis": {
            "host": "redis.dns",
            "port": 6379,
            "passwordSecretRef": {"name": "ai-token-ratelimit-redis", "key": "password"},
        },
    }
    assert qwen["metadata"]["name"] == "ai-token-ratelimit-rule-1"
    assert qwen["spec"]["targetRef"] == {"gateway": "higress", "ingresses": ["default/qwen"]}
    # `limit_type` is no Higress field (Higress ignores it): dropped, the limit stays tokens.
    assert qwen["spec"]["ruleItems"][0]["limitKeys"] == [{"key": "*", "tokenPerHour": 1000}]
    assert "limit_type: unknown field, ignored as Higress ignores it" in result.stderr
    assert qwen["spec"]["redis"] == {"host": "redis.static", "port": 80}
    for policy in (default, qwen):
        assert_valid(policy)
        assert policy_from_data(policy, "imported").policy is not None
    assert "spec.matchRules[1]: configDisable is true: skipped" in result.stderr
    assert (
        "spec.defaultConfig: applies to every route except ingresses default/qwen, which "
        "spec.matchRules give their own rule (Higress applies a route's rule instead of the "
        "default, never both)"
    ) in result.stderr
    assert "the Redis password moved into Secret ai-token-ratelimit-redis" in result.stderr


def test_a_redis_name_higress_cannot_resolve_is_reported(tmp_path: Path) -> None:
    text = WASM_PLUGIN.replace("service_name: redis.dns", "service_name: redis.default")
    result = run_import(text, tmp_path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        f"{tmp_path / 'plugin.yaml'}: spec.defaultConfig: redis.host: Higress needs the "
        'full Service name, got "redis.default": write redis.default.svc.cluster.local'
    ) in result.stderr


def test_a_field_the_filter_refuses_is_reported_in_the_configs_terms(tmp_path: Path) -> None:
    text = WASM_PLUGIN.replace("token_per_minute: 200", "token_per_minute: -1")
    result = run_import(text, tmp_path)
    assert result.exit_code == 1
    assert "spec.defaultConfig: ruleItems[0].limitKeys[0].tokenPerMinute: must be an integer" in (
        result.stderr
    )


def test_bare_config_with_injected_rules() -> None:
    config = {
        "rule_name": "all",
        "global_threshold": {"token_per_hour": 10},
        "_rules_": [
            {
                "_match_domain_": ["api.example.com"],
                "rule_name": "api",
                "global_threshold": {"token_per_minute": 1},
            }
        ],
    }
    result = import_documents([config], "c.yaml", name="gw")
    names = [d["metadata"]["name"] for d in result.documents]
    assert names == ["gw", "gw-rule-1"]
    assert result.documents[0]["spec"]["targetRef"] == {
        "gateway": "higress",
        "exclude": {"domains": ["api.example.com"]},
    }
    assert result.documents[1]["spec"]["targetRef"] == {
        "gateway": "higress",
        "domains": ["api.example.com"],
    }


def test_a_routes_rule_replaces_the_default_once_rendered_for_higress() -> None:
    from tokenlimit.render.higress import HigressOptions, render
    from tokenlimit.render.kube import WasmModule

    (default, _) = import_documents(
        [yaml.safe_load(WASM_PLUGIN.replace("password: hunter2", ""))], "p.yaml"
    ).documents
    policy = policy_from_data(default, "imported").policy
    assert policy is not None
    (plugin,) = render(policy, HigressOptions(module=WasmModule("oci://x/tokenlimit:1", None)))
    assert plugin["spec"]["defaultConfigDisable"] is False
    # Higress skips the plugin on the excluded route; the route's own plugin applies there.
    assert plugin["spec"]["matchRules"] == [{"ingress": ["default/qwen"], "configDisable": True}]


def test_higress_readme_wasm_plugin_imports() -> None:
    # key: 123456 (a YAML integer), as Higress's README writes it.
    path = ROOT / "tests" / "fixtures" / "higress" / "2.0.1" / "en-block11.yaml"
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    plugin = next(d for d in documents if d["metadata"]["name"] == "ai-token-ratelimit")
    (policy,) = import_documents([plugin], "readme").documents
    assert policy["spec"]["ruleItems"][0]["limitKeys"] == [{"key": "123456", "tokenPerMinute": 200}]


def test_a_route_rule_naming_routes_and_domains_matches_on_the_routes_as_higress_does() -> None:
    config = {
        "_rules_": [
            {
                "_match_route_": ["default/chat"],
                "_match_domain_": ["api.example.com"],
                "rule_name": "chat",
                "global_threshold": {"token_per_minute": 1},
            }
        ]
    }
    result = import_documents([config], "c.yaml", name="gw")
    (policy,) = result.documents
    assert policy["spec"]["targetRef"] == {"gateway": "higress", "ingresses": ["default/chat"]}
    assert any("_match_domain_ dropped: Higress matches" in n for n in result.notes)


def test_examples_higress_config_imports() -> None:
    documents = [yaml.safe_load((ROOT / "deploy" / "examples" / "higress-config.yaml").read_text())]
    (policy,) = import_documents(documents, "higress-config.yaml").documents
    assert policy["spec"]["redis"] == {
        "host": "redis.default.svc.cluster.local",
        "port": 6379,
        "timeoutMs": 1000,
    }


def test_not_a_wasm_plugin() -> None:
    with pytest.raises(ImportFailed, match="expected kind WasmPlugin"):
        import_documents([{"apiVersion": "v1", "kind": "ConfigMap"}], "x.yaml")


def test_exclude_is_only_for_a_policy_on_every_route() -> None:
    spec = {"ruleName": "r", "globalThreshold": {"tokenPerMinute": 1}}
    policy = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "p"}, "spec": spec}
    spec["targetRef"] = {
        "gateway": "higress",
        "ingresses": ["a/b"],
        "exclude": {"ingresses": ["c"]},
    }
    with pytest.raises(
        PolicyError, match=r"spec.targetRef.exclude: is for a policy on every route"
    ):
        policy_from_data(policy, "p")
    spec["targetRef"] = {"gateway": "envoy", "exclude": {"ingresses": ["c"]}}
    with pytest.raises(PolicyError, match=r"spec.targetRef.exclude: attaches to higress"):
        policy_from_data(policy, "p")


def test_a_route_prefix_rule_beside_a_default_config_is_refused_with_the_fix() -> None:
    # The prefix rule replaces the default on its routes; a policy cannot exclude by prefix.
    config = {
        "rule_name": "all",
        "global_threshold": {"token_per_hour": 10},
        "_rules_": [
            {
                "_match_route_prefix_": ["api-"],
                "rule_name": "api",
                "global_threshold": {"token_per_minute": 1},
            }
        ],
    }
    with pytest.raises(ImportFailed, match="list the routes in _match_route_"):
        import_documents([config], "c.yaml", name="gw")


def test_route_prefixes_attach_alone_and_only_to_higress() -> None:
    def target(ref: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "p"},
            "spec": {
                "targetRef": ref,
                "ruleName": "r",
                "globalThreshold": {"tokenPerMinute": 1},
            },
        }

    policy_from_data(target({"gateway": "higress", "routePrefixes": ["api-"]}), "p")
    for ref in (
        {"gateway": "envoy", "routePrefixes": ["api-"]},
        {"gateway": "higress", "routePrefixes": ["api-"], "ingresses": ["chat"]},
        {"gateway": "higress", "routePrefixes": ["api-"], "exclude": {"ingresses": ["chat"]}},
    ):
        with pytest.raises(PolicyError, match="routePrefixes"):
            policy_from_data(target(ref), "p")
