"""The operator as a process (`tokenlimit operator`) against the recorded API server: it
reconciles, leads before it reconciles, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.recorded_kube import FIXTURES, POLICIES, RecordedApiServer, serving
from tokenlimit.dev.process import free_port

pytestmark = pytest.mark.usefixtures("_discovery_cache_in_tmp")


# --- the operator process against the recorded server -------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: recorded, cluster: {server: "URL"}}]
users: [{name: operator, user: {token: not-checked}}]
contexts: [{name: recorded, context: {cluster: recorded, user: operator}}]
current-context: recorded
"""


def wait_for(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_operator_process_reconciles_then_stops_on_sigterm(
    tmp_path: Path, filter_wasm: Path
) -> None:
    server = RecordedApiServer()
    server.ok(
        "GET",
        "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies",
        (FIXTURES / "policy-list.json").read_bytes(),
    )
    server.ok("GET", f"{POLICIES}/chat", (FIXTURES / "policy.json").read_bytes())
    server.ok(
        "GET",
        "/api/v1/configmaps",
        b'{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"48251"},"items":[]}',
    )
    config_map = "/api/v1/namespaces/team-a/configmaps/chat-tokenlimit-ecds"
    server.ok("PATCH", config_map, b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}')
    server.ok("PATCH", f"{POLICIES}/chat/status", (FIXTURES / "policy.json").read_bytes())
    module_port = free_port()
    with serving(server) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.replace("URL", url))
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tokenlimit.operator.command import operator_command; operator_command()",
                "--gateway=envoy",
                f"--kubeconfig={kubeconfig}",
                f"--module-port={module_port}",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        try:
            wait_for(
                lambda: any(s.path.endswith("/chat/status") for s in server.seen),
                "the status write",
            )
            wait_for(lambda: server.seen[-1].query.get("watch") == ["true"], "the watch")
            with urllib.request.urlopen(f"http://127.0.0.1:{module_port}/healthz") as answer:
                assert answer.read() == b"ok\n"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    lines = [line.split(" ", 2)[2] for line in stderr.splitlines()]
    assert lines == [
        f"serving tokenlimit-higress.wasm, tokenlimit.wasm on :{module_port}",
        "watching TokenRateLimitPolicy.tokenlimit.io in all namespaces",
        "listed 1 policy at resourceVersion 48250",
        "team-a/chat generation 2: programmed (applied 1, deleted 0, status written)",
        "SIGTERM: stopping",
        "stopped",
    ]
    apply, status = [s for s in server.seen if s.method == "PATCH"]
    assert apply.query == {"fieldManager": ["tokenlimit-operator"], "force": ["false"]}
    assert apply.body["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert status.body["status"]["conditions"][1]["reason"] == "Programmed"


LEASES = "/apis/coordination.k8s.io/v1/namespaces/tokenlimit-system/leases"


def operator_process(url: str, tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.replace("URL", url))
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tokenlimit.operator.command import operator_command; operator_command()",
            "--gateway=envoy",
            f"--kubeconfig={kubeconfig}",
            "--module-port=0",
            *flags,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )


def stop(process: subprocess.Popen[str]) -> list[str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    return [line.split(" ", 2)[2] for line in stderr.splitlines()]


def test_the_operator_leads_before_it_reconciles(tmp_path: Path) -> None:
    server = RecordedApiServer()
    server.ok("POST", LEASES, (FIXTURES / "lease.json").read_bytes())
    server.ok(
        "GET",
        "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies",
        b'{"kind":"TokenRateLimitPolicyList","apiVersion":"tokenlimit.io/v1alpha1",'
        b'"metadata":{"resourceVersion":"48250"},"items":[]}',
    )
    with serving(server) as url:
        process = operator_process(
            url, tmp_path, "--leader-elect", "--leader-elect-namespace=tokenlimit-system"
        )
        # Not seen[-1]: the Lease is renewed every 2 s beside the watch.
        wait_for(lambda: any(s.query.get("watch") == ["true"] for s in server.seen), "the watch")
        lines = stop(process)
    created = next(s for s in server.seen if s.method == "POST")
    assert created.body["spec"]["leaseDurationSeconds"] == 15
    first_lease = next(i for i, s in enumerate(server.seen) if s.path.startswith(LEASES))
    first_list = next(i for i, s in enumerate(server.seen) if "tokenratelimitpolicies" in s.path)
    assert first_lease < first_list
    assert lines[0].startswith("waiting to lead: Lease tokenlimit-system/tokenlimit-operator as ")
    assert lines[1:] == [
        "leading: holding Lease tokenlimit-system/tokenlimit-operator",
        "watching TokenRateLimitPolicy.tokenlimit.io in all namespaces",
        "listed 0 policies at resourceVersion 48250",
        "SIGTERM: stopping",
        "stopped",
    ]


def test_sigterm_while_waiting_to_lead_exits_at_once(tmp_path: Path) -> None:
    server = RecordedApiServer()
    held = json.loads((FIXTURES / "lease.json").read_text())
    server.ok("GET", f"{LEASES}/tokenlimit-operator", json.dumps(held).encode())
    with serving(server) as url:
        process = operator_process(
            url, tmp_path, "--leader-elect", "--leader-elect-namespace=tokenlimit-system"
        )
        wait_for(lambda: any(s.path.startswith(LEASES) for s in server.seen), "the Lease read")
        started = time.monotonic()
        lines = stop(process)
    assert time.monotonic() - started < 5  # not the 15 s lease nor a retry period's wait
    assert lines[1:] == ["SIGTERM: stopping"]
    assert not any("tokenratelimitpolicies" in s.path for s in server.seen)
    assert not any(s.method in ("POST", "PUT") for s in server.seen)
