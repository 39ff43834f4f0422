"""YAML out and in: the one dumper every rendered document goes through.

Dicts are dumped in their own order (renderers build them top-down the way Envoy and
Kubernetes document them), without anchors/aliases and with long strings on one line, so the
same objects always give the same bytes (golden tests pin them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML in the dicts' own order, without anchors/aliases, long strings on one line."""
    return yaml.dump(
        doc,
        Dumper=_PlainDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,
    )


def to_yaml_documents(objects: Sequence[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream (`kubectl apply -f -` reads it)."""
    return "---\n".join(to_yaml(obj) for obj in objects)


def load_yaml_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
