"""The chart scenarios and the helpers the chart tests (tests/deploy/) share.

Each scenario is a set of values rendered once by the real Helm engine (helm_engine.py) and
cached, so the test files that look at different parts of the same rendering share the work.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from support import helm_engine
from support.helm_engine import CHART, Rendered

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
WORKLOADS = {"Deployment", "StatefulSet"}


@functools.cache
def rendered(scenario: str) -> Rendered:
    return helm_engine.render(SCENARIOS[scenario])


def values_of(scenario: str) -> dict[str, Any]:
    return SCENARIOS[scenario]


def gateway_of(scenario: str) -> str:
    gateway: str = values_of(scenario).get("gateway", "higress")
    return gateway


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    found: list[dict[str, Any]] = [c for c in containers if c["name"] == name]
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
