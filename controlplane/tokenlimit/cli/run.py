"""Commands that run something: up (a local gateway), bridge, mock-llm, usage."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import click

from tokenlimit import loader
from tokenlimit.cli._common import GatewayFailed, UpstreamUrl, load_policy, module_file
from tokenlimit.model.policy import XFF_TRUSTED_HOPS_MAX

if TYPE_CHECKING:
    from tokenlimit.dev.gateway import Gateway

ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
FOLLOW_INTERVAL_S = 0.2
USAGE_WIDTH_MIN = 120  # `tokenlimit usage` into a pipe: one line per counter


@click.command("bridge")
@click.option(
    "--redis", "redis_url", required=True, help="redis://[user[:password]@]host:port[/db]"
)
@click.option("--listen", type=int, required=True, metavar="PORT", help="0: any")
@click.option("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
@click.option(
    "--token-file",
    default=None,
    help="file holding the bearer token (else $TOKENLIMIT_BRIDGE_TOKEN; one is required)",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="run without a token: any local process may call the bridge (loopback only)",
)
@click.option(
    "--redis-password-file",
    default=None,
    help="file holding the Redis password (else $TOKENLIMIT_REDIS_PASSWORD; never the URL)",
)
@click.option("--pool-size", type=int, default=8, show_default=True)
@click.option("--timeout-ms", type=int, default=500, show_default=True)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="open connections at most; past it new ones get 503 bridge-full",
)
@click.option(
    "--read-timeout-ms",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="a request head (and its body) must arrive within this",
)
def bridge_command(
    redis_url: str,
    listen: int,
    host: str,
    token_file: str | None,
    insecure: bool,
    redis_password_file: str | None,
    pool_size: int,
    timeout_ms: int,
    max_connections: int,
    read_timeout_ms: int,
) -> None:
    """RESP-over-HTTP bridge from Envoy's tokenlimit filter to Redis."""
    from tokenlimit.bridge.config import BridgeConfig

    try:
        config = BridgeConfig.from_options(
            redis=redis_url,
            port=listen,
            host=host,
            token_file=token_file,
            redis_password_file=redis_password_file,
            pool_size=pool_size,
            timeout_ms=timeout_ms,
            insecure=insecure,
            max_connections=max_connections,
            read_timeout_ms=read_timeout_ms,
        )
    except (OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    from tokenlimit.bridge.server import run

    try:
        run(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"tokenlimit bridge: cannot listen on {host}:{listen}: {exc}"
        ) from None


@click.command("mock-llm")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--name", default="mock-llm", show_default=True, help="Reported in x-mock-upstream.")
def mock_llm(port: int, host: str, name: str) -> None:
    """Run the mock OpenAI/Anthropic/Gemini-compatible upstream."""
    from tokenlimit.dev.mockllm.server import run

    try:
        run(host, port, name)
    except OSError as exc:
        raise click.ClickException(f"mock-llm: cannot listen on {host}:{port}: {exc}") from None


@click.command()
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Policy file; edits are applied live (an invalid edit is reported and skipped).",
)
@click.option("--listen", type=click.IntRange(1, 65535), default=10000, show_default=True)
@click.option("--admin-port", type=click.IntRange(1, 65535), default=9901, show_default=True)
@click.option(
    "--upstream",
    type=UpstreamUrl(allow_mock=True),
    default="mock",
    show_default=True,
    help="http(s)://host[:port] of the LLM API, or `mock` to start the mock LLM.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--log-level", type=click.Choice(ENVOY_LOG_LEVELS), default="info", show_default=True)
