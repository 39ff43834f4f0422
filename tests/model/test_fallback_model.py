"""The fallback chain model: defaults, and refusals that name the field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
from tokenlimit.model import (
    ConfigInvalid,
    FallbackSpec,
    HigressRoutes,
    fallback_document,
    higress_fallback_route,
    parse_fallback,
)
from tokenlimit.model.fallback import DEFAULT_RETRIABLE, ROUTE_TIMEOUT_S

MINIMAL: dict[str, Any] = {
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
                }
            ],
        }
    ]
}


def with_route(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data["routes"][0].update(changes)
    return data


def refusal(data: object) -> str:
    with pytest.raises(ConfigInvalid) as refused:
        parse_fallback(data)
    return str(refused.value)


def test_defaults() -> None:
    route = parse_fallback(MINIMAL).routes[0]
    assert route.retriable_status_codes == list(DEFAULT_RETRIABLE)
    assert route.retries == 1  # one per fallback
    assert route.per_try_timeout_ms is None
    assert (route.back_off.base_interval_ms, route.back_off.max_interval_ms) == (250, 2000)
    assert (route.retry_after.honor, route.retry_after.max_interval_ms) == (True, 5000)
    assert route.mode == "auto" and route.forced_upstream is None
    assert route.auto_switch is None and route.higress is None
    assert [u.name for u in route.upstreams] == ["openai", "deepseek"]
    assert route.primary.provider == "openai" and route.primary.model is None
    assert route.upstream("deepseek").upstream.tls


def test_the_document_round_trips_without_defaults() -> None:
    spec = parse_fallback(MINIMAL)
    assert fallback_document(spec) == MINIMAL
    assert parse_fallback(fallback_document(spec)) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            with_route(fallbacks=[{"name": "openai", "url": "http://10.0.0.1"}]),
            "routes[0].fallbacks[0].name: 'openai' is already the name of primary.name",
        ),
        (
            with_route(primary={"name": "openai", "url": "https://api.openai.com/v1"}),
            "routes[0].primary.url: upstream must be scheme://host[:port] without a path",
        ),
        (
            with_route(fallbacks=[{"name": "claude", "provider": "anthropic", "url": "https://a"}]),
            "routes[0].fallbacks[0].provider: anthropic speaks another API than the primary",
        ),
        (
            with_route(fallbacks=[{"name": "x", "url": "http://x", "modle": "m"}]),
            "routes[0].fallbacks[0].modle: unknown field (did you mean model?)",
        ),
        (
            with_route(retriableStatusCodes=[429, 429]),
            "routes[0].retriableStatusCodes[1]: 429 is listed twice",
        ),
        (
            with_route(retriableStatusCodes=[200]),
            "routes[0].retriableStatusCodes[0]: must be a status code from 400 to 599, got 200",
        ),
        (
            with_route(backOff={"baseIntervalMs": 500, "maxIntervalMs": 100}),
            "routes[0].backOff.maxIntervalMs: must be at least baseIntervalMs (500), got 100",
        ),
        (
            with_route(autoSwitch={"enterRatio": 0.2, "exitRatio": 0.3}),
            "routes[0].autoSwitch.exitRatio: must be below enterRatio (0.2)",
        ),
        (
            with_route(autoSwitch={"windowS": 10, "intervalS": 10}),
            "routes[0].autoSwitch.intervalS: must be shorter than windowS (10), got 10",
        ),
        (
            with_route(fallbacks=[]),
            "routes[0].fallbacks: must hold 1 to 8 upstreams, got 0",
        ),
        (
            with_route(name="Chat"),
            "routes[0].name: must be 1 to 40 lowercase letters, digits or",
        ),
        (
            with_route(numRetries="3"),
            'routes[0].numRetries: must be an integer from 1 to 16, got "3"',
        ),
        (
            with_route(mode="on"),
            'routes[0].mode: must be one of auto, forced, off, got "on"',
        ),
        (
            with_route(forcedUpstream="nowhere", mode="forced"),
            "routes[0].forcedUpstream: must name an upstream of this route (openai, deepseek)",
        ),
        (
            with_route(forcedUpstream="deepseek"),
            "routes[0].forcedUpstream: applies to mode: forced, not auto",
        ),
        (
            with_route(
                primary={"name": "g", "provider": "gemini", "url": "https://g", "model": "x"},
                fallbacks=[{"name": "h", "provider": "gemini", "url": "https://h"}],
            ),
            "routes[0].primary.model: gemini takes the model from the request path",
        ),
        (
            with_route(fallbacks=[{"name": "x", "url": "http://x", "model": 'a"b'}]),
            "routes[0].fallbacks[0].model: must be printable ASCII without quotes or backslashes",
        ),
        (
            with_route(higress={"route": "Not A Route"}),
            "routes[0].higress.route: must be a Higress route name",
        ),
        (
            with_route(perTryTimeoutMs=10),
            "routes[0].perTryTimeoutMs: must be an integer from 100 to 300000, got 10",
        ),
        ({"routes": "chat"}, "routes: must be an array of routes"),
        ({"routes": []}, "routes: must hold 1 to 64 routes, got 0"),
        (
            {"routes": [MINIMAL["routes"][0], MINIMAL["routes"][0]]},
            "routes[1].name: 'chat' is listed twice",
        ),
        (
            with_route(primary={"name": "openai"}),
            "routes[0].primary.url: required",
        ),
    ],
)
def test_refusals_name_the_field(data: object, message: str) -> None:
    assert message in refusal(data)


def test_snake_case_keys_are_refused_in_a_policy_spec() -> None:
    assert "routes[0].path_prefix: unknown field" in refusal(with_route(path_prefix="/v1/"))


def test_forced_mode_and_auto_switch_parse() -> None:
    route = parse_fallback(
        with_route(mode="forced", forcedUpstream="deepseek", autoSwitch={"probePercent": 0})
    ).routes[0]
    assert (route.mode, route.forced_upstream) == ("forced", "deepseek")
    assert route.auto_switch is not None and route.auto_switch.probe_percent == 0
    assert route.auto_switch.enter_ratio == 0.5 and route.auto_switch.exit_ratio == 0.1


def test_higress_fallback_route_names() -> None:
    assert higress_fallback_route("ai-route-chat.internal") == "ai-route-chat.fallback.internal"
    assert higress_fallback_route("llm/chat") == "llm/chat.fallback.internal"
    routes = HigressRoutes.model_validate(
        {"route": "llm/chat", "fallbackRoutes": ["llm/chat-b"]}, by_alias=True
    )
    assert routes.all_fallback_routes == ["llm/chat-b"]


def test_the_spec_embeds_as_a_policy_field() -> None:
    """What the lead's PolicySpec.fallback field will do: validate by alias, and report
    through tokenlimit.model.problems with the document's path."""
    spec = FallbackSpec.model_validate(MINIMAL, by_alias=True, by_name=False)
    assert spec.route("chat").fallbacks[0].model == "deepseek-chat"
    with pytest.raises(KeyError, match="no fallback route 'x'"):
        spec.route("x")


