"""The chart's jobs service (issue 14): off by default; when on, a Deployment of replicas
running `tokenlimit jobs` against the chart's Redis, with probes, a Service and a PDB, and the
keys that encrypt the credentials it keeps: a generated Secret, or the user's, as a file."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support import helm_engine
from support.helm_scenarios import SCENARIOS, container, env_of, flags, kube_versions, rendered

GATEWAY = "http://higress-gateway.higress-system.svc.cluster.local"
JOBS_OBJECTS = {
    "Deployment/tokenlimit-jobs",
    "Service/tokenlimit-jobs",
    "PodDisruptionBudget/tokenlimit-jobs",
    "Secret/tokenlimit-jobs-credential-key",
}
KEY_DIR = "/var/run/secrets/tokenlimit/jobs-credential-key"
ON: dict[str, Any] = {"jobs": {"enabled": True, "gateway": GATEWAY}}


def jobs_flags(r: helm_engine.Rendered) -> dict[str, str | None]:
    c = container(r.get("Deployment", "tokenlimit-jobs"), "jobs")
    assert c["command"] == ["tokenlimit"] and c["args"][0] == "jobs"
    args: list[str] = c["args"][1:]
    # --credential-header repeats (one per header): read apart, in test_values_reach_...
    repeated = {i for i, a in enumerate(args) if a == "--credential-header"}
    kept = [a for i, a in enumerate(args) if i not in repeated and i - 1 not in repeated]
    return flags(kept)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_off_by_default(scenario: str) -> None:
    assert not JOBS_OBJECTS & rendered(scenario).names()


def test_on_it_runs_replicas_against_the_charts_redis_and_gateway() -> None:
    r = helm_engine.render(ON)
    assert r.names() >= JOBS_OBJECTS
    d = r.get("Deployment", "tokenlimit-jobs")
    assert d["spec"]["replicas"] == 2
    assert jobs_flags(r) == {
        "--gateway": GATEWAY,
        "--redis": "redis://tokenlimit-redis.tokenlimit-system.svc.cluster.local:6379/0",
        "--listen": "8090",
        "--host": "0.0.0.0",
        "--workers": "4",
        "--interactive-share": "0",
        "--claim-idle-ms": "30000",
        "--max-file-bytes": "20971520",
        "--max-lines": "50000",
        "--max-line-bytes": "1048576",
        "--retention-s": "604800",
        "--redis-password-file": "/var/run/secrets/tokenlimit/redis/password",
        "--credential-key-file": f"{KEY_DIR}/keys",
    }
    c = container(d, "jobs")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    assert set(env_of(c)) == {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    spec = d["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    secret = next(v for v in spec["volumes"] if v["name"] == "redis-password")["secret"]
    assert secret["secretName"] == "tokenlimit-redis"
    svc = r.get("Service", "tokenlimit-jobs")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "jobs"
    for version in kube_versions():
        for obj in r.objects:
            helm_engine.validate_kube(obj, version)


def test_values_reach_the_command_line() -> None:
    values = {
        "jobs": {
            "enabled": True,
            "gateway": GATEWAY,
            "replicas": 1,
            "workers": 8,
            "interactiveShare": 0.25,
            "credentialHeaders": ["x-api-key", "x-team"],
        },
        "redis": {"external": {"host": "10.0.0.5"}},
    }
    r = helm_engine.render(values)
    assert "PodDisruptionBudget/tokenlimit-jobs" not in r.names()  # one replica
    f = jobs_flags(r)
    assert f["--workers"] == "8" and f["--interactive-share"] == "0.25"
    assert f["--redis"] == "redis://10.0.0.5:6379/0"
    assert "--redis-password-file" not in f  # external Redis without a password
    args = container(r.get("Deployment", "tokenlimit-jobs"), "jobs")["args"]
    headers = [args[i + 1] for i, a in enumerate(args) if a == "--credential-header"]
    assert headers == ["x-api-key", "x-team"]


def test_enabled_without_a_gateway_is_refused_with_what_to_set() -> None:
    message = helm_engine.render_error({"jobs": {"enabled": True}})
    assert "jobs.gateway is required when jobs.enabled" in message


def test_helm_lint_strict_is_clean_with_jobs_on() -> None:
    result = helm_engine.lint(ON)
    assert not result["errors"], result


def test_cli_accepts_every_flag_the_chart_passes() -> None:
    from click.testing import CliRunner
    from tokenlimit.cli import main

    result = CliRunner().invoke(main, ["jobs", "--help"])
    assert result.exit_code == 0, result.output
    chart = set(jobs_flags(helm_engine.render(ON))) | {"--credential-header"}
    missing = sorted(flag for flag in chart if flag not in result.output)
    assert not missing, f"`tokenlimit jobs` lacks flags the chart passes: {missing}"


# --- the credential keys ---------------------------------------------------------------------


def _key_volume(r: helm_engine.Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    """The key Secret's volume and its mount in the jobs container."""
    d = r.get("Deployment", "tokenlimit-jobs")
    volume = next(
        v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "credential-key"
    )
    mount = next(m for m in container(d, "jobs")["volumeMounts"] if m["name"] == "credential-key")
    return volume, mount


def test_a_generated_key_is_mounted_read_only_as_the_key_file() -> None:
    from tokenlimit.jobs.credentials import parse_keys

    r = helm_engine.render(ON)
    secret = r.get("Secret", "tokenlimit-jobs-credential-key")
    keys = base64.b64decode(secret["data"]["keys"]).decode()
    assert len(parse_keys(keys, "the chart's Secret")) == 1  # what the service will read
    volume, mount = _key_volume(r)
    assert volume["secret"]["secretName"] == "tokenlimit-jobs-credential-key"
    assert volume["secret"]["items"] == [{"key": "keys", "path": "keys"}]
    assert volume["secret"]["defaultMode"] == 0o440
    assert mount == {"name": "credential-key", "mountPath": KEY_DIR, "readOnly": True}
    assert jobs_flags(r)["--credential-key-file"] == f"{KEY_DIR}/keys"
    # The key travels only in its Secret: in no env value, no other object, not the notes.
    for obj in r.objects:
        if obj["kind"] != "Secret":
            text = helm_engine.dump(obj)
            assert keys.strip() not in text and secret["data"]["keys"] not in text
    assert keys.strip() not in r.notes
    # No cluster here, so `lookup` finds nothing and each install makes its own key.
    again = helm_engine.render(ON).get("Secret", "tokenlimit-jobs-credential-key")
    assert again["data"]["keys"] != secret["data"]["keys"]


def test_an_existing_secret_replaces_the_generated_one() -> None:
    values = {
        "jobs": {
            **ON["jobs"],
            "credentialKey": {"existingSecret": "jobs-keys", "existingSecretKey": "fernet"},
        }
    }
    r = helm_engine.render(values)
    assert "Secret/tokenlimit-jobs-credential-key" not in r.names()
    volume, mount = _key_volume(r)
    assert volume["secret"]["secretName"] == "jobs-keys"
    assert volume["secret"]["items"] == [{"key": "fernet", "path": "keys"}]
    assert mount["readOnly"] is True
    assert jobs_flags(r)["--credential-key-file"] == f"{KEY_DIR}/keys"


def test_an_existing_secret_that_is_not_a_secret_name_is_refused() -> None:
    values = {"jobs": {**ON["jobs"], "credentialKey": {"existingSecret": "Not_A_Name"}}}
    message = helm_engine.render_error(values)
    assert "credentialKey" in message and "existingSecret" in message
