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
- a route's rule replaces the default config on that route, as in Higress (never both): the
  default policy gets `targetRef.exclude` naming the routes, domains and services the rules
  attach to (a rule naming routes and domains matches on its routes, as in Higress; one naming
  routes and services, on both, which a policy cannot say: noted);
- each config is read as Higress reads it (tokenlimit.model.higress: `key: 123456` as text,
  unknown fields such as `limit_type` dropped, `0` ports and timeouts as the default), with a
  note per field dropped; a broken default config beside route rules is skipped, as Higress
  skips it; snake_case fields become the policy's camelCase ones;
- `redis.service_name`/`service_port`/`timeout`/`database`/`username` map to `spec.redis`; an
  inline `password` moves into a Secret document (`<plugin>-redis`, key `password`) that the
  policy references, because a policy never holds a password. A missing `service_port` is
  written out as the default Higress used (80 for `.static`, else 6379);
- a `_rules_` entry with only `_match_route_prefix_` → `targetRef.routePrefixes` (rendered back
  as a defaultConfig `_rules_` entry: WasmPlugin matchRules have no prefix field); refused
  beside a default config, which a policy cannot exclude by prefix. Beside routes, domains
  or services the prefixes are dropped and noted, as Higress never reads them then.

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
from tokenlimit.model.higress import read_as_higress

HIGRESS_API_VERSION = "extensions.higress.io/v1alpha1"
WASM_PLUGIN = "WasmPlugin"
SECRET_KEY = "password"
_MATCH_FIELDS = {"ingress": "ingresses", "domain": "domains", "service": "services"}
_RULE_MATCH_FIELDS = {
    "_match_route_": "ingresses",
    "_match_domain_": "domains",
    "_match_service_": "services",
}


class ImportFailed(PolicyError):
    """The input cannot become valid policies; one line per problem."""


@dataclass(frozen=True)
class _Rule:
    """A route rule to import: its config, what it attaches to, where it came from."""

    config: Any
    name: str
    target: dict[str, list[str]]
    where: str


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
    rules: list[_Rule] = []
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
        target = _as_higress_matches(target, at, "domain", result)
        rules.append(_Rule(rule.get("config"), f"{base}-rule-{index + 1}", target, at))
    if spec.get("defaultConfig") and not spec.get("defaultConfigDisable"):
        at = _at(where, "spec.defaultConfig")
        _add(
            result,
            spec["defaultConfig"],
            base,
            _excluding(rules, at, "spec.matchRules", result),
            at,
            namespace,
        )
    for rule in rules:
        _add(result, rule.config, rule.name, rule.target, rule.where, namespace)
    if not result.documents:
        raise ImportFailed(where, ["no enabled defaultConfig or matchRules to import"])


def _as_higress_matches(
    target: dict[str, list[str]], at: str, domain_field: str, result: ImportResult
) -> dict[str, list[str]]:
    """What a Higress rule really matches: with routes, its domains are never looked at."""
    if "ingresses" in target and "domains" in target:
        result.notes.append(
            f"{at}: {domain_field} dropped: Higress matches a rule that names routes on its "
            "routes only"
        )
        target = {k: v for k, v in target.items() if k != "domains"}
    if "ingresses" in target and "services" in target:
        result.notes.append(
            f"{at}: names ingresses and services: Higress applies it to a request matching a "
            "route AND a service; the policy applies it to a request matching either (split "
            "the routes if they reach other services)"
        )
    return target


def _prefix_target(prefixes: list[str], at: str, *, beside_default: bool) -> dict[str, list[str]]:
    """`targetRef.routePrefixes` for a `_match_route_prefix_` rule (rendered back into a
    defaultConfig `_rules_` entry), or why it cannot be one."""
    if beside_default:
        raise ImportFailed(
            at,
            [
                "_match_route_prefix_ beside a default config: the prefix rule replaces the "
                "default on those routes, and a policy cannot exclude routes by prefix (list "
                "the routes in _match_route_, or import the rule without the default config)"
            ],
        )
    return {"routePrefixes": prefixes}


def _excluding(
    rules: list[_Rule], at: str, rules_field: str, result: ImportResult
) -> dict[str, Any]:
    """The default policy's targetRef fields: every route the rules replace it on."""
    excluded: dict[str, list[str]] = {}
    for rule in rules:
        for kind, values in rule.target.items():
            excluded.setdefault(kind, []).extend(v for v in values if v not in excluded[kind])
    if not excluded:
        return {}
    named = "; ".join(f"{kind} {', '.join(values)}" for kind, values in excluded.items())
    result.notes.append(
        f"{at}: applies to every route except {named}, which {rules_field} give their own rule "
        "(Higress applies a route's rule instead of the default, never both)"
    )
    return {"exclude": excluded}


def _import_config(
    config: dict[str, Any], base: str, where: str, namespace: str | None, result: ImportResult
) -> None:
    config = dict(config)
    entries = config.pop("_rules_", None) or []
    rules: list[_Rule] = []
    for index, entry in enumerate(entries):
        at = _at(where, f"_rules_[{index}]")
        if not isinstance(entry, dict):
            raise ImportFailed(at, ["must be an object"])
        entry, _ = read_as_higress({"_rules_": [entry]})
        assert isinstance(entry, dict)
        rule = dict(entry["_rules_"][0])
        target = {
            ours: list(rule[theirs])
            for theirs, ours in _RULE_MATCH_FIELDS.items()
            if rule.get(theirs)
        }
        prefixes = [p for p in rule.get("_match_route_prefix_") or [] if p]
        if prefixes and target:
            result.notes.append(
                f"{at}: _match_route_prefix_ dropped: Higress reads route prefixes only in a "
                "rule naming no routes, domains or services"
            )
        elif prefixes:
            target = _prefix_target(prefixes, at, beside_default=bool(config))
        for theirs in (*_RULE_MATCH_FIELDS, "_match_route_prefix_"):
            rule.pop(theirs, None)
        target = _as_higress_matches(target, at, "_match_domain_", result)
        rules.append(_Rule(rule, f"{base}-rule-{index + 1}", target, at))
    if config:
        exclude = _excluding(rules, where or "the default config", "_rules_", result)
        try:
            _add(result, config, base, exclude, where, namespace)
        except ImportFailed as broken:
            if not rules:
                raise
            result.notes.append(
                _at(
                    where,
                    "the default config is skipped, as Higress skips a broken one beside "
                    f"_rules_: {'; '.join(str(p) for p in broken.problems)}",
                )
            )
    for route_rule in rules:
        _add(
            result,
            route_rule.config,
            route_rule.name,
            route_rule.target,
            route_rule.where,
            namespace,
        )


def _add(
    result: ImportResult,
    config: Any,
    name: str,
    attach: dict[str, Any],
    where: str,
    namespace: str | None,
) -> None:
    if not isinstance(config, dict):
        raise ImportFailed(where, ["config must be an object"])
    read, ignored = read_as_higress(copy.deepcopy(config))
    assert isinstance(read, dict)
    config = read
    result.notes.extend(_at(where, str(problem)) for problem in ignored)
    redis = config.pop("redis", None)
    spec: dict[str, Any] = {camel_name(k): _camelized(v) for k, v in config.items()}
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
