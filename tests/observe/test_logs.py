"""`tokenlimit logs` on lines of the rendered format: callers, refusals, upstream 429s, spend."""

from __future__ import annotations

from decimal import Decimal

from click.testing import CliRunner
from tokenlimit.cli import main
from tokenlimit.observe.logs import summarise

KEY = "per_header:x-api-key:tokens:60:"
LINES = [
    "[2026-12-06T05:00:00.000Z] POST /v1/chat/completions status=200 flags=- request_id=a "
    f"decision=allowed rule=chat key={KEY}aaaa tokens=1200 model=gpt-4o cost=0.012 cache=miss "
    "wait_ms=- served_model=- details=via_upstream duration_ms=900 upstream=10.0.0.1:443",
    "[2026-12-06T05:00:01.000Z] POST /v1/chat/completions status=200 flags=- request_id=b "
    f"decision=downgraded rule=chat key={KEY}aaaa tokens=300 model=gpt-4o cost=0.0006 "
    "cache=miss wait_ms=250 served_model=gpt-4o-mini details=via_upstream duration_ms=400 "
    "upstream=10.0.0.1:443",
    "[2026-12-06T05:00:02.000Z] POST /v1/chat/completions status=429 flags=- request_id=c "
    f"decision=allowed rule=chat key={KEY}bbbb tokens=- model=gpt-4o cost=- cache=miss "
    "wait_ms=- served_model=- details=via_upstream duration_ms=30 upstream=10.0.0.1:443",
    "[2026-12-06T05:00:03.000Z] POST /v1/chat/completions status=429 flags=- request_id=d "
    f"decision=rejected rule=chat key={KEY}bbbb tokens=- model=gpt-4o cost=- cache=- "
    "wait_ms=- served_model=- details=tokenlimit_rejected duration_ms=0 upstream=-",
    "[2026-12-06 05:00:04.000][1][info][main] an Envoy log line, not an access-log line",
]


def test_summary_counts_callers_refusals_upstream_429s_and_spend() -> None:
    summary = summarise(LINES)
    assert (summary.lines, summary.skipped) == (5, 1)
    total = summary.total
    assert (total.requests, total.refused, total.upstream_429) == (4, 1, 1)
    assert total.tokens == 1500 and total.cost_usd == Decimal("0.0126")
    assert summary.callers["aaaa"].tokens == 1500 and summary.callers["bbbb"].refused == 1
    # A downgraded call is the served model's.
    assert set(summary.models) == {"gpt-4o", "gpt-4o-mini"}
    assert summary.decisions == {"allowed": 2, "downgraded": 1, "rejected": 1}


def test_logs_reads_stdin_and_prints_tables() -> None:
    result = CliRunner().invoke(main, ["logs", "-"], input="\n".join(LINES) + "\n")
    assert result.exit_code == 0, result.output
    first, decisions = result.output.splitlines()[:2]
    assert first == (
        "4 requests (1 other lines skipped), 1 refused by the limiter, 1 upstream 429, "
        "1500 tokens, spend $0.0126"
    )
    assert decisions == "decisions: allowed 2, downgraded 1, rejected 1"
    assert "top callers (hashed key)" in result.output and "gpt-4o-mini" in result.output


def test_logs_of_another_format_says_so() -> None:
    result = CliRunner().invoke(main, ["logs", "-"], input="hello\nworld\n")
    assert result.exit_code == 1
    assert "no tokenlimit access-log lines in - (2 lines read)" in result.output
