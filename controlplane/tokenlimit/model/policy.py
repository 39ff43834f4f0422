"""The TokenRateLimitPolicy document (the CRD's shape) and what its spec stands for.

A policy's spec holds one budget rule in camelCase (the same fields as the filter config,
tokenlimit.model.filter_config), what it attaches to (`TargetRef`: Higress routes/domains/
services, an Istio selector or Gateway, a standalone Envoy listener), where budgets are shared
(`PolicyRedis`: Higress's own Redis connection with a Secret reference for the password, or the
tokenlimit bridge for Envoy and Istio) and its model fallback routes (`FallbackSpec`).
`policy_filter_config` turns a policy into the filter config; the CRD (tokenlimit.crd) is
generated from these classes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import array, one_of
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model._spelling import cel as _cel
from tokenlimit.model._spelling import doc_key as _doc_key
from tokenlimit.model.calendar import render_current
from tokenlimit.model.fallback import FallbackSpec
from tokenlimit.model.fields import (
    DNS_SUBDOMAIN_CHARS_MAX,
    LABEL_NAME,
    SUBDOMAIN_NAME,
    LabelName,
    OptBool,
    OptCredential,
    Port,
    Present,
    SubdomainName,
    enum,
    literal,
    matching,
    text,
)
from tokenlimit.model.filter_config import (
    BudgetFields,
    FilterConfig,
    parse_filter_config,
)
from tokenlimit.model.limits import (
    LIMIT_KEYS_MAX,
    REDIS_DATABASE_MAX,
    REDIS_SERVICE_NAME_BYTES_MAX,
    REDIS_TIMEOUT_MS_MAX,
)
from tokenlimit.model.model_budgets import (
    COST_WINDOWS,
    GENAI_PRICES,
    MODEL_KINDS,
    ModelPattern,
    is_pattern,
)
from tokenlimit.model.prices import prices_from_genai
from tokenlimit.model.problems import ConfigInvalid, Problem, problems
from tokenlimit.model.store import filter_redis, higress_redis_problem, host_problem, is_ip
from tokenlimit.model.target import TargetRef

API_VERSION = "tokenlimit.io/v1alpha1"
XFF_TRUSTED_HOPS_MAX = 16  # more proxies than this in front of one gateway is a mistake
KIND = "TokenRateLimitPolicy"
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class SecretKeyRef(_Model):
    """A key of a Secret in the policy's namespace (never the value itself)."""

    name: SubdomainName
    """Name of the Secret."""
    key: Annotated[
        str,
        Field(min_length=1, max_length=DNS_SUBDOMAIN_CHARS_MAX, pattern=f"^{_SECRET_KEY.pattern}$"),
        matching(
            _SECRET_KEY, DNS_SUBDOMAIN_CHARS_MAX, "a Secret key (letters, digits, '-', '_', '.')"
        ),
    ]
    """Key in the Secret's data."""


class ServiceRef(_Model):
    """A Kubernetes Service: `name.namespace.svc.cluster.local`."""

    name: LabelName
    """Name of the Service."""
    namespace: LabelName
    """Namespace of the Service (required: the name the gateway resolves includes it)."""

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


_OptServiceRef = Annotated[Annotated[ServiceRef, WrapValidator(_object)] | None, Present]
_OptHost = Annotated[
    Annotated[
        str,
        Field(min_length=1, max_length=REDIS_SERVICE_NAME_BYTES_MAX),
        text(1, REDIS_SERVICE_NAME_BYTES_MAX),
    ]
    | None,
    Present,
]


class BridgeRef(_Model):
    """Where Envoy and Istio gateways reach the tokenlimit bridge (RESP over HTTP to Redis)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("has(self.host) != has(self.service)", "needs exactly one of host or service")
        )
    )

    host: _OptHost = None
    """Host name or IP address of the bridge."""
    service: _OptServiceRef = None
    """The bridge's Kubernetes Service (what the Helm chart installs)."""
    port: Port
    """The bridge's HTTP port."""
    tls: OptBool = None
    """Reach the bridge over TLS (it sits behind a TLS-terminating proxy)."""

    @model_validator(mode="after")
    def _one_address(self) -> Self:
        if (self.host is None) == (self.service is None):
            got = "both" if self.host is not None else "neither"
            raise _error(f"needs exactly one of host or service, got {got}")
        if self.host is not None and host_problem(self.host) is not None:
            raise _error(str(host_problem(self.host)), ("host",))
        return self

    @property
    def address(self) -> str:
        """The host the gateway connects to."""
        return self.service.host if self.service is not None else str(self.host)


