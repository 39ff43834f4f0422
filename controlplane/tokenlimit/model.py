"""The filter configuration and the TokenRateLimitPolicy document, as pydantic models.

This module is the Python half of the contract in docs/config.md; the Zig parser in
filter/src/config.zig is the other half, and both are tested against tests/vectors/config.json.

One set of classes serves two spellings of the same fields:

- a bare filter config (what the filter reads; Higress's ai-token-ratelimit names) is validated
  by field name: `rule_items[0].limit_by_per_header`, plus the Higress-injected `_rules_` and
  `_match_route_` (aliases, since Python names cannot start with `_`);
- a TokenRateLimitPolicy's `spec` is validated by camelCase alias: `ruleItems[0].limitByPerHeader`.

A policy's spec also says what it attaches to (`TargetRef`: Higress routes/domains/services,
an Istio selector or Gateway, a standalone Envoy listener) and where budgets are shared
(`PolicyRedis`: Higress's own Redis connection with a Secret reference for the password, or
the tokenlimit bridge for Envoy and Istio). `policy_filter_config` turns a policy into the
filter config; the CRD (tokenlimit.crd) is generated from these classes.

Pydantic reports errors at the key it actually read, so error paths come out in the document's
own spelling. Since a bare config needs `by_alias` for `_rules_`, a check refuses camelCase keys
there (the filter would refuse them as unknown fields).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from tokenlimit._checks import an_object as _object
from tokenlimit._checks import array as _array
from tokenlimit._checks import int_in as _int_in
from tokenlimit._checks import one_of as _one_of
from tokenlimit._checks import refusal as _error
from tokenlimit._checks import show
from tokenlimit._regexp import regexp_problem
from tokenlimit.fallback.model import FallbackSpec

API_VERSION = "tokenlimit.io/v1alpha1"
KIND = "TokenRateLimitPolicy"

LIMIT_MAX = 10**15
RULE_ITEMS_MAX = 32
LIMIT_KEYS_MAX = 64
KEY_BYTES_MAX = 256
RULE_NAME_CHARS_MAX = 64
REJECTED_MSG_BYTES_MAX = 1024
REJECTED_CODE_MIN, REJECTED_CODE_MAX = 100, 599
ROUTE_RULES_MAX = 256
SOURCE_NAME_BYTES_MAX = 128  # the value of a limit_by_* field
CONFIG_JSON_BYTES_MAX = 256 * 1024  # the filter refuses larger documents
PORT_MAX = 65535
REDIS_SERVICE_NAME_BYTES_MAX = 253
REDIS_CREDENTIAL_BYTES_MAX = 1024
REDIS_TIMEOUT_MS_MAX = 60_000
REDIS_DATABASE_MAX = 1_000_000

REJECTED_CODE_DEFAULT = 429
REJECTED_MSG_DEFAULT = "Too many requests"

Naming = Literal["snake", "camel"]
Loc = tuple[str | int, ...]

# Kubernetes spells initialisms in one case (`podIP`); pydantic's to_camel would say `limitByPerIp`.
_CAMEL_EXCEPTIONS = {"limit_by_per_ip": "limitByPerIP"}
_RULE_NAME = re.compile(r"[\x21-\x39\x3b-\x7a\x7c\x7e]+")  # printable ASCII minus space : { }
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_IP_HEADER_PREFIX = "from-header-"
_IP_REMOTE_ADDR = "from-remote-addr"
_REGEXP_PREFIX = "regexp:"
_WINDOWS = (
    "token_per_second",
    "token_per_minute",
    "token_per_hour",
    "token_per_day",
    "request_per_second",
    "request_per_minute",
    "request_per_hour",
    "request_per_day",
)
DEFAULT_OUTPUT_TOKENS_MAX = 10_000_000
WEIGHT_MAX = 1000
_EXACT_KINDS = ("limit_by_header", "limit_by_param", "limit_by_cookie", "limit_by_consumer")
_PER_KINDS = (
    "limit_by_per_header",
    "limit_by_per_param",
    "limit_by_per_cookie",
    "limit_by_per_consumer",
)
_IP_KIND = "limit_by_per_ip"
_ALL_KINDS = (*_EXACT_KINDS, *_PER_KINDS, _IP_KIND)
_MATCH_FIELDS = ("match_route", "match_domain", "match_service")


def _camel(name: str) -> str:
    return _CAMEL_EXCEPTIONS.get(name, to_camel(name))


def camel_name(name: str) -> str:
    """A filter config field's name in a policy (`limit_by_per_ip` → `limitByPerIP`)."""
    return _camel(name)


# --- values in error messages -------------------------------------------------------------


# --- value types ---------------------------------------------------------------------------


def _present(value: Any, handler: Callable[[Any], Any]) -> Any:
    # `token_per_minute: null` would read as "unset" here and as a type error in the filter;
    # refusing it keeps the two halves in agreement.
    if value is None:
        raise _error("must not be null (leave the field out to unset it)")
    return handler(value)


def _text(min_bytes: int, max_bytes: int | None) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(value, str):
            raise _error(f"must be a string, got {show(value)}")
        size = len(value.encode())
        if size < min_bytes or (max_bytes is not None and size > max_bytes):
            if min_bytes and size == 0:
                raise _error("must not be empty")
            raise _error(f"must be at most {max_bytes} bytes, got {size}")
        return handler(value)

    return WrapValidator(check)


