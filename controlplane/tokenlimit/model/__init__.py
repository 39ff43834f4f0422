"""The policy model: what a TokenRateLimitPolicy and a filter config may say, as pydantic models.

The bottom of the pipeline model ▸ render ▸ apply: it imports nothing else of tokenlimit (a
test pins this), so renderers, the operator and the CLI all build on the same validated types.

    limits.py         the config bounds and shared names, read from contract/limits.json
    _spelling.py      the base model and the two spellings (snake_case config, camelCase policy)
    _checks.py        value checks shared by every model (messages quote the bad value)
    _regexp.py        the `regexp:` key checker, a port of the filter's parser
    fields.py         the value types of single fields and their bounds
    higress.py        a bare config read as Higress reads it (what it ignores, numbers as text)
    counters.py       counter names as the filter writes them (a rule name, a name's length)
    rule_items.py     budget windows, limit keys, rule items: what a budget counts, by which key
    filter_config.py  FilterConfig: the JSON the filter reads (Higress names)
    target.py         TargetRef: what a policy attaches to
    store.py          Redis store names: what Higress resolves, what Envoy/Istio call the bridge
    policy.py         TokenRateLimitPolicy, PolicySpec, PolicyRedis, BridgeRef
    fallback.py       FallbackSpec: a route's model fallback chain
    upstream.py       Upstream: an upstream URL as a value
    problems.py       a refusal as `field: reason` lines, with did-you-mean

Import from here (`from tokenlimit.model import parse_policy`); the submodules hold more.
"""

from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Naming, camel_name
from tokenlimit.model.counters import counter_rule_name
from tokenlimit.model.fallback import (
    AutoSwitch,
    BackOff,
    FallbackRoute,
    FallbackSpec,
    FallbackUpstream,
    HigressRoutes,
    RetryAfter,
    fallback_document,
    higress_fallback_route,
    parse_fallback,
)
from tokenlimit.model.filter_config import (
    FilterConfig,
    RedisConfig,
    RouteRule,
    Weights,
    filter_json,
    parse_filter_config,
    parse_filter_config_with_warnings,
)
from tokenlimit.model.limits import LIMITS, Limits
from tokenlimit.model.policy import (
    API_VERSION,
    KIND,
    BridgeRef,
    PolicyMetadata,
    PolicyRedis,
    PolicySpec,
    SecretKeyRef,
    ServiceRef,
    TokenRateLimitPolicy,
    parse_policy,
    policy_filter_config,
)
from tokenlimit.model.problems import ConfigInvalid, Problem, field_path, problems
from tokenlimit.model.rule_items import GlobalThreshold, LimitKey, RuleItem, key_problem
from tokenlimit.model.store import (
    ENVOY_BRIDGE_CLUSTER,
    HIGRESS_STATIC_PORT,
    REDIS_PORT_DEFAULT,
    filter_redis,
    higress_redis_name,
    higress_redis_problem,
    istio_cluster,
)
from tokenlimit.model.target import (
    GATEWAYS,
    HIGRESS_SYSTEM_NAMESPACE,
    GatewayRef,
    LabelSelector,
    TargetRef,
)
from tokenlimit.model.upstream import Upstream

__all__ = [
    "API_VERSION",
    "ENVOY_BRIDGE_CLUSTER",
    "GATEWAYS",
    "HIGRESS_STATIC_PORT",
    "HIGRESS_SYSTEM_NAMESPACE",
    "KIND",
    "LIMITS",
    "REDIS_PORT_DEFAULT",
    "AutoSwitch",
    "BackOff",
    "BridgeRef",
    "ConfigInvalid",
    "FallbackRoute",
    "FallbackSpec",
    "FallbackUpstream",
    "FilterConfig",
    "GatewayRef",
    "GlobalThreshold",
    "HigressRoutes",
    "LabelSelector",
    "LimitKey",
    "Limits",
    "Naming",
    "PolicyMetadata",
    "PolicyRedis",
    "PolicySpec",
    "Problem",
    "RedisConfig",
    "RetryAfter",
    "RouteRule",
    "RuleItem",
    "SecretKeyRef",
    "ServiceRef",
    "TargetRef",
    "TokenRateLimitPolicy",
    "Upstream",
    "Weights",
    "camel_name",
    "counter_rule_name",
    "fallback_document",
    "field_path",
    "filter_json",
    "filter_redis",
    "higress_fallback_route",
    "higress_redis_name",
    "higress_redis_problem",
    "istio_cluster",
    "key_problem",
    "parse_fallback",
    "parse_filter_config",
    "parse_filter_config_with_warnings",
    "parse_policy",
    "policy_filter_config",
    "problems",
    "show",
]
