"""The Helm chart (deploy/helm/tokenlimit), rendered by the real Helm engine.

Every value set below is rendered with Helm's own Go code (helm_engine.py), every object it
emits is checked against the Kubernetes schemas of the oldest and the newest release the chart
supports, and the assertions are on what a platform engineer relies on: which objects exist
under which names, the exact RBAC, how secrets travel, probes, security contexts, and the
values Helm must refuse. No cluster is involved; see the chart README for what that leaves open.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any

import pytest
import yaml
from support import helm_engine
from support.helm_engine import CHART, NAMESPACE, ROOT, Rendered

SHA = "ab" * 32

# name -> values. Every test that takes `scenario` runs over all of them.
SCENARIOS: dict[str, dict[str, Any]] = {
    "higress": {},
    "istio": {"gateway": "istio"},
    "envoy": {"gateway": "envoy"},
    "external-redis": {
        "gateway": "istio",
        "redis": {
            "external": {"host": "redis.prod.example.com", "port": 6380, "username": "tl"},
            "auth": {"existingSecret": "prod-redis", "existingSecretPasswordKey": "password"},
            "database": 2,
        },
    },
    "external-redis-no-auth": {"redis": {"enabled": False, "external": {"host": "10.0.0.5"}}},
    "ha": {"gateway": "istio", "operator": {"replicas": 3}, "bridge": {"replicas": 3}},
    "single-bridge": {"gateway": "envoy", "bridge": {"replicas": 1}},
    "oci-filter": {
        "filter": {"image": "registry.example.com/tokenlimit-wasm:0.1.0", "sha256": SHA}
    },
    "watch-namespace": {"gateway": "envoy", "watchNamespace": "llm-gateways"},
    "watch-namespace-higress": {"gateway": "higress", "watchNamespace": "llm-gateways"},
    "redis-persistence": {"redis": {"persistence": {"enabled": True, "storageClassName": "ssd"}}},
}

OPERATOR_OBJECTS = {
    "ServiceAccount/tokenlimit-operator",
    "ClusterRole/tokenlimit-operator",
    "ClusterRoleBinding/tokenlimit-operator",
    "Deployment/tokenlimit-operator",
    "Service/tokenlimit-module",
}
REDIS_OBJECTS = {
    "Secret/tokenlimit-redis",
    "Service/tokenlimit-redis",
    "StatefulSet/tokenlimit-redis",
}
BRIDGE_OBJECTS = {
    "Deployment/tokenlimit-bridge",
    "Service/tokenlimit-bridge",
    "Secret/tokenlimit-bridge",
    "PodDisruptionBudget/tokenlimit-bridge",
}
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
WORKLOADS = {"Deployment", "StatefulSet"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
GATEWAY_RULES: dict[str, list[dict[str, Any]]] = {
    "higress": [{"apiGroups": ["extensions.higress.io"], "resources": ["wasmplugins"]}],
    "istio": [
        {"apiGroups": ["extensions.istio.io"], "resources": ["wasmplugins"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["destinationrules", "serviceentries"]},
    ],
    "envoy": [{"apiGroups": [""], "resources": ["configmaps"]}],
}
WRITE_VERBS = ["create", "delete", "get", "list", "patch", "watch"]


# --- engine and helpers -------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    """A missing engine fails every test here with the install command (never a skip)."""
    try:
        helm_engine.helm()
        helm_engine.kubernetes_validate()
    except helm_engine.EngineMissing as e:
        pytest.fail(str(e), pytrace=False)


@functools.cache
def rendered(scenario: str) -> Rendered:
    return helm_engine.render(SCENARIOS[scenario])


def values_of(scenario: str) -> dict[str, Any]:
    return SCENARIOS[scenario]


def gateway_of(scenario: str) -> str:
    return values_of(scenario).get("gateway", "higress")


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"{workload['metadata']['name']} has no single container {name}"
    return found[0]


def flags(args: list[str]) -> dict[str, str | None]:
    """--flag value pairs (None for a bare switch); a repeated flag is a test failure."""
    parsed: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), f"expected a flag at {i} in {args}"
        assert flag not in parsed, f"{flag} given twice in {args}"
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            parsed[flag] = args[i + 1]
            i += 2
        else:
            parsed[flag] = None
            i += 1
    return parsed


def operator_flags(r: Rendered) -> dict[str, str | None]:
    c = container(r.get("Deployment", "tokenlimit-operator"), "operator")
    assert c["command"] == ["tokenlimit"]
    assert c["args"][0] == "operator"
    return flags(c["args"][1:])


def bridge_flags(r: Rendered) -> dict[str, str | None]:
    c = container(r.get("Deployment", "tokenlimit-bridge"), "bridge")
    assert c["command"] == ["tokenlimit"]
    assert c["args"][0] == "bridge"
    return flags(c["args"][1:])


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def pod_specs(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in r.objects
        if o["kind"] in WORKLOADS
    ]


def kube_versions() -> list[str]:
    """The chart's minimum Kubernetes (Chart.yaml kubeVersion) and the newest schema shipped."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    minimum = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)-0", chart["kubeVersion"])
    assert minimum, f"Chart.yaml kubeVersion {chart['kubeVersion']!r} is not '>=X.Y.Z-0'"
    return [minimum.group(1), helm_engine.kubernetes_validate().latest_version()]


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