def _check_rule_name(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not (
        _RULE_NAME.fullmatch(value) and len(value) <= RULE_NAME_CHARS_MAX
    ):
        raise _error(
            f"must be 1 to {RULE_NAME_CHARS_MAX} printable ASCII characters without space, "
            f"':', '{{' or '}}', got {show(value)}"
        )
    return handler(value)


def _check_ip_source(value: Any, handler: Callable[[Any], Any]) -> Any:
    text = value if isinstance(value, str) else ""
    if len(text.encode()) > SOURCE_NAME_BYTES_MAX:
        raise _error(f"must be at most {SOURCE_NAME_BYTES_MAX} bytes, got {len(text.encode())}")
    header = text.removeprefix(_IP_HEADER_PREFIX)
    if text != _IP_REMOTE_ADDR and not (text.startswith(_IP_HEADER_PREFIX) and header):
        raise _error(
            f"must be {_IP_REMOTE_ADDR} or {_IP_HEADER_PREFIX}<header name>, got {show(value)}"
        )
    return handler(value)


def _literal(expected: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value != expected:
            raise _error(f"must be {expected}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


def _enum(options: tuple[str, ...]) -> Any:
    """The schema half of `_one_of`: the CRD lists the values (the validator names them)."""
    return Field(json_schema_extra={"enum": list(options)})


def _boolean(value: Any, handler: Callable[[Any], Any]) -> Any:
    if type(value) is not bool:
        raise _error(f"must be true or false, got {show(value)}")
    return handler(value)


def _weight(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths are the filter's unit: more decimals would be silently rounded there.
    ok = type(value) in (int, float) and 0 <= value <= WEIGHT_MAX
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6
    if not ok:
        raise _error(
            f"must be a number from 0 to {WEIGHT_MAX} with at most 3 decimals, got {show(value)}"
        )
    return handler(value)


def _share(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths, as the filter reads them; 0 would mean "admit nothing".
    ok = type(value) in (int, float) and 0 < value <= 1
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6 and round(value * 1000) > 0
    if not ok:
        raise _error(
            f"must be a number greater than 0 and at most 1, with at most 3 decimals, "
            f"got {show(value)}"
        )
    return handler(value)


def _dns_name(pattern: re.Pattern[str], chars_max: int, what: str, chars: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not (isinstance(value, str) and pattern.fullmatch(value) and len(value) <= chars_max):
            raise _error(
                f"must be a {what} ({chars}, at most {chars_max} characters), got {show(value)}"
            )
        return handler(value)

    return WrapValidator(check)


_Present = WrapValidator(_present)
TokenLimit = Annotated[int, Field(ge=1, le=LIMIT_MAX), _int_in(1, LIMIT_MAX)]
OptTokenLimit = Annotated[TokenLimit | None, _Present]
RuleName = Annotated[
    str,
    Field(min_length=1, max_length=RULE_NAME_CHARS_MAX, pattern=f"^{_RULE_NAME.pattern}$"),
]
OptRuleName = Annotated[Annotated[RuleName, WrapValidator(_check_rule_name)] | None, _Present]
SourceName = Annotated[
    str, Field(min_length=1, max_length=SOURCE_NAME_BYTES_MAX), _text(1, SOURCE_NAME_BYTES_MAX)
]
OptSourceName = Annotated[SourceName | None, _Present]
OptConsumer = Annotated[
    Annotated[str, Field(max_length=SOURCE_NAME_BYTES_MAX), _text(0, SOURCE_NAME_BYTES_MAX)] | None,
    _Present,
]
OptIpSource = Annotated[
    Annotated[str, Field(max_length=SOURCE_NAME_BYTES_MAX), WrapValidator(_check_ip_source)] | None,
    _Present,
]
OptCredential = Annotated[
    Annotated[
        str, Field(max_length=REDIS_CREDENTIAL_BYTES_MAX), _text(0, REDIS_CREDENTIAL_BYTES_MAX)
    ]
    | None,
    _Present,
]
Key = Annotated[str, Field(min_length=1, max_length=KEY_BYTES_MAX), _text(1, KEY_BYTES_MAX)]
Port = Annotated[int, Field(ge=1, le=PORT_MAX), _int_in(1, PORT_MAX)]
ADMISSIONS = ("postpaid", "reserve")
ALGORITHMS = ("fixed", "sliding", "token_bucket")
FAILURE_MODES = ("open", "closed", "local")
OptAdmission = Annotated[Annotated[str, _enum(ADMISSIONS), _one_of(ADMISSIONS)] | None, _Present]
OptAlgorithm = Annotated[Annotated[str, _enum(ALGORITHMS), _one_of(ALGORITHMS)] | None, _Present]
OptFailureMode = Annotated[
    Annotated[str, _enum(FAILURE_MODES), _one_of(FAILURE_MODES)] | None, _Present
]
OptBool = Annotated[Annotated[bool, WrapValidator(_boolean)] | None, _Present]
OptOutputTokens = Annotated[
    Annotated[
        int,
        Field(ge=0, le=DEFAULT_OUTPUT_TOKENS_MAX),
        _int_in(0, DEFAULT_OUTPUT_TOKENS_MAX),
    ]
    | None,
    _Present,
]
OptWeight = Annotated[
    Annotated[float | int, Field(ge=0, le=WEIGHT_MAX), WrapValidator(_weight)] | None, _Present
]
OptShare = Annotated[
    Annotated[float | int, Field(gt=0, le=1), WrapValidator(_share)] | None, _Present
]
Matches = Annotated[list[Annotated[str, _text(0, None)]], _array(0, None, "strings")]
OptMatches = Annotated[Matches | None, _Present]


# --- the models ----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=AliasGenerator(validation_alias=_camel, serialization_alias=lambda n: n),
        validate_by_name=True,
        validate_by_alias=True,
        # Field docstrings become schema descriptions: `kubectl explain` shows them.
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any, info: ValidationInfo) -> Any:
        """In a bare config, refuse camelCase keys (and `rules` for `_rules_`)."""
        naming = _naming(info)
        if naming != "snake" or not isinstance(data, dict):
            return data
        wanted = set(_keys(cls, naming))
        foreign = [k for k in data if k not in wanted and k in _keys(cls, "any")]
        if foreign:
            raise PydanticCustomError("unknown_field", "unknown field", {"at": (foreign[0],)})
        return data


def _naming(info: ValidationInfo) -> Naming:
    context = info.context or {}
    return context.get("naming", "snake")


def _doc_key(model: type[BaseModel], name: str, naming: Naming) -> str:
    """The key that spells field `name` in a document of this naming."""
    alias = model.model_fields[name].validation_alias
    assert isinstance(alias, str)
    return alias if naming == "camel" or alias.startswith("_") else name


def _keys(model: type[BaseModel], naming: Naming | Literal["any"]) -> list[str]:
    if naming == "any":
        return [k for n in model.model_fields for k in (n, _doc_key(model, n, "camel"))]
    return [_doc_key(model, n, naming) for n in model.model_fields]


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """CRD validation rules (CEL) for a model's schema: the server-side half of a check the
    model also makes, so `kubectl apply` refuses what the loader would refuse."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


_WINDOWS_RULE = (
    " || ".join(f"has(self.{_camel(w)})" for w in _WINDOWS),
    "needs at least one of " + ", ".join(_camel(w) for w in _WINDOWS),
)


def _at_least_one_window(obj: BaseModel, info: ValidationInfo) -> None:
    if all(getattr(obj, w) is None for w in _WINDOWS):
        names = ", ".join(_doc_key(type(obj), w, _naming(info)) for w in _WINDOWS)
        raise _error(f"needs at least one of {names}")


class _Windows(_Model):
    """The budget windows: at least one token or request limit per second/minute/hour/day."""

    model_config = ConfigDict(json_schema_extra=_cel(_WINDOWS_RULE))

    token_per_second: OptTokenLimit = None
    """Tokens per second (input + output, weighted)."""
    token_per_minute: OptTokenLimit = None
    """Tokens per minute."""
    token_per_hour: OptTokenLimit = None
    """Tokens per hour."""
    token_per_day: OptTokenLimit = None
    """Tokens per day (resets at midnight UTC)."""
    request_per_second: OptTokenLimit = None
    """Requests per second."""
    request_per_minute: OptTokenLimit = None
    """Requests per minute."""
    request_per_hour: OptTokenLimit = None
    """Requests per hour."""
    request_per_day: OptTokenLimit = None
    """Requests per day."""

    @model_validator(mode="after")
    def _windows(self, info: ValidationInfo) -> Self:
        _at_least_one_window(self, info)
        return self


class GlobalThreshold(_Windows):
    """One budget shared by every request the rule sees."""


class _Key(_Model):
    key: Key
    """A literal value, `*`, `regexp:<pattern>`, an IP or a CIDR (depends on the limitBy* field)."""


class LimitKey(_Windows, _Key):
    """A key value (literal, `*`, `regexp:...`, IP or CIDR) and its budget windows."""

    # (_Key last among the bases: pydantic orders fields base-last-first, so `key` comes first
    # in rendered configs, as Higress users write it.)


class RuleItem(_Model):
    """Where the key comes from (exactly one `limit_by_*`) and the budgets per key."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "[" + ", ".join(f"has(self.{_camel(k)})" for k in _ALL_KINDS) + "]"
                ".exists_one(x, x)",
                "needs exactly one limitBy* field",
            )
        )
    )

    limit_by_header: OptSourceName = None
    """Key: the value of this request header, compared literally with each key."""
    limit_by_param: OptSourceName = None
    """Key: the value of this query parameter, compared literally."""
    limit_by_cookie: OptSourceName = None
    """Key: the value of this cookie, compared literally."""
    limit_by_consumer: OptConsumer = None
    """Key: the consumer (header x-mse-consumer, set by auth plugins); the value is ignored."""
    limit_by_per_header: OptSourceName = None
    """A budget per distinct value of this request header (keys: `*` or `regexp:<RE2>`)."""
    limit_by_per_param: OptSourceName = None
    """A budget per distinct value of this query parameter."""
    limit_by_per_cookie: OptSourceName = None
    """A budget per distinct value of this cookie."""
    limit_by_per_consumer: OptConsumer = None
    """A budget per consumer (x-mse-consumer); the value is ignored."""
    limit_by_per_ip: OptIpSource = None
    """A budget per client address: `from-remote-addr` or `from-header-<name>` (keys: IPs,
    CIDRs or `*`)."""
    limit_keys: Annotated[
        list[LimitKey],
        Field(min_length=1, max_length=LIMIT_KEYS_MAX),
        _array(1, LIMIT_KEYS_MAX, "limit keys"),
    ]
    """Key values and their budgets; the first matching entry applies."""

    @property
    def kind(self) -> str:
        """The one `limit_by_*` field set (snake_case name)."""
        return next(k for k in _ALL_KINDS if getattr(self, k) is not None)

    @property
    def source(self) -> str:
        """The value of the `limit_by_*` field: header/param/cookie name or IP source."""
        value = getattr(self, self.kind)
        assert isinstance(value, str)
        return value

    @model_validator(mode="after")
    def _one_source_and_keys(self, info: ValidationInfo) -> Self:
        naming = _naming(info)
        kinds = [k for k in _ALL_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            spelled = [_doc_key(RuleItem, k, naming) for k in kinds]
            family = "limitBy*" if naming == "camel" else "limit_by_*"
            got = "none" if not kinds else f"{len(kinds)}: {', '.join(spelled)}"
            raise _error(f"needs exactly one {family} field, got {got}")
        keys_key = _doc_key(RuleItem, "limit_keys", naming)
        for index, limit_key in enumerate(self.limit_keys):
            problem = key_problem(kinds[0], limit_key.key, naming)
            if problem is not None:
                raise _error(problem, (keys_key, index, "key"))
        return self


class RedisConfig(_Model):
    """The filter's `redis` object (Higress's names): where the budget store is.

    On Higress `service_name` is the Redis service as Higress knows it; on Envoy and Istio it
    is the Envoy cluster of the tokenlimit bridge. A TokenRateLimitPolicy never spells this
    object out: `policy_filter_config` derives it from `spec.redis` (see PolicyRedis).
    """

    service_name: Annotated[
        str,
        Field(min_length=1, max_length=REDIS_SERVICE_NAME_BYTES_MAX),
        _text(1, REDIS_SERVICE_NAME_BYTES_MAX),
    ]
    service_port: Annotated[Port | None, _Present] = None
    username: OptCredential = None
    password: OptCredential = None
    timeout: Annotated[  # milliseconds
        Annotated[int, Field(ge=1, le=REDIS_TIMEOUT_MS_MAX), _int_in(1, REDIS_TIMEOUT_MS_MAX)]
        | None,
        _Present,
    ] = None
    database: Annotated[
        Annotated[int, Field(ge=0, le=REDIS_DATABASE_MAX), _int_in(0, REDIS_DATABASE_MAX)] | None,
        _Present,
    ] = None


class Weights(_Model):
    """What one token of each kind costs (1 = counts once): output can cost more than input."""

    input: OptWeight = None
    """Cost of one input (prompt) token."""
    output: OptWeight = None
    """Cost of one output (completion) token."""
    cached: OptWeight = None
    """Cost of one cached input token."""


_OptWeights = Annotated[Annotated[Weights, WrapValidator(_object)] | None, _Present]
_OptGlobal = Annotated[Annotated[GlobalThreshold, WrapValidator(_object)] | None, _Present]
_OptItems = Annotated[
    Annotated[
        list[RuleItem],
        Field(min_length=1, max_length=RULE_ITEMS_MAX),
        _array(1, RULE_ITEMS_MAX, "rule items"),
    ]
    | None,
    _Present,
]
_OptRedis = Annotated[Annotated[RedisConfig, WrapValidator(_object)] | None, _Present]


class _BudgetFields(_Model):
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
        _Present,
    ] = None
    """HTTP status of a rejection (default 429)."""
    rejected_msg: Annotated[
        Annotated[str, Field(max_length=REJECTED_MSG_BYTES_MAX), _text(0, REJECTED_MSG_BYTES_MAX)]
        | None,
        _Present,
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

    def _check_rule(self, info: ValidationInfo) -> None:
        naming = _naming(info)
        model = type(self)
        both = self.global_threshold is not None and self.rule_items is not None
        if both or (self.global_threshold is None and self.rule_items is None):
            pair = f"{_doc_key(model, 'global_threshold', naming)} or " + _doc_key(
                model, "rule_items", naming
            )
            raise _error(
                f"needs exactly one of {pair}, got both"
                if both
                else f"needs one of {pair}: a rule without a budget limits nothing"
            )
        if self.rule_name is None:
            raise _error("required", (_doc_key(model, "rule_name", naming),))


class _RuleFields(_BudgetFields):
    """A rule as the filter reads it: the budget fields plus the filter's `redis` object."""

    redis: _OptRedis = None


# --- a policy's attachment and store (TokenRateLimitPolicy only) ---------------------------

GATEWAYS = ("higress", "istio", "envoy")
HIGRESS_SYSTEM_NAMESPACE = "higress-system"
ATTACHMENTS_MAX = 64
LISTENER_NAME_CHARS_MAX = 128
LABELS_MAX = 64
_SUBDOMAIN_PATTERN = _DNS_SUBDOMAIN.pattern
_LABEL_PATTERN = _DNS_LABEL.pattern
_INGRESS_NAME = re.compile(rf"(?:{_LABEL_PATTERN}/)?{_SUBDOMAIN_PATTERN}")
_DOMAIN = re.compile(rf"(?:\*\.)?{_SUBDOMAIN_PATTERN}")
_SERVICE_MATCH = re.compile(rf"{_SUBDOMAIN_PATTERN}(?::[0-9]{{1,5}})?")
_LISTENER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_LABEL_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_HOST = re.compile(_SUBDOMAIN_PATTERN)

_SUBDOMAIN_NAME = _dns_name(
    _DNS_SUBDOMAIN, 253, "DNS subdomain", "lowercase letters, digits, '-', '.'"
)
_LABEL_NAME = _dns_name(_DNS_LABEL, 63, "DNS label", "lowercase letters, digits, '-'")
SubdomainName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=f"^{_SUBDOMAIN_PATTERN}$"), _SUBDOMAIN_NAME
]
LabelName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=f"^{_LABEL_PATTERN}$"), _LABEL_NAME
]


