"""Higress: fallback routes kept under the limiter, and a redirect only upstream codes trigger.

How Higress does fallback (read from its sources; not run here — there is no Higress on this
machine, so everything below is verified by rendering only):

- An AI route `foo` made in the Higress console is the Ingress `ai-route-foo.internal` in
  `higress-system`; with fallback enabled the console adds a second route,
  `ai-route-foo.fallback.internal`, that matches only requests carrying
  `x-higress-fallback-from: ai-route-foo.internal`, and an EnvoyFilter named after the
  primary route that MERGEs into that route's `typed_per_filter_config` a
  `envoy.filters.http.custom_response` matcher: on a response of class 4xx or 5xx, a
  `RedirectPolicy` (Higress's Envoy fork) re-enters the filter chain as an internal redirect
  with that header added (higress-group/higress-console, backend/sdk: AiRouteServiceImpl
  `writeAiRouteFallbackResources`, `buildFallbackRouteResourceName`,
  resources/templates/envoyfilter-route-fallback.yaml).
- The console renders `only_redirect_upstream_code: false`, and its own template comments
  that gateway-generated codes, "e.g. a rate limit's 4xx", trigger the redirect too. Higress's
  Envoy fork implements `only_redirect_upstream_code: true` as: redirect only when the
  response's code details are `via_upstream` (source/extensions/http/custom_response/
  redirect_policy/redirect_policy.cc, `#if defined(HIGRESS)`). A plugin's local reply — the
  limiter's 429 — is not `via_upstream`.
- The Ingress-annotation fallback (`higress.io/default-backend` + `custom-http-errors`) is a
  different mechanism (an internal active redirect to a `<route>-fallback` route; alibaba/
  higress pkg/ingress/kube/annotations/default_backend.go) and is not rendered here.

What `tokenlimit.render.higress.render` adds for a TokenRateLimitPolicy with
`targetRef.gateway: higress` and a `spec.fallback` whose routes name their Higress routes
(`higress.route`):

1. The WasmPlugin, with each route's fallback routes
   (default `<base>.fallback.internal`) appended to the **same** `matchRules` entry (`ingress`
   list) as the primary route. One entry is one `_rules_` item with one config, hence the same
   `rule_name` and the same counters: a request served through the fallback route is charged
   to the same key. The redirected request passes the limiter again as a new stream, so it is
   admitted against the same budget. Not verified (no Higress here): whether the primary's
   error response, which the redirect replaces, reaches the limiter first and is charged as an
   estimate (it carries no usage) — that depends on where Higress places custom_response
   relative to Wasm plugins in its filter chain. A policy without attachments
   (`defaultConfig`) already covers every route.
2. One EnvoyFilter per route, named like the console's (so applying it replaces the console's
   version), with the same custom_response redirect but `only_redirect_upstream_code: true`
   and the route's exact retriable codes (`HttpResponseStatusCodeMatchInput`) instead of whole
   4xx/5xx classes. The console rewrites its EnvoyFilter whenever the AI route is saved there:
   apply this one again afterwards (or let the operator own it).
"""

from __future__ import annotations

from typing import Any

from tokenlimit.model import (
    HIGRESS_SYSTEM_NAMESPACE,
    FallbackRoute,
    FallbackSpec,
    TokenRateLimitPolicy,
)
from tokenlimit.render.kube import RenderError, metadata

ENVOY_FILTER_API_VERSION = "networking.istio.io/v1alpha3"
ENVOY_FILTER_KIND = "EnvoyFilter"
CUSTOM_RESPONSE_FILTER = "envoy.filters.http.custom_response"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
CUSTOM_RESPONSE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse"
)
REDIRECT_POLICY_TYPE = (
    "type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy"
)
STATUS_CODE_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput"
FALLBACK_FROM_HEADER = "x-higress-fallback-from"  # the console's header
MAX_INTERNAL_REDIRECTS = 10  # the console's value
MAX_REQUEST_BYTES = 1024000  # the console's value: the body kept for the redirected request


def higress_routes(spec: FallbackSpec) -> list[FallbackRoute]:
    """The routes, each checked to name its Higress route and to need nothing Higress lacks."""
    for index, route in enumerate(spec.routes):
        if route.higress is None:
            raise RenderError(
                f"spec.fallback.routes[{index}].higress: required for gateway higress: name the "
                "Higress route (higress.route, e.g. ai-route-foo.internal for the AI route foo)"
            )
        for upstream in route.upstreams:
            if upstream.api_key_env is not None:
                raise RenderError(
                    f"spec.fallback.routes[{index}] upstream {upstream.name}: apiKeyEnv applies to "
                    "standalone Envoy only; in Higress, set the provider's key in its ai-proxy "
                    "plugin"
                )
    return list(spec.routes)


