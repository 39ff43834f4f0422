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
from typing import Annotated, Any, Self

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
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model._spelling import cel as _cel
from tokenlimit.model._spelling import doc_key as _doc_key
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
    REDIS_DATABASE_MAX,
    REDIS_SERVICE_NAME_BYTES_MAX,
    REDIS_TIMEOUT_MS_MAX,
)
from tokenlimit.model.problems import ConfigInvalid, problems
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

    @model_validator(mode="after")
    def _rule(self, info: ValidationInfo) -> Self:
        self._check_rule(info)
        if self.redis is not None:
            _check_store(self.redis, self.target_ref)
        return self

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


def policy_filter_config(policy: TokenRateLimitPolicy | PolicySpec) -> FilterConfig:
    """The filter config a policy (or its spec) stands for.

    The budget fields carry over as they are; `spec.redis` becomes the filter's `redis` object
    for the policy's gateway kind (`filter_redis`). The Redis password is not part of it: a
    policy holds only a Secret reference, resolved when the policy is applied.
    """
    spec = policy.spec if isinstance(policy, TokenRateLimitPolicy) else policy
    document = spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, include=set(BudgetFields.model_fields)
    )
    redis = filter_redis(spec)
    if redis is not None:
        document["redis"] = redis
    return parse_filter_config(document)
