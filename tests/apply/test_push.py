"""`tokenlimit push`: the ECDS file (with real Envoy taking new limits mid-traffic) and
server-side apply to Kubernetes.

The Kubernetes half runs against `tests/support/fakekube.py`, the in-memory API server behind
the project's one client seam (the operator's tests use it too): server-set metadata,
generation, the server's dry run, and `Status` answers for 409, parsed as the real client
parses them. The real client's requests are tested in tests/apply/test_kube_client.py.
No live cluster is involved.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from support.fakekube import FakeKube
from tokenlimit import push
from tokenlimit.apply.files import write_atomic
from tokenlimit.apply.kube import (
    POLICY,
    SECRET,
    ApiError,
    Kind,
    ObjectRef,
    api_error,
)
from tokenlimit.cli import main
from tokenlimit.dev.gateway import Gateway
from tokenlimit.model import parse_filter_config
from tokenlimit.push import FileChange

ROOT = Path(__file__).resolve().parents[2]
HIGRESS_EXAMPLE = ROOT / "deploy" / "examples" / "higress.yaml"
ECDS_RELOADS = "extension_config_discovery.http_filter.tokenlimit.config_reload"
RELOAD_TIMEOUT_S = 10.0


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def envoy_policy(tokens_per_minute: int, name: str = "chat") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "tokenlimit.io/v1alpha1",
            "kind": "TokenRateLimitPolicy",
            "metadata": {"name": name, "namespace": "llm"},
            "spec": {
                "ruleName": name,
                "ruleItems": [
                    {
                        "limitByPerHeader": "x-api-key",
                        "limitKeys": [{"key": "*", "tokenPerMinute": tokens_per_minute}],
                    }
                ],
                "targetRef": {"gateway": "envoy"},
            },
        },
        sort_keys=False,
    )


def per_key(tokens_per_minute: int) -> Any:
    return parse_filter_config(
        {
            "rule_name": "chat",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": tokens_per_minute}],
                }
            ],
        }
    )


# --- the ECDS file ---------------------------------------------------------------------------


@pytest.fixture
def ecds(tmp_path: Path, filter_wasm: Path) -> Path:
    """An ECDS file as `tokenlimit render --out-dir` leaves it."""
    policy = tmp_path / "first.yaml"
    policy.write_text(envoy_policy(1000))
    result = run("render", "--target", "envoy", str(policy), "--out-dir", str(tmp_path / "etc"))
    assert result.exit_code == 0, result.output
    return tmp_path / "etc" / "tokenlimit-ecds.yaml"


def test_push_replaces_the_file_and_keeps_the_module(ecds: Path, tmp_path: Path) -> None:
    module_before = push.current_module(ecds.read_text(), ecds)
    policy = tmp_path / "policy.yaml"
    policy.write_text(envoy_policy(5))
    result = run("push", str(policy), "--target", "envoy", "--ecds", str(ecds))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{ecds}: configured (rule chat, 1 rule item, gateway envoy)\n"
    assert '"token_per_minute":5}' in ecds.read_text()
    assert push.current_module(ecds.read_text(), ecds) == module_before
    assert sorted(p.name for p in ecds.parent.iterdir()) == ["envoy.yaml", "tokenlimit-ecds.yaml"]
    again = run("push", str(policy), "--target", "envoy", "--ecds", str(ecds))
    assert again.stdout == f"{ecds}: unchanged (rule chat, 1 rule item, gateway envoy)\n"


def test_dry_run_prints_the_diff_and_writes_nothing(ecds: Path, tmp_path: Path) -> None:
    before = ecds.read_bytes()
    stamp = ecds.stat().st_mtime_ns
    policy = tmp_path / "policy.yaml"
    policy.write_text(envoy_policy(5))
    result = run("push", str(policy), "--target", "envoy", "--ecds", str(ecds), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"--- {ecds}\n+++ {ecds}\n@@")
    assert '"token_per_minute":1000}' in result.stdout and '"token_per_minute":5}' in result.stdout
    assert ecds.read_bytes() == before and ecds.stat().st_mtime_ns == stamp
    same = tmp_path / "same.yaml"
    same.write_text(envoy_policy(1000))
    result = run("push", str(same), "--target", "envoy", "--ecds", str(ecds), "--dry-run")
    assert result.stdout == f"{ecds}: no changes\n"


def test_invalid_policy_never_reaches_the_file(ecds: Path, tmp_path: Path) -> None:
    before = ecds.read_bytes()
    policy = tmp_path / "bad.yaml"
    policy.write_text(envoy_policy(5).replace("tokenPerMinute: 5", "tokenPerMinute: -5"))
    result = run("push", str(policy), "--target", "envoy", "--ecds", str(ecds))
    assert result.exit_code == 1
    assert result.stderr == (
        f"{policy}: spec.ruleItems[0].limitKeys[0].tokenPerMinute: must be an integer from 1 to "
        "1000000000000000, got -5\n"
    )
    assert ecds.read_bytes() == before


def test_push_needs_a_module_for_a_new_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(envoy_policy(5))
    result = run("push", str(policy), "--target", "envoy", "--ecds", str(tmp_path / "new.yaml"))
    assert result.exit_code == 1
    assert "new.yaml does not exist yet: pass --wasm PATH" in result.stderr
    result = run(
        "push", str(policy), "--target", "envoy", "--ecds", str(tmp_path / "new.yaml"),
        "--wasm", "/etc/envoy/tokenlimit.wasm",
    )  # fmt: skip
    assert result.exit_code == 0 and result.stdout.startswith(f"{tmp_path / 'new.yaml'}: created")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "envoy"], "--target envoy needs --ecds PATH"),
        (
            ["--target", "envoy", "--ecds", "x", "--rendered", "istio"],
            "--rendered is for --target kube",
        ),
        (["--target", "kube", "--ecds", "x"], "--ecds and --wasm are for --target envoy"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(envoy_policy(5))
    result = run("push", str(policy), *args)
    assert result.exit_code == 2 and message in result.stderr


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.yaml"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.yaml"]


def test_file_change_diff_from_nothing(tmp_path: Path) -> None:
    change = FileChange(tmp_path / "x", None, "a\n")
    assert change.changed and change.diff().startswith("--- /dev/null\n")


# --- real Envoy: limits change mid-traffic, nothing fails ------------------------------------


class Client(threading.Thread):
    """Sends chat requests on one keep-alive connection until stopped; records every answer."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.statuses: list[tuple[float, int]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        headers = {
            "content-type": "application/json",
            "x-api-key": "team-a",
            "x-mock-completion-tokens": "10",
        }
        while not self.stopping.is_set():
            try:
                connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                self.statuses.append((time.monotonic(), response.status))
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(0.01)
        connection.close()

    def wait_for(self, status: int, after: float, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(t > after and s == status for t, s in self.statuses):
                return
            time.sleep(0.02)
        raise AssertionError(f"no {status} after the push: {self.statuses[-10:]}")


def wait_reload(gateway: Gateway, count: int) -> None:
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while gateway.stats().get(ECDS_RELOADS, 0) < count:
        assert time.monotonic() < deadline, "Envoy did not reload the pushed ECDS file"
        time.sleep(0.05)


@pytest.fixture
def client_thread() -> Iterator[list[Client]]:
    started: list[Client] = []
    yield started
    for thread in started:
        thread.stopping.set()
        thread.join(timeout=15)


def test_push_changes_limits_mid_traffic_without_a_failed_request(
    filter_wasm: Path, tmp_path: Path, client_thread: list[Client]
) -> None:
    strict, generous = tmp_path / "strict.yaml", tmp_path / "generous.yaml"
    strict.write_text(envoy_policy(50))
    generous.write_text(envoy_policy(10_000_000))
    with Gateway(per_key(10_000_000), wasm_path=filter_wasm) as gateway:
        client = Client(gateway.listen_port)
        client_thread.append(client)
        client.start()
        client.wait_for(200, after=0.0)
        reloads = gateway.stats()[ECDS_RELOADS]

        pushed_strict = time.monotonic()
        result = run("push", str(strict), "--target", "envoy", "--ecds", str(gateway.ecds_path))
        assert result.exit_code == 0, result.output
        wait_reload(gateway, reloads + 1)
        client.wait_for(429, after=pushed_strict)  # the new, smaller budget is enforced

        pushed_generous = time.monotonic()
        result = run("push", str(generous), "--target", "envoy", "--ecds", str(gateway.ecds_path))
        assert result.exit_code == 0, result.output
        wait_reload(gateway, reloads + 2)
        client.wait_for(200, after=pushed_generous + 0.2)

        client.stopping.set()
        client.join(timeout=15)
        access = gateway.logs().stdout
    assert client.failures == [], client.failures
    statuses = {s for _, s in client.statuses}
    assert statuses == {200, 429}, statuses
    assert not any(s == 429 for t, s in client.statuses if t < pushed_strict)
    # Traffic flowed through both reloads: answers before, between and after the pushes (a
    # count would say the same thing less directly and depends on the machine's speed).
    times = [t for t, _ in client.statuses]
    assert any(t < pushed_strict for t in times)
    assert any(pushed_strict < t < pushed_generous for t in times)
    assert any(t > pushed_generous for t in times)
    assert "status=5" not in access


# --- Kubernetes: server-side apply against the in-memory API server --------------------------

POLICY_REF = ObjectRef(POLICY, "llm", "chat")
PLUGIN = Kind("extensions.higress.io/v1alpha1", "WasmPlugin")
SECRET_OBJECT = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "redis-auth", "namespace": "llm", "resourceVersion": "7"},
    "type": "Opaque",
    "data": {"password": base64.b64encode(b"from-the-secret").decode()},
}


