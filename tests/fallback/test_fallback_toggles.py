"""Toggles on the state and RDS files, Envoy's answer through its admin API, the Kubernetes
document, and the `tokenlimit fallback` commands (the group the CLI registers)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from tokenlimit.fallback import toggles
from tokenlimit.fallback.cli import fallback_group
from tokenlimit.fallback.toggles import ToggleError
from tokenlimit.model import parse_fallback
from tokenlimit.render.kube import load_yaml_documents

FALLBACK = {
    "routes": [
        {
            "name": "chat",
            "primary": {"name": "openai", "url": "https://api.openai.com"},
            "fallbacks": [
                {
                    "name": "deepseek",
                    "provider": "openai-compatible",
                    "url": "https://api.deepseek.com",
                    "model": "deepseek-chat",
                },
                {"name": "vllm", "provider": "openai-compatible", "url": "http://10.0.0.7:8000"},
            ],
            "higress": {"route": "ai-route-chat.internal"},
        }
    ]
}


def policy_document(gateway: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ruleName": "chat",
        "ruleItems": [
            {"limitByPerHeader": "x-api-key", "limitKeys": [{"key": "*", "tokenPerMinute": 1000}]}
        ],
        "fallback": copy.deepcopy(FALLBACK),
    }
    if gateway is not None:
        spec["targetRef"] = gateway
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "chat", "namespace": "llm"},
        "spec": spec,
    }


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    toggles.init_state(path, parse_fallback(FALLBACK), tmp_path / "rds" / "routes.yaml")
    return path


def routes_file(state: Path) -> str:
    return (state.parent / "rds" / "routes.yaml").read_text()


def test_toggles_rewrite_the_rds_file_in_one_rename(state: Path) -> None:
    initial = routes_file(state)
    assert "cluster: fallback_chat_chain_from_openai" in initial
    forced = toggles.enable(state, "chat", to="vllm", wait=False)
    assert forced.line() == (
        f"route chat: automatic -> forced to vllm (route version {forced.version} written; "
        "not checked: no admin URL)"
    )
    assert "cluster: fallback_chat_chain_from_vllm" in routes_file(state)
    assert toggles.rds_version(routes_file(state)) == forced.version
    off = toggles.disable(state, "chat", wait=False)
    assert "cluster: fallback_chat_openai\n" in routes_file(state)
    assert "retry_policy" not in routes_file(state)
    assert (off.before.mode, off.after.mode) == ("forced", "off")
    back = toggles.enable(state, "chat", wait=False)
    assert routes_file(state) == initial
    assert back.after.mode == "auto" and back.rds_changed
    again = toggles.enable(state, "chat", wait=False)
    assert not again.rds_changed and again.line().endswith("(routes unchanged)")
    # Only the two files and the lock: no temporary file left behind.
    names = sorted(p.name for p in state.parent.rglob("*") if p.is_file())
    assert names == ["routes.yaml", "state.json", "state.json.lock"]


def test_forced_without_to_means_the_first_fallback(state: Path) -> None:
    result = toggles.set_mode(state, "chat", "forced", wait=False)
    assert result is not None and result.after.to == "deepseek"


def test_state_survives_a_reload_and_status_reports_it(state: Path) -> None:
    toggles.enable(state, "chat", to="deepseek", wait=False, clock=lambda: 1234.5)
    loaded = toggles.load_state(state)
    assert loaded.toggle("chat").to_json() == {
        "mode": "forced",
        "to": "deepseek",
        "by": "cli",
        "since": 1234.5,
        "reason": "",
        "probePercent": 0,
    }
    (row,) = toggles.status(state)
    assert (row["route"], row["describe"], row["by"]) == ("chat", "forced to deepseek", "cli")
    assert row["upstreams"] == ["openai", "deepseek", "vllm"]
    assert row["inSync"] is None  # no admin URL


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda s: toggles.enable(s, "nope", wait=False),
            "no fallback route 'nope' (routes: chat)",
        ),
        (
            lambda s: toggles.enable(s, "chat", to="claude", wait=False),
            "route chat has no upstream 'claude' (upstreams: openai, deepseek, vllm)",
        ),
        (
            lambda s: toggles.set_mode(s, "chat", "auto", to="vllm", wait=False),
            "--to names where forced fallback sends requests",
        ),
        (
            lambda s: toggles.enable(s.parent / "missing.json", "chat", wait=False),
            "missing.json does not exist: create it with `tokenlimit fallback render`",
        ),
    ],
)
def test_toggle_errors_say_what_to_do(state: Path, call: Any, message: str) -> None:
    with pytest.raises(ToggleError) as refused:
        call(state)
    assert message in str(refused.value)


def test_a_broken_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ToggleError, match="not a tokenlimit fallback state file"):
        toggles.load_state(path)
    path.write_text(json.dumps({"version": 1, "rdsPath": "r.yaml", "fallback": {"routes": []}}))
    with pytest.raises(ToggleError, match="fallback: routes: must hold 1 to 64 routes"):
        toggles.load_state(path)


def test_concurrent_toggles_take_turns(state: Path) -> None:
    errors: list[BaseException] = []

    def flip(target: str | None) -> None:
        try:
            for _ in range(10):
                toggles.enable(state, "chat", to=target, wait=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(t,)) for t in (None, "vllm", "deepseek")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    final = toggles.load_state(state).toggle("chat")
    # The RDS file always matches the state file's last word.
    assert toggles.load_state(state).rds_text() == routes_file(state)
    assert final.mode in ("auto", "forced")


# --- Envoy's answer ------------------------------------------------------------------------------


class FakeAdmin:
    """Envoy's /stats?format=json as far as toggles read it."""

    def __init__(self) -> None:
        self.version = "old"
        self.rejected = 0
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stats = [
                    {"name": "http.tokenlimit.rds.tokenlimit.version_text", "value": admin.version},
                    {
                        "name": "http.tokenlimit.rds.tokenlimit.update_rejected",
                        "value": admin.rejected,
                    },
                    {"name": "http.tokenlimit.downstream_rq_total", "value": 3},
                ]
                data = json.dumps({"stats": stats}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def admin() -> Iterator[FakeAdmin]:
    fake = FakeAdmin()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_waiting_for_envoy(tmp_path: Path, admin: FakeAdmin) -> None:
    path = tmp_path / "state.json"
    toggles.init_state(
        path, parse_fallback(FALLBACK), tmp_path / "r" / "routes.yaml", admin_url=admin.url
    )
    with pytest.raises(ToggleError, match=r"did not load route version \w+ within 0\.3s"):
        toggles.enable(path, "chat", to="vllm", timeout_s=0.3)
    # The file was written all the same; once Envoy serves it, waiting succeeds.
    admin.version = toggles.rds_version(toggles.load_state(path).rds_text())
    assert toggles.enable(path, "chat", to="vllm").applied is True
    (row,) = toggles.status(path)
    assert row["inSync"] is True and row["envoyServes"] == admin.version

    def reject_soon() -> None:
        admin.rejected += 1

    timer = threading.Timer(0.2, reject_soon)
    timer.start()
    with pytest.raises(ToggleError, match="Envoy refused route version"):
        toggles.disable(path, "chat", timeout_s=5)
    timer.join()


# --- Kubernetes ----------------------------------------------------------------------------------


def test_toggle_policy_document() -> None:
    document = policy_document({"gateway": "higress", "ingresses": ["ai-route-chat.internal"]})
    document["status"] = {"conditions": []}
    forced = toggles.toggle_policy_document(document, "chat", "forced", "vllm")
    route = forced["spec"]["fallback"]["routes"][0]
    assert (route["mode"], route["forcedUpstream"]) == ("forced", "vllm")
    assert "status" not in forced and "mode" not in document["spec"]["fallback"]["routes"][0]
    off = toggles.toggle_policy_document(forced, "chat", "off")
    assert off["spec"]["fallback"]["routes"][0]["mode"] == "off"
    assert "forcedUpstream" not in off["spec"]["fallback"]["routes"][0]
    with pytest.raises(ToggleError, match=r"no spec\.fallback"):
        toggles.toggle_policy_document({"spec": {}}, "chat", "off")
    with pytest.raises(ToggleError, match="no fallback route 'x'"):
        toggles.toggle_policy_document(document, "x", "off")


# --- the commands --------------------------------------------------------------------------------


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_cli_render_envoy_then_toggle(tmp_path: Path, filter_wasm: Path) -> None:
    policy = write(tmp_path / "policy.yaml", policy_document())
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        fallback_group,
        [
            "render",
            str(policy),
            "--out-dir",
            str(out),
            "--listen",
            "18080",
            "--wasm",
            str(filter_wasm),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        str(out / "envoy.yaml"),
        str(out / "ecds" / "tokenlimit-ecds.yaml"),
        str(out / "rds" / "routes.yaml"),
        str(out / "tokenlimit-fallback.json"),
    ]
    bootstrap = yaml.safe_load((out / "envoy.yaml").read_text())
    assert bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18080,
    }
    state = ["--state", str(out / "tokenlimit-fallback.json")]
    result = runner.invoke(fallback_group, ["enable", "chat", "--to", "vllm", "--no-wait", *state])
    assert result.exit_code == 0, result.output
    assert "route chat: automatic -> forced to vllm" in result.stdout
    result = runner.invoke(fallback_group, ["status", "--json", *state])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert (row["mode"], row["to"]) == ("forced", "vllm")
    assert row["envoyError"].startswith("cannot read Envoy's stats at http://127.0.0.1:9901")
    result = runner.invoke(fallback_group, ["status", *state])
    assert result.stdout.startswith("chat: forced to vllm (by cli, ")
    assert "chain openai -> deepseek -> vllm" in result.stdout
    result = runner.invoke(fallback_group, ["disable", "chat", "--no-wait", *state])
    assert result.exit_code == 0 and "forced to vllm -> off" in result.stdout
    result = runner.invoke(
        fallback_group, ["enable", "chat", "--to", "claude", "--no-wait", *state]
    )
    assert result.exit_code == 1
    assert "route chat has no upstream 'claude'" in result.stderr


