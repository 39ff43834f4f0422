"""The commands that watch a running gateway: dashboard, alerts, logs (tokenlimit.observe).

Their modules (aiohttp, redis) are imported inside the commands, so `tokenlimit validate`
keeps starting fast.
"""

from __future__ import annotations

import logging
import secrets
import sys
from typing import TYPE_CHECKING, TextIO

import click

from tokenlimit.cli._common import load_policy

if TYPE_CHECKING:
    from tokenlimit.observe.sources import Policy

TOKEN_ENV = "TOKENLIMIT_DASHBOARD_TOKEN"
WEBHOOK_ENV = "TOKENLIMIT_ALERT_WEBHOOK"
DINGTALK_SECRET_ENV = "TOKENLIMIT_DINGTALK_SECRET"

envoy_option = click.option(
    "--envoy-admin",
    "envoy_admins",
    multiple=True,
    metavar="URL",
    help="An Envoy admin URL (e.g. http://127.0.0.1:9901); repeat for several: summed.",
)
redis_option = click.option(
    "--redis", "redis_url", default=None, metavar="URL", help="The Redis budget store."
)
policy_option = click.option(
    "--policy",
    "policy_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The policy (limits, warn_at) the Redis counters are read against; repeatable.",
)


def _policy(files: tuple[str, ...]) -> Policy | None:
    from tokenlimit.observe.sources import Policy

    if not files:
        return None
    policy = Policy()
    for file in files:
        policy.add(load_policy(file).config)
    return policy


@click.command("dashboard")
@envoy_option
@redis_option
@policy_option
@click.option("--listen", "port", type=int, default=8765, show_default=True, metavar="PORT")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Required from every viewer (?token=... or Bearer); env {TOKEN_ENV}. Needed to "
    "listen on an address other than loopback.",
)
@click.option("--interval", "interval_s", type=float, default=5.0, show_default=True)
def dashboard(
    envoy_admins: tuple[str, ...],
    redis_url: str | None,
    policy_files: tuple[str, ...],
    port: int,
    host: str,
    token: str | None,
    interval_s: float,
) -> None:
    """A live panel: usage against limits, spend, refusals, waits, downgrades and cache hits,
    per rule, per model and top callers (hashed), refreshed every few seconds."""
    from tokenlimit.observe.dashboard import is_loopback, make_app, serve
    from tokenlimit.observe.sources import Sources

    if not envoy_admins and redis_url is None:
        raise click.UsageError("name what to show: --envoy-admin URL and/or --redis URL")
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} exposes budgets beyond this machine: set --token (or {TOKEN_ENV}); "
            f"for example --token {secrets.token_urlsafe(24)}"
        )
    policy = _policy(policy_files)
    sources = Sources(envoy_admins, redis_url, policy)
    serve(make_app(sources, token=token or "", interval_s=interval_s), host, port)


@click.command("alerts")
@envoy_option
@redis_option
@policy_option
@click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    envvar=WEBHOOK_ENV,
    metavar="[FORMAT=]URL",
    help="Where to post: generic (default), dingtalk, wecom or slack, e.g. "
    f"slack=https://hooks.slack.com/services/...; repeatable (env {WEBHOOK_ENV}).",
)
@click.option(
    "--dingtalk-secret",
    envvar=DINGTALK_SECRET_ENV,
    default=None,
    help=f"Sign DingTalk robot calls with this secret (env {DINGTALK_SECRET_ENV}).",
)
@click.option("--interval", "interval_s", type=float, default=15.0, show_default=True)
@click.option(
    "--rate-limited-minutes",
    type=float,
    default=5.0,
    show_default=True,
    help="Alert when a model's upstreams answer 429 for this long.",
)
@click.option("--refusal-ratio", type=float, default=0.2, show_default=True)
@click.option("--refusal-window", "refusal_window_s", type=float, default=300, show_default=True)
@click.option("--refusal-min-requests", type=int, default=20, show_default=True)
@click.option(
    "--warn-at",
    type=float,
    default=0.8,
    show_default=True,
    help="For budgets whose policy sets no warn_at.",
)
@click.option("--once", is_flag=True, help="Look once, send what fires, exit.")
def alerts(
    envoy_admins: tuple[str, ...],
    redis_url: str | None,
    policy_files: tuple[str, ...],
    webhooks: tuple[str, ...],
    dingtalk_secret: str | None,
    interval_s: float,
    rate_limited_minutes: float,
    refusal_ratio: float,
    refusal_window_s: float,
    refusal_min_requests: int,
    warn_at: float,
    once: bool,
) -> None:
    """Post to webhooks when a model stays rate-limited upstream, a budget passes warn_at or is
    spent, the limiter refuses too much, or Redis is unavailable: one message when an episode
    starts, one when it ends. Runs until Ctrl-C."""
    from tokenlimit.observe.alert_loop import LOG, AlertLoop
    from tokenlimit.observe.alerts import Evaluator, Thresholds
    from tokenlimit.observe.notify import parse_webhooks
    from tokenlimit.observe.sources import Sources

    if not envoy_admins and redis_url is None:
        raise click.UsageError("name what to watch: --envoy-admin URL and/or --redis URL")
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        hooks = parse_webhooks(
            webhooks, dingtalk_secret=dingtalk_secret, logger=LOG, label="alert webhook"
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--webhook") from None
    thresholds = Thresholds(
        rate_limited_s=rate_limited_minutes * 60,
        refusal_ratio=refusal_ratio,
        refusal_window_s=refusal_window_s,
        refusal_min_requests=refusal_min_requests,
        warn_at=warn_at,
    )
    policy = _policy(policy_files)
    sources = Sources(envoy_admins, redis_url, policy)
    loop = AlertLoop(sources, Evaluator(thresholds), hooks)
    try:
        if once:
            for event in loop.step():
                click.echo(event.text())
            return
        loop.run(interval_s)
    except KeyboardInterrupt:
        pass


@click.command("logs")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="replace"), default="-")
@click.option("--top", "rows", type=int, default=10, show_default=True, help="Rows per table.")
def logs(file: TextIO, rows: int) -> None:
    """Summarise an Envoy access log of the rendered format (FILE, or - for stdin): top callers
    (hashed keys), refusals, upstream 429s, tokens and spend per rule and model."""
    from tokenlimit.observe.logs import render, summarise

    summary = summarise(file)
    if summary.total.requests == 0:
        raise click.ClickException(
            f"no tokenlimit access-log lines in {getattr(file, 'name', '-')} "
            f"({summary.lines} lines read): "
            "is it the log `tokenlimit render`'s Envoy bootstrap writes?"
        )
    click.echo(render(summary, rows), nl=False)


__all__ = ["alerts", "dashboard", "logs"]
