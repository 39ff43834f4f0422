"""The tables of bench/accuracy.py's report: the summary per cell, then every round."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Protocol

import _harness as h


class RoundLike(Protocol):
    kind: str
    store: str
    mode: str
    clients: int
    repeat: int
    admitted: int
    rejected: int
    errors: int
    tokens: int
    envoy_charged: int
    envoy_allowed: int
    envoy_rejected: int
    envoy_store_errors: int
    window_ok: bool
    error_samples: list[str]

    @property
    def ratio(self) -> float: ...

    @property
    def counters_agree(self) -> bool: ...


def tables(out: list[str], rounds: Sequence[RoundLike], kind_labels: dict[str, str]) -> str:
    out.append(
        "Rows (`--rows`): `plain` as above; `n: 8`, every request asks for 8 outputs and is "
        "billed for 8; `dodging`, clients rotate between `include_usage: false`, "
        "`stream_options: null` and disconnecting before the answer, with a budget out of "
        "reach: its ratio is Envoy's `tokens_charged` ÷ the true usage (bench/_accuracy_rows.py); "
        "`cost ($)`, a dollar budget in `reserve`: the admitted requests' cost ÷ the budget."
        "\n"
    )
    cells: dict[tuple[str, str, str, int], list[Any]] = {}
    for r in rounds:
        cells.setdefault((kind_labels[r.kind], r.store, r.mode, r.clients), []).append(r)
    rows = []
    for (label, store, mode, n), group in cells.items():
        ratios = [r.ratio for r in group]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(group) > 1 else "-"
        rows.append(
            [
                label,
                store,
                mode,
                n,
                len(group),
                f"{statistics.mean(ratios):.2f}",
                spread,
                f"{statistics.mean(r.admitted for r in group):.1f}",
                f"{statistics.mean(r.rejected for r in group):.0f}",
            ]
        )
    out.append(
        h.markdown_table(
            [
                "requests",
                "store",
                "admission",
                "clients",
                "rounds",
                "admitted ÷ budget (dodging: charged ÷ true)",
                "range",
                "admitted req/round",
                "rejected req/round",
            ],
            rows,
        )
    )
    out.append("")
    out.append("Every round:\n")
    rows = []
    for r in rounds:
        rows.append(
            [
                kind_labels[r.kind],
                r.store,
                r.mode,
                r.clients,
                r.repeat,
                r.admitted,
                r.rejected,
                r.errors,
                f"{r.tokens:,}",
                f"{r.ratio:.3f}",
                f"{r.envoy_charged:,}",
                f"{r.envoy_allowed}/{r.envoy_rejected}/{r.envoy_store_errors}",
                "yes" if r.counters_agree else "NO",
                "yes" if r.window_ok else "NO",
            ]
        )
    out.append(
        h.markdown_table(
            [
                "requests",
                "store",
                "admission",
                "clients",
                "round",
                "admitted",
                "rejected",
                "errors",
                "admitted tokens",
                "÷ budget",
                "Envoy tokens_charged",
                "Envoy allowed/rejected/store errors",
                "counters agree",
                "one window",
            ],
            rows,
        )
    )
    samples = [s for r in rounds for s in r.error_samples]
    if samples:
        out.append("\nErrors seen (first few): " + "; ".join(samples[:5]))
    return "\n".join(out)
