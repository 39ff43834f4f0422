"""A bare config read the way Higress's ai-token-ratelimit reads it, before the model checks it.

Higress (1.0.x and 2.0.1, `plugins/wasm-go/extensions/ai-token-ratelimit`) reads its config with
gjson: a field it does not know is ignored, any scalar is text where it wants text (`key: 102234`
in its own README), a decimal string is a number where it wants a number, `0` means the default
for `redis.service_port` and `redis.timeout`, and when an item sets several `limit_by_*` fields
the last one in its reading order wins. The filter's parser (filter/src/config/parse.zig) reads
the same way; this module rewrites a document into the one spelling the model checks, and says
what it ignored. `docs/higress-compat.md` lists every field and behaviour.

A warning is a `Problem` (the field and why it is ignored); `tokenlimit validate` prints them,
`--strict` refuses the document for them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from tokenlimit.model.problems import Problem

WINDOWS = (
    "token_per_second",
    "token_per_minute",
    "token_per_hour",
    "token_per_day",
    "request_per_second",
    "request_per_minute",
    "request_per_hour",
    "request_per_day",
)
# Model-aware budgets (docs/design-model-budgets.md): fields Higress does not have. Whole-number
# windows are read as leniently as Higress's own; USD amounts are numbers only.
MODEL_WINDOWS = ("token_per_week", "token_per_month", "request_per_week", "request_per_month")
COST_FIELDS = (
    "cost_per_second",
    "cost_per_minute",
    "cost_per_hour",
    "cost_per_day",
    "cost_per_week",
    "cost_per_month",
)
_INTEGER_WINDOWS = (*WINDOWS, *MODEL_WINDOWS)
# Higress's reading order: each field set overrides the ones before it.
LIMIT_BY_PRECEDENCE = (
    "limit_by_header",
    "limit_by_param",
    "limit_by_cookie",
    "limit_by_per_header",
    "limit_by_per_param",
    "limit_by_per_cookie",
    "limit_by_consumer",
    "limit_by_per_consumer",
    "limit_by_per_ip",
)
# Set whatever the value (Higress reads the consumer from x-mse-consumer, never the value).
_ANY_VALUE = ("limit_by_consumer", "limit_by_per_consumer")
MATCH_FIELDS = ("_match_route_", "_match_domain_", "_match_service_", "_match_route_prefix_")
# Higress drops empty names from these lists (an empty domain stays: it matches an empty host).
_DROP_EMPTY = ("_match_route_", "_match_service_", "_match_route_prefix_")
RULE_FIELDS = (
    "rule_name",
    "global_threshold",
    "rule_items",
    "rejected_code",
    "rejected_msg",
    "redis",
    "admission",
    "algorithm",
    "shadow",
    "show_limit_headers",
    "default_output_tokens",
    "weights",
    "failure_mode",
    "local_share",
    "time_zone",
    "model_header",
    "prices",
    "calendar",
    "warn_at",
    "compat",
    "usage_path",  # the usage endpoint (issue 16)
    "higress_token_metrics",  # issue 16
    "cache",  # response cache (issue 15): tokenlimit's own, its fields checked strictly
    # near the limit (issue 13)
    "when_exhausted",
    "pace_above",
    "priority",
    "lease",  # leases for hot keys (issue 17): tokenlimit's own, its fields checked strictly
)
TOP_FIELDS = (*RULE_FIELDS, "_rules_")
ROUTE_FIELDS = (*RULE_FIELDS, *MATCH_FIELDS)
_MODEL_ITEM_FIELDS = ("limit_by_model", "limit_by_per_model", "per_model", "models", "warn_at")
_ITEM_FIELDS = (*LIMIT_BY_PRECEDENCE, *_MODEL_ITEM_FIELDS, "limit_keys")
_KEY_FIELDS = ("key", *_INTEGER_WINDOWS, *COST_FIELDS)
_GLOBAL_FIELDS = (*_INTEGER_WINDOWS, *COST_FIELDS, "warn_at")
_REDIS_FIELDS = ("service_name", "service_port", "username", "password", "timeout", "database")
_WEIGHT_FIELDS = ("input", "output", "cached")
_INTEGER = re.compile(r"-?[0-9]+")
Loc = tuple[str | int, ...]


class _Reading:
    """One pass over a document: the rewritten copy and the fields it ignored."""

    def __init__(self) -> None:
        self.ignored: list[Problem] = []

    def known(self, obj: dict[Any, Any], fields: Sequence[str], at: Loc) -> dict[Any, Any]:
        kept = {}
        for key, value in obj.items():
            if key in fields:
                kept[key] = value
                continue
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.ignored.append(
                Problem((*at, str(key)), f"unknown field, ignored as Higress ignores it{hint}")
            )
        return kept

    def rule(self, obj: dict[Any, Any], at: Loc) -> dict[Any, Any]:
        if obj.get("rule_name", "") is None:
            obj["rule_name"] = ""  # Higress reads null as ""
        for name in ("rule_name", "rejected_msg"):
            if name in obj:
                obj[name] = as_text(obj[name])
        for name in ("rejected_code", "default_output_tokens"):
            if name in obj:
                obj[name] = as_integer(obj[name])
        if isinstance(obj.get("global_threshold"), dict):
            obj["global_threshold"] = self.windows(
                obj["global_threshold"], _GLOBAL_FIELDS, (*at, "global_threshold")
            )
        if isinstance(obj.get("rule_items"), list):
            obj["rule_items"] = [
                self.item(item, (*at, "rule_items", i)) if isinstance(item, dict) else item
                for i, item in enumerate(obj["rule_items"])
            ]
        if isinstance(obj.get("weights"), dict):
            obj["weights"] = self.known(obj["weights"], _WEIGHT_FIELDS, (*at, "weights"))
        if isinstance(obj.get("redis"), dict):
            obj["redis"] = self.redis(obj["redis"], (*at, "redis"))
        return obj

    def windows(self, obj: dict[Any, Any], fields: Sequence[str], at: Loc) -> dict[Any, Any]:
        obj = self.known(obj, fields, at)
        return {k: as_integer(v) if k in _INTEGER_WINDOWS else v for k, v in obj.items()}

    def item(self, obj: dict[Any, Any], at: Loc) -> dict[Any, Any]:
        obj = self.known(obj, _ITEM_FIELDS, at)
        winner: str | None = None
        for name in LIMIT_BY_PRECEDENCE:
            if name not in obj:
                continue
            value = obj[name]
            if name in _ANY_VALUE:
                value = ""
            elif value is None:
                del obj[name]
                continue
            else:
                value = as_text(value)
                if not isinstance(value, str):
                    return obj  # not text: the model refuses it as the filter does
                if not value:
                    del obj[name]  # Higress skips an empty value
                    continue
            if winner is not None:
                del obj[winner]
                self.ignored.append(
                    Problem(
                        (*at, winner),
                        f"ignored: Higress applies {name} when an item sets both",
                    )
                )
            obj[name] = value
            winner = name
        if isinstance(obj.get("limit_keys"), list):
            obj["limit_keys"] = [
                self.windows(key, _KEY_FIELDS, (*at, "limit_keys", i))
                if isinstance(key, dict)
                else key
                for i, key in enumerate(obj["limit_keys"])
            ]
            for key in obj["limit_keys"]:
                if isinstance(key, dict) and "key" in key:
                    key["key"] = as_text(key["key"])
        return obj

    def redis(self, obj: dict[Any, Any], at: Loc) -> dict[Any, Any]:
        obj = self.known(obj, _REDIS_FIELDS, at)
        for name in ("service_name", "username", "password"):
            if name in obj:
                obj[name] = as_text(obj[name])
        for name in ("service_port", "timeout", "database"):
            if name in obj:
                obj[name] = as_integer(obj[name])
        for name in ("service_port", "timeout"):
            if obj.get(name) == 0 and type(obj[name]) is int:
                del obj[name]  # Higress: 0 is the default
        return obj

    def route(self, obj: dict[Any, Any], at: Loc) -> dict[Any, Any]:
        obj = self.rule(self.known(obj, ROUTE_FIELDS, at), at)
        for name in MATCH_FIELDS:
            if name not in obj:
                continue
            value = obj[name]
            if value is None:
                del obj[name]
                continue
            if not isinstance(value, list | dict):
                value = [value]  # gjson reads one scalar as a one-entry list
            if isinstance(value, list):
                value = [as_text(v) for v in value]
                if name in _DROP_EMPTY:
                    value = [v for v in value if v != ""]
            obj[name] = value
        return obj


def as_text(value: object) -> object:
    """A scalar as Higress reads it where it wants text: integers as their digits, booleans as
    true/false. Anything else is left for the model to refuse (a fractional number would be
    respelled by Go: `1.50` is matched as `1.5`, so the filter refuses it too)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    return value


