"""`tokenlimit import`: Higress ai-token-ratelimit configuration → TokenRateLimitPolicy documents.

    result = import_documents(documents, origin, namespace=None)
    result.documents   # policies (and Secrets), ready for YAML output
    result.notes       # what changed in meaning, for stderr

Input: a Higress `WasmPlugin` (`extensions.higress.io/v1alpha1`) for ai-token-ratelimit, or a
bare plugin config (what `defaultConfig` holds, optionally with Higress's injected `_rules_`).
Each rule becomes one policy with `targetRef.gateway: higress`:

- `defaultConfig` (unless `defaultConfigDisable`) → `<plugin>`: every route;
- `matchRules[i]` → `<plugin>-rule-<i+1>` attached to its `ingress`/`domain`/`service` lists;
  entries with `configDisable: true` are skipped (Higress drops them too: the routes they
  name fall back to the default config) and noted;
- snake_case fields become the policy's camelCase ones; a `limit_keys` entry with Higress's
  `limit_type: request` becomes `request_per_*` windows;
- `redis.service_name`/`service_port`/`timeout`/`database`/`username` map to `spec.redis`; an
  inline `password` moves into a Secret document (`<plugin>-redis`, key `password`) that the
  policy references, because a policy never holds a password. A missing `service_port` is
  written out as the default Higress used (80 for `.static`, else 6379).

Every policy is then validated by the same loader as `validate` and `push`: a Higress config
that would fail (a Redis name Higress cannot resolve, a field the filter refuses) is reported,
and nothing is printed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tokenlimit.loader import PolicyError, policy_from_data
from tokenlimit.model import (
    API_VERSION,
    HIGRESS_STATIC_PORT,
    KIND,
    REDIS_PORT_DEFAULT,
    Problem,
    camel_name,
)

HIGRESS_API_VERSION = "extensions.higress.io/v1alpha1"
WASM_PLUGIN = "WasmPlugin"
SECRET_KEY = "password"
_WINDOW_UNITS = ("second", "minute", "hour", "day")
_MATCH_FIELDS = {"ingress": "ingresses", "domain": "domains", "service": "services"}
_RULE_MATCH_FIELDS = {
    "_match_route_": "ingresses",
    "_match_domain_": "domains",
    "_match_service_": "services",
}


class ImportFailed(PolicyError):
    """The input cannot become valid policies; one line per problem."""


@dataclass
class ImportResult:
    documents: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_documents(
    documents: list[Any], origin: str, *, namespace: str | None = None, name: str | None = None
) -> ImportResult:
    """Convert every WasmPlugin (or bare config) in `documents` (see the module docstring).

    `name` names the policies of a bare config (default: its rule_name).
    """
    result = ImportResult()
    problems: list[Problem | str] = []
    for index, document in enumerate(documents):
        where = "" if len(documents) == 1 else f"document {index + 1}"
        try:
            _import_one(document, where, namespace, name, result)
        except ImportFailed as exc:
            problems.extend(_at(exc.origin, str(p)) for p in exc.problems)
    if not documents:
        problems.append("no documents")
    if problems:
        raise ImportFailed(origin, problems)
    result.notes = [f"{origin}: {note}" for note in result.notes]
    return result


def _at(where: str, what: str) -> str:
    """`where: what`, or just `what` when there is no `where` (a single-document file)."""
    return f"{where}: {what}" if where else what


def _import_one(
    document: Any, where: str, namespace: str | None, name: str | None, result: ImportResult
) -> None:
    if not isinstance(document, dict):
        raise ImportFailed(where, ["expected a Higress WasmPlugin or plugin config object"])
    if document.get("kind") == WASM_PLUGIN:
        _import_plugin(document, where, namespace, result)
        return
    if "apiVersion" in document or "kind" in document:
        raise ImportFailed(
            where,
            [
                f"expected kind {WASM_PLUGIN} ({HIGRESS_API_VERSION}), got "
                f"{document.get('kind')!r} ({document.get('apiVersion')!r})"
            ],
        )
    base = name or str(document.get("rule_name") or "higress-config")
    _import_config(document, base, where, namespace, result)


def _import_plugin(
    plugin: dict[str, Any], where: str, namespace: str | None, result: ImportResult
) -> None:
    if plugin.get("apiVersion") != HIGRESS_API_VERSION:
        result.notes.append(
            _at(
                where,
                f"apiVersion {plugin.get('apiVersion')!r} is not {HIGRESS_API_VERSION}; "
                "read as a Higress WasmPlugin anyway",
            )
        )
    meta = plugin.get("metadata") or {}
    base = str(meta.get("name") or "higress")
    spec = plugin.get("spec") or {}
    if spec.get("pluginConfig") is not None:
        result.notes.append(
            _at(
                where,
                "spec.pluginConfig (Istio's field) takes precedence in Higress and is "
                "imported as the default config",
            )
        )
        _add(result, spec["pluginConfig"], base, {}, _at(where, "spec.pluginConfig"), namespace)
        return
    if spec.get("defaultConfig") and not spec.get("defaultConfigDisable"):
        _add(result, spec["defaultConfig"], base, {}, _at(where, "spec.defaultConfig"), namespace)
    for index, rule in enumerate(spec.get("matchRules") or []):
        at = _at(where, f"spec.matchRules[{index}]")
        if not isinstance(rule, dict):
            raise ImportFailed(at, ["must be an object"])
        if rule.get("configDisable"):
            result.notes.append(
                f"{at}: configDisable is true: skipped (Higress drops the entry, so those "
                "routes get the default config)"
            )
            continue
        target = {
            ours: list(rule[theirs]) for theirs, ours in _MATCH_FIELDS.items() if rule.get(theirs)
        }
        if not target:
            raise ImportFailed(at, ["names no ingress, domain or service"])
        if len(target) > 1:
            result.notes.append(
                f"{at}: names {' and '.join(sorted(target))}: tokenlimit applies the budget to "
                "a request matching any of them (Higress: routes win over domains, and "
                "routes with services must match both)"
            )
        _add(result, rule.get("config"), f"{base}-rule-{index + 1}", target, at, namespace)
    if not result.documents:
        raise ImportFailed(where, ["no enabled defaultConfig or matchRules to import"])


def _import_config(
    config: dict[str, Any], base: str, where: str, namespace: str | None, result: ImportResult
) -> None:
    config = dict(config)
    rules = config.pop("_rules_", None) or []
    if config:
        _add(result, config, base, {}, where, namespace)
    for index, rule in enumerate(rules):
        at = _at(where, f"_rules_[{index}]")
        if not isinstance(rule, dict):
            raise ImportFailed(at, ["must be an object"])
        rule = dict(rule)
        target = {
            ours: list(rule.pop(theirs))
            for theirs, ours in _RULE_MATCH_FIELDS.items()
            if rule.get(theirs)
        }
        for theirs in _RULE_MATCH_FIELDS:
            rule.pop(theirs, None)
        _add(result, rule, f"{base}-rule-{index + 1}", target, at, namespace)


def _add(
    result: ImportResult,
    config: Any,
    name: str,
    attach: dict[str, list[str]],
    where: str,
    namespace: str | None,
) -> None:
    if not isinstance(config, dict):
        raise ImportFailed(where, ["config must be an object"])
    config = copy.deepcopy(config)
    redis = config.pop("redis", None)
    spec: dict[str, Any] = {camel_name(k): _camelized(_requests(v)) for k, v in config.items()}
    spec["targetRef"] = {"gateway": "higress", **attach}
    secret = None
    if redis is not None:
        spec["redis"], secret = _redis(redis, name, where, namespace, result)
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    policy = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    try:
        policy_from_data(policy, where)
    except PolicyError as exc:
        raise ImportFailed(where, [_respelled(p) for p in exc.problems]) from None
    if secret is not None:
        result.documents.append(secret)
    result.documents.append(policy)


def _respelled(problem: Problem | str) -> str:
    """A policy path (`spec.ruleItems[0]`) said for the Higress config it came from."""
    return (
        str(problem).replace("spec.", "", 1) if str(problem).startswith("spec.") else str(problem)
    )


def _requests(value: Any) -> Any:
    """Higress's `limit_type: request` on limit keys → request_per_* windows."""
    if isinstance(value, list):
        return [_requests(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {k: _requests(v) for k, v in value.items()}
    if value.get("limit_type") == "request":
        del value["limit_type"]
        for unit in _WINDOW_UNITS:
            if f"token_per_{unit}" in value:
                value[f"request_per_{unit}"] = value.pop(f"token_per_{unit}")
    elif value.get("limit_type") == "token":
        del value["limit_type"]
    return value


def _camelized(value: Any) -> Any:
    if isinstance(value, list):
        return [_camelized(v) for v in value]
    if isinstance(value, dict):
        return {camel_name(k) if isinstance(k, str) else k: _camelized(v) for k, v in value.items()}
    return value


def _redis(
    redis: Any, name: str, where: str, namespace: str | None, result: ImportResult
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if not isinstance(redis, dict):
        raise ImportFailed(where, ["redis: must be an object"])
    redis = dict(redis)
    found: dict[str, Any] = {}
    host = redis.pop("service_name", None)
    if host is not None:
        found["host"] = host
    port = redis.pop("service_port", None)
    if port is None and isinstance(host, str):
        port = HIGRESS_STATIC_PORT if host.endswith(".static") else REDIS_PORT_DEFAULT
        result.notes.append(
            _at(where, f"redis.service_port was not set: wrote {port}, the port Higress used")
        )
    if port is not None:
        found["port"] = port
    for theirs, ours in (
        ("database", "database"),
        ("username", "username"),
        ("timeout", "timeoutMs"),
    ):
        if theirs in redis:
            found[ours] = redis.pop(theirs)
    secret = None
    password = redis.pop("password", None)
    if password:
        secret_name = f"{name}-redis"
        found["passwordSecretRef"] = {"name": secret_name, "key": SECRET_KEY}
        metadata: dict[str, Any] = {"name": secret_name}
        if namespace is not None:
            metadata["namespace"] = namespace
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "stringData": {SECRET_KEY: str(password)},
        }
        result.notes.append(
            _at(
                where,
                f"the Redis password moved into Secret {secret_name} (key {SECRET_KEY}), "
                "printed before the policy: keep that output private, or create the Secret "
                "yourself and drop that document",
            )
        )
    for leftover in redis:  # unknown keys: let the model name them
        found[camel_name(leftover)] = redis[leftover]
    return found, secret