def status_error(code: int, reason: str, message: str, details: dict[str, Any]) -> ApiError:
    """An API `Status` answer, parsed as the real client parses one."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return api_error(code, {"Content-Type": "application/json"}, json.dumps(body))


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    """The in-memory API server serving policies, Higress WasmPlugins and Secrets."""
    fake = FakeKube(served={POLICY, PLUGIN, SECRET})
    fake.seed(copy.deepcopy(SECRET_OBJECT))
    fake.calls.clear()
    contexts: list[str | None] = []

    def connect(context: str | None = None) -> FakeKube:
        contexts.append(context)
        return fake

    monkeypatch.setattr(push, "connect", connect)
    fake.contexts = contexts  # type: ignore[attr-defined]
    return fake


def test_kube_push_reports_created_then_unchanged_then_configured(
    cluster: FakeKube, tmp_path: Path
) -> None:
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    line = "tokenratelimitpolicy.tokenlimit.io/chat in llm"
    result = run("push", str(policy), "--target", "kube", "--context", "prod")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{line} created\n"
    assert cluster.contexts == ["prod"]  # type: ignore[attr-defined]
    assert cluster.applied_with[0] == {
        "field_manager": "tokenlimit",
        "dry_run": False,
        "force": False,
    }
    assert run("push", str(policy), "--target", "kube").stdout == f"{line} unchanged\n"
    policy.write_text(envoy_policy(200))
    assert run("push", str(policy), "--target", "kube").stdout == f"{line} configured\n"
    stored = cluster.stored(POLICY_REF)
    assert stored is not None
    assert stored["spec"]["ruleItems"][0]["limitKeys"][0]["tokenPerMinute"] == 200
    assert stored["metadata"]["generation"] == 2


def test_kube_dry_run_uses_the_servers_dry_run_and_prints_the_diff(
    cluster: FakeKube, tmp_path: Path
) -> None:
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    assert run("push", str(policy), "--target", "kube").exit_code == 0
    before = copy.deepcopy(cluster.objects)
    policy.write_text(envoy_policy(300))
    result = run("push", str(policy), "--target", "kube", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "-      tokenPerMinute: 100\n+      tokenPerMinute: 300\n" in result.stdout
    assert result.stdout.endswith(
        "tokenratelimitpolicy.tokenlimit.io/chat in llm configured (server dry run)\n"
    )
    assert cluster.objects == before
    assert cluster.applied_with[-1]["dry_run"] is True


def test_kube_push_of_rendered_higress_objects_reads_the_secret(cluster: FakeKube) -> None:
    result = run(
        "push", str(HIGRESS_EXAMPLE), "--target", "kube", "--rendered", "higress",
        "--wasm-url", "oci://registry.example.com/tokenlimit-higress:0.1.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "wasmplugin.extensions.higress.io/tokenlimit-llm-chat-per-key in higress-system created\n"
    )
    plugin = cluster.stored(ObjectRef(PLUGIN, "higress-system", "tokenlimit-llm-chat-per-key"))
    assert plugin is not None
    assert plugin["spec"]["matchRules"][0]["config"]["redis"]["password"] == "from-the-secret"
    assert ("get", "Secret llm/redis-auth") in cluster.calls


def test_a_missing_secret_is_named(cluster: FakeKube) -> None:
    cluster.objects.clear()
    result = run(
        "push", str(HIGRESS_EXAMPLE), "--target", "kube", "--rendered", "higress",
        "--wasm-url", "oci://registry.example.com/tokenlimit-higress:0.1.0",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == "Error: Secret llm/redis-auth not found\n"


def test_invalid_input_never_reaches_the_api_server(cluster: FakeKube, tmp_path: Path) -> None:
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100).replace("ruleName: chat", "ruleName: [chat]"))
    result = run("push", str(policy), "--target", "kube")
    assert result.exit_code == 1
    assert "spec.ruleName: must be a string, got an array" in result.stderr
    assert cluster.calls == [] and cluster.contexts == []  # type: ignore[attr-defined]


def test_conflicts_are_reported_and_can_be_forced(cluster: FakeKube, tmp_path: Path) -> None:
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    cluster.conflicts["chat"] = status_error(
        409, "Conflict",
        'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using '
        "tokenlimit.io/v1alpha1: .spec.ruleName",
        {"causes": [{"reason": "FieldManagerConflict", "field": ".spec.ruleName",
                     "message": 'conflict with "kubectl-client-side-apply"'}]},
    )  # fmt: skip
    result = run("push", str(policy), "--target", "kube")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: TokenRateLimitPolicy llm/chat: Apply failed with 1 conflict: conflict with "
        '"kubectl-client-side-apply" using tokenlimit.io/v1alpha1: .spec.ruleName (another '
        "field manager owns these fields: --force-conflicts takes them over)\n"
    )
    result = run("push", str(policy), "--target", "kube", "--force-conflicts")
    assert result.exit_code == 0, result.output
    assert cluster.applied_with[-1]["force"] is True


def test_missing_crd_says_how_to_install_it(cluster: FakeKube, tmp_path: Path) -> None:
    cluster.served = set()
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    result = run("push", str(policy), "--target", "kube")
    assert result.exit_code == 1
    assert (
        "does not serve tokenlimit.io/v1alpha1 TokenRateLimitPolicy (install the CRD first"
        in result.stderr
    )


def test_no_credentials_say_where_they_come_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    result = run("push", str(policy), "--target", "kube")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no Kubernetes credentials: ")
    assert result.stderr.endswith(" (set KUBECONFIG, or pass --context)\n")


def test_namespace_flag_must_agree_with_the_document(cluster: FakeKube, tmp_path: Path) -> None:
    policy = tmp_path / "chat.yaml"
    policy.write_text(envoy_policy(100))
    result = run("push", str(policy), "--target", "kube", "-n", "other")
    assert result.exit_code == 2
    assert "the namespace from the document (llm) does not match --namespace other" in result.stderr
