"""What the operator's reconcile tests share: recorded policies, a fixed clock, a test renderer.

tests/operator/test_operator_reconcile.py and test_operator_renderers.py call `reconcile` on
the recorded shapes in tests/fixtures/kube/; test_operator_loop.py runs the loop with
`PluginRenderer`, which renders one made-up `Plugin` kind so those tests need no gateway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenlimit.apply.kube import Kind
from tokenlimit.loader import LoadedPolicy
from tokenlimit.model import filter_json
from tokenlimit.operator.reconcile import (
    Settings,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
NOW = datetime(2025, 6, 2, 9, 21, 3, tzinfo=UTC)
PLUGIN = Kind("example.io/v1", "Plugin")
UID = "3f2b8c4e-9a1d-4f6b-8e2a-5c7d9b0e1f23"


def recorded(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return found


class PluginRenderer:
    """A renderer for tests: one Plugin per policy, in its namespace or in `namespace`."""

    def __init__(self, namespace: str | None = None, extra: dict[str, Any] | None = None):
        self.namespace = namespace
        self.extra = extra or {}

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return (PLUGIN,)

    def render(
        self, policy: LoadedPolicy, document: Mapping[str, Any], settings: Settings
    ) -> list[dict[str, Any]]:
        metadata: dict[str, Any] = {"name": f"tokenlimit-{policy.name}"}
        if self.namespace is not None:
            metadata["namespace"] = self.namespace
        return [
            {
                "apiVersion": PLUGIN.api_version,
                "kind": PLUGIN.kind,
                "metadata": metadata,
                "spec": {"config": json.loads(filter_json(policy.config)), **self.extra},
            }
        ]
