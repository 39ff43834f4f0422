"""The operator's real renderers under reconcile: Envoy's ECDS ConfigMap, Higress's and Istio's
WasmPlugins, and a policy for another gateway refused.

Pure: no API, no clock. Inputs are the recorded shapes in tests/fixtures/kube/.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from support.operator_reconcile import NOW, UID, recorded
from tokenlimit.apply.kube import CONFIG_MAP
from tokenlimit.operator.reconcile import (
    POLICY_UID_LABEL,
    Settings,
    reconcile,
)
from tokenlimit.operator.renderers import ECDS_KEY, EnvoyEcdsRenderer, child_name

# --- the real Envoy renderer ----------------------------------------------------------------


def test_envoy_gateway_renders_a_configmap_with_the_ecds_document() -> None:
    settings = Settings(gateway="envoy", envoy_module_path="/etc/tokenlimit/tokenlimit.wasm")
    renderer = EnvoyEcdsRenderer()
    assert renderer.kinds == (CONFIG_MAP,)

    plan = reconcile(recorded("policy.json"), [], settings, renderer, NOW)

    (config_map,) = plan.apply
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert config_map["metadata"]["name"] == "chat-tokenlimit-ecds"
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == UID
    ecds = yaml.safe_load(config_map["data"][ECDS_KEY])
    (resource,) = ecds["resources"]
    assert resource["name"] == "tokenlimit"
    config = resource["typed_config"]["config"]
    assert config["vm_config"]["code"]["local"]["filename"] == "/etc/tokenlimit/tokenlimit.wasm"
    assert json.loads(config["configuration"]["value"]) == {
        "rule_name": "chat",
        "rule_items": [
            {
                "limit_by_per_header": "x-api-key",
                "limit_keys": [{"key": "*", "token_per_minute": 300}],
            }
        ],
    }
    assert plan.status is not None
    assert plan.status["conditions"][1]["message"] == (
        "applied 1 object: ConfigMap team-a/chat-tokenlimit-ecds"
    )


def test_child_names_stay_valid_for_long_policy_names() -> None:
    long_name = "a" * 250
    name = child_name(long_name, "tokenlimit-ecds")
    assert len(name) == 253 and name.endswith("-tokenlimit-ecds")
    assert name != child_name("a" * 249 + "b", "tokenlimit-ecds")


# --- the real Higress and Istio renderers ---------------------------------------------------

MODULE_SHA256 = "0" * 63 + "1"


def policy_for(target_ref: dict[str, Any], **spec: Any) -> dict[str, Any]:
    policy = recorded("policy.json")
    policy["spec"]["targetRef"] = target_ref
    policy["spec"].update(spec)
    return policy


def test_higress_gateway_renders_a_wasm_plugin_in_higress_system() -> None:
    from tokenlimit.operator.reconcile import Module
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(
        gateway="higress",
        module=Module(
            "http://op.tokenlimit-system.svc:8081/filters/tokenlimit-higress.wasm", MODULE_SHA256
        ),
    )
    policy = policy_for({"gateway": "higress", "domains": ["api.example.com"]})

    plan = reconcile(policy, [], settings, renderer_for("higress"), NOW)

    assert plan.accepted, plan.message
    (plugin,) = plan.apply
    assert (plugin["apiVersion"], plugin["kind"]) == (
        "extensions.higress.io/v1alpha1",
        "WasmPlugin",
    )
    assert plugin["metadata"]["namespace"] == "higress-system"
    # Another namespace than the policy's: owned by label, cleaned up by the finalizer.
    assert "ownerReferences" not in plugin["metadata"] and plan.add_finalizer
    assert plugin["metadata"]["labels"][POLICY_UID_LABEL] == UID
    assert plugin["spec"]["url"] == settings.module.url  # type: ignore[union-attr]
    assert plugin["spec"]["sha256"] == MODULE_SHA256
    assert plugin["spec"]["matchRules"][0]["domain"] == ["api.example.com"]


def test_higress_reads_the_redis_password_from_the_secret() -> None:
    from tokenlimit.operator.reconcile import Module
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(gateway="higress", module=Module("http://m/x.wasm", MODULE_SHA256))
    redis = {
        "service": {"name": "redis", "namespace": "redis"},
        "port": 6379,
        "passwordSecretRef": {"name": "redis-auth", "key": "password"},
    }
    policy = policy_for({"gateway": "higress"}, redis=redis)
    reads: list[tuple[str | None, str, str]] = []

    def secrets(namespace: str | None, ref: Any) -> str:
        reads.append((namespace, ref.name, ref.key))
        return "s3cret"

    plan = reconcile(policy, [], settings, renderer_for("higress", secrets), NOW)  # type: ignore[arg-type]

    assert plan.accepted, plan.message
    assert reads == [("team-a", "redis-auth", "password")]
    assert plan.apply[0]["spec"]["defaultConfig"]["redis"]["password"] == "s3cret"


def test_a_missing_secret_refuses_the_policy_naming_the_reference() -> None:
    from support.fakekube import FakeKube
    from tokenlimit.operator.reconcile import Module
    from tokenlimit.operator.renderers import SecretReader, renderer_for

    settings = Settings(gateway="higress", module=Module("http://m/x.wasm", MODULE_SHA256))
    redis = {
        "service": {"name": "redis", "namespace": "redis"},
        "passwordSecretRef": {"name": "redis-auth", "key": "password"},
    }
    policy = policy_for({"gateway": "higress"}, redis=redis)
    kube = FakeKube()
    renderer = renderer_for("higress", SecretReader(kube))

    plan = reconcile(policy, [], settings, renderer, NOW)
    assert not plan.accepted
    assert plan.message == "spec.redis.passwordSecretRef: Secret team-a/redis-auth not found"

    kube.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth", "namespace": "team-a"},
            "data": {"other": "eA=="},
        }
    )
    plan = reconcile(policy, [], settings, renderer, NOW)
    assert (
        plan.message
        == "spec.redis.passwordSecretRef: Secret team-a/redis-auth has no key 'password'"
    )


def test_istio_gateway_renders_a_wasm_plugin_owned_in_the_policy_namespace() -> None:
    from tokenlimit.operator.reconcile import Module
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(gateway="istio", module=Module("http://m/tokenlimit.wasm", MODULE_SHA256))
    policy = policy_for({"gateway": "istio", "selector": {"matchLabels": {"app": "llm-gateway"}}})
    renderer = renderer_for("istio")

    plan = reconcile(policy, [], settings, renderer, NOW)

    assert plan.accepted, plan.message
    (plugin,) = plan.apply
    assert (plugin["apiVersion"], plugin["metadata"]["namespace"]) == (
        "extensions.istio.io/v1alpha1",
        "team-a",
    )
    assert plugin["metadata"]["ownerReferences"][0]["uid"] == UID
    assert not plan.add_finalizer
    assert plugin["spec"]["selector"] == {"matchLabels": {"app": "llm-gateway"}}
    assert [str(k) for k in renderer.kinds] == [
        "WasmPlugin.extensions.istio.io",
        "ServiceEntry.networking.istio.io",
        "DestinationRule.networking.istio.io",
    ]


def test_a_policy_for_another_gateway_is_refused() -> None:
    from tokenlimit.operator.reconcile import Module
    from tokenlimit.operator.renderers import renderer_for

    settings = Settings(gateway="istio", module=Module("http://m/tokenlimit.wasm", MODULE_SHA256))
    plan = reconcile(policy_for({"gateway": "higress"}), [], settings, renderer_for("istio"), NOW)
    assert not plan.accepted
    assert plan.message.startswith("spec.targetRef.gateway: the policy attaches to higress")
