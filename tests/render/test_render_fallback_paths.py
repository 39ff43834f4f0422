"""A policy with spec.fallback keeps its fallback routes on every path that renders it.

Issue 18's bug: `tokenlimit render` refused such a policy, and `push --rendered` and the
operator rendered it without its fallback routes (no fallback route in the Higress
matchRules, no redirect EnvoyFilter) -- on Kubernetes the budget escape the fallback exists
to close came back. Each test here renders the same policy through one user-facing path and
checks what a user would see in the cluster or in the files.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from tokenlimit.cli import main

MODULE_URL = "oci://registry.example.com/tokenlimit-higress:0.1.0"
MODULE_SHA256 = "0" * 63 + "1"
FALLBACK = {
    "routes": [
        {
            "name": "chat",
            "pathPrefix": "/v1/",
            "primary": {"name": "openai", "provider": "openai", "url": "https://api.openai.com"},
            "fallbacks": [
                {
                    "name": "deepseek",
                    "provider": "openai-compatible",
                    "url": "https://api.deepseek.com",
                    "model": "deepseek-chat",
                }
            ],
            "retriableStatusCodes": [429, 503],
            "higress": {"route": "ai-route-chat.internal"},
        }
    ]
}


def policy_document(gateway: str = "higress", **target: Any) -> dict[str, Any]:
    target_ref: dict[str, Any] = {"gateway": gateway}
    if gateway == "higress":
        target_ref["ingresses"] = ["ai-route-chat.internal", "ai-route-other.internal"]
    target_ref.update(target)
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "chat", "namespace": "llm"},
        "spec": {
            "ruleName": "chat",
            "ruleItems": [
                {
                    "limitByPerHeader": "x-api-key",
                    "limitKeys": [{"key": "*", "tokenPerMinute": 100}],
                }
            ],
            "targetRef": target_ref,
            "fallback": copy.deepcopy(FALLBACK),
        },
    }


def policy_file(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_higress_fallback(objects: list[dict[str, Any]]) -> None:
    """The fallback route sits in the primary's matchRules entry (same rule_name, same
    counters), and the redirect EnvoyFilter (upstream codes only) is there."""
    plugins = [o for o in objects if o["kind"] == "WasmPlugin"]
    (plugin,) = plugins
    (entry,) = [r for r in plugin["spec"]["matchRules"] if "ingress" in r]
    assert entry["ingress"] == [
        "ai-route-chat.internal",
        "ai-route-chat.fallback.internal",
        "ai-route-other.internal",
    ]
    assert entry["config"]["rule_name"] == "chat"
    (redirect,) = [o for o in objects if o["kind"] == "EnvoyFilter"]
    assert redirect["metadata"]["name"] == "ai-route-chat.internal"
    assert redirect["metadata"]["namespace"] == "higress-system"
    (patch,) = redirect["spec"]["configPatches"]
    custom = patch["patch"]["value"]["typed_per_filter_config"][
        "envoy.filters.http.custom_response"
    ]
    (matcher,) = custom["value"]["custom_response_matcher"]["matcher_list"]["matchers"]
    action = matcher["on_match"]["action"]["typed_config"]["value"]
    assert action["only_redirect_upstream_code"] is True


# --- tokenlimit render -----------------------------------------------------------------------


def test_render_higress_carries_the_fallback_routes(tmp_path: Path) -> None:
    path = policy_file(tmp_path, policy_document())
    result = run("render", "--target", "higress", "--wasm-url", MODULE_URL, str(path))
    assert result.exit_code == 0, result.output
    assert_higress_fallback([d for d in yaml.safe_load_all(result.stdout) if d])


def test_render_envoy_carries_the_fallback_chain(tmp_path: Path) -> None:
    path = policy_file(tmp_path, policy_document("envoy"))
    result = run("render", "--target", "envoy", "--wasm", "/w.wasm", str(path))
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    clusters = [c["name"] for c in document["static_resources"]["clusters"]]
    assert "fallback_chat_chain_from_openai" in clusters and "upstream" not in clusters
    hcm = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (route,) = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert route["route"]["cluster"] == "fallback_chat_chain_from_openai"
    assert route["route"]["retry_policy"]["retriable_status_codes"] == [429, 503]


def test_render_envoy_out_dir_writes_the_route_table_the_toggles_change(tmp_path: Path) -> None:
    path = policy_file(tmp_path, policy_document("envoy"))
    out = tmp_path / "out"
    result = run(
        "render", "--target", "envoy", "--wasm", "/w.wasm", "--out-dir", str(out), str(path)
    )
    assert result.exit_code == 0, result.output
    rds = yaml.safe_load((out / "rds" / "routes.yaml").read_text())
    assert rds["resources"][0]["virtual_hosts"][0]["routes"][0]["name"] == "chat"
    bootstrap = yaml.safe_load((out / "envoy.yaml").read_text())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert hcm["typed_config"]["rds"]["config_source"]["path_config_source"]["path"] == str(
        out.resolve() / "rds" / "routes.yaml"
    )
    assert (out / "tokenlimit-fallback.json").is_file()  # the toggles' state
    state = str(out / "tokenlimit-fallback.json")
    toggled = run("fallback", "disable", "chat", "--no-wait", "--state", state)
    assert toggled.exit_code == 0, toggled.output
    rds = yaml.safe_load((out / "rds" / "routes.yaml").read_text())
    assert rds["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == (
        "fallback_chat_openai"  # off: the primary alone
    )


def test_render_istio_refuses_fallback_naming_the_field(tmp_path: Path) -> None:
    document = policy_document("istio", selector={"matchLabels": {"app": "gw"}})
    path = policy_file(tmp_path, document)
    result = run("render", "--target", "istio", "--wasm-url", MODULE_URL, str(path))
    assert result.exit_code != 0
    assert "spec.fallback" in result.output and "Istio" in result.output


# --- push --rendered ---------------------------------------------------------------------------


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The in-memory API server (tests/support/fakekube.py) behind `push --target kube`."""
    from support.fakekube import FakeKube
    from tokenlimit import push
    from tokenlimit.apply.kube import Kind

    served = {
        Kind("tokenlimit.io/v1alpha1", "TokenRateLimitPolicy"),
        Kind("extensions.higress.io/v1alpha1", "WasmPlugin"),
        Kind("networking.istio.io/v1alpha3", "EnvoyFilter"),
        Kind("v1", "Secret"),
    }
    fake = FakeKube(served=served)
    monkeypatch.setattr(push, "connect", lambda context=None: fake)
    return fake


