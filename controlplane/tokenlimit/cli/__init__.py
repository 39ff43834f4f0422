"""The `tokenlimit` command line: the group, and where each command lives.

- policy.py  validate, render, push, import, crd, filter path
- run.py     up, bridge, mock-llm, usage
- observe.py dashboard, alerts, logs
- tokenlimit.fallback.cli and tokenlimit.operator.command: `fallback ...` and `operator`

Heavy modules (aiohttp, redis, rich, the gateway) are imported inside the commands that use
them, so `tokenlimit validate` in a CI job or a pre-commit hook starts fast; a test pins that.
"""

from __future__ import annotations

import click

from tokenlimit.cli import jobs, observe, policy, run
from tokenlimit.fallback.cli import fallback_group
from tokenlimit.operator.command import operator_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Token-budget rate limiting for LLM traffic on Envoy and Higress."""


for command in (
    policy.filter_group,
    policy.validate,
    policy.render,
    policy.push,
    policy.import_command,
    policy.crd,
    run.bridge_command,
    run.mock_llm,
    run.up,
    run.usage,
    fallback_group,
    operator_command,
    observe.dashboard,
    observe.alerts,
    observe.logs,
    jobs.jobs_command,  # issue 14: the async jobs service
):
    main.add_command(command)