def with_fallback_routes(
    objects: list[dict[str, Any]], routes: list[FallbackRoute]
) -> list[dict[str, Any]]:
    """The WasmPlugins with every fallback route listed beside its primary route."""
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        rules = spec.get("matchRules")
        if obj.get("kind") != "WasmPlugin" or rules is None:
            found.append(obj)  # defaultConfig: every route, fallback routes included
            continue
        new_rules = [dict(rule) for rule in rules]
        for route in routes:
            assert route.higress is not None
            primary = route.higress.route
            entries = [r for r in new_rules if primary in r.get("ingress", [])]
            if not entries:
                listed = sorted({i for r in new_rules for i in r.get("ingress", [])})
                raise RenderError(
                    f"fallback route {route.name}: the policy does not attach to Higress route "
                    f"{primary} (spec.targetRef.ingresses: {', '.join(listed) or 'none'}): a "
                    "fallback chain the limiter does not see would escape the budget"
                )
            for entry in entries:
                ingress = list(entry["ingress"])
                for extra in route.higress.all_fallback_routes:
                    if extra not in ingress:
                        ingress.insert(ingress.index(primary) + 1, extra)
                entry["ingress"] = ingress
        found.append({**obj, "spec": {**spec, "matchRules": new_rules}})
    return found


def redirect_envoy_filter(
    route: FallbackRoute, policy: TokenRateLimitPolicy, namespace: str = HIGRESS_SYSTEM_NAMESPACE
) -> dict[str, Any]:
    """The console's fallback EnvoyFilter, fixed: only upstream responses with the route's
    retriable codes redirect to the fallback route; the limiter's own 429 never does."""
    assert route.higress is not None
    higress_route = route.higress.route
    header = {"key": FALLBACK_FROM_HEADER, "value": higress_route}
    redirect = {
        "max_internal_redirects": MAX_INTERNAL_REDIRECTS,
        "use_original_request_uri": True,
        "keep_original_response_code": False,
        "use_original_request_body": True,
        # The fix: the console has false, and the limiter's rejection is then redirected to
        # the fallback route. True redirects only responses whose code details are
        # `via_upstream`, i.e. answers of the LLM, never a plugin's local reply.
        "only_redirect_upstream_code": True,
        "request_headers_to_add": [{"header": header, "append": False}],
        "response_headers_to_add": [{"header": header, "append": False}],
    }
    predicates = [
        {
            "single_predicate": {
                "input": {
                    "name": f"{code}_response",
                    "typed_config": {"@type": STATUS_CODE_INPUT},
                },
                "value_match": {"exact": str(code)},
            }
        }
        for code in route.retriable_status_codes
    ]
    predicate = predicates[0] if len(predicates) == 1 else {"or_matcher": {"predicate": predicates}}
    custom_response = {
        "@type": TYPED_STRUCT,
        "type_url": CUSTOM_RESPONSE_TYPE,
        "value": {
            "custom_response_matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": predicate,
                            "on_match": {
                                "action": {
                                    "name": "action",
                                    "typed_config": {
                                        "@type": TYPED_STRUCT,
                                        "type_url": REDIRECT_POLICY_TYPE,
                                        "value": redirect,
                                    },
                                }
                            },
                        }
                    ]
                }
            },
            "with_request_body": {"max_request_bytes": MAX_REQUEST_BYTES},
        },
    }
    return {
        "apiVersion": ENVOY_FILTER_API_VERSION,
        "kind": ENVOY_FILTER_KIND,
        # The console's name for this EnvoyFilter: applying ours replaces its version.
        "metadata": metadata(higress_route.replace("/", "-"), namespace, policy),
        "spec": {
            "configPatches": [
                {
                    "applyTo": "HTTP_ROUTE",
                    "match": {
                        "context": "GATEWAY",
                        "routeConfiguration": {"vhost": {"route": {"name": higress_route}}},
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {
                            "typed_per_filter_config": {CUSTOM_RESPONSE_FILTER: custom_response}
                        },
                    },
                }
            ]
        },
    }
