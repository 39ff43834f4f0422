"""What one budget counts and by which key: the budget windows, limit keys and rule items.

Split from tokenlimit.model.filter_config (the document around them: a rule's other fields, the
`redis` object, `_rules_`, parsing) because these types are the key semantics the filter's
matcher shares -- which `limit_by_*` kind takes which keys (`key_problem`) -- and a policy's
spec reuses them unchanged. filter_config re-exports every public name here, so
`from tokenlimit.model.filter_config import RuleItem` keeps working.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._regexp import regexp_problem
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model._spelling import Naming, camel_name
from tokenlimit.model._spelling import cel as _cel
from tokenlimit.model._spelling import doc_key as _doc_key
from tokenlimit.model._spelling import naming_of as _naming
from tokenlimit.model.fields import (
    Key,
    OptBool,
    OptConsumer,
    OptIpSource,
    OptSourceName,
    OptTokenLimit,
)
from tokenlimit.model.higress import WINDOWS as HIGRESS_WINDOWS
from tokenlimit.model.limits import (
    LIMIT_KEYS_MAX,
)
from tokenlimit.model.model_budgets import (
    COST_WINDOWS,
    LONG_WINDOWS,
    MODEL_KINDS,
    OptCost,
    OptModels,
    OptModelSource,
    OptWarnAt,
    model_pattern_problem,
)

_REGEXP_PREFIX = "regexp:"
# Higress's windows, then the model-budget ones it does not have.
_WINDOWS = (*HIGRESS_WINDOWS, *LONG_WINDOWS, *COST_WINDOWS)
_EXACT_KINDS = ("limit_by_header", "limit_by_param", "limit_by_cookie", "limit_by_consumer")
_PER_KINDS = (
    "limit_by_per_header",
    "limit_by_per_param",
    "limit_by_per_cookie",
    "limit_by_per_consumer",
)
_IP_KIND = "limit_by_per_ip"
_ALL_KINDS = (*_EXACT_KINDS, *_PER_KINDS, _IP_KIND, *MODEL_KINDS)


_WINDOWS_RULE = (
    " || ".join(f"has(self.{camel_name(w)})" for w in _WINDOWS),
    "needs at least one of " + ", ".join(camel_name(w) for w in _WINDOWS),
)


def _at_least_one_window(obj: BaseModel, info: ValidationInfo) -> None:
    if all(getattr(obj, w) is None for w in _WINDOWS):
        raise _error(f"needs at least one of {_window_families(type(obj), _naming(info))}")


def _window_families(model: type[BaseModel], naming: Naming) -> str:
    """Every window, compactly: token_per_second/minute/..., request_per_... or cost_per_..."""
    families: dict[str, list[str]] = {}
    for window in _WINDOWS:
        spelled = _doc_key(model, window, naming)
        cut = spelled.rindex("_" if naming == "snake" else "Per") + (1 if naming == "snake" else 3)
        families.setdefault(spelled[:cut], []).append(spelled[cut:])
    shown = [prefix + "/".join(units) for prefix, units in families.items()]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


class _Windows(_Model):
    """The budget windows: at least one token, request or cost limit."""

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
    token_per_week: OptTokenLimit = None
    """Tokens per calendar week (from Monday 00:00 in the rule's time_zone)."""
    token_per_month: OptTokenLimit = None
    """Tokens per calendar month (from the 1st, 00:00 in the rule's time_zone)."""
    request_per_week: OptTokenLimit = None
    """Requests per calendar week."""
    request_per_month: OptTokenLimit = None
    """Requests per calendar month."""
    cost_per_second: OptCost = None
    """USD per second (at most 6 decimals), priced by the rule's prices."""
    cost_per_minute: OptCost = None
    """USD per minute."""
    cost_per_hour: OptCost = None
    """USD per hour."""
    cost_per_day: OptCost = None
    """USD per day (from 00:00 in the rule's time_zone)."""
    cost_per_week: OptCost = None
    """USD per calendar week."""
    cost_per_month: OptCost = None
    """USD per calendar month (e.g. 200 for "$200 a month")."""

    @model_validator(mode="after")
    def _windows(self, info: ValidationInfo) -> Self:
        _at_least_one_window(self, info)
        return self


class GlobalThreshold(_Windows):
    """One budget shared by every request the rule sees."""

    warn_at: OptWarnAt = None
    """Soft limit: the fraction of a budget (e.g. 0.8) past which admitted responses carry a
    warning header, a metric counts them and one log line per window says so."""


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
                "[" + ", ".join(f"has(self.{camel_name(k)})" for k in _ALL_KINDS) + "]"
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
    limit_by_model: OptModelSource = None
    """Key: the request's model (value ""); keys are model names, `*` or `regexp:`, and each
    key is one budget shared by the models it matches."""
    limit_by_per_model: OptModelSource = None
    """A budget per model (value ""): with key `gpt-4o`, a provider quota every caller shares."""
    per_model: OptBool = None
    """One budget per (key, model): "each key, per model"."""
    models: OptModels = None
    """The item applies only to requests for these models (names, `*` or `regexp:`)."""
    warn_at: OptWarnAt = None
    """Soft limit: the fraction of a budget (e.g. 0.8) past which admitted responses carry a
    warning header, a metric counts them and one log line per window says so."""
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
        if self.per_model and kinds[0] in MODEL_KINDS:
            raise _error(
                f"{kinds[0]} items are keyed by model already: use "
                f"{_doc_key(RuleItem, 'limit_by_per_model', naming)} for a budget per model",
                (_doc_key(RuleItem, "per_model", naming),),
            )
        return self

    @property
    def model_keyed(self) -> bool:
        """Whether this item's counters carry the request's model."""
        return bool(self.per_model) or self.kind == "limit_by_per_model"


def key_problem(kind: str, key: str, naming: Naming = "snake") -> str | None:
    """Why `key` cannot be a limit key of a rule item of this `limit_by_*` kind, or None."""
    spelled = _doc_key(RuleItem, kind, naming)
    if kind in _EXACT_KINDS:
        return None
    if kind in MODEL_KINDS:
        return model_pattern_problem(key)
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
