"""Contract vectors for fields the filter does not parse yet (`"needs": [field, ...]`).

Model-aware budgets (docs/design-model-budgets.md) land in two halves: the control plane
validates every new field now, the filter learns them one by one. Until it parses a field it
ignores it with its "ignored fields" warning, as Higress ignores unknown fields, so a vector
about that field would be judged differently by the two halves. Such a vector lists the fields
it needs; the filter-side tests skip it only while the filter itself says (by a probe config
per field) that it ignores one of them:

- every skip is counted and reported (a pytest warning naming each vector), never silent;
- a vector whose needed fields the filter all parses is no longer skipped, and the test fails
  until its `needs` marker is removed, so it is judged like every other vector;
- a needed field without a probe here fails too.

A field is "ignored" only when the filter loads its probe and names the field's path in the
warning; a probe it refuses counts as parsed (the filter judged the field).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

_BASE = {"rule_name": "probe", "global_threshold": {"token_per_minute": 1}}
_PRICES = {"*": {"input": 1, "output": 1}}


def _global(field: str, value: object) -> tuple[dict[str, Any], str]:
    config = {
        "rule_name": "probe",
        "prices": _PRICES,
        "global_threshold": {"token_per_minute": 1, field: value},
    }
    return config, f"global_threshold.{field}"


def _item(field: str, value: object) -> tuple[dict[str, Any], str]:
    item = {"limit_by_header": "x", field: value, "limit_keys": [{"key": "k", "token_per_day": 1}]}
    return {"rule_name": "probe", "rule_items": [item]}, f"rule_items[0].{field}"


def _rule(field: str, value: object) -> tuple[dict[str, Any], str]:
    return {**_BASE, field: value}, field


_WINDOWS = (
    "token_per_week",
    "token_per_month",
    "request_per_week",
    "request_per_month",
    "cost_per_second",
    "cost_per_minute",
    "cost_per_hour",
    "cost_per_day",
    "cost_per_week",
    "cost_per_month",
)
# field -> (a config the filter loads whether or not it parses the field, the field's path)
PROBES: dict[str, tuple[dict[str, Any], str]] = {
    "time_zone": _rule("time_zone", "UTC"),
    "model_header": _rule("model_header", "x-model"),
    "prices": _rule("prices", _PRICES),
    "calendar": _rule("calendar", {"zone": "UTC", "transitions": [[946684800000, 0]]}),
    "warn_at": _global("warn_at", 0.5),
    # Beside limit_by_header: ignored, the item still loads; parsed, it is refused (two kinds).
    "limit_by_model": _item("limit_by_model", ""),
    "limit_by_per_model": _item("limit_by_per_model", ""),
    "per_model": _item("per_model", True),
    "models": _item("models", ["m"]),
    **{window: _global(window, 1) for window in _WINDOWS},
}
_IGNORED = "config: ignored fields, as Higress ignores them: "


class ConfigHost(Protocol):
    def configure(self, config: object) -> bool: ...
    def log_messages(self, level: Any = None) -> list[str]: ...


def ignored_by_filter(host: ConfigHost, field: str) -> bool:
    """Whether the filter loads `field`'s probe and says it ignores the field."""
    config, path = PROBES[field]
    before = len(host.log_messages())
    if not host.configure(json.dumps(config)):
        return False
    lines = [m for m in host.log_messages()[before:] if _IGNORED in m]
    return bool(lines) and path in lines[-1].split(_IGNORED, 1)[1].split(", ")


def judged_vectors(host: ConfigHost, vectors: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The vectors the filter can judge today; the others are reported as skipped. Raises
    AssertionError for a `needs` marker that is stale or names a field without a probe."""
    vectors = list(vectors)
    needed = sorted({field for v in vectors for field in v.get("needs", [])})
    unknown = [field for field in needed if field not in PROBES]
    assert not unknown, f"contract/config.json needs fields without a probe: {unknown}"
    ignored = {field for field in needed if ignored_by_filter(host, field)}
    skipped: list[str] = []
    for vector in vectors:
        needs = vector.get("needs")
        if needs is None:
            yield vector
            continue
        missing = [field for field in needs if field in ignored]
        assert missing, (
            f'vector {vector["name"]!r}: the filter parses {needs} now; remove its "needs" '
            "marker from contract/config.json so it is judged"
        )
        skipped.append(f"{vector['name']} (filter ignores {', '.join(missing)})")
    if skipped:
        report = f"{len(skipped)} config vectors skipped, the filter ignores fields they need:\n"
        report += "\n".join(f"  {line}" for line in skipped)
        print(report)
        warnings.warn(report, stacklevel=1)