def test_push_rendered_higress_dry_run_shows_the_fallback_routes(
    cluster: Any, tmp_path: Path
) -> None:
    path = policy_file(tmp_path, policy_document())
    result = run(
        "push", str(path), "--target", "kube", "--rendered", "higress", "--dry-run",
        "--wasm-url", MODULE_URL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "+    - ai-route-chat.fallback.internal\n" in result.stdout
    assert "envoyfilter.networking.istio.io/ai-route-chat.internal in higress-system" in (
        result.stdout
    )
    assert "only_redirect_upstream_code: true" in result.stdout


def test_push_rendered_higress_applies_the_fallback_routes(cluster: Any, tmp_path: Path) -> None:
    path = policy_file(tmp_path, policy_document())
    result = run(
        "push", str(path), "--target", "kube", "--rendered", "higress", "--wasm-url", MODULE_URL
    )
    assert result.exit_code == 0, result.output
    assert_higress_fallback([copy.deepcopy(o) for o in cluster.objects.values()])


# --- the operator ------------------------------------------------------------------------------


def test_the_operator_renders_the_fallback_routes_into_the_cluster() -> None:
    """The operator's own path: the controller reconciles the policy from the (fake) API
    server with the Higress renderer it is started with, and applies what it rendered."""
    from support.fakekube import FakeKube
    from tokenlimit.apply.kube import Kind, ObjectRef
    from tokenlimit.operator.controller import PolicyController
    from tokenlimit.operator.reconcile import Module, Settings
    from tokenlimit.operator.renderers import renderer_for

    kube = FakeKube()
    kube.seed(policy_document())
    settings = Settings(gateway="higress", module=Module(MODULE_URL, MODULE_SHA256))
    controller = PolicyController(
        kube, settings, renderer_for("higress"), lambda: datetime(2025, 6, 2, tzinfo=UTC)
    )
    policy = ObjectRef(Kind("tokenlimit.io/v1alpha1", "TokenRateLimitPolicy"), "llm", "chat")

    outcome = controller.sync(policy)

    assert outcome.result != "failed", outcome.line()
    stored = [o for o in kube.objects.values() if o["kind"] in ("WasmPlugin", "EnvoyFilter")]
    assert_higress_fallback(stored)
    status = kube.stored(policy)
    assert status is not None
    accepted = [c for c in status["status"]["conditions"] if c["type"] == "Accepted"]
    assert accepted[0]["status"] == "True"


def test_the_operator_refuses_fallback_for_envoy_naming_the_field() -> None:
    """The operator's Envoy target is one ECDS ConfigMap: it cannot carry the chain's clusters
    and routes, so the policy is refused (Accepted False) instead of losing its fallback."""
    from tokenlimit.operator.reconcile import Settings, reconcile
    from tokenlimit.operator.renderers import renderer_for

    document = policy_document("envoy")
    document["metadata"]["uid"] = "3f2b8c4e-9a1d-4f6b-8e2a-5c7d9b0e1f23"
    document["metadata"]["generation"] = 1
    plan = reconcile(
        document, [], Settings(gateway="envoy"), renderer_for("envoy"), datetime.now(UTC)
    )
    assert not plan.accepted
    assert plan.message.startswith("spec.fallback:")


def test_render_envoy_refuses_an_upstream_the_fallback_would_ignore(tmp_path: Path) -> None:
    path = policy_file(tmp_path, policy_document("envoy"))
    result = run("render", "--wasm", "/w.wasm", "--upstream", "http://127.0.0.1:8000", str(path))
    assert result.exit_code == 2
    assert "--upstream: the policy's spec.fallback names the upstreams" in result.output


def test_fallback_render_and_render_write_the_same_files(tmp_path: Path) -> None:
    """`tokenlimit fallback render` is the same pipeline as `tokenlimit render --out-dir`."""
    path = policy_file(tmp_path, policy_document("envoy"))
    args = ["--wasm", "/w.wasm", str(path), "--admin-port", "9901"]
    assert run("render", "--out-dir", str(tmp_path / "a"), *args).exit_code == 0
    assert run("fallback", "render", "--out-dir", str(tmp_path / "b"), *args).exit_code == 0
    for name in ("envoy.yaml", "ecds/tokenlimit-ecds.yaml", "rds/routes.yaml"):
        a = (tmp_path / "a" / name).read_text()
        b = (tmp_path / "b" / name).read_text()
        assert a == b.replace(str(tmp_path / "b"), str(tmp_path / "a")), name


def test_renderers_import_no_operator_cli_or_cluster_client() -> None:
    """Rendering is pure: nothing under tokenlimit/render reaches for the operator, the CLI
    or code that talks to a cluster or a running Envoy (they call render(), not the reverse)."""
    import ast

    root = Path(__file__).resolve().parents[2] / "controlplane" / "tokenlimit" / "render"
    forbidden = ("tokenlimit.operator", "tokenlimit.cli", "tokenlimit.push", "tokenlimit.apply")
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [f"{path.name}: {n}" for n in names if n.startswith(forbidden)]
    assert found == []