@click.option("--wasm", "wasm_path", default=None, metavar="PATH", help="Use this filter module.")
@click.option(
    "--redis",
    "redis_url",
    default=None,
    metavar="URL",
    help="redis://host:port/db: keep budgets in Redis (a tokenlimit bridge is started).",
)
@click.option(
    "--xff-trusted-hops",
    "xff_num_trusted_hops",
    type=click.IntRange(0, XFF_TRUSTED_HOPS_MAX),
    default=None,
    help="Proxies in front of the gateway whose X-Forwarded-For entries are trusted for "
    "per-IP budgets (default: the policy's xffNumTrustedHops, else 0).",
)
@click.option(  # issue 14: the async jobs service beside the gateway
    "--jobs-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Also run `tokenlimit jobs` (OpenAI Batch API, Prefer: respond-async) on this port, "
    "through this gateway; needs --redis.",
)
def up(
    policy_file: str,
    listen: int,
    admin_port: int,
    upstream: str,
    concurrency: int,
    log_level: str,
    wasm_path: str | None,
    redis_url: str | None,
    xff_num_trusted_hops: int | None,
    jobs_port: int | None = None,
) -> None:
    """Run a local gateway: Envoy with the filter, in front of UPSTREAM.

    Prints one line when ready, then the access log; Envoy's warnings go to stderr.
    Stops cleanly on Ctrl-C or SIGTERM.
    """
    from tokenlimit.dev.gateway import Gateway, GatewayError

    policy = load_policy(policy_file)
    _require_store(policy, redis_url)
    if jobs_port is not None and redis_url is None:
        raise click.UsageError("--jobs-port needs --redis URL: the jobs service queues in Redis")
    for port, option in ((listen, "--listen"), (admin_port, "--admin-port")):
        _require_free(port, option)
    if wasm_path is None:
        module_file("envoy")
    gateway = Gateway(
        policy.config,
        upstream=upstream,
        listen_port=listen,
        admin_port=admin_port,
        wasm_path=wasm_path,
        concurrency=concurrency,
        log_level=log_level,
        redis=redis_url,
        xff_num_trusted_hops=_trusted_hops(xff_num_trusted_hops, policy),
    )
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    jobs = None
    try:
        gateway.start()
        click.echo(_ready_line(gateway, policy))
        if jobs_port is not None and redis_url is not None:
            from tokenlimit.jobs import launch

            jobs, jobs_url = launch.beside(
                gateway.listen_url, redis_url, gateway.work_dir, jobs_port
            )
            click.echo(f"tokenlimit up: jobs {jobs_url} (OpenAI SDK base_url {jobs_url}/v1)")
        _follow(gateway, policy_file)
    except GatewayError as exc:
        raise GatewayFailed(str(exc)) from None
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: a normal way to stop
    finally:
        if jobs is not None:
            from tokenlimit.dev import process

            process.terminate(jobs)
        gateway.stop()
        signal.signal(signal.SIGTERM, previous_handler)


@click.command()
@click.option(
    "--redis",
    "redis_url",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    metavar="URL",
    help="The Redis the filter's bridge (or Higress) writes to.",
)
@click.option("--rule", default=None, help="Only this rule's budgets.")
@click.option(
    "--key", "key_value", default=None, help="Only this caller (raw key value; hashed here)."
)
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    metavar="FILE",
    help="The policy the gateway runs: each counter's algorithm and limit (repeatable). "
    "Without it counters read as fixed windows of unknown limit.",
)
def usage(
    redis_url: str, rule: str | None, key_value: str | None, policy_files: tuple[str, ...]
) -> None:
    """Print the budgets Redis holds now: rule, counter, caller, model, window, used, limit,
    reset (tokens, requests, or USD for cost budgets)."""
    import redis
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from tokenlimit.usage import (
        CALENDAR_WINDOWS,
        Budget,
        BudgetKey,
        budgets_of,
        read_usage,
        table_rows,
    )

    budgets: dict[BudgetKey, Budget] = {}
    for file in policy_files:
        budgets.update(budgets_of(load_policy(file).config))
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        rows = read_usage(client, budgets, rule=rule, key_value=key_value)
    except redis.RedisError as exc:
        raise click.ClickException(f"{redis_url}: {exc}") from None
    if not rows:
        click.echo("no budgets in use" + (f" for key {key_value!r}" if key_value else ""))
        return
    table = Table(box=box.SIMPLE_HEAD)
    headings = (
        "rule",
        "counter",
        "caller",
        "model",
        "window",
        "used",
        "limit",
        "left",
        "resets in",
    )
    for heading in headings:
        # Names and numbers stay whole on a narrow terminal; the counter and window may wrap.
        table.add_column(heading, no_wrap=heading not in ("counter", "window"))
    for cells in table_rows(rows):
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, USAGE_WIDTH_MIN)  # a pipe or a file has no edge
    console.print(table)
    if any(r.counter.window_s in CALENDAR_WINDOWS.values() and r.used is None for r in rows):
        click.echo(
            "week and month counters follow the rule's time zone, which only its policy "
            "names: pass --policy to read them",
            err=True,
        )
    if any(r.algorithm is None for r in rows):
        click.echo(
            "counters no --policy names are read as fixed windows; "
            "pass the policy for sliding and token-bucket rules",
            err=True,
        )


