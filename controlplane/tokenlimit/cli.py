"""The `tokenlimit` command line.

Heavy modules (aiohttp, redis, rich, the gateway) are imported inside the commands that use
them, so `tokenlimit validate` in a CI job or a pre-commit hook starts fast; a test pins that.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from tokenlimit import loader
from tokenlimit.modules import ModuleMissing, filter_path

if TYPE_CHECKING:
    from tokenlimit.gateway import Gateway

ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
RENDER_UPSTREAM_DEFAULT = "https://api.openai.com"
FOLLOW_INTERVAL_S = 0.2


# --- errors: exit 1, with messages that say what to do ------------------------------------


class TokenlimitError(click.ClickException):
    """A failure that is not a usage error (exit 1)."""


class PolicyInvalid(TokenlimitError):
    """One or more policy files were refused; each line already starts with the file name."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True, file=file)


class FilterNotBuilt(TokenlimitError):
    """The .wasm module is not in the package."""


class GatewayFailed(TokenlimitError):
    """The local gateway could not start or stopped working."""


# --- parameter types ---------------------------------------------------------------------


class ListenAddress(click.ParamType):
    """`PORT` or `HOST:PORT` (host defaults to 127.0.0.1)."""

    name = "[HOST:]PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        host, _, port_text = str(value).rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            self.fail(f"expected PORT or HOST:PORT with a port from 1 to 65535, got {value!r}")
        return (host.strip("[]") or "127.0.0.1", port)


class UpstreamUrl(click.ParamType):
    """An `http(s)://host[:port]` URL (or `mock` where allowed)."""

    name = "URL"

    def __init__(self, allow_mock: bool) -> None:
        self.allow_mock = allow_mock

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from tokenlimit.render.envoy import Upstream

        if self.allow_mock and value == "mock":
            return value
        try:
            Upstream.parse(str(value))
        except ValueError as exc:
            hint = " or `mock` for the built-in mock LLM" if self.allow_mock else ""
            self.fail(f"{exc}{hint}")
        return str(value)


# --- commands ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Token-budget rate limiting for LLM traffic on Envoy and Higress."""


@main.group("filter")
def filter_group() -> None:
    """The proxy-wasm filter module shipped in this package."""