def _matching(pattern: re.Pattern[str], chars_max: int, what: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not (isinstance(value, str) and pattern.fullmatch(value) and len(value) <= chars_max):
            raise _error(f"must be {what}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


def _check_domain(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, str) and value.endswith(".*"):
        raise _error(
            f"the filter matches exact hosts and '*.suffix' patterns only, got {show(value)} "
            "(list each host, or use '*.example.com')"
        )
    return handler(value)


def _check_labels(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict):
        raise _error(f"must be an object of label names to values, got {show(value)}")
    if not 1 <= len(value) <= LABELS_MAX:
        raise _error(f"must hold 1 to {LABELS_MAX} labels, got {len(value)}")
    for key, label in value.items():
        problem = _label_problem(key, label)
        if problem is not None:
            raise _error(problem, (key,) if isinstance(key, str) else ())
    return handler(value)


def _label_problem(key: object, value: object) -> str | None:
    """Why `key: value` is not a Kubernetes label, or None."""
    if not isinstance(key, str):
        return f"label names must be strings, got {show(key)}"
    prefix, slash, name = key.rpartition("/")
    if slash and not (_DNS_SUBDOMAIN.fullmatch(prefix) and len(prefix) <= 253):
        return f"label prefix must be a DNS subdomain, got {show(prefix)}"
    if not (_LABEL_KEY_NAME.fullmatch(name) and len(name) <= 63):
        return (
            "label name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending "
            f"with a letter or digit, got {show(name)}"
        )
    if not isinstance(value, str):
        return f"must be a string, got {show(value)}"
    if value and not (_LABEL_KEY_NAME.fullmatch(value) and len(value) <= 63):
        return f"label value must be empty or like a label name, got {show(value)}"
    return None


def _strings(pattern: re.Pattern[str], chars_max: int, what: str, *checks: WrapValidator) -> Any:
    item = Annotated[
        str,
        Field(max_length=chars_max, pattern=f"^{pattern.pattern}$"),
        _matching(pattern, chars_max, what),
        *checks,  # outermost: they run first, with their more specific messages
    ]
    return Annotated[
        Annotated[
            list[item],  # type: ignore[valid-type]
            Field(min_length=1, max_length=ATTACHMENTS_MAX),
            _array(1, ATTACHMENTS_MAX, "strings"),
        ]
        | None,
        _Present,
    ]


class LabelSelector(_Model):
    """Istio workload selector: pods (gateways) carrying all of these labels."""

    match_labels: Annotated[
        dict[str, str],
        Field(min_length=1, max_length=LABELS_MAX),
        WrapValidator(_check_labels),
    ]
    """Labels of the gateway pods, e.g. `istio: ingressgateway`."""


class GatewayRef(_Model):
    """A Kubernetes Gateway API `Gateway` in the policy's namespace."""

    name: SubdomainName
    """Name of the Gateway (gateway.networking.k8s.io) to attach to."""


class TargetRef(_Model):
    """What the policy attaches to. `gateway` picks the kind; the other fields belong to it."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.gateway == 'higress' || "
                "!(has(self.ingresses) || has(self.domains) || has(self.services))",
                "ingresses, domains and services attach to Higress (gateway: higress)",
            ),
            (
                "self.gateway == 'istio' || !(has(self.selector) || has(self.gatewayRef))",
                "selector and gatewayRef attach to Istio (gateway: istio)",
            ),
            (
                "self.gateway != 'istio' || has(self.selector) != has(self.gatewayRef)",
                "gateway: istio needs exactly one of selector or gatewayRef",
            ),
            ("self.gateway == 'envoy' || !has(self.listener)", "listener is for gateway: envoy"),
        )
    )

    gateway: Annotated[str, _enum(GATEWAYS), _one_of(GATEWAYS)]
    """The gateway kind: higress, istio or envoy (standalone Envoy)."""
    ingresses: _strings(_INGRESS_NAME, 317, "a route name: namespace/name or name") = None
    """Higress: routes (Ingress names, `namespace/name`) the budget applies to."""
    domains: _strings(_DOMAIN, 255, "a host name or *.suffix", WrapValidator(_check_domain)) = None
    """Higress: request hosts (exact, or `*.example.com`) the budget applies to."""
    services: _strings(_SERVICE_MATCH, 259, "a service host, optionally with :port") = None
    """Higress: upstream services (`llm.ns.svc.cluster.local`, `qwen.dns:443`) it applies to."""
    selector: Annotated[Annotated[LabelSelector, WrapValidator(_object)] | None, _Present] = None
    """Istio: the gateway workloads (pods) that run the filter."""
    gateway_ref: Annotated[Annotated[GatewayRef, WrapValidator(_object)] | None, _Present] = None
    """Istio: a Gateway API Gateway in the policy's namespace that runs the filter."""
    listener: Annotated[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=LISTENER_NAME_CHARS_MAX,
                pattern=f"^{_LISTENER_NAME.pattern}$",
            ),
            _matching(
                _LISTENER_NAME,
                LISTENER_NAME_CHARS_MAX,
                f"1 to {LISTENER_NAME_CHARS_MAX} letters, digits, '-', '_' or '.'",
            ),
        ]
        | None,
        _Present,
    ] = None
    """Envoy: the listener the filter runs on (default `tokenlimit`)."""

    @model_validator(mode="after")
    def _fields_of_the_gateway(self) -> Self:
        owners = {
            "ingresses": "higress",
            "domains": "higress",
            "services": "higress",
            "selector": "istio",
            "gateway_ref": "istio",
            "listener": "envoy",
        }
        for name, owner in owners.items():
            if getattr(self, name) is not None and owner != self.gateway:
                raise _error(
                    f"attaches to {owner}, not {self.gateway} (gateway: {self.gateway})",
                    (_doc_key(TargetRef, name, "camel"),),
                )
        if self.gateway == "istio" and (self.selector is None) == (self.gateway_ref is None):
            got = "both" if self.selector is not None else "neither"
            raise _error(
                f"gateway: istio needs exactly one of selector or gatewayRef, got {got} "
                "(without one, Istio would run the filter on every workload of the namespace)"
            )
        return self

    @property
    def attachments(self) -> dict[str, list[str]]:
        """Higress attachments by Higress matchRule field: {'ingress': [...], ...}."""
        found = {"ingress": self.ingresses, "domain": self.domains, "service": self.services}
        return {k: list(v) for k, v in found.items() if v}


