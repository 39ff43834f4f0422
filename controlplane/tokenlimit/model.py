"""The filter configuration and the TokenRateLimitPolicy document, as pydantic models.

This module is the Python half of the contract in docs/config.md; the Zig parser in
filter/src/config.zig is the other half, and both are tested against tests/vectors/config.json.

One set of classes serves two spellings of the same fields:

- a bare filter config (what the filter reads; Higress's ai-token-ratelimit names) is validated
  by field name: `rule_items[0].limit_by_per_header`, plus the Higress-injected `_rules_` and
  `_match_route_` (aliases, since Python names cannot start with `_`);
- a TokenRateLimitPolicy's `spec` is validated by camelCase alias: `ruleItems[0].limitByPerHeader`.

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

from tokenlimit._regexp import regexp_problem

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
SHOWN_CHARS_MAX = 40  # longer bad values are cut in error messages

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


# --- values in error messages -------------------------------------------------------------


def show(value: object) -> str:
    """A bad value as an error message quotes it: JSON spelling, cut when long."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= SHOWN_CHARS_MAX:
        return text
    cut = text[: SHOWN_CHARS_MAX - 4] + "..."
    return cut + '"' if text.startswith('"') else cut


def _error(message: str, at: Loc = ()) -> PydanticCustomError:
    """A refusal; `at` extends the error's location below the object that raised it."""
    # Braces in a message would be read as placeholders by pydantic: pass it through ctx.
    return PydanticCustomError("tokenlimit", "{reason}", {"reason": message, "at": at})


# --- value types ---------------------------------------------------------------------------


def _present(value: Any, handler: Callable[[Any], Any]) -> Any:
    # `token_per_minute: null` would read as "unset" here and as a type error in the filter;
    # refusing it keeps the two halves in agreement.
    if value is None:
        raise _error("must not be null (leave the field out to unset it)")
    return handler(value)


