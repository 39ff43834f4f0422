"""Higress: a TokenRateLimitPolicy as an `extensions.higress.io/v1alpha1` WasmPlugin.

    render(policy, HigressOptions(module=WasmModule(url, sha256)), secrets=None)
        -> [WasmPlugin, EnvoyFilter per spec.fallback route]

`policy` is a validated `TokenRateLimitPolicy` (`loader.policy_from_data(...).policy`);
the result is a list of Kubernetes object dicts in a fixed key order (golden-tested). Raises
`RenderError` (a ValueError) when the policy cannot run on Higress, saying what to change.

Choices, and why:
- **One WasmPlugin per policy**, in Higress's own namespace (`higress-system`): Higress reads
  WasmPlugins only there, so the name carries the policy's namespace and name. Several
  policies are several plugin instances, each with its own budgets; all of them apply.
- **Attachment.** A policy without ingresses/domains/services applies to every route
  (`defaultConfig`). Otherwise `defaultConfigDisable: true` and one `matchRules` entry per
  kind (ingress, domain, service), each with the whole config: Higress turns an entry into a
  `_rules_` item, and an entry that named both routes and domains would match on the routes
  only (its controller drops the domains), so separate entries keep "any of these" true.
- **Phase and priority.** `UNSPECIFIED_PHASE`, priority 600 — what Higress's own
  ai-token-ratelimit uses. Higress's auth plugins (key-auth, jwt-auth, basic-auth, hmac-auth,
  oauth) run in the AUTHN phase and set `x-mse-consumer`; the unspecified phase is the end of
  the chain (after AUTHN, AUTHZ and STATS), so consumer keys are known, unauthenticated
  requests never spend budget, and within the phase priority 600 runs before ai-proxy (100):
  a refused request is never translated or sent, and the response reaches the limiter after
  ai-proxy has turned it into OpenAI's shape.
- **failStrategy** follows `failureMode`: `closed` → FAIL_CLOSE, else FAIL_OPEN (override
  with the option).
- **Redis** is named the way Higress resolves it (`<name>.dns`, `<name>.static`,
  `<svc>.<ns>.svc.cluster.local`), checked by the model against the mistakes behind
  Higress's `bad argument` on Redis init. Higress has no secret reference in plugin config:
  the password is plain text inside the WasmPlugin. So a policy holds only
  `redis.passwordSecretRef`, and the value is read when the policy is *applied* (the operator
  and `tokenlimit push --target kube --rendered higress` read the Secret; `tokenlimit render`
  takes `--redis-password-file`). Anyone who can read WasmPlugins in higress-system can read
  that password: restrict that RBAC, and give the limiter its own Redis ACL user.
- **Fallback** (`spec.fallback`): each route's fallback routes join its primary route's
  `matchRules` entry (same config, same counters) and a redirect EnvoyFilter that only
  upstream codes trigger replaces the console's (`higress_fallback.py` says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenlimit.model import (
    HIGRESS_SYSTEM_NAMESPACE,
    ConfigInvalid,
    FilterConfig,
    TokenRateLimitPolicy,
    filter_json,
    parse_filter_config,
    policy_filter_config,
)
from tokenlimit.render.higress_fallback import (
    ENVOY_FILTER_API_VERSION,
    ENVOY_FILTER_KIND,
    higress_routes,
    redirect_envoy_filter,
    with_fallback_routes,
)
from tokenlimit.render.kube import (
    PHASES,
    PULL_POLICIES,
    RenderError,
    SecretSource,
    WasmModule,
    check_choice,
    check_gateway,
    fail_strategy,
    metadata,
    object_name,
)

API_VERSION = "extensions.higress.io/v1alpha1"
KIND = "WasmPlugin"
PRIORITY_DEFAULT = 600  # Higress's ai-token-ratelimit
PHASE_DEFAULT = "UNSPECIFIED_PHASE"
# Every (apiVersion, kind) `render` may return: the operator lists these to find its objects.
KINDS = ((API_VERSION, KIND), (ENVOY_FILTER_API_VERSION, ENVOY_FILTER_KIND))


@dataclass(frozen=True)
class HigressOptions:
    module: WasmModule
    namespace: str = HIGRESS_SYSTEM_NAMESPACE  # where Higress reads WasmPlugins
    phase: str = PHASE_DEFAULT
    priority: int = PRIORITY_DEFAULT
    fail_strategy: str | None = None  # None: from spec.failureMode
    image_pull_policy: str | None = None
    image_pull_secret: str | None = None


def render(
    policy: TokenRateLimitPolicy, options: HigressOptions, secrets: SecretSource | None = None
) -> list[dict[str, Any]]:
    """The WasmPlugin running `policy` on Higress, and the fallback's redirects (see the
    module docstring)."""
    check_gateway(policy, "higress")
    fallback = policy.spec.fallback
    routes = higress_routes(fallback) if fallback is not None else []
    check_choice(options.phase, PHASES, "phase")
    check_choice(options.image_pull_policy, PULL_POLICIES, "imagePullPolicy")
    config = plugin_config(policy, secrets)
    name_parts = [p for p in (policy.metadata.namespace, policy.metadata.name) if p]
    spec: dict[str, Any] = {"url": options.module.url}
    if options.module.sha256 is not None:
        spec["sha256"] = options.module.sha256
    if options.image_pull_policy is not None:
        spec["imagePullPolicy"] = options.image_pull_policy
    if options.image_pull_secret is not None:
        spec["imagePullSecret"] = options.image_pull_secret
    spec["phase"] = options.phase
    spec["priority"] = options.priority
    spec["failStrategy"] = fail_strategy(policy.spec, options.fail_strategy)
    target = policy.spec.target_ref
    attachments = target.attachments if target is not None else {}
    if target is not None and target.route_prefixes:
        spec["defaultConfig"] = {
            "_rules_": [{"_match_route_prefix_": list(target.route_prefixes), **config}]
        }
        spec["defaultConfigDisable"] = False
    elif not attachments:
        spec["defaultConfig"] = config
        spec["defaultConfigDisable"] = False
        # targetRef.exclude: Higress skips the plugin there (another policy's rule replaces it).
        excluded = target.exclude.attachments if target and target.exclude else {}
        if excluded:
            spec["matchRules"] = [
                {field: values, "configDisable": True} for field, values in excluded.items()
            ]
    else:
        spec["defaultConfigDisable"] = True
        spec["matchRules"] = [
            {field: values, "config": config, "configDisable": False}
            for field, values in attachments.items()
        ]
    plugin = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(object_name(*name_parts), options.namespace, policy),
        "spec": spec,
    }
    redirects = [redirect_envoy_filter(r, policy, options.namespace) for r in routes]
    return [*with_fallback_routes([plugin], routes), *redirects]


def plugin_config(
    policy: TokenRateLimitPolicy, secrets: SecretSource | None = None
) -> dict[str, Any]:
    """The filter config as the WasmPlugin carries it, the Redis password filled in."""
    config: dict[str, Any] = json.loads(filter_json(policy_filter_config(policy)))
    redis = policy.spec.redis
    if redis is None or redis.password_secret_ref is None:
        return config
    ref = redis.password_secret_ref
    where = f"Secret {policy.metadata.namespace or '<policy namespace>'}/{ref.name} key {ref.key}"
    if secrets is None:
        raise RenderError(
            f"spec.redis.passwordSecretRef: the Redis password is in {where} and is read only "
            "when the policy is applied: use the operator or `tokenlimit push --target kube "
            "--rendered higress` (they read the Secret), or pass `--redis-password-file FILE` "
            "to `tokenlimit render`"
        )
    config["redis"]["password"] = secrets(policy.metadata.namespace, ref)
    try:
        checked: FilterConfig = parse_filter_config(config)
    except ConfigInvalid as exc:
        raise RenderError(f"the password from {where}: {exc}") from None
    filled: dict[str, Any] = json.loads(filter_json(checked))
    return filled
