"""Fallback rendering: golden files, Envoy 1.40 accepting every mode, the Higress objects.

Regenerate the golden files (tests/golden/fallback/) after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_fallback_render.py
and review the diff like code.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kube_schemas import assert_valid
from support.proxywasm_host import Host
from tokenlimit.dev.gateway import GatewayError, envoy_binary
from tokenlimit.loader import policy_from_data
from tokenlimit.model import FallbackSpec, TokenRateLimitPolicy, parse_fallback, parse_filter_config
from tokenlimit.render.envoy import (
    EcdsFilter,
    EnvoyOptions,
    FallbackRoutes,
    Upstream,
    bootstrap,
    ecds_resource,
    to_yaml,
)
from tokenlimit.render.envoy.clusters import chain_cluster_name
from tokenlimit.render.envoy.clusters import fallback_clusters as clusters
from tokenlimit.render.envoy.fallback import (
    RouteState,
    rds_resource,
    route_configuration,
    route_entry,
)
from tokenlimit.render.envoy.filter import REWRITE_VM_ID
from tokenlimit.render.higress import HigressOptions
from tokenlimit.render.higress import render as render_higress
from tokenlimit.render.higress_fallback import (
    higress_routes,
    redirect_envoy_filter,
    with_fallback_routes,
)
from tokenlimit.render.kube import RenderError, WasmModule, to_yaml_documents

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "fallback"
GOLDEN_WASM = "/etc/envoy/tokenlimit.wasm"
GOLDEN_ECDS = "/etc/envoy/ecds/tokenlimit-ecds.yaml"
GOLDEN_RDS = "/etc/envoy/rds/routes.yaml"
MODULE = WasmModule("oci://registry.example.com/tokenlimit-higress:0.1.0")

SPEC = {
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
                },
                {"name": "vllm", "provider": "openai-compatible", "url": "http://10.0.0.7:8000"},
            ],
            "perTryTimeoutMs": 20000,
            "backOff": {"baseIntervalMs": 250, "maxIntervalMs": 2000},
            "retryAfter": {"honor": True, "maxIntervalMs": 5000},
            "autoSwitch": {"probePercent": 5},
            "higress": {"route": "ai-route-chat.internal"},
        }
    ]
}


def spec() -> FallbackSpec:
    return parse_fallback(copy.deepcopy(SPEC))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__}", pytrace=False)
    assert text == path.read_text(), f"{name} changed: review, then UPDATE_GOLDEN=1 to accept"


def fallback_bootstrap(
    options: EnvoyOptions, fallback: FallbackSpec, rds_path: str, wasm_path: str
) -> dict[str, Any]:
    return bootstrap(options, FallbackRoutes(fallback, wasm_path, rds_path))


def golden_bootstrap() -> dict[str, Any]:
    options = EnvoyOptions(
        upstream=Upstream.parse("https://api.openai.com"), filter=EcdsFilter(GOLDEN_ECDS)
    )
    return fallback_bootstrap(options, spec(), GOLDEN_RDS, GOLDEN_WASM)


def render(
    policy: TokenRateLimitPolicy, fallback: FallbackSpec, options: HigressOptions
) -> list[dict[str, Any]]:
    """The Higress rendering of `policy` with `fallback` as its spec.fallback."""
    with_spec = policy.spec.model_copy(update={"fallback": fallback})
    return render_higress(policy.model_copy(update={"spec": with_spec}), options)


MODES = {
    "auto": RouteState("auto"),
    "forced": RouteState("forced", "vllm"),
    "forced-by-watcher": RouteState("forced", "deepseek", probe_percent=5),
    "off": RouteState("off"),
}


# --- Envoy ---------------------------------------------------------------------------------------


def test_golden_bootstrap() -> None:
    check_golden("envoy-bootstrap.yaml", to_yaml(golden_bootstrap()))


def test_golden_routes_in_every_mode() -> None:
    documents = [
        {"mode": mode, **rds_resource(spec(), {"chat": state})} for mode, state in MODES.items()
    ]
    check_golden("rds-modes.yaml", "---\n".join(to_yaml(d) for d in documents))


def test_rendering_is_deterministic() -> None:
    assert to_yaml(golden_bootstrap()) == to_yaml(golden_bootstrap())
    assert rds_resource(spec()) == rds_resource(spec())
    assert (
        rds_resource(spec())["version_info"]
        != rds_resource(spec(), {"chat": MODES["off"]})["version_info"]
    )


def test_chains_clusters_and_rewrites() -> None:
    found = {c["name"]: c for c in clusters(spec())}
    chain = found[chain_cluster_name("chat", "openai")]
    assert chain["lb_policy"] == "CLUSTER_PROVIDED"
    assert chain["cluster_type"]["typed_config"]["clusters"] == [
        "fallback_chat_openai",
        "fallback_chat_deepseek",
        "fallback_chat_vllm",
    ]
    # Forced to vllm: vllm first, then the others in their order.
    assert found[chain_cluster_name("chat", "vllm")]["cluster_type"]["typed_config"][
        "clusters"
    ] == ["fallback_chat_vllm", "fallback_chat_openai", "fallback_chat_deepseek"]
    # deepseek has a model: its member is the rewrite listener, the upstream is `_direct`.
    member = found["fallback_chat_deepseek"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert member["endpoint"]["address"] == {
        "envoy_internal_address": {"server_listener_name": "fallback_chat_deepseek_rewrite"}
    }
    assert member["endpoint"]["hostname"] == "api.deepseek.com"
    direct = found["fallback_chat_deepseek_direct"]
    assert direct["transport_socket"]["typed_config"]["sni"] == "api.deepseek.com"
    assert direct["type"] == "LOGICAL_DNS"
    assert found["fallback_chat_vllm"]["type"] == "STATIC"
    assert "transport_socket" not in found["fallback_chat_vllm"]
    listeners = golden_bootstrap()["static_resources"]["listeners"]
    assert [entry["name"] for entry in listeners] == [
        "tokenlimit",
        "fallback_chat_deepseek_rewrite",
    ]
    hcm = listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.buffer",
        "tokenlimit-model-rewrite",
        "envoy.filters.http.router",
    ]
    wasm = hcm["http_filters"][1]["typed_config"]["config"]
    assert json.loads(wasm["configuration"]["value"]) == {"model_rewrite": "deepseek-chat"}
    assert wasm["vm_config"]["vm_id"] == REWRITE_VM_ID  # never the limiter's VM


def test_the_limiter_stays_before_the_router_on_the_main_listener() -> None:
    listener = golden_bootstrap()["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["tokenlimit", "envoy.filters.http.router"]
    assert hcm["rds"] == {
        "route_config_name": "tokenlimit",
        "config_source": {"path_config_source": {"path": GOLDEN_RDS}, "resource_api_version": "V3"},
    }
    assert "route_config" not in hcm


def test_route_per_mode() -> None:
    route = spec().routes[0]
    auto = route_entry(route, MODES["auto"])["route"]
    assert auto["cluster"] == "fallback_chat_chain_from_openai"
    policy = auto["retry_policy"]
    assert policy["retry_on"] == "retriable-status-codes,reset,connect-failure"
    assert policy["retriable_status_codes"] == [429, 500, 502, 503, 504]
    assert policy["num_retries"] == 2  # one per fallback
    assert policy["per_try_timeout"] == "20s"
    assert policy["retry_priority"]["typed_config"]["update_frequency"] == 1
    assert policy["retry_back_off"] == {"base_interval": "0.25s", "max_interval": "2s"}
    assert policy["rate_limited_retry_back_off"] == {
        "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
        "max_interval": "5s",
    }
    assert auto["auto_host_rewrite"] is True
    assert route_entry(route, MODES["forced"])["route"]["cluster"] == (
        "fallback_chat_chain_from_vllm"
    )
    watcher = route_entry(route, MODES["forced-by-watcher"])["route"]["weighted_clusters"]
    assert watcher["clusters"] == [
        {"name": "fallback_chat_chain_from_deepseek", "weight": 95},
        {"name": "fallback_chat_chain_from_openai", "weight": 5},
    ]
    off = route_entry(route, MODES["off"])
    assert off["route"]["cluster"] == "fallback_chat_openai"
    assert "retry_policy" not in off["route"] and "request_body_buffer_limit" not in off


def test_retry_after_can_be_turned_off() -> None:
    data = copy.deepcopy(SPEC)
    data["routes"][0]["retryAfter"] = {"honor": False}
    policy = route_entry(parse_fallback(data).routes[0], RouteState("auto"))["route"]
    assert "rate_limited_retry_back_off" not in policy["retry_policy"]


@pytest.fixture(scope="module")
def envoy() -> str:
    try:
        return envoy_binary()
    except GatewayError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_envoy_accepts_the_bootstrap_and_every_mode(
    envoy: str, filter_wasm: Path, tmp_path: Path
) -> None:
    """`envoy --mode validate` on the real bootstrap; each mode's routes inline (validate does
    not read RDS files), so every route table a toggle can produce is checked too."""
    wasm = str(filter_wasm)
    config = parse_filter_config(
        {"rule_name": "chat", "global_threshold": {"token_per_minute": 1000}}
    )
    ecds = tmp_path / "ecds.yaml"
    ecds.write_text(to_yaml(ecds_resource(config, wasm)))
    options = EnvoyOptions(
        upstream=Upstream.parse("https://api.openai.com"), filter=EcdsFilter(str(ecds))
    )
    for mode, state in MODES.items():
        document = fallback_bootstrap(options, spec(), str(tmp_path / "rds.yaml"), wasm)
        hcm = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        typed = hcm["typed_config"]
        typed.pop("rds")
        typed["route_config"] = route_configuration(spec(), {"chat": state})
        path = tmp_path / f"envoy-{mode}.yaml"
        path.write_text(to_yaml(document))
        result = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (mode, result.stdout[-2000:], result.stderr[-2000:])
        assert "OK" in result.stdout + result.stderr


# --- Higress -------------------------------------------------------------------------------------


def higress_policy(**target: Any) -> TokenRateLimitPolicy:
    document = {
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
            "targetRef": {
                "gateway": "higress",
                "ingresses": ["ai-route-chat.internal", "ai-route-other.internal"],
                "domains": ["llm.example.com"],
                **target,
            },
        },
    }
    loaded = policy_from_data(document, "chat.yaml")
    assert loaded.policy is not None
    return loaded.policy


def test_golden_higress() -> None:
    objects = render(higress_policy(), spec(), HigressOptions(module=MODULE))
    check_golden("higress.yaml", to_yaml_documents(objects))


def test_fallback_route_joins_the_primary_in_the_same_match_rule() -> None:
    plugin, envoy_filter = render(higress_policy(), spec(), HigressOptions(module=MODULE))
    rules = plugin["spec"]["matchRules"]
    (ingress,) = [r for r in rules if "ingress" in r]
    assert ingress["ingress"] == [
        "ai-route-chat.internal",
        "ai-route-chat.fallback.internal",
        "ai-route-other.internal",
    ]
    # One entry: one `_rules_` item, one config, one rule_name — the same counters.
    assert ingress["config"]["rule_name"] == "chat"
    assert next(r for r in rules if "domain" in r)["domain"] == ["llm.example.com"]
    assert envoy_filter["kind"] == "EnvoyFilter"


def test_redirect_is_limited_to_upstream_codes() -> None:
    policy = redirect_envoy_filter(spec().routes[0], higress_policy())
    assert policy["metadata"] == {
        "name": "ai-route-chat.internal",
        "namespace": "higress-system",
        "labels": {"app.kubernetes.io/managed-by": "tokenlimit"},
        "annotations": {"tokenlimit.io/policy": "llm/chat"},
    }
    (patch,) = policy["spec"]["configPatches"]
    assert patch["match"]["routeConfiguration"]["vhost"]["route"]["name"] == (
        "ai-route-chat.internal"
    )
    custom = patch["patch"]["value"]["typed_per_filter_config"][
        "envoy.filters.http.custom_response"
    ]
    (matcher,) = custom["value"]["custom_response_matcher"]["matcher_list"]["matchers"]
    redirect = matcher["on_match"]["action"]["typed_config"]["value"]
    assert redirect["only_redirect_upstream_code"] is True
    assert redirect["request_headers_to_add"] == [
        {
            "header": {"key": "x-higress-fallback-from", "value": "ai-route-chat.internal"},
            "append": False,
        }
    ]
    codes = [
        (
            p["single_predicate"]["input"]["typed_config"]["@type"],
            p["single_predicate"]["value_match"],
        )
        for p in matcher["predicate"]["or_matcher"]["predicate"]
    ]
    assert codes == [
        ("type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput", {"exact": c})
        for c in ("429", "500", "502", "503", "504")
    ]


def test_a_single_code_needs_no_or_matcher() -> None:
    data = copy.deepcopy(SPEC)
    data["routes"][0]["retriableStatusCodes"] = [429]
    policy = redirect_envoy_filter(parse_fallback(data).routes[0], higress_policy())
    custom = policy["spec"]["configPatches"][0]["patch"]["value"]["typed_per_filter_config"]
    (matcher,) = custom["envoy.filters.http.custom_response"]["value"]["custom_response_matcher"][
        "matcher_list"
    ]["matchers"]
    assert matcher["predicate"]["single_predicate"]["value_match"] == {"exact": "429"}


def test_a_fallback_the_limiter_would_not_see_is_refused() -> None:
    data = copy.deepcopy(SPEC)
    data["routes"][0]["higress"] = {"route": "ai-route-elsewhere.internal"}
    with pytest.raises(RenderError, match="does not attach to Higress route ai-route-elsewhere"):
        render(higress_policy(), parse_fallback(data), HigressOptions(module=MODULE))
    data["routes"][0].pop("higress")
    with pytest.raises(RenderError, match=r"fallback.routes\[0\].higress: required"):
        render(higress_policy(), parse_fallback(data), HigressOptions(module=MODULE))


def test_explicit_fallback_routes_and_global_policies() -> None:
    data = copy.deepcopy(SPEC)
    data["routes"][0]["higress"] = {
        "route": "ai-route-chat.internal",
        "fallbackRoutes": ["ai-route-chat-b.internal", "ai-route-chat.internal"],
    }
    (plugin, _) = render(higress_policy(), parse_fallback(data), HigressOptions(module=MODULE))
    (ingress,) = [r for r in plugin["spec"]["matchRules"] if "ingress" in r]
    assert ingress["ingress"] == [
        "ai-route-chat.internal",
        "ai-route-chat-b.internal",
        "ai-route-other.internal",
    ]
    # A plugin without matchRules applies to every route: nothing to add.
    plugin = {"kind": "WasmPlugin", "spec": {"defaultConfig": {"rule_name": "x"}}}
    assert with_fallback_routes([plugin], spec().routes) == [plugin]


def higress_plugin_config(spec: dict[str, Any]) -> dict[str, Any]:
    """What Higress hands the filter for a WasmPlugin spec: one `_rules_` entry per match rule
    (its controller's conversion; the same as tests/render/test_render_higress.py assumes)."""
    rules = []
    for rule in spec.get("matchRules", []):
        entry = copy.deepcopy(rule["config"])
        for theirs, key in (("ingress", "_match_route_"), ("domain", "_match_domain_")):
            if rule.get(theirs):
                entry[key] = rule[theirs]
        rules.append(entry)
    return {"_rules_": rules}


def test_the_higress_filter_counts_the_fallback_route_with_the_primary(higress_wasm: Path) -> None:
    """The real tokenlimit-higress.wasm (wasmtime host) on what Higress would hand it: a key
    that spent its budget on the primary route is refused on the fallback route too."""
    (plugin, _) = render(higress_policy(), spec(), HigressOptions(module=MODULE))
    host = Host(higress_wasm)
    assert host.configure(higress_plugin_config(plugin["spec"])), host.log_messages()

    def exchange(route: str, key: str, prompt: int = 80, completion: int = 40) -> Any:
        request = {
            ":method": "POST",
            ":path": "/v1/chat/completions",
            ":authority": "gw.example.com",
            "content-type": "application/json",
            "x-api-key": key,
        }
        body = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
        stream = host.http_stream(properties={"route_name": route})
        return stream.complete(
            request,
            {":status": "200", "content-type": "application/json"},
            [json.dumps({"id": "x", "choices": [], **body}).encode()],
        )

    assert exchange("ai-route-chat.internal", "alice").local_response is None  # 120 >= 100
    refused = exchange("ai-route-chat.fallback.internal", "alice")
    assert refused.local_response is not None and refused.local_response.status == 429
    assert exchange("ai-route-chat.fallback.internal", "bob", 1, 1).local_response is None
    # A route the policy does not attach to is not limited at all.
    assert exchange("ai-route-unrelated.internal", "alice").local_response is None


def test_higress_objects_round_trip_through_yaml() -> None:
    objects = render(higress_policy(), spec(), HigressOptions(module=MODULE))
    assert list(yaml.safe_load_all(to_yaml_documents(objects))) == objects


def test_the_wasmplugin_still_fits_the_higress_schema() -> None:
    plugin, _ = render(higress_policy(), spec(), HigressOptions(module=MODULE))
    assert_valid(plugin)


def test_an_upstream_with_only_a_key_gets_a_listener_that_sets_it_and_rewrites_nothing() -> None:
    from tokenlimit.render.envoy.fallback import listeners

    data = {
        "routes": [
            {
                "name": "chat",
                "primary": {
                    "name": "claude",
                    "provider": "anthropic",
                    "url": "https://api.anthropic.com",
                    "apiKeyEnv": "ANTHROPIC_KEY",
                },
                "fallbacks": [
                    {"name": "backup", "provider": "anthropic", "url": "https://backup.example.com"}
                ],
            }
        ]
    }
    (listener,) = listeners(parse_fallback(data), "/w.wasm")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["request_headers_to_add"] == [
        {
            "header": {"key": "x-api-key", "value": "%ENVIRONMENT(ANTHROPIC_KEY)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def test_higress_refuses_upstream_keys_instead_of_dropping_them() -> None:
    data = {
        "routes": [
            {
                "name": "chat",
                "higress": {"route": "ai-route-chat.internal"},
                "primary": {"name": "a", "url": "https://a.example.com", "apiKeyEnv": "A_KEY"},
                "fallbacks": [{"name": "b", "url": "https://b.example.com"}],
            }
        ]
    }
    with pytest.raises(RenderError, match="apiKeyEnv applies to standalone Envoy only"):
        higress_routes(parse_fallback(data))