def _int_in(low: int, high: int) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        # `type(...) is int` refuses true/false, which Python counts as integers.
        if type(value) is not int or not low <= value <= high:
            raise _error(f"must be an integer from {low} to {high}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


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


def _array(low: int, high: int | None, noun: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(value, list):
            raise _error(f"must be an array of {noun}, got {show(value)}")
        if len(value) < low or (high is not None and len(value) > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            raise _error(f"must hold {bounds} {noun}, got {len(value)}")
        return handler(value)

    return WrapValidator(check)


def _object(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict | BaseModel):
        raise _error(f"must be an object, got {show(value)}")
    return handler(value)


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


def _one_of(options: tuple[str, ...]) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value not in options:
            raise _error(f"must be one of {', '.join(options)}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


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
RuleName = Annotated[str, Field(min_length=1, max_length=RULE_NAME_CHARS_MAX)]
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
Key = Annotated[str, Field(min_length=1), _text(1, KEY_BYTES_MAX)]
Port = Annotated[int, Field(ge=1, le=PORT_MAX), _int_in(1, PORT_MAX)]
ADMISSIONS = ("postpaid", "reserve")
ALGORITHMS = ("fixed", "sliding", "token_bucket")
FAILURE_MODES = ("open", "closed", "local")
OptAdmission = Annotated[Annotated[str, _one_of(ADMISSIONS)] | None, _Present]
OptAlgorithm = Annotated[Annotated[str, _one_of(ALGORITHMS)] | None, _Present]
OptFailureMode = Annotated[Annotated[str, _one_of(FAILURE_MODES)] | None, _Present]
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


def _at_least_one_window(obj: BaseModel, info: ValidationInfo) -> None:
    if all(getattr(obj, w) is None for w in _WINDOWS):
        names = ", ".join(_doc_key(type(obj), w, _naming(info)) for w in _WINDOWS)
        raise _error(f"needs at least one of {names}")


class GlobalThreshold(_Model):
    """One budget shared by every request the rule sees."""

    token_per_second: OptTokenLimit = None
    token_per_minute: OptTokenLimit = None
    token_per_hour: OptTokenLimit = None
    token_per_day: OptTokenLimit = None
    request_per_second: OptTokenLimit = None
    request_per_minute: OptTokenLimit = None
    request_per_hour: OptTokenLimit = None
    request_per_day: OptTokenLimit = None

    @model_validator(mode="after")
    def _windows(self, info: ValidationInfo) -> Self:
        _at_least_one_window(self, info)
        return self


class LimitKey(_Model):
    """A key value (literal, `*`, `regexp:...`, IP or CIDR) and its budget windows."""

    key: Key
    token_per_second: OptTokenLimit = None
    token_per_minute: OptTokenLimit = None
    token_per_hour: OptTokenLimit = None
    token_per_day: OptTokenLimit = None
    request_per_second: OptTokenLimit = None
    request_per_minute: OptTokenLimit = None
    request_per_hour: OptTokenLimit = None
    request_per_day: OptTokenLimit = None

    @model_validator(mode="after")
    def _windows(self, info: ValidationInfo) -> Self:
        _at_least_one_window(self, info)
        return self


class RuleItem(_Model):
    """Where the key comes from (exactly one `limit_by_*`) and the budgets per key."""

    limit_by_header: OptSourceName = None
    limit_by_param: OptSourceName = None
    limit_by_cookie: OptSourceName = None
    limit_by_consumer: OptConsumer = None  # value ignored: the key is header x-mse-consumer
    limit_by_per_header: OptSourceName = None
    limit_by_per_param: OptSourceName = None
    limit_by_per_cookie: OptSourceName = None
    limit_by_per_consumer: OptConsumer = None
    limit_by_per_ip: OptIpSource = None
    limit_keys: Annotated[list[LimitKey], _array(1, LIMIT_KEYS_MAX, "limit keys")]

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
    """Accepted and checked for Higress compatibility; this build keeps budgets locally."""

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
    output: OptWeight = None
    cached: OptWeight = None


_OptWeights = Annotated[Annotated[Weights, WrapValidator(_object)] | None, _Present]
_OptGlobal = Annotated[Annotated[GlobalThreshold, WrapValidator(_object)] | None, _Present]
_OptItems = Annotated[
    Annotated[list[RuleItem], _array(1, RULE_ITEMS_MAX, "rule items")] | None, _Present
]
_OptRedis = Annotated[Annotated[RedisConfig, WrapValidator(_object)] | None, _Present]


class _RuleFields(_Model):
    """The fields of one budget rule: a bare config's top level, a `_rules_` entry, a spec."""

    rule_name: OptRuleName = None
    global_threshold: _OptGlobal = None
    rule_items: _OptItems = None
    rejected_code: Annotated[
        Annotated[
            int,
            Field(ge=REJECTED_CODE_MIN, le=REJECTED_CODE_MAX),
            _int_in(REJECTED_CODE_MIN, REJECTED_CODE_MAX),
        ]
        | None,
        _Present,
    ] = None
    rejected_msg: Annotated[
        Annotated[str, Field(max_length=REJECTED_MSG_BYTES_MAX), _text(0, REJECTED_MSG_BYTES_MAX)]
        | None,
        _Present,
    ] = None
    redis: _OptRedis = None
    admission: OptAdmission = None
    algorithm: OptAlgorithm = None
    shadow: OptBool = None
    show_limit_headers: OptBool = None
    default_output_tokens: OptOutputTokens = None
    weights: _OptWeights = None
    failure_mode: OptFailureMode = None

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


class PolicySpec(_RuleFields):
    """`spec` of a TokenRateLimitPolicy: one rule, in camelCase."""

    @model_validator(mode="after")
    def _rule(self, info: ValidationInfo) -> Self:
        self._check_rule(info)
        return self


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


_SUBDOMAIN_NAME = _dns_name(
    _DNS_SUBDOMAIN, 253, "DNS subdomain", "lowercase letters, digits, '-', '.'"
)
_LABEL_NAME = _dns_name(_DNS_LABEL, 63, "DNS label", "lowercase letters, digits, '-'")


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
    """The filter config a policy (or its spec) stands for."""
    spec = policy.spec if isinstance(policy, TokenRateLimitPolicy) else policy
    return parse_filter_config(spec.model_dump(mode="json", by_alias=True, exclude_none=True))


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
