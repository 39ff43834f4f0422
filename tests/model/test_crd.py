"""The TokenRateLimitPolicy CRD: generated from the model, structural, and in step with it.

Also the policy-only parts of the model: attachment (`targetRef`) and store (`redis`),
including the Higress Redis names that make Higress answer `bad argument` on Redis init.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.kube_schemas import CRD_FILE, assert_valid, errors
from tokenlimit.cli import main
from tokenlimit.crd import generate
from tokenlimit.loader import PolicyError, load_policy, policy_from_data
from tokenlimit.model import filter_json, policy_filter_config
from tokenlimit.render.envoy import to_yaml

ROOT = Path(__file__).resolve().parents[2]
# One example per gateway kind (deploy/examples/ also holds the local `up` policy and a bare
# Higress config, which attach to nothing).
GATEWAYS = ("envoy", "higress", "istio")
EXAMPLES = [ROOT / "deploy" / "examples" / f"{gateway}.yaml" for gateway in GATEWAYS]
REGENERATE = (
    ".venv/bin/tokenlimit crd"
    " > deploy/helm/tokenlimit/crds/tokenlimit.io_tokenratelimitpolicies.yaml"
)


def policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ruleName": "r", "globalThreshold": {"tokenPerMinute": 100}}
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "p", "namespace": "llm"},
        "spec": {**base, **spec},
    }


def refusal(document: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as refused:
        policy_from_data(document, "p.yaml")
    return str(refused.value)


# --- the committed CRD is the generated one --------------------------------------------------


def test_committed_crd_is_what_the_model_generates() -> None:
    generated = to_yaml(generate())
    assert CRD_FILE.is_file(), f"{CRD_FILE} is missing: run `{REGENERATE}`"
    assert CRD_FILE.read_text() == generated, (
        f"{CRD_FILE.relative_to(ROOT)} differs from the model: run `{REGENERATE}` and review "
        "the diff"
    )


def test_crd_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0
    assert result.stdout == CRD_FILE.read_text()


def schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in (node.get("properties") or {}).items():
        found += schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += schema_nodes(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in schema_nodes(root):
        assert "type" in node, f"{path or '<root>'}: structural schemas need a type"
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "nullable", "title"):
            assert banned not in node, f"{path}: {banned}"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties", {}) is not False, path


def test_cel_rules_name_only_fields_of_their_schema() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = 0
    for path, node in schema_nodes(root):
        for rule in node.get("x-kubernetes-validations", []):
            rules += 1
            assert rule["message"] and len(rule["rule"]) < 1024
            for chain in re.findall(r"self((?:\.\w+)+)", rule["rule"]):
                here = node
                for name in chain.strip(".").split("."):
                    assert name in here.get("properties", {}), f"{path}: {rule['rule']}: {name}"
                    here = here["properties"][name]
    assert rules >= 8


def test_printer_columns_and_status() -> None:
    version = generate()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Rule",
        "Gateway",
        "Accepted",
        "Programmed",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["conditions"]["items"]["required"] == [
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    ]
    assert status["observedGeneration"]["type"] == "integer"


# --- examples: the CRD schema and the loader agree -------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_fits_the_crd_and_the_loader(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert_valid(document)
    loaded = load_policy(path)
    assert loaded.policy is not None and loaded.policy.spec.gateway == path.stem


def test_examples_cover_every_gateway_kind() -> None:
    from tokenlimit.model import GATEWAYS as KINDS

    assert set(GATEWAYS) == set(KINDS)
    assert all(path.is_file() for path in EXAMPLES)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rejectedCode": 600}, "spec.rejectedCode"),
        ({"admission": "later"}, "spec.admission"),
        ({"targetRef": {"gateway": "nginx"}}, "spec.targetRef.gateway"),
        ({"ruleName": "r" * 257}, "spec.ruleName"),  # Higress takes any name, not any length
        ({"ruleNme": "r"}, "spec"),  # unknown field: refused by kubectl's strict validation
        ({"redis": {"timeoutMs": 0}}, "spec.redis.timeoutMs"),
        ({"targetRef": {"gateway": "higress", "ingresses": ["Bad_Name"]}}, "spec.targetRef"),
    ],
)
def test_crd_schema_refuses_what_the_loader_refuses(change: dict[str, Any], field: str) -> None:
    document = policy(**change)
    found = errors(document)
    assert found and any(e.startswith(field) for e in found), found
    with pytest.raises(PolicyError):
        policy_from_data(document, "p.yaml")


# --- attachment ------------------------------------------------------------------------------


def test_targetref_fields_belong_to_their_gateway() -> None:
    document = policy(targetRef={"gateway": "envoy", "ingresses": ["llm/chat"]})
    assert refusal(document) == (
        "p.yaml: spec.targetRef.ingresses: attaches to higress, not envoy (gateway: envoy)"
    )


def test_istio_needs_a_selector_or_a_gateway() -> None:
    assert refusal(policy(targetRef={"gateway": "istio"})) == (
        "p.yaml: spec.targetRef: gateway: istio needs exactly one of selector or gatewayRef, "
        "got neither (without one, Istio would run the filter on every workload of the "
        "namespace)"
    )


def test_selector_labels_are_kubernetes_labels() -> None:
    document = policy(targetRef={"gateway": "istio", "selector": {"matchLabels": {"a b": "x"}}})
    assert "spec.targetRef.selector.matchLabels.a b: label name must be" in refusal(document)


def test_domains_the_filter_cannot_match_are_refused_with_the_fix() -> None:
    document = policy(targetRef={"gateway": "higress", "domains": ["api.*"]})
    assert refusal(document) == (
        "p.yaml: spec.targetRef.domains[0]: the filter matches exact hosts and '*.suffix' "
        "patterns only, got \"api.*\" (list each host, or use '*.example.com')"
    )


# --- the store -------------------------------------------------------------------------------


def higress_redis(**redis: Any) -> dict[str, Any]:
    return policy(targetRef={"gateway": "higress"}, redis=redis)


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        (  # alibaba/higress#851: a URL
            {"host": "redis://redis.static"},
            "spec.redis.host: must be the Redis service as Higress names it, not a URL",
        ),
        (  # #851: service.namespace without the cluster suffix
            {"host": "redis.default"},
            'spec.redis.host: Higress needs the full Service name, got "redis.default": write '
            "redis.default.svc.cluster.local",
        ),
        (  # #851: a bare Service name
            {"host": "redis"},
            'spec.redis.host: "redis" alone is not a name Higress can resolve',
        ),
        (  # #1486, #3135: an IP address
            {"host": "172.18.2.27", "port": 6379},
            "spec.redis.host: Higress reaches Redis through its service registry, not by "
            'address, got "172.18.2.27": register a static service for 172.18.2.27:6379',
        ),
        (  # #1539, #3307: .static with the real port
            {"host": "redis.static", "port": 6379},
            "spec.redis.port: Higress serves .static services on its logical port 80",
        ),
        (  # a .dns service without the port of its registry entry
            {"host": "redis.dns"},
            "spec.redis.port: redis.dns is a DNS service in Higress's registry; its cluster is "
            "outbound|<port>||redis.dns",
        ),
        (
            {"host": "redis.dns:6379"},
            "spec.redis.host: put the port in redis.port, not in the name: host: redis.dns, "
            "port: 6379",
        ),
        (
            {"host": "redis.example.com"},
            "spec.redis.host: Higress resolves Redis only through its service registry",
        ),
        (
            {"host": "redis.dns", "port": 6379, "bridge": {"host": "b", "port": 80}},
            "spec.redis.bridge: Higress talks to Redis itself",
        ),
    ],
)
def test_higress_redis_names_that_fail_redis_init_are_refused(
    redis: dict[str, Any], message: str
) -> None:
    assert refusal(higress_redis(**redis)).startswith(f"p.yaml: {message}")


@pytest.mark.parametrize(
    ("redis", "service_name", "port"),
    [
        ({"host": "redis.static"}, "redis.static", 80),
        ({"host": "redis.dns", "port": 6379}, "redis.dns", 6379),
        ({"host": "redis.infra.svc.cluster.local"}, "redis.infra.svc.cluster.local", 6379),
        (
            {"service": {"name": "redis", "namespace": "infra"}},
            "redis.infra.svc.cluster.local",
            6379,
        ),
    ],
)
def test_higress_redis_names_that_work(redis: dict[str, Any], service_name: str, port: int) -> None:
    config = policy_from_data(higress_redis(**redis, timeoutMs=200), "p.yaml").config
    assert config.redis is not None
    assert (config.redis.service_name, config.redis.service_port) == (service_name, port)
    assert config.redis.timeout == 200 and config.redis.password is None


def test_envoy_and_istio_reach_redis_through_the_bridge() -> None:
    bridge = {
        "service": {"name": "tokenlimit-bridge", "namespace": "tokenlimit-system"},
        "port": 8080,
    }
    istio = policy(
        targetRef={"gateway": "istio", "gatewayRef": {"name": "llm"}}, redis={"bridge": bridge}
    )
    assert filter_json(policy_filter_config(policy_from_data(istio, "p").policy)).endswith(
        '"redis":{"service_name":"outbound|8080||tokenlimit-bridge.tokenlimit-system.svc.'
        'cluster.local","service_port":8080}}'
    )
    envoy = policy(
        targetRef={"gateway": "envoy"}, redis={"bridge": {"host": "127.0.0.1", "port": 8379}}
    )
    config = policy_from_data(envoy, "p").config
    assert config.redis is not None
    assert (config.redis.service_name, config.redis.service_port) == ("tokenlimit-bridge", 8379)


def test_bridge_gateways_refuse_redis_settings_that_belong_to_the_bridge() -> None:
    document = policy(
        targetRef={"gateway": "envoy"},
        redis={"bridge": {"host": "b", "port": 1}, "passwordSecretRef": {"name": "s", "key": "k"}},
    )
    assert refusal(document).startswith(
        "p.yaml: spec.redis.passwordSecretRef: envoy reaches Redis through the tokenlimit "
        "bridge: the bridge's own settings name Redis and its password"
    )
    assert "spec.redis.bridge: istio reaches Redis through the tokenlimit bridge: set" in refusal(
        policy(targetRef={"gateway": "istio", "gatewayRef": {"name": "g"}}, redis={})
    )


def test_a_store_needs_to_know_the_gateway() -> None:
    assert refusal(policy(redis={"host": "redis.static"})).startswith(
        "p.yaml: spec.redis: needs targetRef.gateway"
    )


def test_passwords_are_never_inline() -> None:
    document = higress_redis(host="redis.static", password="hunter2")
    assert (
        refusal(document)
        == "p.yaml: spec.redis.password: unknown field (did you mean passwordSecretRef?)"
    )


def test_the_status_written_by_the_operator_is_ignored() -> None:
    document = copy.deepcopy(policy())
    document["status"] = {"observedGeneration": 3, "conditions": []}
    assert policy_from_data(document, "p").policy is not None


def test_crd_fits_kubernetes_own_crd_schema() -> None:
    """apiextensions.k8s.io/v1 as Kubernetes' OpenAPI describes it (strict: no unknown field)."""
    import kubernetes_validate

    document = yaml.safe_load(CRD_FILE.read_text())
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(document, version, strict=True)
    document["spec"]["names"]["plurall"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, version, strict=True)