class SecretKeyRef(_Model):
    """A key of a Secret in the policy's namespace (never the value itself)."""

    name: SubdomainName
    """Name of the Secret."""
    key: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=f"^{_SECRET_KEY.pattern}$"),
        _matching(_SECRET_KEY, 253, "a Secret key (letters, digits, '-', '_', '.')"),
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


_OptServiceRef = Annotated[Annotated[ServiceRef, WrapValidator(_object)] | None, _Present]
_OptHost = Annotated[
    Annotated[
        str,
        Field(min_length=1, max_length=REDIS_SERVICE_NAME_BYTES_MAX),
        _text(1, REDIS_SERVICE_NAME_BYTES_MAX),
    ]
    | None,
    _Present,
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
        if self.host is not None and _host_problem(self.host) is not None:
            raise _error(str(_host_problem(self.host)), ("host",))
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
    port: Annotated[Port | None, _Present] = None
    """Higress: the port of the Redis service (6379; 80 for `.static` services)."""
    database: Annotated[
        Annotated[int, Field(ge=0, le=REDIS_DATABASE_MAX), _int_in(0, REDIS_DATABASE_MAX)] | None,
        _Present,
    ] = None
    """Higress: the Redis database number (default 0)."""
    username: OptCredential = None
    """Higress: the Redis ACL user name."""
    password_secret_ref: Annotated[
        Annotated[SecretKeyRef, WrapValidator(_object)] | None, _Present
    ] = None
    """Higress: the Secret key holding the Redis password, read when the policy is applied."""
    timeout_ms: Annotated[
        Annotated[int, Field(ge=1, le=REDIS_TIMEOUT_MS_MAX), _int_in(1, REDIS_TIMEOUT_MS_MAX)]
        | None,
        _Present,
    ] = None
    """How long a request may wait for the store, in milliseconds (default 1000)."""
    bridge: Annotated[Annotated[BridgeRef, WrapValidator(_object)] | None, _Present] = None
    """Envoy and Istio: where the tokenlimit bridge listens."""


class PolicySpec(_BudgetFields):
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

    target_ref: Annotated[Annotated[TargetRef, WrapValidator(_object)] | None, _Present] = None
    """What the policy attaches to. Without it, the gateway the policy is rendered for
    decides (Higress: every route; Envoy: the `tokenlimit` listener)."""
    redis: Annotated[Annotated[PolicyRedis, WrapValidator(_object)] | None, _Present] = None
    """The shared budget store (Redis). Without it, budgets are per gateway."""
    fallback: Annotated[Annotated[FallbackSpec, WrapValidator(_object)] | None, _Present] = None
    """Model fallback routes under the same budget (docs/fallback.md)."""

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
    if target.gateway == "istio" and redis.bridge.host is not None and _is_ip(redis.bridge.host):
        raise _error(
            "Istio names clusters by host, not address: give the bridge a DNS name, or use "
            "service: {name, namespace}",
            ("redis", "bridge", "host"),
        )


class RouteRule(_RuleFields):
    """A Higress `_rules_` entry: where it applies and the rule for those requests."""

    match_route: OptMatches = Field(default=None, alias="_match_route_")
    match_domain: OptMatches = Field(default=None, alias="_match_domain_")
    match_service: OptMatches = Field(default=None, alias="_match_service_")

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
        Annotated[list[RouteRule], _array(0, ROUTE_RULES_MAX, "rule objects")] | None, _Present
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
        if size > CONFIG_JSON_BYTES_MAX:
            raise _error(
                f"config is {size} bytes as JSON, more than the {CONFIG_JSON_BYTES_MAX} "
                "the filter accepts"
            )
        return self

    @property
    def rule_names(self) -> list[str]:
        """Every rule name in the document, top level first."""
        names = [self.rule_name] + [r.rule_name for r in self.rules or []]
        return [n for n in names if n is not None]


class PolicyMetadata(BaseModel):
    # Kubernetes owns metadata: objects read back from a cluster carry uid, labels,
    # managedFields... Only name and namespace matter here, so the rest is ignored.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: Annotated[str, _SUBDOMAIN_NAME]
    namespace: Annotated[Annotated[str, _LABEL_NAME] | None, _Present] = None


class TokenRateLimitPolicy(_Model):
    """The project's policy document (the CRD's shape)."""

    api_version: Annotated[str, _literal(API_VERSION)]
    kind: Annotated[str, _literal(KIND)]
    metadata: Annotated[PolicyMetadata, WrapValidator(_object)]
    spec: Annotated[PolicySpec, WrapValidator(_object)]
    status: dict[str, Any] | None = None  # written by the operator; ignored on input


# --- store names: what Higress can resolve, what Envoy and Istio call the bridge -------------

ENVOY_BRIDGE_CLUSTER = "tokenlimit-bridge"  # the cluster render.envoy adds for the bridge
HIGRESS_STATIC_PORT = 80  # Higress serves `.static` registry entries on this logical port
REDIS_PORT_DEFAULT = 6379


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if _HOST.fullmatch(host) and len(host) <= 253:
        return None
    return f"must be a host name (lowercase letters, digits, '-', '.') or an IP, got {show(host)}"


def higress_redis_problem(host: str, port: int | None) -> str | None:
    """Why Higress would answer `bad argument` on Redis init for this name and port, or None.

    Higress's Redis ABI takes an Envoy cluster, `outbound|<port>||<host>`; a cluster it does
    not have fails `proxy_redis_init` with `bad argument` (alibaba/higress #851, #1104,
    #1486, #1539, #3135). The message says what to write instead. A message about the port
    starts with `port: `.
    """
    if "://" in host:
        return (
            f"must be the Redis service as Higress names it, not a URL, got {show(host)}: "
            "write e.g. redis.dns (a DNS service in Higress's registry), redis.static (a static "
            "address) or redis.<namespace>.svc.cluster.local"
        )
    name, colon, tail = host.rpartition(":")
    if colon and tail.isdigit() and not _is_ip(host):
        return f"put the port in redis.port, not in the name: host: {name}, port: {tail}"
    if _is_ip(host):
        return (
            f"Higress reaches Redis through its service registry, not by address, got "
            f"{show(host)}: register a static service for {host}:{port or REDIS_PORT_DEFAULT} "
            "(McpBridge registry type static) named e.g. redis, then write host: redis.static "
            "and leave port out (static services use Higress's logical port 80)"
        )
    if not (_HOST.fullmatch(host) and len(host) <= 253):
        return (
            "must be a service name Higress knows (lowercase letters, digits, '-', '.'), got "
            f"{show(host)}"
        )
    labels = host.split(".")
    if labels[-1] == "static":
        if port not in (None, HIGRESS_STATIC_PORT):
            return (
                f"port: Higress serves .static services on its logical port 80 (the real "
                f"address and port are in the registry entry), got {port}: leave port out "
                "or set 80"
            )
        return None
    if labels[-1] == "dns":
        if port is None:
            return (
                f"port: {host} is a DNS service in Higress's registry; its cluster is "
                f"outbound|<port>||{host} with the port of that registry entry: set redis.port "
                "to it (usually 6379)"
            )
        return None
    if len(labels) == 1:
        return (
            f"{show(host)} alone is not a name Higress can resolve: for a Kubernetes Service "
            f"write service: {{name: {host}, namespace: <namespace>}} (or host: "
            f"{host}.<namespace>.svc.cluster.local), or register it in Higress and write "
            f"host: {host}.dns"
        )
    if len(labels) >= 3 and labels[2] == "svc":
        if len(labels) >= 5:
            return None  # <name>.<namespace>.svc.<cluster domain>
        if len(labels) == 4:
            return (
                "a Kubernetes Service name is <name>.<namespace>.svc.cluster.local, got "
                f"{show(host)}"
            )
    if len(labels) == 2 or labels[2:] == ["svc"]:
        return (
            f"Higress needs the full Service name, got {show(host)}: write "
            f"{labels[0]}.{labels[1]}.svc.cluster.local (or service: {{name: {labels[0]}, "
            f"namespace: {labels[1]}}})"
        )
    return (
        f"Higress resolves Redis only through its service registry, got {show(host)}: register "
        f"{host} as a DNS service (McpBridge registry type dns) named e.g. redis and write "
        "host: redis.dns with that entry's port, or point at a Kubernetes Service "
        "(service: {name, namespace})"
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def higress_redis_name(redis: PolicyRedis) -> tuple[str, int]:
    """The Redis service name and port the Higress filter config carries."""
    host = redis.service.host if redis.service is not None else str(redis.host)
    if redis.port is not None:
        return host, redis.port
    return host, HIGRESS_STATIC_PORT if host.endswith(".static") else REDIS_PORT_DEFAULT


def istio_cluster(host: str, port: int) -> str:
    """The Envoy cluster Istio generates for `host:port`: `outbound|<port>||<host>`."""
    return f"outbound|{port}||{host}"


def filter_redis(spec: PolicySpec) -> dict[str, Any] | None:
    """The filter's `redis` object for a policy's store (no password: see render.higress)."""
    redis = spec.redis
    if redis is None:
        return None
    found: dict[str, Any]
    if spec.gateway == "higress":
        host, port = higress_redis_name(redis)
        found = {"service_name": host, "service_port": port}
        if redis.username is not None:
            found["username"] = redis.username
    else:
        bridge = redis.bridge
        assert bridge is not None  # the model refuses Envoy/Istio stores without a bridge
        name = (
            istio_cluster(bridge.address, bridge.port)
            if spec.gateway == "istio"
            else ENVOY_BRIDGE_CLUSTER
        )
        found = {"service_name": name, "service_port": bridge.port}
    if redis.timeout_ms is not None:
        found["timeout"] = redis.timeout_ms
    if spec.gateway == "higress" and redis.database is not None:
        found["database"] = redis.database
    return found


# --- key semantics -------------------------------------------------------------------------


def key_problem(kind: str, key: str, naming: Naming = "snake") -> str | None:
    """Why `key` cannot be a limit key of a rule item of this `limit_by_*` kind, or None."""
    spelled = _doc_key(RuleItem, kind, naming)
    if kind in _EXACT_KINDS:
        return None
    if kind == _IP_KIND:
        return None if key == "*" else _ip_problem(key)
    if key == "*":
        return None
    if not key.startswith(_REGEXP_PREFIX):
        exact = spelled.replace("_per_", "_").replace("Per", "")
        return (
            f"must be '*' or 'regexp:<pattern>' for {spelled}, got {show(key)} "
            f"(to budget one literal value, use {exact})"
        )
    return regexp_problem(key[len(_REGEXP_PREFIX) :])


def _ip_problem(key: str) -> str | None:
    address, slash, prefix = key.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"must be '*', an IP address or a CIDR such as 10.0.0.0/8, got {show(key)}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return f"IPv6 zone ids are not supported, got {show(key)}"
    if not slash:
        return None
    if not prefix.isdigit() or not prefix.isascii():
        return f"CIDR prefix must be a number, got {show(key)}"
    # The filter compares an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address.
    mapped = isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
    family_bits = 32 if mapped else ip.max_prefixlen
    if len(prefix) > 3 or int(prefix) > family_bits:
        family = "IPv4" if family_bits == 32 else "IPv6"
        return (
            f"CIDR prefix /{prefix} is longer than {family_bits} bits ({family}), got {show(key)}"
        )
    return None


# --- validation entry points and errors ----------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason a document is refused: where (in the document's names) and why."""

    loc: Loc
    reason: str

    @property
    def path(self) -> str:
        return field_path(self.loc)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.loc else self.reason


class ConfigInvalid(ValueError):
    """A document broke the contract; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def field_path(loc: Sequence[str | int]) -> str:
    """`('rule_items', 0, 'limit_keys', 1, 'key')` -> `rule_items[0].limit_keys[1].key`."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts)


def parse_filter_config(data: object) -> FilterConfig:
    """Validate a bare filter config (snake_case / Higress names)."""
    try:
        return FilterConfig.model_validate(
            data, by_name=True, by_alias=True, context={"naming": "snake"}
        )
    except ValidationError as exc:
        raise ConfigInvalid(problems(exc, FilterConfig, "snake")) from None


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
        mode="json", by_alias=True, exclude_none=True, include=set(_BudgetFields.model_fields)
    )
    redis = filter_redis(spec)
    if redis is not None:
        document["redis"] = redis
    return parse_filter_config(document)


def filter_json(cfg: FilterConfig) -> str:
    """The compact JSON the filter reads: Higress names, unset fields left out, fixed order."""
    document = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def problems(exc: ValidationError, root: type[BaseModel], naming: Naming) -> list[Problem]:
    """The problems of a failed validation, in the document's names, with suggestions."""
    found: list[Problem] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        loc: Loc = tuple(error["loc"]) + tuple(ctx.get("at", ()))
        if error["type"] == "missing":
            loc = _respelled(root, loc, naming)
        problem = Problem(loc, _reason(error, root, loc, naming))
        if problem not in found:
            found.append(problem)
    return found


def _reason(error: Any, root: type[BaseModel], loc: Loc, naming: Naming) -> str:
    kind = error["type"]
    if kind in ("extra_forbidden", "unknown_field"):
        return _unknown_field(root, loc, naming)
    if kind == "tokenlimit":
        return str(error["ctx"]["reason"])
    if kind == "missing":
        return "required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be an object, got {show(error['input'])}"
    if kind == "list_type":
        return f"must be an array, got {show(error['input'])}"
    message = str(error["msg"])
    return f"{message[:1].lower()}{message[1:]}, got {show(error['input'])}"


def _unknown_field(root: type[BaseModel], loc: Loc, naming: Naming) -> str:
    model = _model_at(root, loc[:-1], naming)
    if model is None or not isinstance(loc[-1], str):
        return "unknown field"
    close = difflib.get_close_matches(loc[-1], _keys(model, naming), n=1, cutoff=0.6)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


def _respelled(root: type[BaseModel], loc: Loc, naming: Naming) -> Loc:
    """Pydantic names a missing field by its alias; say it as the document would."""
    model = _model_at(root, loc[:-1], naming)
    if model is None:
        return loc
    for name in model.model_fields:
        if loc[-1] in (name, _doc_key(model, name, "camel")):
            return (*loc[:-1], _doc_key(model, name, naming))
    return loc


def _model_at(root: type[BaseModel], loc: Loc, naming: Naming) -> type[BaseModel] | None:
    """The model class that validates the object at `loc` (document keys), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        names = {_doc_key(model, n, naming): n for n in model.model_fields}
        if part not in names:
            return None
        model = _model_in(model.model_fields[names[part]])
    return model


def _model_in(field: FieldInfo) -> type[BaseModel] | None:
    pending: list[Any] = [field.annotation]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
            pending.extend(typing.get_args(annotation))
    return None