def as_integer(value: object) -> object:
    """A decimal string (`"100"`) as the number Higress reads; anything else unchanged."""
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return value


def read_as_higress(data: object) -> tuple[object, list[Problem]]:
    """`data` in the one spelling the model checks, and the fields Higress would ignore."""
    if not isinstance(data, dict):
        return data, []
    reading = _Reading()
    top = reading.rule(reading.known(dict(data), TOP_FIELDS, ()), ())
    if isinstance(top.get("_rules_"), list):
        top["_rules_"] = [
            reading.route(dict(rule), ("_rules_", i)) if isinstance(rule, dict) else rule
            for i, rule in enumerate(top["_rules_"])
        ]
    return top, reading.ignored


def dropped_default(problems: Sequence[Problem]) -> list[Problem]:
    """The warnings for a top-level rule dropped as Higress drops it beside `_rules_`."""
    return [
        Problem(
            p.loc,
            f"{p.reason}: top-level rule ignored, as Higress ignores a broken one beside "
            "_rules_ (only the route rules apply)",
        )
        for p in problems
    ]


def has_route_rules(document: object) -> bool:
    """Whether `_rules_` has entries: then Higress survives a broken top-level rule."""
    if not isinstance(document, dict):
        return False
    rules = document.get("_rules_")
    return isinstance(rules, list) and len(rules) > 0