# --- operator -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_is_told_what_it_renders(scenario: str) -> None:
    r = rendered(scenario)
    values = values_of(scenario)
    gateway = gateway_of(scenario)
    f = operator_flags(r)
    expected: dict[str, str | None] = {
        "--gateway": gateway,
        "--log-level": "info",
        "--module-port": "8081",
    }
    if "watchNamespace" in values:
        expected["--namespace"] = values["watchNamespace"]
    if scenario == "oci-filter":
        expected["--module-url"] = "oci://registry.example.com/tokenlimit-wasm:0.1.0"
        expected["--module-sha256"] = SHA
    elif gateway != "envoy":
        # The operator appends /filters/<file> and writes the sha256 of the file it serves.
        expected["--module-url-base"] = f"http://tokenlimit-module.{NAMESPACE}.svc.cluster.local:80"
    if gateway == "envoy":
        expected["--envoy-module-path"] = "/etc/tokenlimit/tokenlimit.wasm"
    replicas = values.get("operator", {}).get("replicas", 1)
    if replicas > 1:
        expected["--leader-elect"] = None
    assert f == expected

    d = r.get("Deployment", "tokenlimit-operator")
    assert d["spec"]["replicas"] == replicas
    c = container(d, "operator")
    env = env_of(c)
    assert set(env) == {"POD_NAMESPACE", "POD_NAME", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


@pytest.mark.parametrize("scenario", ["higress", "istio", "envoy"])
def test_module_service_fronts_the_operator_module_port(scenario: str) -> None:
    r = rendered(scenario)
    svc = r.get("Service", "tokenlimit-module")
    assert svc["spec"]["ports"] == [
        {
            "name": "http-module",
            "port": 80,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "operator"


def test_operator_values_reach_the_pod() -> None:
    r = helm_engine.render(
        {
            "image": {"repository": "reg.example.com/tl", "tag": "1.2.3", "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": "regcred"}],
            "operator": {
                "logLevel": "debug",
                "nodeSelector": {"pool": "system"},
                "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {}},
                "podAnnotations": {"team": "ai-platform"},
                "priorityClassName": "system-cluster-critical",
                "livenessProbe": {"periodSeconds": 30},
            },
        }
    )
    d = r.get("Deployment", "tokenlimit-operator")
    spec = d["spec"]["template"]["spec"]
    c = container(d, "operator")
    assert c["image"] == "reg.example.com/tl:1.2.3" and c["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"pool": "system"}
    assert spec["tolerations"][0]["key"] == "system"
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert d["spec"]["template"]["metadata"]["annotations"] == {"team": "ai-platform"}
    # Overridden timings merge with the defaults; path and port stay the program's.
    assert c["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http"},
        "initialDelaySeconds": 5,
        "periodSeconds": 30,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    assert operator_flags(r)["--log-level"] == "debug"


# --- bridge -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if gateway_of(s) != "higress"])
def test_bridge_takes_secrets_by_reference(scenario: str) -> None:
    r = rendered(scenario)
    values = values_of(scenario)
    d = r.get("Deployment", "tokenlimit-bridge")
    spec = d["spec"]["template"]["spec"]
    c = container(d, "bridge")
    f = bridge_flags(r)
    assert f["--listen"] == "8080" and f["--host"] == "0.0.0.0"
    assert f["--redis"] == {
        "external-redis": "redis://tl@redis.prod.example.com:6380/2",
    }.get(scenario, f"redis://tokenlimit-redis.{NAMESPACE}.svc.cluster.local:6379/0")
    assert (f["--pool-size"], f["--timeout-ms"]) == ("8", "500")

    assert env_of(c)["TOKENLIMIT_BRIDGE_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "tokenlimit-bridge", "key": "token"}
    }
    secret = r.get("Secret", "tokenlimit-bridge")
    assert set(secret["data"]) == {"token"}

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    if scenario == "external-redis":
        secret_name, key = "prod-redis", "password"
    else:
        secret_name, key = "tokenlimit-redis", "redis-password"
    assert f["--redis-password-file"] == "/var/run/secrets/tokenlimit/redis/password"
    assert volumes["redis-password"]["secret"] == {
        "secretName": secret_name,
        "defaultMode": 0o440,
        "items": [{"key": key, "path": "password"}],
    }
    assert mounts["redis-password"] == {
        "name": "redis-password",
        "mountPath": "/var/run/secrets/tokenlimit/redis",
        "readOnly": True,
    }
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]

    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert d["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    svc = r.get("Service", "tokenlimit-bridge")
    assert svc["spec"]["type"] == "ClusterIP"
    assert (
        svc["spec"]["ports"][0]["port"] == 8080 and svc["spec"]["ports"][0]["targetPort"] == "http"
    )

    replicas = values.get("bridge", {}).get("replicas", 2)
    assert d["spec"]["replicas"] == replicas
    pdbs = r.of_kind("PodDisruptionBudget")
    if replicas > 1:
        assert [p["spec"]["maxUnavailable"] for p in pdbs] == [1]
    else:
        assert pdbs == []


def test_bridge_without_redis_password_mounts_nothing() -> None:
    r = helm_engine.render({"gateway": "istio", "redis": {"external": {"host": "r.example.com"}}})
    assert "--redis-password-file" not in bridge_flags(r)
    spec = r.get("Deployment", "tokenlimit-bridge")["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    assert [s["metadata"]["name"] for s in r.of_kind("Secret")] == ["tokenlimit-bridge"]


def test_bridge_auth_can_be_turned_off() -> None:
    r = helm_engine.render({"gateway": "istio", "bridge": {"auth": {"enabled": False}}})
    assert "Secret/tokenlimit-bridge" not in r.names()
    c = container(r.get("Deployment", "tokenlimit-bridge"), "bridge")
    assert "TOKENLIMIT_BRIDGE_TOKEN" not in env_of(c)
    assert "TOKENLIMIT_BRIDGE_TOKEN" not in r.notes


def test_bridge_uses_an_existing_token_secret() -> None:
    r = helm_engine.render(
        {
            "gateway": "envoy",
            "bridge": {"auth": {"existingSecret": "edge-token", "existingSecretKey": "t"}},
        }
    )
    assert "Secret/tokenlimit-bridge" not in r.names()
    c = container(r.get("Deployment", "tokenlimit-bridge"), "bridge")
    ref = {"secretKeyRef": {"name": "edge-token", "key": "t"}}
    assert env_of(c)["TOKENLIMIT_BRIDGE_TOKEN"]["valueFrom"] == ref
    assert "Secret edge-token, key t" in r.notes


def test_bridge_is_not_rendered_for_higress_or_when_disabled() -> None:
    assert not BRIDGE_OBJECTS & rendered("higress").names()
    r = helm_engine.render({"gateway": "istio", "bridge": {"enabled": False}})
    assert not BRIDGE_OBJECTS & r.names()
    assert "bridge.enabled is false" in r.notes


# --- redis --------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["higress", "redis-persistence"])
def test_in_cluster_redis(scenario: str) -> None:
    r = rendered(scenario)
    sts = r.get("StatefulSet", "tokenlimit-redis")
    spec = sts["spec"]["template"]["spec"]
    c = container(sts, "redis")
    assert sts["spec"]["replicas"] == 1
    assert c["command"] == ["redis-server"]
    assert c["args"][c["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    ref = {"secretKeyRef": {"name": "tokenlimit-redis", "key": "redis-password"}}
    assert env_of(c)["REDIS_PASSWORD"]["valueFrom"] == ref
    assert env_of(c)["REDISCLI_AUTH"]["valueFrom"] == ref
    assert c["livenessProbe"]["tcpSocket"] == {"port": "redis"}
    assert "redis-cli" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert spec["securityContext"]["runAsUser"] == 999
    assert set(r.get("Secret", "tokenlimit-redis")["data"]) == {"redis-password"}
    svc = r.get("Service", "tokenlimit-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    aof = c["args"][c["args"].index("--appendonly") + 1]
    if scenario == "redis-persistence":
        assert aof == "yes"
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["storageClassName"] == "ssd"
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert "volumes" not in spec
    else:
        assert aof == "no"
        assert "volumeClaimTemplates" not in sts["spec"]
        assert spec["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_external_host_turns_in_cluster_redis_off() -> None:
    # redis.enabled is still true (the default): the external host alone decides.
    r = rendered("external-redis")
    assert not [
        o for o in r.objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    ]


def test_in_cluster_redis_with_an_existing_secret() -> None:
    r = helm_engine.render({"redis": {"auth": {"existingSecret": "my-redis"}}})
    assert "Secret/tokenlimit-redis" not in r.names()
    c = container(r.get("StatefulSet", "tokenlimit-redis"), "redis")
    assert env_of(c)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "my-redis"
    rules = r.get("ClusterRole", "tokenlimit-operator")["rules"]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["my-redis"],
        "verbs": ["get"],
    } in rules


# --- names, notes -------------------------------------------------------------------------


def test_names_follow_the_release() -> None:
    r = helm_engine.render({"gateway": "istio"}, release="edge")
    assert "Deployment/edge-tokenlimit-operator" in r.names()
    assert operator_flags_of(r, "edge-tokenlimit-operator")["--module-url-base"] == (
        f"http://edge-tokenlimit-module.{NAMESPACE}.svc.cluster.local:80"
    )
    assert f"bridge: {{service: {{name: edge-tokenlimit-bridge, namespace: {NAMESPACE}}}" in r.notes
    r = helm_engine.render({"fullnameOverride": "tl"}, release="whatever")
    assert "StatefulSet/tl-redis" in r.names()


def operator_flags_of(r: Rendered, name: str) -> dict[str, str | None]:
    return flags(container(r.get("Deployment", name), "operator")["args"][1:])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_say_where_things_are(scenario: str) -> None:
    r = rendered(scenario)
    gateway = gateway_of(scenario)
    assert f"for gateway: {gateway}." in r.notes
    module = "tokenlimit-higress.wasm" if gateway == "higress" else "tokenlimit.wasm"
    base = f"http://tokenlimit-module.{NAMESPACE}.svc.cluster.local:80/filters/{module}"
    where = {
        "oci-filter": "oci://registry.example.com/tokenlimit-wasm:0.1.0",
        "envoy": f"/etc/tokenlimit/tokenlimit.wasm (fetch from {base})",
    }
    assert (
        f"Filter module: {where.get(scenario if scenario == 'oci-filter' else gateway, base)}\n"
        in r.notes
    )
    # What to write into a policy's spec.redis to use this store.
    if gateway == "higress" and scenario == "external-redis-no-auth":
        assert "host: <the Redis service as Higress names it" in r.notes
        assert "passwordSecretRef" not in r.notes
    elif gateway == "higress":
        assert f"service: {{name: tokenlimit-redis, namespace: {NAMESPACE}}}" in r.notes
        assert "passwordSecretRef: {name: tokenlimit-redis, key: redis-password}" in r.notes
    else:
        bridge = (
            f"bridge: {{service: {{name: tokenlimit-bridge, namespace: {NAMESPACE}}}, port: 8080}}"
        )
        assert bridge in r.notes
        assert "TOKENLIMIT_BRIDGE_TOKEN" in r.notes
    assert "kubectl get tokenratelimitpolicies" in r.notes
    assert "WARNING" not in r.notes


# --- values Helm must refuse --------------------------------------------------------------

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "unknown gateway": (
        {"gateway": "nginx"},
        "at '/gateway': value must be one of 'higress', 'istio', 'envoy'",
    ),
    "unknown top-level key": ({"gatway": "istio"}, "additional properties 'gatway' not allowed"),
    "plaintext redis password": (
        {"redis": {"auth": {"password": "hunter2"}}},
        "additional properties 'password' not allowed",
    ),
    "plaintext bridge token": (
        {"bridge": {"auth": {"token": "abc"}}},
        "additional properties 'token' not allowed",
    ),
    "OCI module for stock Envoy": (
        {"gateway": "envoy", "filter": {"image": "reg.example.com/tl-wasm:1"}},
        "filter.image: stock Envoy loads Wasm modules over HTTP only",
    ),
    "no redis at all": (
        {"redis": {"enabled": False}},
        "redis.enabled is false and redis.external.host is empty",
    ),
    "bad sha256": ({"filter": {"sha256": "xyz"}}, "at '/filter/sha256'"),
    "zero replicas": ({"operator": {"replicas": 0}}, "at '/operator/replicas'"),
    "bad log level": ({"operator": {"logLevel": "loud"}}, "at '/operator/logLevel'"),
    "bad watch namespace": ({"watchNamespace": "Not_A_Namespace"}, "at '/watchNamespace'"),
    "port out of range": ({"bridge": {"port": 70000}}, "at '/bridge/port'"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    "probe path is not a value": (
        {"bridge": {"readinessProbe": {"httpGet": {"path": "/"}}}},
        "additional properties 'httpGet' not allowed",
    ),
    "bad envoy module path": (
        {"filter": {"envoyModulePath": "tokenlimit.wasm"}},
        "at '/filter/envoyModulePath'",
    ),
    "no service account name": (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_helm_refuses_bad_values(case: str) -> None:
    values, message = REFUSED[case]
    assert message in helm_engine.render_error(values)


def test_values_yaml_passes_its_own_schema_and_defaults_are_documented() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    helm_engine.render(defaults)  # the schema accepts the defaults spelt out
    readme = (CHART / "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    table = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))

    whole = {
        "resources",
        "podSecurityContext",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
    }

    def leaves(node: Any, path: str = "") -> list[str]:
        """Dotted keys; an empty map or a block documented as a whole is one key."""
        if isinstance(node, dict) and node and path.rpartition(".")[2] not in whole:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{path}.{k}".lstrip("."))]
        return [path]

    documented = set(leaves(defaults))
    assert documented - table == set(), "values.yaml keys missing from the README values table"
    assert table - documented == set(), "README values table lists keys values.yaml lacks"


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


# --- the chart and the CLI agree ----------------------------------------------------------


def chart_flags(command: str) -> set[str]:
    """Every flag the chart passes to `tokenlimit COMMAND`, over all scenarios."""
    found: set[str] = set()
    for scenario in SCENARIOS:
        r = rendered(scenario)
        if command == "bridge" and gateway_of(scenario) == "higress":
            continue
        found |= set((bridge_flags if command == "bridge" else operator_flags)(r))
    return found


@pytest.mark.parametrize("command", ["operator", "bridge"])
def test_cli_accepts_every_flag_the_chart_passes(command: str) -> None:
    from click.testing import CliRunner
    from tokenlimit.cli import main

    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, (
        f"`tokenlimit {command}` does not exist, but the chart runs it "
        f"(deploy/helm/tokenlimit/templates/{command}-deployment.yaml):\n{result.output}"
    )
    missing = sorted(
        f for f in chart_flags(command) if not re.search(rf"{re.escape(f)}(?![\w-])", result.output)
    )
    assert not missing, f"`tokenlimit {command}` lacks flags the chart passes: {missing}"


def test_chart_and_package_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M)
    assert version and chart["appVersion"] == version.group(1), (
        "Chart.yaml appVersion must equal the package version (it is the default image tag)"
    )
