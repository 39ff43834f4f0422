"""The model enforces exactly the bounds in contract/limits.json (the filter reads the same file).

The vectors are generated from the file itself: for every bound, a document at the bound is
accepted and one just past it is refused at the field the bound belongs to. A bound added to
limits.json without a case here fails `test_every_entry_of_limits_json_has_a_case`, so the two
halves cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import pytest
from tokenlimit.model import (
    ConfigInvalid,
    FilterConfig,
    PolicySpec,
    TokenRateLimitPolicy,
    filter_json,
    parse_filter_config,
    parse_policy,
    policy_filter_config,
)
from tokenlimit.model import limits as model_limits

ROOT = Path(__file__).resolve().parents[2]
LIMITS: dict[str, Any] = json.loads((ROOT / "contract" / "limits.json").read_text())
BOUNDS = {k: v for k, v in LIMITS.items() if not k.startswith("_")}

WINDOW = {"token_per_minute": 1}
RULE: dict[str, Any] = {"rule_name": "r", "global_threshold": WINDOW}
ITEM: dict[str, Any] = {"limit_by_header": "h", "limit_keys": [{"key": "k", **WINDOW}]}


def rule(**fields: Any) -> dict[str, Any]:
    return {**RULE, **fields}


def items(item: dict[str, Any], count: int = 1) -> dict[str, Any]:
    return {"rule_name": "r", "rule_items": [item] * count}


def redis(**fields: Any) -> dict[str, Any]:
    return rule(redis={"service_name": "redis.dns", "service_port": 6379, **fields})


def policy(redis: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "ruleName": "r",
            "globalThreshold": {"tokenPerMinute": 1},
            "targetRef": {"gateway": "higress"},
            "redis": {"host": "redis.dns", "port": 6379, **redis},
        },
    }


def cache_policy(**cache: Any) -> dict[str, Any]:
    """A policy whose spec sets `cache` (camelCase, as a policy spells it)."""
    document = policy({})
    document["spec"] = {**document["spec"], "cache": cache}
    return document


def sized(size: int) -> dict[str, Any]:
    """A config whose JSON, as the filter reads it, is exactly `size` bytes (padded in a
    route name, which has no bound of its own)."""
    route = {"_match_route_": [""], **RULE}
    base = rule(_rules_=[route])
    pad = size - len(json.dumps(base, separators=(",", ":")))
    return rule(_rules_=[{**route, "_match_route_": ["x" * pad]}])


@dataclass(frozen=True)
class Case:
    """A document holding a value for one bound, and where a refusal of that value is reported."""

    make: Callable[[Any], dict[str, Any]]
    path: str
    side: Literal["max", "min"] = "max"
    parse: Callable[[object], object] = parse_filter_config

    def past(self, bound: Any) -> Any:
        return bound + 1 if self.side == "max" else bound - 1


# Byte bounds take a length; the document holds a value of that many bytes.
CASES: dict[str, list[Case]] = {
    "config_bytes_max": [Case(sized, "")],
    "rule_name_bytes_max": [Case(lambda n: rule(rule_name="a" * n), "rule_name")],
    "rule_items_max": [Case(lambda n: items(ITEM, n), "rule_items")],
    "limit_keys_max": [
        Case(
            lambda n: items({**ITEM, "limit_keys": [{"key": f"k{i}", **WINDOW} for i in range(n)]}),
            "rule_items[0].limit_keys",
        )
    ],
    "key_bytes_max": [
        Case(
            lambda n: items({**ITEM, "limit_keys": [{"key": "k" * n, **WINDOW}]}),
            "rule_items[0].limit_keys[0].key",
        )
    ],
    "source_name_bytes_max": [
        Case(lambda n: items({**ITEM, "limit_by_header": "h" * n}), "rule_items[0].limit_by_header")
    ],
    "route_rules_max": [
        Case(lambda n: {"_rules_": [{"_match_route_": ["a"], **RULE}] * n}, "_rules_")
    ],
    "rejected_msg_bytes_max": [
        Case(lambda n: rule(rejected_msg="m" * n), "rejected_msg"),
        # Bytes, not characters: 'é' is two bytes in UTF-8, as the filter counts it.
        Case(lambda n: rule(rejected_msg="é" * (n // 2) + "m" * (n % 2)), "rejected_msg"),
    ],
    "rejected_code_min": [Case(lambda n: rule(rejected_code=n), "rejected_code", "min")],
    "rejected_code_max": [Case(lambda n: rule(rejected_code=n), "rejected_code")],
    "limit_max": [
        Case(
            lambda n: rule(global_threshold={"token_per_minute": n}),
            "global_threshold.token_per_minute",
        ),
        Case(
            lambda n: items({**ITEM, "limit_keys": [{"key": "k", "request_per_day": n}]}),
            "rule_items[0].limit_keys[0].request_per_day",
        ),
    ],
    "weight_max": [Case(lambda n: rule(weights={"output": n}), "weights.output")],
    "default_output_tokens_max": [
        Case(lambda n: rule(default_output_tokens=n), "default_output_tokens")
    ],
    "port_max": [
        Case(lambda n: redis(service_port=n), "redis.service_port"),
        Case(lambda n: policy({"port": n}), "spec.redis.port", parse=parse_policy),
    ],
    "redis_service_name_bytes_max": [
        Case(lambda n: redis(service_name="r" * n), "redis.service_name"),
        Case(
            lambda n: policy({"host": "r" * (n - len(".dns")) + ".dns"}),
            "spec.redis.host",
            parse=parse_policy,
        ),
    ],
    "redis_credential_bytes_max": [
        Case(lambda n: redis(username="u" * n), "redis.username"),
        Case(lambda n: redis(password="p" * n), "redis.password"),
        Case(lambda n: policy({"username": "u" * n}), "spec.redis.username", parse=parse_policy),
    ],
    "redis_timeout_ms_max": [
        Case(lambda n: redis(timeout=n), "redis.timeout"),
        Case(lambda n: policy({"timeoutMs": n}), "spec.redis.timeoutMs", parse=parse_policy),
    ],
    "redis_database_max": [
        Case(lambda n: redis(database=n), "redis.database"),
        Case(lambda n: policy({"database": n}), "spec.redis.database", parse=parse_policy),
    ],
    # Response cache (issue 15): the filter config, and a policy's camelCase spelling.
    "cache_ttl_seconds_max": [
        Case(lambda n: rule(cache={"ttl_seconds": n}), "cache.ttl_seconds"),
        Case(lambda n: cache_policy(ttlSeconds=n), "spec.cache.ttlSeconds", parse=parse_policy),
    ],
    "cache_entry_bytes_max": [
        Case(
            lambda n: rule(cache={"ttl_seconds": 1, "max_entry_bytes": n}), "cache.max_entry_bytes"
        ),
        Case(
            lambda n: cache_policy(ttlSeconds=1, maxEntryBytes=n),
            "spec.cache.maxEntryBytes",
            parse=parse_policy,
        ),
    ],
    # Leases for hot keys (issue 17): the bound is in thousandths, the field a fraction.
    "lease_fraction_milli_max": [
        Case(
            lambda n: rule(redis={"service_name": "redis.dns"}, lease={"fraction": n / 1000}),
            "lease.fraction",
        ),
    ],
    # Near the limit (issue 13).
    "wait_ms_max": [
        Case(
            lambda n: rule(when_exhausted={"action": "wait", "max_wait_ms": n}),
            "when_exhausted.max_wait_ms",
        )
    ],
    "wait_queued_max": [
        Case(
            lambda n: rule(when_exhausted={"action": "wait", "max_queued": n}),
            "when_exhausted.max_queued",
        )
    ],
}
# Defaults and names the model does not bound a value by; checked by their own tests below.
OTHER = (
    "rejected_code_default",
    "rejected_msg_default",
    "bridge_cluster",
    "bridge_token_env",
    "local_counters_max",  # sizes the filter's local store (filter/src/store/local.zig)
    "model_bytes_max",  # bounds a request's model (filter/src/http/model.zig), not a config field
    "metrics_models_max",  # caps the filter's `model` metric label (abi/labelled_metrics.zig)
    "cache_entry_bytes_default",  # a default, below cache_entry_bytes_max (config.zig asserts it)
    "cache_local_bytes_max",  # sizes the filter's local cache ring (cache/store_local.zig)
)

VECTORS = [
    pytest.param(name, case, id=f"{name}-{index}")
    for name, cases in CASES.items()
    for index, case in enumerate(cases)
]


def test_every_entry_of_limits_json_has_a_case() -> None:
    assert sorted([*CASES, *OTHER]) == sorted(BOUNDS)


def test_the_package_reads_the_repositorys_contract_file() -> None:
    shipped = files("tokenlimit") / "contract" / "limits.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == LIMITS
    assert model_limits.LIMITS.model_dump() == BOUNDS


@pytest.mark.parametrize(("name", "case"), VECTORS)
def test_a_value_at_the_bound_is_accepted(name: str, case: Case) -> None:
    document = case.make(BOUNDS[name])
    parsed = case.parse(document)
    if name == "config_bytes_max":
        assert isinstance(parsed, FilterConfig)
        assert len(filter_json(parsed).encode()) == BOUNDS[name]


@pytest.mark.parametrize(("name", "case"), VECTORS)
def test_a_value_past_the_bound_is_refused_at_its_field(name: str, case: Case) -> None:
    document = case.make(case.past(BOUNDS[name]))
    with pytest.raises(ConfigInvalid) as refused:
        case.parse(document)
    assert [p.path for p in refused.value.problems] == [case.path]
    bound = str(BOUNDS[name])
    assert bound in str(refused.value), "the message names the bound"


def test_the_documented_defaults_are_the_contracts() -> None:
    """The filter applies these when a rule leaves the field out; the model's field
    descriptions (and so the CRD and `kubectl explain`) say what they are."""
    fields = PolicySpec.model_fields
    assert f"default {BOUNDS['rejected_code_default']}" in str(fields["rejected_code"].description)
    assert f'default "{BOUNDS["rejected_msg_default"]}"' in str(fields["rejected_msg"].description)
    lo, hi = BOUNDS["rejected_code_min"], BOUNDS["rejected_code_max"]
    assert lo <= BOUNDS["rejected_code_default"] <= hi
    assert len(BOUNDS["rejected_msg_default"].encode()) <= BOUNDS["rejected_msg_bytes_max"]
    assert BOUNDS["rejected_code_default"] == model_limits.REJECTED_CODE_DEFAULT
    assert BOUNDS["rejected_msg_default"] == model_limits.REJECTED_MSG_DEFAULT


def test_envoy_and_istio_reach_the_bridge_through_the_contracts_cluster_name() -> None:
    document = {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "ruleName": "r",
            "globalThreshold": {"tokenPerMinute": 1},
            "targetRef": {"gateway": "envoy"},
            "redis": {"bridge": {"host": "bridge.local", "port": 8080}},
        },
    }
    policy = parse_policy(document)
    assert isinstance(policy, TokenRateLimitPolicy)
    config = policy_filter_config(policy)
    assert config.redis is not None
    assert config.redis.service_name == BOUNDS["bridge_cluster"]
    assert BOUNDS["bridge_token_env"] == model_limits.BRIDGE_TOKEN_ENV