@filter_group.command("path")
@click.option(
    "--target",
    type=click.Choice(["envoy", "higress"]),
    default="envoy",
    show_default=True,
    help="envoy: stock Envoy/Istio/Envoy Gateway; higress: Higress (its Redis ABI).",
)
def filter_path_command(target: str) -> None:
    """Print the path of the built .wasm module."""
    click.echo(_module(target))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check policy files (Higress config or TokenRateLimitPolicy, YAML or JSON).

    Runs the same loader as `render`, `up`, `push` and the operator.
    """
    failures: list[str] = []
    for file in files:
        try:
            policy = loader.load_policy(file)
        except loader.PolicyError as exc:
            failures.append(str(exc))
            continue
        click.echo(f"{file}: ok ({loader.summary(policy)})")
    if failures:
        raise PolicyInvalid("\n".join(failures))


@main.command()
@click.option("--target", type=click.Choice(["envoy"]), default="envoy", show_default=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--listen",
    type=ListenAddress(),
    default="10000",
    show_default=True,
    help="Where Envoy listens: PORT or HOST:PORT.",
)
@click.option("--admin-port", type=click.IntRange(1, 65535), default=9901, show_default=True)
@click.option(
    "--upstream",
    type=UpstreamUrl(allow_mock=False),
    default=RENDER_UPSTREAM_DEFAULT,
    show_default=True,
    help="The LLM API: http(s)://host[:port].",
)
@click.option(
    "--wasm",
    "wasm_path",
    default=None,
    metavar="PATH",
    help="The filter module's path as Envoy will see it [default: the packaged module].",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write envoy.yaml + tokenlimit-ecds.yaml (rules reload without restart) here.",
)
def render(
    target: str,
    file: str,
    listen: tuple[str, int],
    admin_port: int,
    upstream: str,
    wasm_path: str | None,
    out_dir: str | None,
) -> None:
    """Print an Envoy bootstrap running FILE's policy (filter config inline).

    With --out-dir, write a bootstrap that reads the filter config from an ECDS file instead,
    so `tokenlimit render --out-dir` again (or any atomic rename) updates the rules live.
    """
    from tokenlimit.render.envoy import (
        EcdsFilter,
        EnvoyOptions,
        InlineFilter,
        Upstream,
        bootstrap,
        ecds_resource,
        filter_typed_config,
        to_yaml,
    )

    assert target == "envoy"
    policy = _load(file)
    wasm = wasm_path or str(_module("envoy"))
    host, port = listen
    options = {
        "upstream": Upstream.parse(upstream),
        "listen_address": host,
        "listen_port": port,
        "admin_port": admin_port,
    }
    if out_dir is None:
        inline = InlineFilter(filter_typed_config(policy.config, wasm))
        click.echo(to_yaml(bootstrap(EnvoyOptions(filter=inline, **options))), nl=False)
        return
    directory = Path(out_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ecds_path = directory / "tokenlimit-ecds.yaml"
    bootstrap_path = directory / "envoy.yaml"
    _write_atomic(ecds_path, to_yaml(ecds_resource(policy.config, wasm)))
    ecds = EcdsFilter(str(ecds_path))
    _write_atomic(bootstrap_path, to_yaml(bootstrap(EnvoyOptions(filter=ecds, **options))))
    click.echo(bootstrap_path)
    click.echo(ecds_path)


@main.command("mock-llm")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--name", default="mock-llm", show_default=True, help="Reported in x-mock-upstream.")
def mock_llm(port: int, host: str, name: str) -> None:
    """Run the mock OpenAI/Anthropic/Gemini-compatible upstream."""
    from tokenlimit import mockllm

    mockllm.run(host, port, name)


@main.command()
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
def up(
    policy_file: str,
    listen: int,
    admin_port: int,
    upstream: str,
    concurrency: int,
    log_level: str,
    wasm_path: str | None,
) -> None:
    """Run a local gateway: Envoy with the filter, in front of UPSTREAM.

    Prints one line when ready, then the access log; Envoy's warnings go to stderr.
    Stops cleanly on Ctrl-C or SIGTERM.
    """
    from tokenlimit.gateway import Gateway, GatewayError

    policy = _load(policy_file)
    for port, option in ((listen, "--listen"), (admin_port, "--admin-port")):
        _require_free(port, option)
    if wasm_path is None:
        _module("envoy")
    gateway = Gateway(
        policy.config,
        upstream=upstream,
        listen_port=listen,
        admin_port=admin_port,
        wasm_path=wasm_path,
        concurrency=concurrency,
        log_level=log_level,
    )
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        gateway.start()
        click.echo(_ready_line(gateway, policy))
        _follow(gateway, policy_file)
    except GatewayError as exc:
        raise GatewayFailed(str(exc)) from None
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: a normal way to stop
    finally:
        gateway.stop()
        signal.signal(signal.SIGTERM, previous_handler)


# --- helpers -------------------------------------------------------------------------------


def _load(file: str) -> loader.LoadedPolicy:
    try:
        return loader.load_policy(file)
    except loader.PolicyError as exc:
        raise PolicyInvalid(str(exc)) from None


def _module(target: str) -> Path:
    try:
        return filter_path("higress" if target == "higress" else "envoy")
    except ModuleMissing as exc:
        raise FilterNotBuilt(str(exc)) from None


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
    return (
        f"tokenlimit up: gateway {gateway.listen_url} → upstream {target}, "
        f"admin {gateway.admin_url}, rule {rules}; Ctrl-C to stop"
    )


def _follow(gateway: Gateway, policy_file: str) -> None:
    """Print access-log lines (stdout) and Envoy complaints (stderr); apply policy edits."""
    from tokenlimit.gateway import GatewayError

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
    from tokenlimit.gateway import GatewayError

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
