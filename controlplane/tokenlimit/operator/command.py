"""`tokenlimit operator`: the click command (registered by tokenlimit.cli)."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

from tokenlimit.errors import TokenlimitError
from tokenlimit.operator.reconcile import GATEWAY_KINDS, GatewayKind, Module, Settings

if TYPE_CHECKING:
    from tokenlimit.apply.kube_client import DynamicKube
    from tokenlimit.operator.loop import Backoff, SystemClock

log = logging.getLogger("tokenlimit.operator")

LOG_LEVELS = ("debug", "info", "warning", "error")
ENVOY_MODULE_PATH = Settings.envoy_module_path
_SHA256 = re.compile(r"[0-9a-f]{64}")


class OperatorError(TokenlimitError):
    """The operator cannot start: no credentials, no module to serve, no renderer (exit 1)."""


@click.command("operator")
@click.option(
    "--gateway",
    type=click.Choice(GATEWAY_KINDS),
    required=True,
    help="What the policies are rendered for: Higress or Istio WasmPlugins, or a ConfigMap "
    "with the ECDS document for a standalone Envoy.",
)
@click.option(
    "--namespace",
    default=None,
    metavar="NAME",
    help="Watch TokenRateLimitPolicies in this namespace only [default: all namespaces].",
)
@click.option(
    "--module-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Port of the HTTP server for the .wasm modules and /healthz (0: do not serve).",
)
@click.option(
    "--module-url-base",
    default=None,
    metavar="URL",
    help="How gateways reach the module server, e.g. "
    "http://tokenlimit-operator.tokenlimit-system.svc:8081 (needed for higress and istio).",
)
@click.option(
    "--module-url",
    default=None,
    metavar="URL",
    help="Instead of the module server: where gateways fetch the module, e.g. "
    "oci://registry.example.com/tokenlimit-wasm:0.1.0.",
)
@click.option(
    "--module-sha256",
    default=None,
    metavar="HEX",
    help="--module-url: the module's sha256 (64 hex digits); gateways verify it.",
)
@click.option(
    "--envoy-module-path",
    default=ENVOY_MODULE_PATH,
    show_default=True,
    metavar="PATH",
    help="--gateway envoy: where the Envoy pod has tokenlimit.wasm.",
)
@click.option("--leader-elect", is_flag=True, help="Reconcile only while holding a Lease.")
@click.option(
    "--leader-elect-namespace",
    default=None,
    metavar="NAME",
    help="Namespace of the Lease [default: $POD_NAMESPACE or the service account's].",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Use this kubeconfig [default: in-cluster credentials, else $KUBECONFIG or "
    "~/.kube/config].",
)
@click.option(
    "--resync-seconds",
    type=click.FloatRange(min=10),
    default=300,
    show_default=True,
    help="Reconcile every policy this often, repairing hand edits of what it owns.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
def operator_command(
    gateway: GatewayKind,
    namespace: str | None,
    module_port: int,
    module_url_base: str | None,
    module_url: str | None,
    module_sha256: str | None,
    envoy_module_path: str,
    leader_elect: bool,
    leader_elect_namespace: str | None,
    kubeconfig: str | None,
    resync_seconds: float,
    log_level: str,
) -> None:
    """Reconcile TokenRateLimitPolicy objects into the gateway's configuration.

    Writes status.conditions Accepted and Programmed on each policy. Stops cleanly on SIGTERM.
    """
    from tokenlimit.operator import module_server

    _configure_logging(log_level)
    if module_url and module_url_base:
        raise click.UsageError(
            "--module-url and --module-url-base exclude each other: gateways fetch the module "
            "from one place (an image, or this operator's module server)"
        )
    if module_sha256 is not None and not module_url:
        raise click.UsageError(
            "--module-sha256 goes with --module-url (the served file's is known)"
        )
    if module_sha256 is not None and not _SHA256.fullmatch(module_sha256):
        raise click.BadParameter(
            f"expected 64 lowercase hex digits (sha256sum of the module), got {module_sha256!r}",
            param_hint="--module-sha256",
        )
    if gateway in ("higress", "istio") and not (module_url or module_url_base):
        raise click.UsageError(
            f"--gateway {gateway} needs --module-url-base (the URL at which the gateway "
            "reaches this operator's module server, e.g. "
            "http://tokenlimit-operator.tokenlimit-system.svc:8081) or --module-url "
            "(e.g. oci://registry.example.com/tokenlimit-wasm:0.1.0)"
        )
    modules = module_server.load_modules()
    module = Module(module_url, module_sha256) if module_url else None
    if module_url_base:
        wanted = "tokenlimit-higress.wasm" if gateway == "higress" else "tokenlimit.wasm"
        if wanted not in modules:
            raise OperatorError(
                f"{wanted} is not built into this package, so gateways could not fetch it: "
                "run `make wasm` in the source tree, or use the published image"
            )
        if module_port == 0:
            raise click.UsageError("--module-url-base needs the module server: --module-port 0")
        served = modules[wanted]
        module = Module(module_server.module_url(module_url_base, served), served.sha256)
    settings = Settings(gateway=gateway, module=module, envoy_module_path=envoy_module_path)
    if leader_elect:
        from tokenlimit.operator.leader import pod_namespace

        leader_elect_namespace = leader_elect_namespace or pod_namespace()
        if not leader_elect_namespace:
            raise click.UsageError(
                "--leader-elect needs the Lease's namespace: pass --leader-elect-namespace, "
                "or set POD_NAMESPACE (the chart does)"
            )

    server = module_server.ModuleServer(modules, port=module_port).start() if module_port else None
    if server is not None:
        log.info("serving %s on :%d", ", ".join(sorted(modules)) or "no modules", server.port)
    try:
        run(settings, namespace, kubeconfig, resync_seconds, leader_elect_namespace)
    finally:
        if server is not None:
            server.stop()


def run(
    settings: Settings,
    namespace: str | None,
    kubeconfig: str | None,
    resync_s: float,
    lease_namespace: str | None,
) -> None:
    """Connect, (lead,) and loop until SIGTERM/SIGINT.

    Everything runs on this (the main) thread except renewing the Lease, so the signal
    handler can leave a blocking wait (a watch read, waiting to lead) by raising Interrupted;
    a reconcile in progress is never interrupted, it finishes first.
    """
    from tokenlimit.operator.controller import PolicyController
    from tokenlimit.operator.loop import Backoff, Interrupted, Loop, LoopOptions, SystemClock
    from tokenlimit.operator.renderers import SecretReader, renderer_for

    clock = SystemClock()
    stop = clock.stop
    loop: Loop | None = None
    acquiring = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        if acquiring.is_set() or (loop is not None and loop.watching):
            raise Interrupted  # leave the blocking wait; a reconcile in progress finishes

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    leadership = None
    try:
        client = _connect(kubeconfig, clock, Backoff())
        if client is None:
            return
        if lease_namespace is not None:
            from tokenlimit.operator.leader import Leadership

            leadership = Leadership(client, lease_namespace)
            acquiring.set()
            try:
                leadership.acquire()
            finally:
                acquiring.clear()
            threading.Thread(
                target=leadership.renew_until_lost,
                args=(_exit_lost,),
                name="leader-election",
                daemon=True,
            ).start()
        renderer = renderer_for(settings.gateway, SecretReader(client))
        controller = PolicyController(client, settings, renderer, clock.now, namespace)
        loop = Loop(
            client, controller, clock, LoopOptions(namespace, resync_s), stopping=stop.is_set
        )
        loop.run()
    except Interrupted:
        pass
    finally:
        stop.set()
        if leadership is not None:
            leadership.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _connect(kubeconfig: str | None, clock: SystemClock, backoff: Backoff) -> DynamicKube | None:
    """The API client; waits (with back-off) for an API server that is not answering yet."""
    from tokenlimit.apply.kube import ApiError, NoCredentials
    from tokenlimit.apply.kube_client import DynamicKube, api_client

    try:
        client = api_client(kubeconfig, in_cluster_first=True)
    except NoCredentials as exc:
        raise OperatorError(
            f"{exc} (in a pod, the service account's are used; "
            "elsewhere pass --kubeconfig or set KUBECONFIG)"
        ) from None
    while not clock.stop.is_set():
        try:
            return DynamicKube(client)
        except ApiError as exc:
            delay = backoff.delay("connect", exc.retry_after_s)
            log.warning("API server: %s; retrying in %.1fs", exc, delay)
            clock.sleep(delay)
    return None


def _exit_lost() -> None:
    # controller-runtime exits at once: another replica may already be leading.
    logging.shutdown()
    os._exit(1)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("tokenlimit")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
        logger.addHandler(handler)
        logger.propagate = False
