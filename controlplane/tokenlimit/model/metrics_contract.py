"""The filter's labelled metrics (issue 16), read from contract/metrics.json.

The filter defines metrics whose names carry their labels
(`tokenlimit.requests.rule.<r>.model.<m>.outcome.<o>`); the Envoy bootstrap's `stats_tags`
(the regexes here) move those segments into labels, so /stats/prometheus prints
`tokenlimit_requests{rule=...,model=...,outcome=...}`. The filter is built from the same file
(filter/build.zig), so the names the renderer, the dashboard and the alerts use cannot drift from
the names the filter defines. A file that does not fit the model fails the import, naming the
entry.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MetricSpec(_Frozen):
    name: str
    labels: tuple[str, ...]
    help: str


class StatsTag(_Frozen):
    """One Envoy TagSpecifier: the first group is cut from the name, the second is the value."""

    tag_name: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _two_groups(cls, value: str) -> str:
        # Python's re reads these regexes as Envoy does (no construct either lacks).
        if re.compile(value).groups < 2:
            raise ValueError("needs two groups: the part to remove and, inside it, the value")
        return value


class MetricsContract(_Frozen):
    comment: str = Field(alias="_comment")
    prefix: str
    label_value_bytes_max: int
    model_none: str
    model_other: str
    outcomes: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]
    stats_tags: tuple[StatsTag, ...]

    def prometheus_name(self, metric: str) -> str:
        """How /stats/prometheus names `metric` (Envoy strips `wasmcustom.`, no `_total`)."""
        if metric not in {spec.name for spec in self.metrics}:
            raise KeyError(f"contract/metrics.json has no metric {metric!r}")
        return f"{self.prefix}_{metric}"

    def envoy_stats_tags(self) -> list[dict[str, str]]:
        """The bootstrap's `stats_config.stats_tags` entries, in the contract's order."""
        return [{"tag_name": tag.tag_name, "regex": tag.regex} for tag in self.stats_tags]


def load_metrics_contract() -> MetricsContract:
    """contract/metrics.json as shipped in the package; RuntimeError names a bad entry."""
    text = (files("tokenlimit") / "contract" / "metrics.json").read_text(encoding="utf-8")
    try:
        return MetricsContract.model_validate_json(text)
    except ValidationError as exc:
        raise RuntimeError(f"contract/metrics.json does not fit the model: {exc}") from None


METRICS: Final = load_metrics_contract()
