"""The pydantic model against the shared contract vectors (tests/vectors/config.json).

The Zig parser is tested against the same vectors, so the two halves agree on what a policy
means. The `regexp:` checker is also held to the test tables of the filter's regexp
(filter/src/config/regex/regex_test.zig and regex_limits_test.zig).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic.alias_generators import to_camel
from tokenlimit.model import (
    API_VERSION,
    KIND,
    ConfigInvalid,
    FilterConfig,
    field_path,
    filter_json,
    parse_filter_config,
    parse_policy,
    policy_filter_config,
)
from tokenlimit.model._regexp import regexp_problem
from tokenlimit.model.filter_config import parse_filter_config_with_warnings
from tokenlimit.model.higress import read_as_higress
from tokenlimit.model.model_budgets import time_zone_problem

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "contract" / "config.json").read_text())
VALID = [v for v in VECTORS if v["valid"]]
INVALID = [v for v in VECTORS if not v["valid"]]
REGEX_TESTS = ROOT / "filter" / "src" / "config" / "regex"
# The match vectors, and the refusals with their bounds and fuzz run.
REGEX_ZIG = (REGEX_TESTS / "regex_test.zig", REGEX_TESTS / "regex_limits_test.zig")


def refused_paths(data: object, parse: Any = parse_filter_config) -> list[str]:
    with pytest.raises(ConfigInvalid) as refused:
        parse(data)
    return [problem.path for problem in refused.value.problems]


# --- the shared vectors --------------------------------------------------------------------


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_loads_and_round_trips(vector: dict[str, Any]) -> None:
    cfg = parse_filter_config(vector["config"])
    document = filter_json(cfg)
    assert parse_filter_config(json.loads(document)) == cfg
    # Nothing added, nothing lost: the filter reads what the user wrote, in the one spelling
    # Higress reads it (`key: 102234` as "102234"; ignored fields left out).
    expected, _ = read_as_higress(vector["config"])
    assert isinstance(expected, dict)
    if cfg.rule_name is None and "rule_name" in expected:  # a broken top level, dropped
        expected = {"_rules_": expected["_rules_"]}
    assert json.loads(document) == expected


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_warns_of_what_it_ignores(vector: dict[str, Any]) -> None:
    _, warnings = parse_filter_config_with_warnings(vector["config"])
    assert sorted(w.path for w in warnings) == sorted(vector.get("warnings", []))
    if warnings:
        with pytest.raises(ConfigInvalid):
            parse_filter_config(vector["config"], strict=True)


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_refused_at_its_field(vector: dict[str, Any]) -> None:
    assert vector["field"] in refused_paths(vector["config"])


def test_error_reads_like_the_filters() -> None:
    (negative,) = [v for v in INVALID if v["name"] == "negative limit"]
    with pytest.raises(ConfigInvalid) as refused:
        parse_filter_config(negative["config"])
    assert str(refused.value) == (
        "rule_items[0].limit_keys[0].token_per_minute: "
        "must be an integer from 1 to 1000000000000000, got -5"
    )


# --- the same vectors as TokenRateLimitPolicy documents ------------------------------------

CAMEL_EXCEPTIONS = {"limit_by_per_ip": "limitByPerIP"}


def camel_key(key: str) -> str:
    return CAMEL_EXCEPTIONS.get(key, to_camel(key))


def camel_document(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            camel_key(k): camel_prices(v) if k == "prices" else camel_document(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [camel_document(v) for v in data]
    return data


def camel_prices(prices: Any) -> Any:
    """`prices` is keyed by model names, which a policy spells as they are."""
    if not isinstance(prices, dict):
        return camel_document(prices)
    return {name: camel_document(price) for name, price in prices.items()}


def camel_path(path: str) -> str:
    parts = re.split(r"(\.|\[\d+\])", path)
    # A model name under `prices` is spelled as written (it is two parts after "prices").
    verbatim = {i + 2 for i, p in enumerate(parts) if p == "prices"}
    return (
        "spec"
        + ("." if path and not path.startswith("[") else "")
        + "".join(
            p if p == "." or p.startswith("[") or i in verbatim else camel_key(p)
            for i, p in enumerate(parts)
        )
    )


def as_policy(config: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "vector"},
        "spec": camel_document(config),
    }


# Higress's `_rules_` exists only in bare configs; a policy is one rule. A policy's store is
# `spec.redis` in its own shape (a Secret reference, never a password; tests/test_crd.py),
# not the filter's `redis` object, so vectors about that object are the bare config's alone.
# A policy is a Kubernetes document with a typed schema: Higress's lenient reading (numbers as
# text, unknown fields ignored) is the bare config's alone. A policy never holds a `calendar`:
# it is rendered from timeZone (tests/model/test_model_budgets.py).
def read_as_is(vector: dict[str, Any]) -> bool:
    return "warnings" not in vector and read_as_higress(vector["config"])[0] == vector["config"]


SPEC_VALID = [
    v
    for v in VALID
    if "_rules_" not in v["config"]
    and "redis" not in v["config"]
    and "calendar" not in v["config"]
    and read_as_is(v)
]
SPEC_INVALID = [
    v
    for v in INVALID
    if not (isinstance(v["config"], dict) and ("_rules_" in v["config"] or "redis" in v["config"]))
    and not v["field"].startswith(("_rules_", "redis", "calendar"))
    # a policy's valid zone needs no calendar: it is rendered
    and not (v["field"] == "time_zone" and time_zone_problem(v["config"]["time_zone"]) is None)
    and read_as_is(v)
]


@pytest.mark.parametrize("vector", SPEC_VALID, ids=[v["name"] for v in SPEC_VALID])
def test_policy_document_means_the_same_config(vector: dict[str, Any]) -> None:
    policy = parse_policy(as_policy(vector["config"]))
    assert policy_filter_config(policy) == parse_filter_config(vector["config"])


@pytest.mark.parametrize("vector", SPEC_INVALID, ids=[v["name"] for v in SPEC_INVALID])
def test_policy_document_errors_use_camel_case_paths(vector: dict[str, Any]) -> None:
    expected = camel_path(vector["field"])
    assert expected in refused_paths(as_policy(vector["config"]), parse_policy)


def test_camel_case_path_example() -> None:
    (zero,) = [v for v in INVALID if v["name"] == "zero limit"]
    with pytest.raises(ConfigInvalid) as refused:
        parse_policy(as_policy(zero["config"]))
    assert str(refused.value) == (
        "spec.ruleItems[0].limitKeys[0].tokenPerMinute: "
        "must be an integer from 1 to 1000000000000000, got 0"
    )


def test_policy_spec_refuses_snake_case_with_suggestion() -> None:
    document = as_policy({"ruleName": "r", "globalThreshold": {"tokenPerMinute": 1}})
    document["spec"]["rule_items"] = []
    with pytest.raises(ConfigInvalid) as refused:
        parse_policy(document)
    assert str(refused.value) == "spec.rule_items: unknown field (did you mean ruleItems?)"


# --- one spelling per document, nulls, paths -----------------------------------------------


def test_bare_config_refuses_camel_case_keys() -> None:
    # Higress ignores the camelCase key, so the rule has no budget; --strict says why.
    config = {"rule_name": "r", "globalThreshold": {"token_per_minute": 1}}
    assert refused_paths(config) == [""]
    with pytest.raises(ConfigInvalid) as refused:
        parse_filter_config(config, strict=True)
    assert str(refused.value.problems[0]) == (
        "globalThreshold: unknown field, ignored as Higress ignores it "
        "(did you mean global_threshold?)"
    )


def test_bare_config_refuses_python_name_of_rules() -> None:
    with pytest.raises(ConfigInvalid) as refused:
        parse_filter_config({"rules": []}, strict=True)
    assert str(refused.value.problems[0]) == (
        "rules: unknown field, ignored as Higress ignores it (did you mean _rules_?)"
    )


def test_null_is_refused_not_read_as_unset() -> None:
    config = {"rule_name": "r", "global_threshold": {"token_per_minute": 1}, "rejected_msg": None}
    with pytest.raises(ConfigInvalid) as refused:
        parse_filter_config(config)
    assert str(refused.value) == "rejected_msg: must not be null (leave the field out to unset it)"


def test_only_empty_rules_list_is_a_config_without_budgets() -> None:
    # What the filter accepts too: Higress may send `_rules_` alone.
    assert parse_filter_config({"_rules_": []}).rules == []


def test_route_rule_needs_a_non_empty_match() -> None:
    rule = {"_match_route_": [], "rule_name": "x", "global_threshold": {"token_per_minute": 1}}
    assert refused_paths({"_rules_": [rule]}) == ["_rules_[0]"]


def test_ipv4_mapped_address_has_ipv4_prefix_bounds() -> None:
    item = {"limit_by_per_ip": "from-remote-addr", "limit_keys": [{"key": "", "token_per_day": 1}]}
    for key, ok in (("::ffff:10.0.0.0/8", True), ("::ffff:10.0.0.0/33", False)):
        item["limit_keys"][0]["key"] = key
        config = {"rule_name": "ip", "rule_items": [item]}
        if ok:
            assert isinstance(parse_filter_config(config), FilterConfig)
        else:
            assert refused_paths(config) == ["rule_items[0].limit_keys[0].key"]


def test_field_path_renders_loc() -> None:
    assert (
        field_path(("rule_items", 0, "limit_keys", 1, "key")) == "rule_items[0].limit_keys[1].key"
    )
    assert field_path(("_rules_", 2)) == "_rules_[2]"
    assert field_path(()) == ""


def test_filter_json_is_compact_and_ordered() -> None:
    cfg = parse_filter_config(
        {"global_threshold": {"token_per_hour": 5, "token_per_minute": 1}, "rule_name": "r"}
    )
    assert filter_json(cfg) == (
        '{"rule_name":"r","global_threshold":{"token_per_minute":1,"token_per_hour":5}}'
    )


# --- regexp: keys, held to regex.zig's own tables ------------------------------------------

_ZIG_STRING = r'"((?:[^"\\]|\\.)*)"'
_ZIG_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", '"': b'"', "'": b"'"}


def zig_string(body: str) -> str | None:
    """A Zig string literal's text, or None when it is not UTF-8 (no JSON key can hold it)."""
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] != "\\":
            out += body[i].encode()
            i += 1
        elif body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            out += _ZIG_ESCAPES[body[i + 1]]
            i += 2
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def zig_table(pattern: str) -> list[re.Match[str]]:
    for path in REGEX_ZIG:
        if not path.is_file():
            pytest.fail(f"{path} is missing: the filter source is part of this repository")
    return list(re.finditer(pattern, "\n".join(path.read_text() for path in REGEX_ZIG)))