def test_the_fallback_model_is_part_of_the_model_and_imports_no_renderer() -> None:
    """The fallback model sits in tokenlimit.model, below the renderers: importing it loads
    nothing but the model package (the old model.py <-> fallback/model.py <-> render/envoy.py
    cycle cannot come back)."""
    code = (
        "import json, sys; import tokenlimit.model.fallback; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tokenlimit'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "tokenlimit.model.fallback" in loaded
    assert [m for m in loaded if m != "tokenlimit" and not m.startswith("tokenlimit.model")] == []


def test_the_route_timeout_bound_is_the_renderers_route_timeout() -> None:
    """perTryTimeoutMs is bounded by the route timeout render.envoy writes."""
    from tokenlimit.render.envoy import ROUTE_TIMEOUT_S as RENDERED

    assert ROUTE_TIMEOUT_S == RENDERED


def test_an_upstream_key_is_an_environment_variable_name_sent_in_the_providers_header() -> None:
    data = copy.deepcopy(MINIMAL)
    data["routes"][0]["fallbacks"][0]["apiKeyEnv"] = "DEEPSEEK_API_KEY"
    backup = parse_fallback(data).routes[0].fallbacks[0]
    assert backup.credential_header == ("authorization", "Bearer %ENVIRONMENT(DEEPSEEK_API_KEY)%")
    assert parse_fallback(MINIMAL).routes[0].primary.credential_header is None
    data["routes"][0]["fallbacks"][0]["apiKeyEnv"] = "sk-live-oops"  # a key, not its name
    assert "apiKeyEnv: must name an environment variable" in refusal(data)
