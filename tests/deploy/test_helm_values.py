"""The Helm chart's names, NOTES, the values Helm must refuse, and its agreement with the CLI."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from support import helm_engine
from support.helm_engine import CHART, NAMESPACE, ROOT, Rendered
from support.helm_scenarios import (
    SCENARIOS,
    bridge_flags,
    container,
    flags,
    gateway_of,
    operator_flags,
    rendered,
)

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
    # The bridge refuses to start without a token (it runs scripts on Redis): no switch to drop it.
    "bridge without a token": (
        {"bridge": {"auth": {"enabled": False}}},
        "additional properties 'enabled' not allowed",
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