def test_regexp_checker_accepts_what_regex_zig_matches() -> None:
    rows = zig_table(r"\.pattern = " + _ZIG_STRING + r", \.input")
    assert len(rows) > 50, "regex.zig's match tables moved: update this test's pattern"
    for row in rows:
        pattern = zig_string(row.group(1))
        if pattern is not None:
            assert regexp_problem(pattern) is None, pattern


def test_regexp_checker_refuses_what_regex_zig_refuses_in_its_words() -> None:
    rows = zig_table(
        r"\.pattern = "
        + _ZIG_STRING
        + r", \.err = (\w+), \.offset = (\d+), \.message = "
        + _ZIG_STRING
    )
    assert len(rows) > 30, "regex.zig's refusal tables moved: update this test's pattern"
    for row in rows:
        pattern = zig_string(row.group(1))
        message = zig_string(row.group(4))
        if pattern is None:
            continue
        if row.group(2) == "too_complex":
            expected = f"regexp is too complex: {message}"
        else:
            expected = f"invalid regexp at offset {row.group(3)}: {message}"
        assert regexp_problem(pattern) == expected, pattern


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^*a", None),  # `re` refuses it; the filter's matcher (like RE2) accepts it
        ("(?i)^[a-f0-9]{8}$", None),
        ("(?m)^a$", "invalid regexp at offset 0: unsupported group syntax; only (...), (?:...)"),
        ("\\d{0,600}", "regexp is too complex: pattern expands to more than 1024 instructions"),
    ],
)
def test_regexp_checker_is_not_python_re(pattern: str, problem: str | None) -> None:
    found = regexp_problem(pattern)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
