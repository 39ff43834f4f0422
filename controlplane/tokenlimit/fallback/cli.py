"""`tokenlimit fallback ...`: render, enable, disable, status, auto.

The group is registered in tokenlimit.cli:

    from tokenlimit.fallback.cli import fallback_group
    main.add_command(fallback_group)

Standalone Envoy works on the state file `render` writes (`--state`, default
$TOKENLIMIT_FALLBACK_STATE or ./tokenlimit-fallback.json). Kubernetes works on the policy
document (`--policy FILE`): the changed TokenRateLimitPolicy is printed, or with `--apply`
server-side applied like `tokenlimit push --target kube`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from tokenlimit.fallback.toggles import STATE_FILE_DEFAULT, ToggleError
from tokenlimit.model import ConfigInvalid, parse_fallback

STATE_ENV = "TOKENLIMIT_FALLBACK_STATE"
WEBHOOK_ENV = "TOKENLIMIT_FALLBACK_WEBHOOK"
DINGTALK_SECRET_ENV = "TOKENLIMIT_DINGTALK_SECRET"


class FallbackCliError(click.ClickException):
    """Exit 1 with a message that says what to do."""


def _state_option(func: Any) -> Any:
    return click.option(
        "--state",
        "state_path",
        envvar=STATE_ENV,
        default=STATE_FILE_DEFAULT,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=f"Standalone Envoy: the state file `render` wrote (env {STATE_ENV}).",
    )(func)


def _kube_options(func: Any) -> Any:
    options = [
        click.option(
            "--policy",
            "policy_file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Kubernetes: change spec.fallback of this TokenRateLimitPolicy instead of a "
            "state file; prints the changed policy.",
        ),
        click.option("--apply", is_flag=True, help="Kubernetes: server-side apply the change."),
        click.option("--context", default=None, help="Kubernetes: the kubeconfig context."),
        click.option("--dry-run", is_flag=True, help="Kubernetes --apply: server dry run."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("fallback")
def fallback_group() -> None:
    """Model fallback: upstreams in priority order, under the same token budget."""


# --- render ---------------------------------------------------------------------------------------


@fallback_group.command("render")
@click.argument("policy_file", metavar="POLICY", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--fallback",
    "fallback_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The fallback spec (YAML: `fallback: {routes: [...]}` or `routes: [...]`) "
    "[default: POLICY's spec.fallback].",
)
@click.option(
    "--target",
    type=click.Choice(["envoy", "higress"]),
    default="envoy",
    show_default=True,
    help="envoy: bootstrap + ECDS + RDS + state file in --out-dir; higress: print the "
    "WasmPlugin and EnvoyFilters.",
)
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="envoy: where.")
@click.option("--listen", default="10000", show_default=True, help="envoy: [HOST:]PORT.")
@click.option("--admin-port", type=click.IntRange(1, 65535), default=9901, show_default=True)
@click.option("--wasm", "wasm_path", default=None, metavar="PATH", help="envoy: module path.")
@click.option("--wasm-url", default=None, metavar="URL", help="higress: the module's URL.")
@click.option("--sha256", default=None, help="higress: sha256 of the module.")
@click.option("--higress-namespace", default="higress-system", show_default=True)
def render_command(
    policy_file: str,
    fallback_file: str | None,
    target: str,
    out_dir: str | None,
    listen: str,
    admin_port: int,
    wasm_path: str | None,
    wasm_url: str | None,
    sha256: str | None,
    higress_namespace: str,
) -> None:
    """Render POLICY with its fallback chains.

    envoy: writes envoy.yaml, ecds/tokenlimit-ecds.yaml (rules), rds/routes.yaml (routes) and
    tokenlimit-fallback.json (the toggles' state) to --out-dir. Run `envoy -c DIR/envoy.yaml`;
    `tokenlimit push` changes rules and `tokenlimit fallback enable|disable` changes routes,
    both without a restart.
    """
    policy = _load(policy_file, fallback_file)
    if target == "higress":
        _render_higress(policy, wasm_url, sha256, higress_namespace)
        return
    if out_dir is None:
        raise click.UsageError("--target envoy needs --out-dir DIR")
    _render_envoy(policy, Path(out_dir), listen, admin_port, wasm_path)


def _load(policy_file: str, fallback_file: str | None) -> Any:
    """The policy with its fallback: spec.fallback, or the --fallback file put in its place."""
    from tokenlimit import loader

    try:
        data = loader.parse_document(Path(policy_file).read_text(encoding="utf-8"), policy_file)
    except loader.PolicyError as exc:
        raise FallbackCliError(str(exc)) from None
    embedded = None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        data = copy.deepcopy(data)
        embedded = data["spec"].pop("fallback", None)
    try:
        policy = loader.policy_from_data(data, policy_file)
    except loader.PolicyError as exc:
        raise FallbackCliError(str(exc)) from None
    if fallback_file is not None:
        origin = fallback_file
        try:
            raw = loader.parse_document(Path(fallback_file).read_text(encoding="utf-8"), origin)
        except loader.PolicyError as exc:
            raise FallbackCliError(str(exc)) from None
        if isinstance(raw, dict) and "fallback" in raw:
            raw = raw["fallback"]
    elif embedded is not None:
        origin, raw = f"{policy_file}: spec.fallback", embedded
    else:
        raise FallbackCliError(
            f"{policy_file} has no spec.fallback: pass the fallback spec with --fallback FILE"
        )
    try:
        spec = parse_fallback(raw)
    except ConfigInvalid as exc:
        lines = "\n".join(f"{origin}: {p}" for p in exc.problems)
        raise FallbackCliError(lines) from None
    if policy.policy is None:
        raise FallbackCliError(
            f"{policy_file}: fallback needs a TokenRateLimitPolicy (convert a Higress config "
            "with `tokenlimit import`)"
        )
    # Rendered like any policy: the fallback is part of spec, so render() carries it.
    spec_with = policy.policy.spec.model_copy(update={"fallback": spec})
    return dataclasses.replace(policy, policy=policy.policy.model_copy(update={"spec": spec_with}))


def _render_envoy(
    policy: Any, out_dir: Path, listen: str, admin_port: int, wasm: str | None
) -> None:
    from tokenlimit.cli._envoy_files import write_envoy_files
    from tokenlimit.render import RenderError
    from tokenlimit.wasm import filter_path

    host, _, port_text = listen.rpartition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise click.BadParameter(f"expected [HOST:]PORT, got {listen!r}", param_hint="--listen")
    try:
        written = write_envoy_files(
            policy,
            out_dir,
            wasm_path=wasm or str(filter_path("envoy")),
            upstream=None,  # the routes go to the fallback chains
            listen_address=host.strip("[]") or "127.0.0.1",
            listen_port=int(port_text),
            admin_port=admin_port,
        )
    except (RenderError, ValueError) as exc:
        raise FallbackCliError(f"{policy.origin}: {exc}") from None
    for path in written:
        click.echo(path)


def _render_higress(policy: Any, wasm_url: str | None, sha256: str | None, namespace: str) -> None:
    from tokenlimit.render import HigressOptions, RenderError, WasmModule, render
    from tokenlimit.render.kube import to_yaml_documents

    if wasm_url is None:
        raise click.UsageError("--target higress needs --wasm-url URL (tokenlimit-higress.wasm)")
    try:
        options = HigressOptions(module=WasmModule(wasm_url, sha256), namespace=namespace)
        objects = render(policy, "higress", options).objects
    except (RenderError, ValueError) as exc:
        raise FallbackCliError(f"{policy.origin}: {exc}") from None
    click.echo(to_yaml_documents(objects), nl=False)


# --- toggles ---------------------------------------------------------------------------------


@fallback_group.command("enable")
@click.argument("route")
@click.option(
    "--to", "to", default=None, metavar="UPSTREAM", help="Force: start every request here."
)
@_state_option
@click.option("--no-wait", is_flag=True, help="Do not wait until Envoy serves the new routes.")
@_kube_options
def enable_command(
    route: str,
    to: str | None,
    state_path: str,
    no_wait: bool,
    policy_file: str | None,
    apply: bool,
    context: str | None,
    dry_run: bool,
) -> None:
    """Turn on fallback for ROUTE: automatic, or forced to UPSTREAM with --to.

    Automatic: every request starts at the primary and moves down the chain on 429/5xx.
    Forced: every request starts at UPSTREAM (then the rest of the chain).
    """
    mode = "forced" if to else "auto"
    _toggle(route, mode, to, state_path, no_wait, policy_file, apply, context, dry_run)


@fallback_group.command("disable")
@click.argument("route")
@_state_option
@click.option("--no-wait", is_flag=True, help="Do not wait until Envoy serves the new routes.")
@_kube_options
def disable_command(
    route: str,
    state_path: str,
    no_wait: bool,
    policy_file: str | None,
    apply: bool,
    context: str | None,
    dry_run: bool,
) -> None:
    """Turn fallback off for ROUTE: the primary only, no retries."""
    _toggle(route, "off", None, state_path, no_wait, policy_file, apply, context, dry_run)


def _toggle(
    route: str,
    mode: str,
    to: str | None,
    state_path: str,
    no_wait: bool,
    policy_file: str | None,
    apply: bool,
    context: str | None,
    dry_run: bool,
) -> None:
    from tokenlimit.fallback import toggles

    if policy_file is not None:
        _toggle_kube(route, mode, to, policy_file, apply, context, dry_run)
        return
    if apply or context or dry_run:
        raise click.UsageError("--apply, --context and --dry-run are for --policy (Kubernetes)")
    try:
        result = toggles.set_mode(state_path, route, mode, to=to, by="cli", wait=not no_wait)
    except ToggleError as exc:
        raise FallbackCliError(str(exc)) from None
    assert result is not None
    click.echo(result.line())


def _toggle_kube(
    route: str,
    mode: str,
    to: str | None,
    policy_file: str,
    apply: bool,
    context: str | None,
    dry_run: bool,
) -> None:
    from tokenlimit import loader
    from tokenlimit.fallback.toggles import toggle_policy_document

    try:
        document = loader.parse_document(Path(policy_file).read_text(encoding="utf-8"), policy_file)
    except loader.PolicyError as exc:
        raise FallbackCliError(str(exc)) from None
    if not isinstance(document, dict) or document.get("kind") != "TokenRateLimitPolicy":
        raise FallbackCliError(f"{policy_file}: expected a TokenRateLimitPolicy document")
    try:
        changed = toggle_policy_document(document, route, mode, to)
    except ToggleError as exc:
        raise FallbackCliError(f"{policy_file}: {exc}") from None
    metadata = changed.setdefault("metadata", {})
    metadata.setdefault("namespace", "default")
    if not apply:
        if dry_run:
            raise click.UsageError("--dry-run is for --apply")
        click.echo(yaml.safe_dump(changed, sort_keys=False, allow_unicode=True), nl=False)
        return
    from tokenlimit import push

    try:
        api = push.connect(context)
        results = push.apply_objects(api, [changed], dry_run=dry_run, force=False)
    except push.PushError as exc:
        raise FallbackCliError(str(exc)) from None
    for result in results:
        click.echo(result.line(dry_run))


@fallback_group.command("status")
@_state_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per route.")
def status_command(state_path: str, as_json: bool) -> None:
    """Each route's mode, who set it, and whether Envoy serves it."""
    from tokenlimit.fallback import toggles

    try:
        rows = toggles.status(state_path)
    except ToggleError as exc:
        raise FallbackCliError(str(exc)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    now = time.time()
    for row in rows:
        since = f", {_ago(now - row['since'])}" if row["since"] else ""
        chain = " -> ".join(row["upstreams"])
        if row["envoyError"]:
            envoy = f"envoy: {row['envoyError']}"
        elif row["inSync"] is None:
            envoy = "envoy: not checked (no admin URL)"
        elif row["inSync"]:
            envoy = f"envoy: serving route version {row['routeVersion']}"
        else:
            envoy = (
                f"envoy: serving {row['envoyServes'] or 'nothing'}, file has "
                f"{row['routeVersion']} (not loaded yet?)"
            )
        reason = f" [{row['reason']}]" if row["reason"] else ""
        click.echo(
            f"{row['route']}: {row['describe']} (by {row['by']}{since}){reason}; chain {chain}; "
            f"{envoy}"
        )


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


# --- automatic switching -------------------------------------------------------------------


@fallback_group.command("auto")
@_state_option
@click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    envvar=WEBHOOK_ENV,
    metavar="[FORMAT=]URL",
    help="Notify each switch: generic JSON, or FORMAT dingtalk / wecom (group robots), e.g. "
    f"--webhook wecom=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=... (env {WEBHOOK_ENV}"
    ", space-separated).",
)
@click.option(
    "--dingtalk-secret",
    envvar=DINGTALK_SECRET_ENV,
    default=None,
    help=f"Sign DingTalk webhook calls with this secret (env {DINGTALK_SECRET_ENV}).",
)
@click.option("--once", is_flag=True, help="Read Envoy once, switch if needed, exit.")
def auto_command(
    state_path: str, webhooks: tuple[str, ...], dingtalk_secret: str | None, once: bool
) -> None:
    """Switch routes with autoSwitch between automatic and forced fallback on the primary's
    failure ratio (Envoy's admin API), with hysteresis. Runs until Ctrl-C."""
    from tokenlimit.fallback.auto import WEBHOOK_FORMATS, Watcher, WatchError, Webhook

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    notifiers = []
    for spec in (w for value in webhooks for w in value.split()):
        fmt, sep, url = spec.partition("=")
        if not sep or fmt not in WEBHOOK_FORMATS or "://" in fmt:
            fmt, url = "generic", spec
        secret = dingtalk_secret if fmt == "dingtalk" else None
        notifiers.append(Webhook(url, fmt, secret=secret))
    watcher = Watcher(state_path, notify=notifiers)
    try:
        if once:
            for switch in watcher.step():
                click.echo(switch.text())
            return
        watcher.interval_s()  # refuse a state without autoSwitch before looping
        watcher.run()
    except (WatchError, ToggleError) as exc:
        raise FallbackCliError(str(exc)) from None
    except KeyboardInterrupt:
        pass


__all__ = ["fallback_group"]
