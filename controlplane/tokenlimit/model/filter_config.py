"""The filter's configuration (docs/config.md): the JSON document the filter reads.

This is the Python half of the contract; the Zig parser in filter/src/config.zig is the other
half, and both are tested against contract/config.json (the bounds both take from
contract/limits.json). Field names are Higress's ai-token-ratelimit names, plus the
Higress-injected `_rules_` and `_match_route_`.

The budget fields (`BudgetFields`) are shared with a TokenRateLimitPolicy's spec
(tokenlimit.model.policy), which spells them in camelCase; see tokenlimit.model._spelling.
The budget windows, limit keys and rule items live in tokenlimit.model.rule_items; this module
re-exports them (`__all__`), so both import paths name the same classes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, ClassVar, Self

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import one_of as _one_of
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model._spelling import Naming
from tokenlimit.model._spelling import doc_key as _doc_key
from tokenlimit.model._spelling import naming_of as _naming
from tokenlimit.model.cache import OptCache
from tokenlimit.model.counters import (
    COUNTER_KEY_BYTES_MAX,
    LIMIT_TYPES,
    counter_key_bytes,
    counter_rule_name,
)
from tokenlimit.model.exhausted import OptPaceAbove, OptPriority, OptWhenExhausted
from tokenlimit.model.fields import (
    OptAdmission,
    OptAlgorithm,
    OptBool,
    OptCredential,
    OptFailureMode,
    OptMatches,
    OptOutputTokens,
    OptRuleName,
    OptShare,
    OptWeight,
    Port,
    Present,
    text,
)
from tokenlimit.model.fields import enum as _enum
from tokenlimit.model.higress import dropped_default, has_route_rules, read_as_higress
from tokenlimit.model.lease import OptLease, lease_refusal
from tokenlimit.model.limits import (
    CONFIG_BYTES_MAX,
    REDIS_DATABASE_MAX,
    REDIS_SERVICE_NAME_BYTES_MAX,
    REDIS_TIMEOUT_MS_MAX,
    REJECTED_CODE_MAX,
    REJECTED_CODE_MIN,
    REJECTED_MSG_BYTES_MAX,
    ROUTE_RULES_MAX,
    RULE_ITEMS_MAX,
)
from tokenlimit.model.model_budgets import (
    OptCalendar,
    OptModelHeader,
    OptPrices,
    OptTimeZone,
    OptWarnAt,
)
from tokenlimit.model.problems import ConfigInvalid, Problem, problems
from tokenlimit.model.rule_items import GlobalThreshold, LimitKey, RuleItem, key_problem
from tokenlimit.model.usage_endpoint import OptUsagePath

__all__ = [
    "BudgetFields",
    "FilterConfig",
    "GlobalThreshold",
    "LimitKey",
    "RedisConfig",
    "RouteRule",
    "RuleItem",
    "Weights",
    "filter_json",
    "key_problem",
    "parse_filter_config",
    "parse_filter_config_with_warnings",
]

_MATCH_FIELDS = ("match_route", "match_domain", "match_service", "match_route_prefix")


class RedisConfig(_Model):
    """The filter's `redis` object (Higress's names): where the budget store is.

    On Higress `service_name` is the Redis service as Higress knows it; on Envoy and Istio it
    is the Envoy cluster of the tokenlimit bridge. A TokenRateLimitPolicy never spells this
    object out: `policy_filter_config` derives it from `spec.redis` (see PolicyRedis).
    """

    service_name: Annotated[
        str,
        Field(min_length=1, max_length=REDIS_SERVICE_NAME_BYTES_MAX),
        text(1, REDIS_SERVICE_NAME_BYTES_MAX),
    ]
    service_port: Annotated[Port | None, Present] = None
    username: OptCredential = None
    password: OptCredential = None
    timeout: Annotated[  # milliseconds
        Annotated[int, Field(ge=1, le=REDIS_TIMEOUT_MS_MAX), _int_in(1, REDIS_TIMEOUT_MS_MAX)]
        | None,
        Present,
    ] = None
    database: Annotated[
        Annotated[int, Field(ge=0, le=REDIS_DATABASE_MAX), _int_in(0, REDIS_DATABASE_MAX)] | None,
        Present,
    ] = None


class Weights(_Model):
    """What one token of each kind costs (1 = counts once): output can cost more than input."""

    input: OptWeight = None
    """Cost of one input (prompt) token."""
    output: OptWeight = None
    """Cost of one output (completion) token."""
    cached: OptWeight = None
    """Cost of one cached input token."""


_OptWeights = Annotated[Annotated[Weights, WrapValidator(_object)] | None, Present]
_OptGlobal = Annotated[Annotated[GlobalThreshold, WrapValidator(_object)] | None, Present]
_OptItems = Annotated[
    Annotated[
        list[RuleItem],
        Field(min_length=1, max_length=RULE_ITEMS_MAX),
        _array(1, RULE_ITEMS_MAX, "rule items"),
    ]
    | None,
    Present,
]
_OptRedis = Annotated[Annotated[RedisConfig, WrapValidator(_object)] | None, Present]
# `compat` (filter/src/config/compat.zig): "" (tokenlimit's own keys), or whose Redis keys and
# counting the budgets share: Higress 2.0.1's ("higress") or 1.0.x's ("higress-1.0").
COMPATS = ("", "higress", "higress-1.0")
_OptCompat = Annotated[Annotated[str, _enum(COMPATS), _one_of(COMPATS)] | None, Present]


def compat_refusal(rule: BudgetFields) -> str | None:
    """Why a rule cannot run under its `compat` (Higress's keys hold only what Higress counts),
    as the filter says it (config/compat.zig `refusal`), or None."""
    if not rule.compat:
        return None
    if getattr(rule, "redis", None) is None:
        return "needs redis: Higress's counters live in Redis"
    if rule.admission not in (None, "postpaid"):
        return "needs admission postpaid: Higress charges after the response and reserves nothing"
    if rule.algorithm not in (None, "fixed"):
        return "needs algorithm fixed: Higress counts in fixed windows"
    weights = rule.weights
    if weights is not None and any(
        w is not None and w != 1 for w in (weights.input, weights.output, weights.cached)
    ):
        return "cannot be used with weights: Higress counts input + output tokens unweighted"
    budgets: list[BaseModel] = [rule.global_threshold] if rule.global_threshold else []
    budgets += [key for item in rule.rule_items or [] for key in item.limit_keys]
    if any(getattr(b, f"request_per_{w}", None) is not None for b in budgets for w in _WINDOWS):
        return "cannot be used with request_per_* limits: Higress's keys count tokens only"
    if any(getattr(b, f"cost_per_{w}", None) is not None for b in budgets for w in _WINDOWS):
        return "cannot be used with cost_per_* limits: Higress's keys count tokens only"
    return None


_WINDOWS = ("second", "minute", "hour", "day", "week", "month")


class BudgetFields(_Model):
    """The fields of one budget rule that a policy spec and the filter config share."""

    rule_name: OptRuleName = None
    """Names the budget: rules (and routes) sharing a ruleName share counters."""
    global_threshold: _OptGlobal = None
    """One budget for all requests. Exactly one of globalThreshold or ruleItems."""
    rule_items: _OptItems = None
    """Per-key budgets; every matching item applies. Exactly one of globalThreshold or ruleItems."""
    rejected_code: Annotated[
        Annotated[
            int,
            Field(ge=REJECTED_CODE_MIN, le=REJECTED_CODE_MAX),
            _int_in(REJECTED_CODE_MIN, REJECTED_CODE_MAX),
        ]
        | None,
        Present,
    ] = None
    """HTTP status of a rejection (default 429)."""
    rejected_msg: Annotated[
        Annotated[str, Field(max_length=REJECTED_MSG_BYTES_MAX), text(0, REJECTED_MSG_BYTES_MAX)]
        | None,
        Present,
    ] = None
    """Body of a rejection (default "Too many requests")."""
    admission: OptAdmission = None
    """postpaid (charge after the response, Higress semantics; default) or reserve."""
    algorithm: OptAlgorithm = None
    """fixed (default; windows aligned to the epoch), sliding or token_bucket."""
    shadow: OptBool = None
    """Decide and report, never reject (dry run)."""
    show_limit_headers: OptBool = None
    """Add x-ratelimit-* headers to allowed responses too."""
    default_output_tokens: OptOutputTokens = None
    """Output tokens a reservation assumes when the request sets no max_tokens."""
    weights: _OptWeights = None
    """Cost weights for input, output and cached tokens."""
    failure_mode: OptFailureMode = None
    """When the store fails: open (allow; default), closed (reject) or local (per-gateway)."""
    local_share: OptShare = None
    """failure_mode local: the fraction of each limit one gateway enforces on its own while
    Redis is unavailable (e.g. 0.25 with four gateways). Default 1."""
    time_zone: OptTimeZone = None
    """IANA time zone of the day, week and month windows (default UTC; DST handled)."""
    model_header: OptModelHeader = None
    """Read the request's model from this header when present (e.g. x-higress-llm-model)."""
    prices: OptPrices = None
    """USD per 1M tokens by model name, `*` or `regexp:`; the first matching entry prices a
    request. A request for a model no entry matches is refused by cost limits."""
    calendar: OptCalendar = None
    """The time_zone's UTC offsets, rendered by the control plane (never written by hand)."""
    warn_at: OptWarnAt = None
    """Soft limit for every item that sets none: the fraction of a budget (0 < warn_at < 1,
    3 decimals) past which admitted responses carry a warning."""
    compat: _OptCompat = None
    """higress (2.0.1) or higress-1.0: budgets on Higress ai-token-ratelimit's own Redis keys
    with its counting, so the old plugin and tokenlimit share one budget during a rolling
    upgrade (docs/higress-compat.md). Needs redis; token limits only, fixed windows."""
    # usage endpoint (issue 16)
    usage_path: OptUsagePath = None
    """Where the filter answers GET with the caller's own budgets (default
    /tokenlimit/v1/usage; "" turns it off)."""
    higress_token_metrics: OptBool = None
    """Also count reported tokens under Higress ai-statistics' metric names
    (route_upstream_model_consumer_metric_input_token, ...); off by default."""
    # Response cache (issue 15, tokenlimit.model.cache).
    cache: OptCache = None
    """Exact response cache: a repeated request is answered by the gateway at 0 tokens."""
    # Near the limit (issue 13): tokenlimit.model.exhausted.
    when_exhausted: OptWhenExhausted = None
    """What a request whose budget is spent gets instead of a 429: wait for room (at most
    maxWaitMs) or downgrade to a cheaper model; default reject."""
    pace_above: OptPaceAbove = None
    """Above this share of a budget, admissions are spaced out so the rest lasts to the window's
    end (each held at most whenExhausted.maxWaitMs)."""
    priority: OptPriority = None
    """Lanes named by a request header (high, normal, low); reserved shares are held back for
    higher lanes, and waiting requests are released high first."""
    # Leases for hot keys (issue 17): tokenlimit.model.lease.
    lease: OptLease = None
    """Each gateway worker takes this share of a Redis budget at a time and admits against it
    locally: one Redis call per slice instead of one per request (docs/redis.md). Needs redis
    and fixed windows."""

    def _check_rule(self, info: ValidationInfo) -> None:
        naming = _naming(info)
        model = type(self)
        if self.global_threshold is None and self.rule_items is None:
            pair = f"{_doc_key(model, 'global_threshold', naming)}, " + _doc_key(
                model, "rule_items", naming
            )
            raise _error(f"needs {pair} or both: a rule without a budget limits nothing")
        if self.rule_name is None:
            raise _error("required", (_doc_key(model, "rule_name", naming),))
        items_key = _doc_key(model, "rule_items", naming)
        # 2.0.1's hybrid: the global budget is one more item, within the same bound.
        hybrid_items = len(self.rule_items or []) if self.global_threshold is not None else 0
        if hybrid_items > RULE_ITEMS_MAX - 1:
            raise _error(
                f"must hold 1 to {RULE_ITEMS_MAX - 1} rule items beside "
                f"{_doc_key(model, 'global_threshold', naming)}, got {hybrid_items}",
                (items_key,),
            )
        self._check_calendar(naming)
        self._check_counter_names(naming)
        reason = compat_refusal(self)
        if reason is not None:
            raise _error(reason, (_doc_key(model, "compat", naming),))
        reason = lease_refusal(self)  # issue 17
        if reason is not None:
            raise _error(reason, (_doc_key(model, "lease", naming),))

    # A policy's calendar is rendered from its timeZone (policy_filter_config); a filter
    # config must carry it, since the filter cannot resolve a zone name.
    _calendar_rendered: ClassVar[bool] = False

    def _check_calendar(self, naming: Naming) -> None:
        """A zone other than UTC needs its table, and a table belongs to the rule's zone: one
        for another zone would count months that are not the rule's."""
        zone = self.time_zone or "UTC"
        if self.calendar is None:
            if zone != "UTC" and not self._calendar_rendered:
                raise _error(
                    f"needs {_doc_key(type(self), 'calendar', naming)}, the zone's UTC offsets "
                    "(the filter cannot resolve zone names): render the config from a policy "
                    "(`tokenlimit render`), which adds it",
                    (_doc_key(type(self), "time_zone", naming),),
                )
            return
        if self.calendar.zone != zone:
            raise _error(
                f"is the table of {show(self.calendar.zone)}, but the rule's "
                f"{_doc_key(type(self), 'time_zone', naming)} is {show(zone)}: render the "
                "config again",
                (_doc_key(type(self), "calendar", naming), "zone"),
            )

    def _check_counter_names(self, naming: Naming) -> None:
        """Refuse what the filter refuses: budgets whose counter names would not fit."""
        assert self.rule_name is not None
        model = type(self)
        budgets: list[tuple[tuple[str | int, ...], str, str, BaseModel, bool]] = []
        if self.global_threshold is not None:
            at: tuple[str | int, ...] = (_doc_key(model, "global_threshold", naming),)
            budgets.append((at, "global", "", self.global_threshold, False))
        for index, item in enumerate(self.rule_items or []):
            limit_type = LIMIT_TYPES[item.kind]
            source = "" if "consumer" in limit_type else item.source
            at = (
                _doc_key(model, "rule_items", naming),
                index,
                _doc_key(RuleItem, item.kind, naming),
            )
            budgets.extend(
                (at, limit_type, source, key, item.model_keyed) for key in item.limit_keys
            )
        for at, limit_type, source, windows, model_keyed in budgets:
            size = counter_key_bytes(self.rule_name, limit_type, source, windows, model_keyed)
            if size > COUNTER_KEY_BYTES_MAX:
                raise _error(
                    f"makes counter names longer than the {COUNTER_KEY_BYTES_MAX} bytes a "
                    f"counter name may have (rule name as counted: "
                    f"{len(counter_rule_name(self.rule_name).encode())} bytes, this name: "
                    f"{len(source.encode())} bytes); shorten the rule name or this name",
                    at,
                )


class _RuleFields(BudgetFields):
    """A rule as the filter reads it: the budget fields plus the filter's `redis` object."""

    redis: _OptRedis = None


class RouteRule(_RuleFields):
    """A Higress `_rules_` entry: where it applies and the rule for those requests."""

    match_route: OptMatches = Field(default=None, alias="_match_route_")
    match_domain: OptMatches = Field(default=None, alias="_match_domain_")
    match_service: OptMatches = Field(default=None, alias="_match_service_")
    match_route_prefix: OptMatches = Field(default=None, alias="_match_route_prefix_")

    @model_validator(mode="after")
    def _match_and_rule(self, info: ValidationInfo) -> Self:
        if not any(getattr(self, m) for m in _MATCH_FIELDS):  # absent or empty lists
            names = ", ".join(_doc_key(RouteRule, m, "snake") for m in _MATCH_FIELDS)
            raise _error(f"needs at least one of {names}")
        self._check_rule(info)
        return self


class FilterConfig(_RuleFields):
    """The JSON document the filter reads (docs/config.md)."""

    rules: Annotated[
        Annotated[list[RouteRule], _array(0, ROUTE_RULES_MAX, "rule objects")] | None, Present
    ] = Field(default=None, alias="_rules_")

    @model_validator(mode="after")
    def _top_level(self, info: ValidationInfo) -> Self:
        # Higress sends only `_rules_` when a plugin has no default config; then there is no
        # top-level rule. Otherwise the top level is a rule and must be complete.
        top_level = any(getattr(self, f) is not None for f in _RuleFields.model_fields)
        if not top_level and self.rules is None:
            raise _error(
                "empty config: needs rule_name with global_threshold or rule_items, "
                "or _rules_ (per-route rules)"
            )
        if top_level:
            self._check_rule(info)
        size = len(filter_json(self).encode())
        if size > CONFIG_BYTES_MAX:
            raise _error(
                f"config is {size} bytes as JSON, more than the {CONFIG_BYTES_MAX} "
                "the filter accepts"
            )
        return self

    @property
    def rule_names(self) -> list[str]:
        """Every rule name in the document, top level first."""
        names = [self.rule_name] + [r.rule_name for r in self.rules or []]
        return [n for n in names if n is not None]


# --- key semantics -------------------------------------------------------------------------


def parse_filter_config(data: object, *, strict: bool = False) -> FilterConfig:
    """Validate a bare filter config (snake_case / Higress names), read as Higress reads it.
    `strict`: refuse it for the fields Higress (and the filter) would ignore."""
    try:
        config, warnings = parse_filter_config_with_warnings(data)
    except ConfigInvalid as refused:
        if not strict:
            raise
        _, ignored = read_as_higress(data)
        raise ConfigInvalid((*ignored, *refused.problems)) from None
    if strict and warnings:
        raise ConfigInvalid(warnings)
    return config


def parse_filter_config_with_warnings(data: object) -> tuple[FilterConfig, tuple[Problem, ...]]:
    """The config and what in it is ignored (as Higress ignores it; the filter logs the same
    fields in one warning line): unknown fields, overridden `limit_by_*` fields, a broken
    top-level rule beside `_rules_`."""
    document, warnings = read_as_higress(data)
    try:
        return _validate(document), tuple(warnings)
    except ConfigInvalid:
        assert isinstance(document, dict) or not has_route_rules(document)
        if not has_route_rules(document) or not any(
            isinstance(document, dict) and k in document for k in _TOP_RULE_KEYS
        ):
            raise
        assert isinstance(document, dict)
        top = {k: v for k, v in document.items() if k != "_rules_"}
        try:
            _validate(top)
        except ConfigInvalid as broken:
            # Higress drops a top-level rule it cannot parse when `_rules_` has entries.
            routes_only = _validate({"_rules_": document["_rules_"]})
            return routes_only, (*warnings, *dropped_default(broken.problems))
        raise


_TOP_RULE_KEYS = tuple(
    _doc_key(FilterConfig, n, "snake") for n in FilterConfig.model_fields if n != "rules"
)


def _validate(document: object) -> FilterConfig:
    try:
        return FilterConfig.model_validate(
            document, by_name=True, by_alias=True, context={"naming": "snake"}
        )
    except ValidationError as exc:
        raise ConfigInvalid(problems(exc, FilterConfig, "snake")) from None


def filter_json(cfg: FilterConfig) -> str:
    """The compact JSON the filter reads: Higress names, unset fields left out, fixed order.
    Fractions are written in plain decimal notation (`0.000001`, never `1e-06`): the filter
    reads a price's or cost limit's digits into micro-dollars."""
    document = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _plain_json(document)


def _plain_json(value: object) -> str:
    if isinstance(value, dict):
        members = (f"{_plain_json(str(k))}:{_plain_json(v)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_plain_json(v) for v in value) + "]"
    if type(value) is float:
        return format(Decimal(repr(value)), "f")
    return json.dumps(value, ensure_ascii=False)
