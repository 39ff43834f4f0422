"""The one loader for policy files.

`tokenlimit validate`, `render`, `up`, `push` and the operator all read policies through
`load_policy`/`policy_from_data`, so a file that validates is exactly a file that deploys.

    loaded = policy_from_data(data, origin)   # raises PolicyError (one line per problem)
    loaded.config   # the FilterConfig the filter reads
    loaded.policy   # the TokenRateLimitPolicy (None for a bare Higress config)

The renderers (tokenlimit.render.higress / istio / envoy) take `loaded.policy`.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tokenlimit.model import (
    API_VERSION,
    KIND,
    ConfigInvalid,
    FilterConfig,
    Problem,
    TokenRateLimitPolicy,
    parse_filter_config,
    parse_filter_config_with_warnings,
    parse_policy,
    policy_filter_config,
    show,
)

SourceKind = Literal["higress-config", "policy"]

HIGRESS_KEYS = ("rule_name", "rule_items", "global_threshold", "_rules_")
_SPEC_KEYS = ("ruleName", "ruleItems", "globalThreshold")
_EXPECTED = (
    "expected a Higress ai-token-ratelimit config (rule_name with global_threshold or "
    "rule_items, or _rules_) or a TokenRateLimitPolicy document "
    f"(apiVersion: {API_VERSION}, kind: {KIND}, metadata, spec)"
)


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy: what it is called, the filter config, and where it came from."""

    name: str
    config: FilterConfig
    source: SourceKind
    origin: str  # file path, or a description such as "TokenRateLimitPolicy ns/name"
    namespace: str | None = None
    policy: TokenRateLimitPolicy | None = None  # None for a bare Higress config
    document: Mapping[str, Any] | None = None  # the policy as written (what `push` applies)
    # What a bare Higress config holds that Higress (and the filter) ignore: unknown fields,
    # overridden limit_by_* fields, a broken top-level rule beside _rules_.
    warnings: tuple[Problem, ...] = ()


class PolicyError(Exception):
    """A policy was refused. The message has one `ORIGIN: FIELD: REASON` line per problem."""

    def __init__(self, origin: str, problems: Sequence[Problem | str]) -> None:
        self.origin = origin
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{origin}: {p}" for p in self.problems))


def load_policy(path: str | os.PathLike[str], *, strict: bool = False) -> LoadedPolicy:
    """Read a YAML or JSON policy file: a bare Higress config or a TokenRateLimitPolicy.
    `strict`: refuse a bare config for the fields it would ignore, as errors."""
    origin = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(origin, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise PolicyError(origin, ["cannot read: not UTF-8 text"]) from None
    return policy_from_data(parse_document(text, origin), origin, strict=strict)


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                first = seen[key]
                raise _DuplicateKey(
                    problem=f"duplicate key {show(key)} (first at line {first.line + 1}): "
                    "the filter refuses duplicate keys",
                    problem_mark=key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_document(text: str, origin: str) -> object:
    """YAML or JSON text to data (JSON is YAML; one document per file)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except _DuplicateKey as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise PolicyError(origin, [f"{where}{exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise PolicyError(origin, [f"not valid YAML or JSON: {where}{exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError(origin, [f"not valid YAML or JSON: {exc}"]) from None


def policy_from_data(data: object, origin: str, *, strict: bool = False) -> LoadedPolicy:
    """Validate already-parsed data; `origin` starts every error line."""
    kind = document_kind(data)
    if kind is None:
        raise PolicyError(origin, [_what_was_expected(data)])
    try:
        if kind == "policy":
            policy = parse_policy(data)
            return LoadedPolicy(
                name=policy.metadata.name,
                config=policy_filter_config(policy),
                source="policy",
                origin=origin,
                namespace=policy.metadata.namespace,
                policy=policy,
                document=copy.deepcopy(data) if isinstance(data, dict) else None,
            )
        if strict:
            parse_filter_config(data, strict=True)
        config, warnings = parse_filter_config_with_warnings(data)
    except ConfigInvalid as exc:
        raise PolicyError(origin, exc.problems) from None
    name = (config.rule_names or [Path(origin).stem])[0]
    return LoadedPolicy(
        name=name, config=config, source="higress-config", origin=origin, warnings=warnings
    )


def document_kind(data: object) -> SourceKind | None:
    """Which kind of document `data` is meant to be, or None when it is neither."""
    if not isinstance(data, dict):
        return None
    if "apiVersion" in data or "kind" in data:
        return "policy"
    keys = [k for k in data if isinstance(k, str)]
    if any(k in HIGRESS_KEYS for k in keys):
        return "higress-config"
    if any(k in _SPEC_KEYS for k in keys):
        return None  # a spec without its document: _what_was_expected says so
    # A lone typo (`rule_itmes`) is still meant as a Higress config: let the model suggest.
    if any(difflib.get_close_matches(k, HIGRESS_KEYS, n=1, cutoff=0.8) for k in keys):
        return "higress-config"
    return None


def _what_was_expected(data: object) -> str:
    if data is None:
        return f"empty document; {_EXPECTED}"
    if not isinstance(data, dict):
        return f"{_EXPECTED}, got {show(data)}"
    if any(k in _SPEC_KEYS for k in data):
        return (
            "this looks like a TokenRateLimitPolicy spec (camelCase fields): put it under "
            f"`spec:` in a document with apiVersion: {API_VERSION}, kind: {KIND} and "
            "metadata.name, or use the Higress names (rule_name, rule_items, ...)"
        )
    keys = ", ".join(str(k) for k in list(data)[:5]) or "none"
    return f"{_EXPECTED}; got an object with keys: {keys}"


def summary(policy: LoadedPolicy) -> str:
    """`rule NAME, N rule items` — what `validate` says about a good policy."""
    cfg = policy.config
    parts: list[str] = []
    if cfg.rule_name is not None:
        parts.append(f"rule {cfg.rule_name}")
    if cfg.rule_items is not None:
        parts.append(_count(len(cfg.rule_items), "rule item"))
    if cfg.global_threshold is not None:
        parts.append("global threshold")
    if cfg.rules:
        parts.append(_count(len(cfg.rules), "route rule"))
    spec = policy.policy.spec if policy.policy is not None else None
    if spec is not None and spec.gateway is not None:
        parts.append(f"gateway {spec.gateway}")
    if cfg.redis is not None:
        parts.append(f"store {cfg.redis.service_name}")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