class PolicyRedis(_Model):
    """The shared budget store. Without it, each gateway keeps its own budgets.

    Higress talks to Redis itself (host or service, port, database, username, password).
    Envoy and Istio send Redis commands to the tokenlimit bridge (bridge, timeoutMs); the
    bridge's own settings say which Redis it uses.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!(has(self.host) && has(self.service))", "set host or service, not both")
        )
    )

    host: _OptHost = None
    """Higress: the Redis service as Higress names it: `<name>.dns`, `<name>.static` or
    `<svc>.<ns>.svc.cluster.local`."""
    service: _OptServiceRef = None
    """Higress: a Kubernetes Service (rendered as `<name>.<namespace>.svc.cluster.local`)."""
    port: Annotated[Port | None, Present] = None
    """Higress: the port of the Redis service (6379; 80 for `.static` services)."""
    database: Annotated[
        Annotated[int, Field(ge=0, le=REDIS_DATABASE_MAX), _int_in(0, REDIS_DATABASE_MAX)] | None,
        Present,
    ] = None
    """Higress: the Redis database number (default 0)."""
    username: OptCredential = None
    """Higress: the Redis ACL user name."""
    password_secret_ref: Annotated[
        Annotated[SecretKeyRef, WrapValidator(_object)] | None, Present
    ] = None
    """Higress: the Secret key holding the Redis password, read when the policy is applied."""
    timeout_ms: Annotated[
        Annotated[int, Field(ge=1, le=REDIS_TIMEOUT_MS_MAX), _int_in(1, REDIS_TIMEOUT_MS_MAX)]
        | None,
        Present,
    ] = None
    """How long a request may wait for the store, in milliseconds (default 1000)."""
    bridge: Annotated[Annotated[BridgeRef, WrapValidator(_object)] | None, Present] = None
    """Envoy and Istio: where the tokenlimit bridge listens."""


class PolicySpec(BudgetFields):
    """`spec` of a TokenRateLimitPolicy: one budget rule, where it attaches, and its store."""

    model_config = ConfigDict(
        json_schema_extra={
            "required": ["ruleName"],
            **_cel(
                (
                    "has(self.globalThreshold) != has(self.ruleItems)",
                    "needs exactly one of globalThreshold or ruleItems",
                ),
                (
                    "!has(self.redis) || has(self.targetRef)",
                    "redis needs targetRef.gateway: Higress reaches Redis itself, Envoy and "
                    "Istio through the bridge",
                ),
            ),
        }
    )

    target_ref: Annotated[Annotated[TargetRef, WrapValidator(_object)] | None, Present] = None
    """What the policy attaches to. Without it, the gateway the policy is rendered for
    decides (Higress: every route; Envoy: the `tokenlimit` listener)."""
    redis: Annotated[Annotated[PolicyRedis, WrapValidator(_object)] | None, Present] = None
    """The shared budget store (Redis). Without it, budgets are per gateway."""
    fallback: Annotated[Annotated[FallbackSpec, WrapValidator(_object)] | None, Present] = None
    """Model fallback routes under the same budget (docs/fallback.md)."""
    xff_num_trusted_hops: Annotated[
        Annotated[int, Field(ge=0, le=XFF_TRUSTED_HOPS_MAX), _int_in(0, XFF_TRUSTED_HOPS_MAX)]
        | None,
        Present,
    ] = None
    """Envoy: how many proxies in front of the gateway append to X-Forwarded-For and are
    trusted (default 0: the peer address is the connection's, whatever the client sends)."""
    prices_from: Annotated[
        Annotated[str, enum((GENAI_PRICES,)), one_of((GENAI_PRICES,))] | None, Present
    ] = None
    """`genai-prices`: fill `prices` from the genai-prices package when the policy is rendered
    (its data as installed), for every model the policy names and `priceModels`; entries in
    `prices` override it. The filter config carries the numbers."""
    price_models: Annotated[
        Annotated[
            list[ModelPattern],
            Field(min_length=1, max_length=LIMIT_KEYS_MAX),
            array(1, LIMIT_KEYS_MAX, "model names"),
        ]
        | None,
        Present,
    ] = None
    """pricesFrom: models to price beside those named in `models` and limitByModel keys."""

    _calendar_rendered: ClassVar[bool] = True

    @model_validator(mode="after")
    def _rule(self, info: ValidationInfo) -> Self:
        self._check_rule(info)
        if self.redis is not None:
            _check_store(self.redis, self.target_ref)
        self._check_model_budgets()
        return self

    def _check_model_budgets(self) -> None:
        if self.calendar is not None:
            raise _error(
                "is rendered from timeZone when the policy is rendered; set timeZone instead",
                ("calendar",),
            )
        for index, name in enumerate(self.price_models or []):
            if is_pattern(name):
                raise _error(
                    f"must be a model name genai-prices knows, not a pattern, got {name!r} "
                    "(price patterns in prices)",
                    ("priceModels", index),
                )
        if self.price_models is not None and self.prices_from is None:
            raise _error("needs pricesFrom: genai-prices", ("priceModels",))
        if self.prices_from is not None and not (priced_models(self) or self.prices):
            raise _error(
                "names no model to price: list them in priceModels (or in an item's models)",
                ("pricesFrom",),
            )
        if cost_limited(self) and self.prices is None and self.prices_from is None:
            raise _error(
                "cost limits need prices: set prices (USD per 1M tokens by model) or "
                "pricesFrom: genai-prices; without a price every request would be refused",
                ("prices",),
            )

    @property
    def gateway(self) -> str | None:
        """higress | istio | envoy, or None when the policy does not say."""
        return self.target_ref.gateway if self.target_ref is not None else None


_HIGRESS_ONLY = ("host", "service", "port", "database", "username", "password_secret_ref")


def _check_store(redis: PolicyRedis, target: TargetRef | None) -> None:
    """The store fields that fit the gateway kind; raised at `redis.<field>`."""
    if target is None:
        raise _error(
            "needs targetRef.gateway: Higress reaches Redis itself (redis.host or "
            "redis.service), Envoy and Istio through the tokenlimit bridge (redis.bridge)",
            ("redis",),
        )
    if target.gateway == "higress":
        if redis.bridge is not None:
            raise _error(
                "Higress talks to Redis itself (its Redis ABI): remove redis.bridge and set "
                "redis.host or redis.service",
                ("redis", "bridge"),
            )
        if (redis.host is None) == (redis.service is None):
            got = "both" if redis.host is not None else "neither"
            raise _error(f"needs exactly one of host or service, got {got}", ("redis",))
        if redis.host is not None:
            problem = higress_redis_problem(redis.host, redis.port)
            if problem is not None:
                field = "port" if problem.startswith("port:") else "host"
                raise _error(problem.removeprefix("port: "), ("redis", field))
        return
    for name in _HIGRESS_ONLY:
        if getattr(redis, name) is not None:
            raise _error(
                f"{target.gateway} reaches Redis through the tokenlimit bridge: the bridge's "
                "own settings name Redis and its password (Helm values redis.external.* and "
                "redis.auth.*, or `tokenlimit bridge --redis URL`); leave this out and set "
                "redis.bridge",
                ("redis", _doc_key(PolicyRedis, name, "camel")),
            )
    if redis.bridge is None:
        raise _error(
            f"{target.gateway} reaches Redis through the tokenlimit bridge: set redis.bridge "
            "(service: {name, namespace} or host, and port)",
            ("redis", "bridge"),
        )
    if target.gateway == "istio" and redis.bridge.host is not None and is_ip(redis.bridge.host):
        raise _error(
            "Istio names clusters by host, not address: give the bridge a DNS name, or use "
            "service: {name, namespace}",
            ("redis", "bridge", "host"),
        )


class PolicyMetadata(BaseModel):
    # Kubernetes owns metadata: objects read back from a cluster carry uid, labels,
    # managedFields... Only name and namespace matter here, so the rest is ignored.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: Annotated[str, SUBDOMAIN_NAME]
    namespace: Annotated[Annotated[str, LABEL_NAME] | None, Present] = None


class TokenRateLimitPolicy(_Model):
    """The project's policy document (the CRD's shape)."""

    api_version: Annotated[str, literal(API_VERSION)]
    kind: Annotated[str, literal(KIND)]
    metadata: Annotated[PolicyMetadata, WrapValidator(_object)]
    spec: Annotated[PolicySpec, WrapValidator(_object)]
    status: dict[str, Any] | None = None  # written by the operator; ignored on input


def parse_policy(data: object) -> TokenRateLimitPolicy:
    """Validate a TokenRateLimitPolicy document (camelCase spec)."""
    try:
        return TokenRateLimitPolicy.model_validate(
            data, by_name=False, by_alias=True, context={"naming": "camel"}
        )
    except ValidationError as exc:
        raise ConfigInvalid(problems(exc, TokenRateLimitPolicy, "camel")) from None


def priced_models(spec: PolicySpec) -> list[str]:
    """The model names `pricesFrom` looks up: priceModels, then every exact name in items'
    `models` and limitByModel/limitByPerModel keys, each once, in document order."""
    names = list(spec.price_models or [])
    for item in spec.rule_items or []:
        names += item.models or []
        if item.kind in MODEL_KINDS:
            names += [key.key for key in item.limit_keys]
    return [n for i, n in enumerate(names) if not is_pattern(n) and n not in names[:i]]


def cost_limited(spec: BudgetFields) -> bool:
    """Whether any budget of the rule is in USD."""
    budgets: list[BaseModel] = [spec.global_threshold] if spec.global_threshold else []
    for item in spec.rule_items or []:
        budgets += item.limit_keys
    return any(getattr(b, w) is not None for b in budgets for w in COST_WINDOWS)


def policy_filter_config(
    policy: TokenRateLimitPolicy | PolicySpec, *, now_ms: int | None = None
) -> FilterConfig:
    """The filter config a policy (or its spec) stands for.

    The budget fields carry over as they are; `spec.redis` becomes the filter's `redis` object
    for the policy's gateway kind (`filter_redis`). The Redis password is not part of it: a
    policy holds only a Secret reference, resolved when the policy is applied.

    What the filter cannot work out itself is rendered here, as of `now_ms` (default: the
    clock): `timeZone` into `calendar` (a year back, ten ahead), and `pricesFrom:
    genai-prices` into `prices` numbers. ConfigInvalid names a model genai-prices lacks.
    """
    spec = policy.spec if isinstance(policy, TokenRateLimitPolicy) else policy
    document = spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, include=set(BudgetFields.model_fields)
    )
    redis = filter_redis(spec)
    if redis is not None:
        document["redis"] = redis
    if spec.time_zone is not None and spec.time_zone != "UTC":
        document["calendar"] = render_current(spec.time_zone, now_ms).model_dump(mode="json")
    if spec.prices_from is not None:
        document["prices"] = _rendered_prices(spec, now_ms)
    return parse_filter_config(document)


def _json_number(amount: Decimal) -> int | float:
    """A price as the JSON number that spells it (≤ 6 decimals: a float's repr keeps them)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _rendered_prices(spec: PolicySpec, now_ms: int | None) -> dict[str, Any]:
    """`prices` with pricesFrom filled in: the policy's own entries first (they win, being
    first to match), then genai-prices' for the other named models, then a `*` entry last (a
    catch-all first would shadow every entry after it)."""
    own = {
        name: price.model_dump(mode="json", exclude_none=True)
        for name, price in (spec.prices or {}).items()
    }
    at = None if now_ms is None else datetime.fromtimestamp(now_ms / 1000, UTC)
    try:
        found = prices_from_genai([m for m in priced_models(spec) if m not in own], at=at)
    except LookupError as exc:
        raise ConfigInvalid([Problem(("spec", "pricesFrom"), str(exc.args[0]))]) from None
    looked_up = {
        name: {k: _json_number(v) for k, v in price.model_dump().items()}
        for name, price in found.items()
    }
    last = {"*": own.pop("*")} if "*" in own else {}
    return {**own, **looked_up, **last}
