"""The Helm chart's RBAC: exactly the least privilege the operator needs, nothing wildcard."""

from __future__ import annotations

from typing import Any

import pytest
from support import helm_engine
from support.helm_engine import NAMESPACE
from support.helm_scenarios import SCENARIOS, gateway_of, rendered, values_of

GATEWAY_RULES: dict[str, list[dict[str, Any]]] = {
    "higress": [{"apiGroups": ["extensions.higress.io"], "resources": ["wasmplugins"]}],
    "istio": [
        {"apiGroups": ["extensions.istio.io"], "resources": ["wasmplugins"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["destinationrules", "serviceentries"]},
    ],
    "envoy": [{"apiGroups": [""], "resources": ["configmaps"]}],
}
WRITE_VERBS = ["create", "delete", "get", "list", "patch", "watch"]


# --- RBAC ---------------------------------------------------------------------------------


def redis_secret_rule(scenario: str) -> list[dict[str, Any]]:
    """Higress reads the Redis password Secret policies name: that one name, nothing else."""
    if gateway_of(scenario) != "higress" or scenario == "external-redis-no-auth":
        return []
    return [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["tokenlimit-redis"],
            "verbs": ["get"],
        }
    ]


def watch_rules(scenario: str) -> list[dict[str, Any]]:
    # Watching one namespace with Higress, the WasmPlugin rule lives in a Role in
    # higress-system instead (test_rbac_is_exactly_least_privilege checks it there).
    watched_higress = gateway_of(scenario) == "higress" and "watchNamespace" in values_of(scenario)
    gateway_rules = [] if watched_higress else GATEWAY_RULES[gateway_of(scenario)]
    return [
        {
            "apiGroups": ["tokenlimit.io"],
            "resources": ["tokenratelimitpolicies"],
            "verbs": ["get", "list", "patch", "watch"],
        },
        {
            "apiGroups": ["tokenlimit.io"],
            "resources": ["tokenratelimitpolicies/status"],
            "verbs": ["patch", "update"],
        },
        {
            "apiGroups": ["tokenlimit.io"],
            "resources": ["tokenratelimitpolicies/finalizers"],
            "verbs": ["update"],
        },
        *({**rule, "verbs": WRITE_VERBS} for rule in gateway_rules),
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        *redis_secret_rule(scenario),
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_exactly_least_privilege(scenario: str) -> None:
    r = rendered(scenario)
    values = values_of(scenario)
    watch = values.get("watchNamespace")
    kind = "Role" if watch else "ClusterRole"
    role = r.get(kind, "tokenlimit-operator")
    assert role["rules"] == watch_rules(scenario)

    binding = r.get(f"{kind}Binding", "tokenlimit-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": kind,
        "name": "tokenlimit-operator",
    }
    subject = {"kind": "ServiceAccount", "name": "tokenlimit-operator", "namespace": NAMESPACE}
    assert binding["subjects"] == [subject]
    assert (
        r.get("Deployment", "tokenlimit-operator")["spec"]["template"]["spec"]["serviceAccountName"]
        == "tokenlimit-operator"
    )

    if watch and gateway_of(scenario) == "higress":
        higress = r.get("Role", "tokenlimit-operator-higress")
        assert higress["metadata"]["namespace"] == "higress-system"
        assert higress["rules"] == [
            {**rule, "verbs": WRITE_VERBS} for rule in GATEWAY_RULES["higress"]
        ]
        higress_binding = r.get("RoleBinding", "tokenlimit-operator-higress")
        assert higress_binding["metadata"]["namespace"] == "higress-system"
        assert higress_binding["subjects"] == [subject]

    # In its own namespace, with replicas > 1: its Lease (the operator's fixed name).
    if values.get("operator", {}).get("replicas", 1) > 1:
        leader = r.get("Role", "tokenlimit-operator-leader")
        assert leader["metadata"]["namespace"] == NAMESPACE
        assert leader["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["tokenlimit-operator"],
                "verbs": ["get", "update"],
            },
        ]
        assert r.get("RoleBinding", "tokenlimit-operator-leader")["subjects"] == [subject]

    # Belt and braces: nothing anywhere is a wildcard or an escalation verb.
    for obj in r.of_kind("Role") + r.of_kind("ClusterRole"):
        for rule in obj["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"wildcard {key} in {obj['metadata']['name']}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"] and len(rule["resourceNames"]) == 1


def test_redis_secret_name_for_policies_can_be_chosen() -> None:
    r = helm_engine.render({"operator": {"redisSecretName": "llm-redis"}})
    rules = r.get("ClusterRole", "tokenlimit-operator")["rules"]
    assert [rule["resourceNames"] for rule in rules if rule["resources"] == ["secrets"]] == [
        ["llm-redis"]
    ]
    assert "passwordSecretRef: {name: llm-redis, key: redis-password}" in r.notes


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    r = helm_engine.render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "tl"}}
    )
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"} & {
        o["kind"] for o in r.objects
    }
    spec = r.get("Deployment", "tokenlimit-operator")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "tl"