def test_cli_render_refuses_a_bad_fallback_naming_the_field(tmp_path: Path) -> None:
    document = policy_document()
    document["spec"]["fallback"]["routes"][0]["retriableStatusCodes"] = [429, 429]
    policy = write(tmp_path / "policy.yaml", document)
    result = CliRunner().invoke(
        fallback_group, ["render", str(policy), "--out-dir", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert (
        f"{policy}: spec.fallback: routes[0].retriableStatusCodes[1]: 429 is listed twice"
        in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_cli_render_with_a_separate_fallback_file(tmp_path: Path) -> None:
    document = policy_document()
    del document["spec"]["fallback"]
    policy = write(tmp_path / "policy.yaml", document)
    result = CliRunner().invoke(fallback_group, ["render", str(policy), "--out-dir", str(tmp_path)])
    assert result.exit_code == 1 and "has no spec.fallback" in result.stderr
    spec_file = write(tmp_path / "fallback.yaml", {"fallback": FALLBACK})
    result = CliRunner().invoke(
        fallback_group,
        ["render", str(policy), "--fallback", str(spec_file), "--out-dir", str(tmp_path / "o")],
    )
    assert result.exit_code == 0, result.output


def test_cli_render_higress(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "policy.yaml",
        policy_document({"gateway": "higress", "ingresses": ["ai-route-chat.internal"]}),
    )
    args = ["render", str(policy), "--target", "higress"]
    result = CliRunner().invoke(fallback_group, args)
    assert result.exit_code == 2 and "needs --wasm-url" in result.stderr
    result = CliRunner().invoke(fallback_group, [*args, "--wasm-url", "oci://r/tokenlimit:1"])
    assert result.exit_code == 0, result.output
    plugin, envoy_filter = load_yaml_documents(result.stdout)
    assert plugin["spec"]["matchRules"][0]["ingress"] == [
        "ai-route-chat.internal",
        "ai-route-chat.fallback.internal",
    ]
    assert envoy_filter["kind"] == "EnvoyFilter"


def test_cli_kube_toggle_prints_the_changed_policy(tmp_path: Path) -> None:
    policy = write(tmp_path / "policy.yaml", policy_document())
    result = CliRunner().invoke(
        fallback_group, ["enable", "chat", "--to", "deepseek", "--policy", str(policy)]
    )
    assert result.exit_code == 0, result.output
    changed = yaml.safe_load(result.stdout)
    assert changed["spec"]["fallback"]["routes"][0]["mode"] == "forced"
    assert changed["spec"]["fallback"]["routes"][0]["forcedUpstream"] == "deepseek"
    assert changed["metadata"] == {"name": "chat", "namespace": "llm"}
    result = CliRunner().invoke(fallback_group, ["disable", "chat", "--apply", "--no-wait"])
    assert result.exit_code == 2 and "are for --policy (Kubernetes)" in result.stderr


def test_cli_auto_once_without_auto_switch(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    toggles.init_state(
        path, parse_fallback(FALLBACK), tmp_path / "routes.yaml", admin_url="http://127.0.0.1:9"
    )
    result = CliRunner().invoke(fallback_group, ["auto", "--state", str(path)])
    assert result.exit_code == 1 and "no route has autoSwitch" in result.stderr
