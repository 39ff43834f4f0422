"""What every `tokenlimit` command shares: its errors (exit 1), parameter types and the policy
loader wrapped so that a refused policy is a CLI error."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from tokenlimit import loader
from tokenlimit.errors import TokenlimitError as TokenlimitError  # the family's root, re-exported
from tokenlimit.wasm import ModuleMissing, filter_path

# --- errors: exit 1, with messages that say what to do ------------------------------------


class PolicyInvalid(TokenlimitError):
    """One or more policy files were refused; each line already starts with the file name."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True, file=file)


class FilterNotBuilt(TokenlimitError):
    """The .wasm module is not in the package."""


class GatewayFailed(TokenlimitError):
    """The local gateway could not start or stopped working."""


# --- parameter types ---------------------------------------------------------------------


class ListenAddress(click.ParamType[Any, Any]):
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


class UpstreamUrl(click.ParamType[Any, Any]):
    """An `http(s)://host[:port]` URL (or `mock` where allowed)."""

    name = "URL"

    def __init__(self, allow_mock: bool) -> None:
        self.allow_mock = allow_mock

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from tokenlimit.model.upstream import Upstream

        if self.allow_mock and value == "mock":
            return value
        try:
            Upstream.parse(str(value))
        except ValueError as exc:
            hint = " or `mock` for the built-in mock LLM" if self.allow_mock else ""
            self.fail(f"{exc}{hint}")
        return str(value)


class Sha256(click.ParamType[Any, Any]):
    """64 lowercase hex digits (what `sha256sum` prints)."""

    name = "HEX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            self.fail(f"expected 64 hex digits (sha256sum of the module), got {value!r}")
        return text


def load_policy(file: str) -> loader.LoadedPolicy:
    try:
        return loader.load_policy(file)
    except loader.PolicyError as exc:
        raise PolicyInvalid(str(exc)) from None


def module_file(target: str) -> Path:
    try:
        return filter_path("higress" if target == "higress" else "envoy")
    except ModuleMissing as exc:
        raise FilterNotBuilt(str(exc)) from None


def check_gateway(policy: loader.LoadedPolicy, target: str) -> None:
    gateway = policy.policy.spec.gateway if policy.policy is not None else None
    if gateway is not None and gateway != target:
        raise PolicyInvalid(
            f"{policy.origin}: spec.targetRef.gateway: the policy attaches to {gateway}, "
            f"not {target}"
        )