# --- helpers -------------------------------------------------------------------------------


def _require_store(policy: loader.LoadedPolicy, redis_url: str | None) -> None:
    """A policy that keeps its budgets in Redis runs against a Redis, or not at all: without
    one every request would be admitted uncounted (the filter fails open on a store it cannot
    reach) while the gateway looked healthy."""
    if redis_url is not None or policy.config.redis is None:
        return
    raise click.UsageError(
        f"{policy.origin} keeps its budgets in Redis (redis.service_name "
        f"{policy.config.redis.service_name}), and without a Redis every request would be "
        "admitted uncounted. Run with --redis redis://HOST:PORT/DB (a local one: "
        "`redis-server --port 6379`, then --redis redis://127.0.0.1:6379/0; `up` starts the "
        "bridge), or remove `redis` from the policy to count in this gateway's local store."
    )


def _trusted_hops(option: int | None, policy: loader.LoadedPolicy) -> int:
    """`--xff-trusted-hops`, else the policy's xffNumTrustedHops, else 0."""
    if option is not None:
        return option
    spec = policy.policy.spec if policy.policy is not None else None
    hops = spec.xff_num_trusted_hops if spec is not None else None
    return hops or 0


def _require_free(port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise click.BadParameter(
                f"port {port} is in use; pick another with {option} PORT", param_hint=option
            ) from None


def _raise_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def _ready_line(gateway: Gateway, policy: loader.LoadedPolicy) -> str:
    target = f"mock ({gateway.upstream_url})" if gateway.uses_mock else gateway.upstream_label
    rules = ", ".join(policy.config.rule_names) or policy.name
    # Said from what the filter was given, so the banner cannot claim a store that is not used.
    store = "local store"
    if gateway.config.redis is not None:
        store = f"redis via bridge {gateway.bridge_url}"
    return (
        f"tokenlimit up: gateway {gateway.listen_url} → upstream {target}, "
        f"admin {gateway.admin_url}, rule {rules}, {store}; Ctrl-C to stop"
    )


def _follow(gateway: Gateway, policy_file: str) -> None:
    """Print access-log lines (stdout) and Envoy complaints (stderr); apply policy edits."""
    from tokenlimit.dev.gateway import GatewayError

    access = _Tail(gateway.access_log_path)
    envoy_log = _Tail(gateway.envoy_log_path)
    policy_stamp = _stamp(policy_file)
    while True:
        for line in access.new_lines():
            click.echo(line)
        for line in envoy_log.new_lines():
            if "][warning]" in line or "][error]" in line or "][critical]" in line:
                click.echo(line, err=True)
        if not gateway.is_running():
            raise GatewayError("Envoy stopped:\n" + "\n".join(envoy_log.last_lines()))
        stamp = _stamp(policy_file)
        if stamp != policy_stamp:
            policy_stamp = stamp
            _reload(gateway, policy_file)
        time.sleep(FOLLOW_INTERVAL_S)


def _reload(gateway: Gateway, policy_file: str) -> None:
    from tokenlimit.dev.gateway import GatewayError

    try:
        policy = loader.load_policy(policy_file)
        gateway.update_policy(policy.config)
    except (loader.PolicyError, GatewayError) as exc:
        click.echo(f"tokenlimit up: keeping the previous policy:\n{exc}", err=True)
        return
    click.echo(f"tokenlimit up: policy reloaded ({loader.summary(policy)})", err=True)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size)


class _Tail:
    """Lines appended to a file since the last call (a partial last line waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.recent: list[str] = []

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        lines = [line.decode(errors="replace") for line in complete]
        self.recent = (self.recent + lines)[-20:]
        return lines

    def last_lines(self) -> list[str]:
        self.new_lines()
        return self.recent
