"""The `tokenlimit` CLI through click's runner: exact messages and exit codes.

One fixture file per failure mode; exit 0 = ok, 1 = refused / failed, 2 = usage error.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from tokenlimit import wasm
from tokenlimit.cli import main
from tokenlimit.loader import load_policy
from tokenlimit.model import filter_json

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
POLICY = EXAMPLES / "policy.yaml"
HIGRESS = EXAMPLES / "higress-config.yaml"
UP_READY_TIMEOUT_S = 30.0


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


# --- validate --------------------------------------------------------------------------------


def test_validate_examples() -> None:
    result = run("validate", str(POLICY), str(HIGRESS))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{POLICY}: ok (rule per-api-key, 1 rule item)\n"
        f"{HIGRESS}: ok (rule global-budget, global threshold, "
        "store redis.default.svc.cluster.local)\n"
    )


def test_validate_names_the_field_and_suggests(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "typo.yaml",
        "rule_name: chat\nrule_itmes: []\nglobal_threshold:\n  token_per_minute: 100\n",
    )
    # Higress ignores the unknown field, so the filter does too: a warning, an error with
    # --strict.
    result = run("validate", bad)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"{bad}: warning: rule_itmes: unknown field, ignored as Higress ignores it "
        "(did you mean rule_items?)\n"
    )
    result = run("validate", "--strict", bad)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{bad}: rule_itmes: unknown field, ignored as Higress ignores it "
        "(did you mean rule_items?)\n"
    )


def test_validate_quotes_the_bad_value(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "limit.json",
        json.dumps(
            {
                "rule_name": "chat",
                "rule_items": [
                    {
                        "limit_by_per_header": "x-api-key",
                        "limit_keys": [{"key": "*", "token_per_minute": "ten"}],
                    }
                ],
            }
        ),
    )
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{bad}: rule_items[0].limit_keys[0].token_per_minute: "
        'must be an integer from 1 to 1000000000000000, got "ten"\n'
    )


def test_validate_policy_document_reports_camel_case_paths(tmp_path: Path) -> None:
    text = POLICY.read_text().replace("tokenPerMinute: 300", "tokenPerMinute: 0")
    bad = write(tmp_path, "policy.yaml", text)
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{bad}: spec.ruleItems[0].limitKeys[0].tokenPerMinute: "
        "must be an integer from 1 to 1000000000000000, got 0\n"
    )


def test_validate_reports_every_problem_one_per_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "two.yaml",
        "rule_name: [a]\nglobal_threshold:\n  token_per_minute: 1\nrejected_code: 700\n",
    )
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{bad}: rule_name: must be a string, got an array",
        f"{bad}: rejected_code: must be an integer from 100 to 599, got 700",
    ]


def test_validate_good_and_bad_files_together(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "rule_name: r\n")
    result = run("validate", str(POLICY), bad)
    assert result.exit_code == 1
    assert result.stdout == f"{POLICY}: ok (rule per-api-key, 1 rule item)\n"
    assert result.stderr == (
        f"{bad}: needs global_threshold, rule_items or both: a rule without a budget "
        "limits nothing\n"
    )


def test_validate_refuses_a_document_of_another_kind(tmp_path: Path) -> None:
    bad = write(tmp_path, "deployment.yaml", "replicas: 3\nimage: envoy\n")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{bad}: expected a Higress ai-token-ratelimit config (rule_name with "
        "global_threshold or rule_items, or _rules_) or a TokenRateLimitPolicy document "
        "(apiVersion: tokenlimit.io/v1alpha1, kind: TokenRateLimitPolicy, metadata, spec); "
        "got an object with keys: replicas, image\n"
    )


def test_validate_refuses_a_bare_spec(tmp_path: Path) -> None:
    bad = write(tmp_path, "spec.yaml", "ruleName: r\nglobalThreshold:\n  tokenPerMinute: 1\n")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert "looks like a TokenRateLimitPolicy spec" in result.stderr


def test_validate_refuses_another_kind_of_kubernetes_object(tmp_path: Path) -> None:
    bad = write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        f'{bad}: apiVersion: must be tokenlimit.io/v1alpha1, got "v1"',
        f'{bad}: kind: must be TokenRateLimitPolicy, got "ConfigMap"',
    ]


def test_validate_refuses_duplicate_keys(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "dup.yaml",
        "rule_name: a\nglobal_threshold:\n  token_per_minute: 1\n  token_per_minute: 9\n",
    )
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr == (
        f'{bad}: line 4 column 3: duplicate key "token_per_minute" (first at line 3): '
        "the filter refuses duplicate keys\n"
    )


def test_validate_refuses_broken_yaml(tmp_path: Path) -> None:
    bad = write(tmp_path, "broken.yaml", "rule_name: [chat\n")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{bad}: not valid YAML or JSON: line 2 column 1: ")


def test_validate_refuses_empty_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "empty.yaml", "")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{bad}: empty document; expected a Higress")


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run("validate", str(missing))
    assert result.exit_code == 2
    assert f"File '{missing}' does not exist." in result.stderr


def test_validate_without_files_is_a_usage_error() -> None:
    result = run("validate")
    assert result.exit_code == 2
    assert "Missing argument 'FILES...'" in result.stderr


# --- render --------------------------------------------------------------------------------


def test_render_prints_bootstrap_with_the_filter_json_inline() -> None:
    wasm = "/opt/tokenlimit.wasm"
    result = run("render", "--target", "envoy", str(POLICY), "--wasm", wasm, "--listen", "8080")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    listener = document["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    plugin = hcm["http_filters"][0]["typed_config"]["config"]
    assert plugin["vm_config"]["code"]["local"]["filename"] == wasm
    assert plugin["configuration"]["value"] == filter_json(load_policy(POLICY).config)


def test_render_out_dir_writes_bootstrap_and_ecds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("render", str(HIGRESS), "--wasm", "/w.wasm", "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    bootstrap_path, ecds_path = out / "envoy.yaml", out / "tokenlimit-ecds.yaml"
    assert result.stdout == f"{bootstrap_path}\n{ecds_path}\n"
    bootstrap = yaml.safe_load(bootstrap_path.read_text())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    discovery = hcm["typed_config"]["http_filters"][0]["config_discovery"]
    assert discovery["config_source"]["path_config_source"]["path"] == str(ecds_path)
    ecds = yaml.safe_load(ecds_path.read_text())["resources"][0]
    configuration = ecds["typed_config"]["config"]["configuration"]["value"]
    assert configuration == filter_json(load_policy(HIGRESS).config)


def test_render_refuses_a_bad_upstream_as_usage_error() -> None:
    result = run("render", str(POLICY), "--wasm", "/w.wasm", "--upstream", "ftp://x")
    assert result.exit_code == 2
    assert (
        "Invalid value for '--upstream': upstream must be an http:// or https:// URL, got 'ftp://x'"
    ) in result.stderr


def test_render_refuses_a_bad_listen_address() -> None:
    result = run("render", str(POLICY), "--wasm", "/w.wasm", "--listen", "99999")
    assert result.exit_code == 2
    assert "expected PORT or HOST:PORT with a port from 1 to 65535, got '99999'" in result.stderr


def test_render_invalid_policy_exits_1(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "rule_name: r\nglobal_threshold: {}\n")
    result = run("render", bad, "--wasm", "/w.wasm")
    assert result.exit_code == 1
    assert result.stderr == (
        f"{bad}: global_threshold: needs at least one of "
        "token_per_second/minute/hour/day/week/month, "
        "request_per_second/minute/hour/day/week/month or "
        "cost_per_second/minute/hour/day/week/month\n"
    )


# --- filter path ---------------------------------------------------------------------------


def test_filter_path_tells_to_run_make_wasm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wasm, "WASM_DIR", tmp_path)
    result = run("filter", "path", "--target", "higress")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the higress filter module is not built: {tmp_path / 'tokenlimit-higress.wasm'} "
        "does not exist. Run `make wasm` in the tokenlimit source tree (it compiles filter/ "
        "with Zig and copies the modules into controlplane/tokenlimit/wasm/), then try again.\n"
    )


def test_filter_path_prints_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tokenlimit.wasm").write_bytes(b"\0asm")
    monkeypatch.setattr(wasm, "WASM_DIR", tmp_path)
    result = run("filter", "path")
    assert result.exit_code == 0
    assert result.stdout == f"{tmp_path / 'tokenlimit.wasm'}\n"


def test_render_without_module_or_wasm_tells_to_run_make_wasm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wasm, "WASM_DIR", tmp_path)
    result = run("render", str(POLICY))
    assert result.exit_code == 1
    assert "Run `make wasm`" in result.stderr


# --- import cost ---------------------------------------------------------------------------


def test_importing_the_cli_pulls_no_heavy_modules() -> None:
    probe = (
        "import sys, tokenlimit.cli; "
        "print(sorted(m for m in ('aiohttp', 'redis', 'rich') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- up: a real gateway --------------------------------------------------------------------


def test_up_serves_logs_and_stops_on_sigint(filter_wasm: Path, tmp_path: Path) -> None:
    from tokenlimit.dev.process import free_port

    listen, admin = free_port(), free_port()
    argv = [sys.executable, "-m", "tokenlimit.cli", "up", "--policy", str(POLICY)]
    argv += ["--listen", str(listen), "--admin-port", str(admin), "--wasm", str(filter_wasm)]
    stdout = (tmp_path / "stdout").open("w+")
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        lines = wait_for_lines(tmp_path / "stdout", 1, proc)
        assert lines[0].startswith(
            f"tokenlimit up: gateway http://127.0.0.1:{listen} → upstream mock"
        )
        assert lines[0].endswith(
            f"admin http://127.0.0.1:{admin}, rule per-api-key, local store; Ctrl-C to stop"
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{listen}/v1/chat/completions",
            data=b'{"model": "m", "messages": []}',
            headers={"x-api-key": "k1", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        access = wait_for_lines(tmp_path / "stdout", 2, proc)[1]
        assert "POST /v1/chat/completions status=200" in access
        assert "decision=allowed rule=per-api-key" in access
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stdout.close()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines()
        if len(lines) >= count:
            return lines
        if proc.poll() is not None:
            pytest.fail(f"tokenlimit up exited {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"tokenlimit up printed {path.read_text()!r} in {UP_READY_TIMEOUT_S}s")


def test_validate_warns_of_cost_limits_without_a_catch_all_price(tmp_path: Path) -> None:
    config = {
        "rule_name": "team",
        "prices": {"gpt-4o": {"input": 2.5, "output": 10}},
        "global_threshold": {"cost_per_month": 200},
    }
    unpriced = write(tmp_path, "unpriced.json", json.dumps(config))
    result = run("validate", unpriced)
    assert result.exit_code == 0
    assert result.stderr == (
        f'{unpriced}: warning: rule team has cost limits but no "*" price: a request for a '
        'model no prices entry matches is refused (add a "*" entry to price every other '
        "model)\n"
    )
    config["prices"]["*"] = {"input": 10, "output": 40}
    priced = write(tmp_path, "priced.json", json.dumps(config))
    assert run("validate", priced).stderr == ""
