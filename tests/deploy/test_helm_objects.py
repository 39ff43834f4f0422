"""The Helm chart (deploy/helm/tokenlimit), rendered by the real Helm engine: every object.

Every value set in support/helm_scenarios.py is rendered with Helm's own Go code
(helm_engine.py), every object it emits is checked against the Kubernetes schemas of the oldest
and the newest release the chart supports, and the assertions are on what a platform engineer
relies on: which objects exist under which names, labels and namespaces, how secrets travel,
security contexts. No cluster is involved; see the chart README for what that leaves open.
RBAC, the workloads one by one and the values Helm refuses have their own test_helm_*.py files.
"""

from __future__ import annotations

import base64
import re

import pytest
from support import helm_engine
from support.helm_engine import NAMESPACE
from support.helm_scenarios import (
    BRIDGE_OBJECTS,
    OPERATOR_OBJECTS,
    REDIS_OBJECTS,
    SCENARIOS,
    WORKLOADS,
    kube_versions,
    pod_specs,
    rendered,
    values_of,
)

EXPECTED_OBJECTS: dict[str, set[str]] = {
    "higress": OPERATOR_OBJECTS | REDIS_OBJECTS,
    "istio": OPERATOR_OBJECTS | REDIS_OBJECTS | BRIDGE_OBJECTS,
    "envoy": OPERATOR_OBJECTS | REDIS_OBJECTS | BRIDGE_OBJECTS,
    "external-redis": OPERATOR_OBJECTS | BRIDGE_OBJECTS,
    "external-redis-no-auth": OPERATOR_OBJECTS,
    "ha": OPERATOR_OBJECTS
    | REDIS_OBJECTS
    | BRIDGE_OBJECTS
    | {"Role/tokenlimit-operator-leader", "RoleBinding/tokenlimit-operator-leader"},
    "single-bridge": OPERATOR_OBJECTS
    | REDIS_OBJECTS
    | BRIDGE_OBJECTS - {"PodDisruptionBudget/tokenlimit-bridge"},
    "oci-filter": OPERATOR_OBJECTS - {"Service/tokenlimit-module"} | REDIS_OBJECTS,
    "watch-namespace": (
        OPERATOR_OBJECTS
        - {"ClusterRole/tokenlimit-operator", "ClusterRoleBinding/tokenlimit-operator"}
    )
    | {"Role/tokenlimit-operator", "RoleBinding/tokenlimit-operator"}
    | REDIS_OBJECTS
    | BRIDGE_OBJECTS,
    # Higress reads WasmPlugins only in higress-system: a Role there, besides the watched one.
    "watch-namespace-higress": (
        OPERATOR_OBJECTS
        - {"ClusterRole/tokenlimit-operator", "ClusterRoleBinding/tokenlimit-operator"}
    )
    | {"Role/tokenlimit-operator", "RoleBinding/tokenlimit-operator"}
    | {"Role/tokenlimit-operator-higress", "RoleBinding/tokenlimit-operator-higress"}
    | REDIS_OBJECTS,
    "redis-persistence": OPERATOR_OBJECTS | REDIS_OBJECTS,
}

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


# --- every object, every scenario ---------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_exactly_the_expected_objects(scenario: str) -> None:
    r = rendered(scenario)
    assert r.names() == EXPECTED_OBJECTS[scenario], helm_engine.dump(sorted(r.names()))
    assert len(r.names()) == len(r.objects), "two objects share a kind and name"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_a_valid_kubernetes_object(scenario: str) -> None:
    for version in kube_versions():
        for obj in rendered(scenario).objects:
            helm_engine.validate_kube(obj, version)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict_is_clean(scenario: str) -> None:
    report = helm_engine.lint(values_of(scenario))
    # Severity 1 is informational ("icon is recommended"); 2 and up are warnings and errors.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_standard_labels_namespaces_and_selectors(scenario: str) -> None:
    r = rendered(scenario)
    watch = values_of(scenario).get("watchNamespace")
    for obj in r.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        labels = obj["metadata"]["labels"]
        assert all(labels.get(k) for k in STANDARD_LABELS), f"{name} lacks a standard label"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == helm_engine.RELEASE
        assert len(obj["metadata"]["name"]) <= 63, name
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], name
        elif obj["kind"] in {"Role", "RoleBinding"} and name.endswith("-higress"):
            assert obj["metadata"]["namespace"] == "higress-system", name
        elif obj["kind"] in {"Role", "RoleBinding"} and not name.endswith("-leader") and watch:
            assert obj["metadata"]["namespace"] == watch, name
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, name
    for obj in r.objects:
        if obj["kind"] in WORKLOADS:
            selector = obj["spec"]["selector"]["matchLabels"]
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()
            assert (
                selector["app.kubernetes.io/component"]
                == obj["metadata"]["labels"]["app.kubernetes.io/component"]
            )
    # Every Service and PDB selects the pods of exactly one workload.
    workloads = [o for o in r.objects if o["kind"] in WORKLOADS]
    for obj in r.of_kind("Service") + r.of_kind("PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [
            w["metadata"]["name"]
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{obj['kind']}/{obj['metadata']['name']} selects {matched}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_locked_down(scenario: str) -> None:
    for name, spec in pod_specs(rendered(scenario)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            assert c["livenessProbe"] and c["readinessProbe"], name
            assert ":" in c["image"] and not c["image"].endswith(":"), name
        if name != "tokenlimit-operator":
            # Only the operator talks to the Kubernetes API.
            assert spec["automountServiceAccountToken"] is False, name
            assert "serviceAccountName" not in spec, name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_value_outside_secrets(scenario: str) -> None:
    """Passwords and tokens travel as Secret references: no manifest but a Secret holds one."""
    r = rendered(scenario)
    secret_values: set[str] = set()
    for secret in r.of_kind("Secret"):
        for encoded in secret["data"].values():
            value = base64.b64decode(encoded).decode()
            assert len(value) >= 32, "generated secrets are at least 32 characters"
            secret_values |= {value, encoded}
    for obj in r.objects:
        if obj["kind"] != "Secret":
            text = helm_engine.dump(obj)
            assert not any(v in text for v in secret_values), obj["metadata"]["name"]
    assert not any(v in r.notes for v in secret_values)
    for name, spec in pod_specs(r):
        for c in spec["containers"]:
            for var in c.get("env", []):
                if re.search(r"PASSWORD|TOKEN|AUTH|SECRET", var["name"]):
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert set(var) == {"name", "valueFrom"} and ref["name"] and ref["key"], name
            for arg in c.get("args", []):
                # A Redis URL may carry a user, never a password (redis://user:pw@...).
                assert not re.search(r"redis://[^/@]*:[^/@]*@", arg), f"{name}: {arg}"


# --- CRDs ---------------------------------------------------------------------------------


def test_chart_crds_are_valid_kubernetes_objects() -> None:
    crds = helm_engine.chart_crds()
    names = [c["metadata"]["name"] for c in crds]
    assert "tokenratelimitpolicies.tokenlimit.io" in names, (
        f"Helm finds no TokenRateLimitPolicy CRD in the chart (has {names}); see "
        "test_chart_crds_are_the_generated_crds"
    )
    for version in kube_versions():
        for crd in crds:
            assert crd["kind"] == "CustomResourceDefinition"
            helm_engine.validate_kube(crd, version)
