"""`tokenlimit operator` usage errors, through click's runner (exit 2, messages that teach).

The command running for real (kubeconfig, discovery, reconcile, SIGTERM) is tested in
tests/apply/test_kube_client.py against the recorded API server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tokenlimit.cli._common import TokenlimitError
from tokenlimit.operator import leader
from tokenlimit.operator.command import OperatorError, operator_command


def run(*args: str) -> Result:
    return CliRunner().invoke(operator_command, list(args), catch_exceptions=False)


def test_gateway_is_required_and_checked() -> None:
    result = run()
    assert result.exit_code == 2
    assert "Missing option '--gateway'" in result.output
    result = run("--gateway", "nginx")
    assert result.exit_code == 2
    assert "'nginx' is not one of 'higress', 'istio', 'envoy'" in result.output


@pytest.mark.parametrize("gateway", ["higress", "istio"])
def test_wasm_plugin_gateways_need_a_module_location(gateway: str) -> None:
    result = run("--gateway", gateway)
    assert result.exit_code == 2
    assert f"--gateway {gateway} needs --module-url-base" in result.output
    assert "or --module-url" in result.output


def test_one_module_location_only() -> None:
    result = run(
        "--gateway=higress", "--module-url=oci://r/x:1", "--module-url-base=http://op:8081"
    )
    assert result.exit_code == 2
    assert "--module-url and --module-url-base exclude each other" in result.output


def test_module_sha256_is_checked() -> None:
    result = run("--gateway=istio", "--module-url=oci://r/x:1", "--module-sha256=ABC")
    assert result.exit_code == 2
    assert "expected 64 lowercase hex digits (sha256sum of the module), got 'ABC'" in (
        result.output
    )
    result = run("--gateway=istio", "--module-sha256=" + "a" * 64)
    assert result.exit_code == 2
    assert "--module-sha256 goes with --module-url" in result.output


def test_leader_election_needs_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leader, "pod_namespace", lambda: None)
    result = run("--gateway=envoy", "--leader-elect", "--module-port=0")
    assert result.exit_code == 2
    assert "--leader-elect needs the Lease's namespace" in result.output


def test_resync_has_a_floor() -> None:
    result = run("--gateway=envoy", "--resync-seconds=1")
    assert result.exit_code == 2
    assert "--resync-seconds" in result.output


def test_importing_the_command_pulls_in_no_kubernetes_client() -> None:
    # `tokenlimit --help` and `validate` must not pay for the kubernetes package.
    import subprocess
    import sys

    code = (
        "import sys; from tokenlimit.operator.command import operator_command; "
        "print(sorted(m for m in ('kubernetes', 'urllib3', 'aiohttp', 'redis', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_start_up_failures_are_the_clis_errors(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    result = run("--gateway=envoy", "--module-port=0", f"--kubeconfig={kubeconfig}")
    assert result.exit_code == 1
    assert result.output.startswith("Error: no Kubernetes credentials: ")
    assert result.output.endswith("elsewhere pass --kubeconfig or set KUBECONFIG)\n")
    assert issubclass(OperatorError, TokenlimitError)
