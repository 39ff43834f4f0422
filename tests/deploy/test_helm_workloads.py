"""The Helm chart's workloads one by one: the operator, the bridge and the in-cluster Redis.

What each pod is told (flags, env, secret references, probes, ports) and how values reach it.
"""

from __future__ import annotations

import pytest
from support import helm_engine
from support.helm_engine import NAMESPACE
from support.helm_scenarios import (
    BRIDGE_OBJECTS,
    SCENARIOS,
    SHA,
    bridge_flags,
    container,
    env_of,
    gateway_of,
    operator_flags,
    rendered,
    values_of,
)

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
