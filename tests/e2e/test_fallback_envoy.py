"""Fallback in real Envoy (1.40, 2 workers) with the real filter, against controllable upstreams.

Two gateways run side by side:

- **naive**: a Higress-like setup rendered in plain Envoy. The limiter is scoped to the primary
  route only (it runs in front of the primary upstream, as Higress's matchRules list the
  primary route but not `<route>.fallback.internal`), and the fallback triggers on 429 —
  which the limiter's own rejection is, from where the fallback decision is made.
- **fixed**: the project's rendering (`render.envoy`): the limiter is the
  listener-level filter before the router, the chain is an aggregate cluster walked by the
  router's retry policy, the route is served through file-based RDS.

The upstreams are the project's mock LLM (`tokenlimit.dev.mockllm.make_app`) served in-process,
each behind a small fault injector: `upstream.fail(status=429, retry_after=1)` makes *that*
upstream answer with the mock's provider-shaped error for every request (the client's own
headers reach every attempt, so they cannot make only the primary fail).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from multidict import CIMultiDict
from support.require import require_binary
from tokenlimit.apply import envoy_admin
from tokenlimit.dev import process
from tokenlimit.dev.gateway import GatewayError, envoy_binary, free_port
from tokenlimit.dev.mockllm import make_app
from tokenlimit.fallback import toggles
from tokenlimit.fallback.auto import Counts, Switch, Watcher, host_counts
from tokenlimit.fallback.cli import fallback_group
from tokenlimit.model import FallbackSpec, FilterConfig, parse_fallback, parse_filter_config
from tokenlimit.render.envoy import (
    FILTER_NAME,
    HCM_TYPE,
    ROUTER_TYPE,
    EcdsFilter,
    EnvoyOptions,
    ecds_resource,
    filter_typed_config,
    to_yaml,
)
from tokenlimit.render.envoy.bootstrap import INTERNAL_LISTENER_TYPE, FallbackRoutes
from tokenlimit.render.envoy.bootstrap import bootstrap as render_bootstrap
from tokenlimit.render.envoy.clusters import upstream_cluster, upstream_cluster_name

BUDGET = 100  # tokens per hour per key
ROUTE = "chat"
READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 15.0
NAIVE_LIMITER_LISTENER = "naive_primary_limiter"


def fallback_bootstrap(options: EnvoyOptions, spec: FallbackSpec, rds: str, wasm: str) -> Any:
    """The project's rendering of a fallback chain (routes from the RDS file `rds`)."""
    return render_bootstrap(options, FallbackRoutes(spec, wasm, rds))


# --- controllable upstreams ----------------------------------------------------------------------


class Upstream:
    """The mock LLM in a thread of this process, failing on demand for every request."""

    def __init__(self, name: str, tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self._fault: dict[str, str] = {}
        self._lock = threading.Lock()
        app = make_app(name)
        app.middlewares.append(self._inject)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())

        self._thread = threading.Thread(target=serve, name=f"upstream-{name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"upstream {name} did not start")
        self.port = int(self._runner.addresses[0][1])
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"

    @web.middleware
    async def _inject(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._lock:
            fault = dict(self._fault)
        if fault and not request.path.startswith("/mock/") and request.path != "/healthz":
            headers = CIMultiDict(request.headers)
            headers.update(fault)
            request = request.clone(headers=headers)
        response: web.StreamResponse = await handler(request)
        return response

    def fail(self, status: int, retry_after: int | None = None, delay_ms: int = 0) -> None:
        fault = {"x-mock-status": str(status)}
        if retry_after is not None:
            fault["x-mock-retry-after"] = str(retry_after)
        if delay_ms:
            fault["x-mock-delay-ms"] = str(delay_ms)
        with self._lock:
            self._fault = fault

    def slow(self, delay_ms: int) -> None:
        with self._lock:
            self._fault = {"x-mock-delay-ms": str(delay_ms)}

    def heal(self) -> None:
        with self._lock:
            self._fault = {}

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/mock/stats"
        context = None
        if self.url.startswith("https"):
            url = f"https://localhost:{self.port}/mock/stats"
            context = ssl._create_unverified_context()  # our own test server
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found

    @property
    def requests(self) -> int:
        return int(self.stats()["requests"])

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- Envoy ---------------------------------------------------------------------------------------


@dataclass
class Envoy:
    """One Envoy process on a bootstrap of our making."""

    work: Path
    document: dict[str, Any]
    listen_port: int
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to Envoy's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        try:
            binary = envoy_binary()
        except GatewayError as exc:
            pytest.fail(str(exc), pytrace=False)
        bootstrap = self.work / "envoy.yaml"
        bootstrap.write_text(to_yaml(self.document), encoding="utf-8")
        argv = [binary, "-c", str(bootstrap), "--base-id", str(self.listen_port), "--concurrency",
                "2", "--log-level", "info", "--file-flush-interval-msec", "100"]  # fmt: skip
        self.proc = process.spawn(
            argv,
            self.work / "envoy.stdout.log",
            stderr_log=self.work / "envoy.stderr.log",
            env=self.env,
            cwd=self.work,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Envoy exited {self.proc.returncode}:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        pytest.fail(f"Envoy was not ready within {READY_TIMEOUT_S:g}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        if not envoy_admin.is_live(self.admin_url):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.listen_port), timeout=0.5):
                pass
        except OSError:
            return False
        stats = self.stats()
        ecds = stats.get(f"extension_config_discovery.http_filter.{FILTER_NAME}.config_reload", 1)
        version, _ = toggles.rds_status(stats)
        return bool(ecds) and bool(version)

    def stats(self) -> dict[str, Any]:
        return envoy_admin.stats(self.admin_url)

    def counter(self, name: str) -> int:
        value = self.stats().get(name, 0)
        return int(value) if isinstance(value, int) else 0

    def tokens_charged(self) -> int:
        return self.counter("wasmcustom.tokenlimit.tokens_charged")

    def log_tail(self, lines: int = 40) -> str:
        return process.tail(self.work / "envoy.stderr.log", lines)

    def stop(self) -> None:
        process.terminate(self.proc, 10)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    @property
    def upstream(self) -> str | None:
        return self.headers.get("x-mock-upstream")


def post(
    envoy: Envoy,
    key: str,
    *,
    prompt: int = 0,
    completion: int = 0,
    model: str = "client-model",
    headers: dict[str, str] | None = None,
) -> Reply:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        envoy.url + "/v1/chat/completions",
        data=body.encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": key,
            "authorization": CLIENT_AUTHORIZATION,
            "x-mock-prompt-tokens": str(prompt),
            "x-mock-completion-tokens": str(completion),
            **(headers or {}),
        },
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            status, head, data = response.status, response.headers, response.read()
    except urllib.error.HTTPError as refused:
        status, head, data = refused.code, refused.headers, refused.read()
    lowered = {k.lower(): v for k, v in head.items()}
    return Reply(status, lowered, data, time.monotonic() - started)


def limiter_config() -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "fallback-e2e",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_hour": BUDGET}],
                }
            ],
        }
    )


CLIENT_AUTHORIZATION = "Bearer client-own-key"
BACKUP_KEY_ENV = "TOKENLIMIT_TEST_BACKUP_KEY"
BACKUP_KEY = "sk-gateway-backup-key"


def fallback_spec(primary: Upstream, backup: Upstream) -> FallbackSpec:
    return parse_fallback(
        {
            "routes": [
                {
                    "name": ROUTE,
                    "primary": {"name": "primary", "url": primary.url},
                    "fallbacks": [
                        {
                            "name": "backup",
                            "provider": "openai-compatible",
                            "url": backup.url,
                            "model": "backup-model",
                            "apiKeyEnv": BACKUP_KEY_ENV,
                        }
                    ],
                    "perTryTimeoutMs": 1000,
                    "backOff": {"baseIntervalMs": 50, "maxIntervalMs": 200},
                    "retryAfter": {"honor": True, "maxIntervalMs": 3000},
                    "autoSwitch": {
                        "enterRatio": 0.5,
                        "exitRatio": 0.1,
                        "minRequests": 4,
                        "windowS": 30,
                        "holdS": 0,
                        "probePercent": 50,
                        "intervalS": 1,
                    },
                }
            ]
        }
    )


def avoid_hour_boundary(seconds_needed: float = 20.0) -> None:
    """Budgets reset at each whole hour: start a budget scenario well inside one."""
    into_hour = time.time() % 3600
    if into_hour > 3600 - seconds_needed:
        time.sleep(3600 - into_hour + 0.5)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wasm(filter_wasm: Path) -> str:
    return str(filter_wasm.resolve())


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    primary, backup = Upstream("primary"), Upstream("backup")
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture(autouse=True)
def healthy(upstreams: tuple[Upstream, Upstream]) -> Iterator[None]:
    for upstream in upstreams:
        upstream.heal()
    yield
    for upstream in upstreams:
        upstream.heal()


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tokenlimit-fallback-e2e-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _options(ecds: Path, spec: FallbackSpec) -> EnvoyOptions:
    return EnvoyOptions(
        upstream=spec.routes[0].primary.upstream,
        filter=EcdsFilter(str(ecds)),
        listen_port=free_port(),
        admin_port=free_port(),
    )


@pytest.fixture(scope="module")
def fixed(
    work: Path, wasm: str, upstreams: tuple[Upstream, Upstream]
) -> Iterator[tuple[Envoy, Path]]:
    """The project's rendering; yields the gateway and its toggles' state file."""
    spec = fallback_spec(*upstreams)
    base = work / "fixed"
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    state = base / "tokenlimit-fallback.json"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = _options(ecds, spec)
    envoy = Envoy(
        base,
        fallback_bootstrap(options, spec, str(rds), wasm),
        options.listen_port,
        options.admin_port,
        env={BACKUP_KEY_ENV: BACKUP_KEY},
    )
    toggles.init_state(state, spec, rds, admin_url=envoy.admin_url)
    envoy.start()
    yield envoy, state
    envoy.stop()


@pytest.fixture(scope="module")
def naive(work: Path, wasm: str, upstreams: tuple[Upstream, Upstream]) -> Iterator[Envoy]:
    """Higress-like: the limiter guards the primary route only, fallback on 429/5xx."""
    spec = fallback_spec(*upstreams)
    base = work / "naive"
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = _options(ecds, spec)
    document = naive_bootstrap(fallback_bootstrap(options, spec, str(rds), wasm), spec, wasm)
    toggles.init_state(base / "state.json", spec, rds)
    envoy = Envoy(base, document, options.listen_port, options.admin_port)
    envoy.start()
    yield envoy
    envoy.stop()


def naive_bootstrap(document: dict[str, Any], spec: FallbackSpec, wasm: str) -> dict[str, Any]:
    """The fixed bootstrap with the limiter moved from the listener onto the primary's path.

    The main listener keeps only the router; the chain's primary member becomes an internal
    listener running the limiter in front of the primary. Its rejection is then, for the router
    deciding about the fallback, an upstream 429 — Higress's situation, where the limiter's
    matchRules hold the primary route and its 429 triggers the redirect to the fallback route,
    which no rule covers.
    """
    document = copy.deepcopy(document)
    route = spec.routes[0]
    main = document["static_resources"]["listeners"][0]
    hcm = main["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != FILTER_NAME]
    primary = upstream_cluster_name(route.name, route.primary.name)
    direct = "naive_primary_direct"
    clusters = document["static_resources"]["clusters"]
    for index, cluster in enumerate(clusters):
        if cluster["name"] == primary:
            address = {"envoy_internal_address": {"server_listener_name": NAIVE_LIMITER_LISTENER}}
            member = copy.deepcopy(cluster)
            member["type"] = "STATIC"
            member.pop("dns_lookup_family", None)
            member["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = (
                address
            )
            clusters[index] = member
    primary_upstream = route.primary.upstream
    clusters.append(upstream_cluster(direct, primary_upstream, hostname=primary_upstream.authority))
    limiter_hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": NAIVE_LIMITER_LISTENER,
        "route_config": {
            "name": NAIVE_LIMITER_LISTENER,
            "virtual_hosts": [
                {
                    "name": "primary",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": direct,
                                "timeout": "0s",
                                "auto_host_rewrite": True,
                            },
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            {"name": FILTER_NAME, "typed_config": filter_typed_config(limiter_config(), wasm)},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    document["static_resources"]["listeners"].append(
        {
            "name": NAIVE_LIMITER_LISTENER,
            "internal_listener": {},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": limiter_hcm,
                        }
                    ]
                }
            ],
        }
    )
    document["bootstrap_extensions"] = [
        {
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": INTERNAL_LISTENER_TYPE},
        }
    ]
    return document


# --- the Higress failure, reproduced and fixed ---------------------------------------------------


def spend_budget(envoy: Envoy, key: str) -> None:
    """One allowed request that costs more than the whole budget (postpaid: charged after)."""
    first = post(envoy, key, prompt=80, completion=40)
    assert first.status == 200 and first.upstream == "primary", first


def test_naive_setup_lets_an_over_budget_key_escape_through_the_fallback(
    naive: Envoy, upstreams: tuple[Upstream, Upstream]
) -> None:
    primary, backup = upstreams
    avoid_hour_boundary()
    spend_budget(naive, "naive-over")
    before = (primary.requests, backup.requests, naive.tokens_charged())
    reply = post(naive, "naive-over")
    # The limiter refused (its 429), the router took that for the primary's answer and went
    # to the fallback, which no limiter guards: the key is served, uncounted.
    assert reply.status == 200, reply
    assert reply.upstream == "backup"
    assert backup.requests == before[1] + 1
    assert primary.requests == before[0]  # the limiter's 429 never reached the primary
    assert naive.tokens_charged() == before[2]


def test_fixed_over_budget_key_gets_429_and_no_upstream_sees_the_request(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    avoid_hour_boundary()
    spend_budget(envoy, "fixed-over")
    retries = f"cluster.fallback_{ROUTE}_chain_from_primary.upstream_rq_retry"
    before = (primary.requests, backup.requests, envoy.tokens_charged(), envoy.counter(retries))
    for _ in range(3):
        reply = post(envoy, "fixed-over")
        assert reply.status == 429, reply
        assert reply.upstream is None
        assert reply.body == b"Too many requests"
        assert 1 <= int(reply.headers["retry-after"]) <= 3600
    # No upstream saw it, nothing was charged, and not a single retry was made: the
    # rejection is a local reply before the router.
    after = (primary.requests, backup.requests, envoy.tokens_charged(), envoy.counter(retries))
    assert after == before


def test_fixed_primary_429_is_served_by_the_fallback_and_charged_once(
    fixed: tuple[Envoy, Path], naive: Envoy, upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    avoid_hour_boundary()
    primary.fail(429)
    for gateway, key in ((envoy, "fixed-under"), (naive, "naive-under")):
        before_backup = backup.requests
        before_charged = gateway.tokens_charged()
        reply = post(gateway, key, prompt=12, completion=7)
        assert reply.status == 200, reply
        assert reply.upstream == "backup"
        assert backup.requests == before_backup + 1
        charged = gateway.tokens_charged() - before_charged
        if gateway is envoy:
            # Exactly the usage of the one response the client got, once.
            assert charged == 12 + 7
        else:
            # The naive limiter saw only the primary's error (not charged); the response the
            # client got was never counted.
            assert charged == 0


# --- retries, back-off, Retry-After, model -------------------------------------------------------


def test_retry_after_from_the_primary_is_waited_for(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.fail(429, retry_after=1)
    reply = post(envoy, "retry-after")
    assert reply.status == 200 and reply.upstream == "backup"
    # Envoy waits Retry-After plus up to 50% jitter: 1 s to 1.5 s, and some slack.
    assert 1.0 <= reply.elapsed_s < 2.5, reply.elapsed_s
    assert (
        envoy.counter(
            f"cluster.fallback_{ROUTE}_chain_from_primary.upstream_rq_retry_backoff_ratelimited"
        )
        >= 1
    )


def test_retry_after_beyond_the_maximum_is_ignored_and_backoff_is_bounded(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.fail(429, retry_after=60)  # above retryAfter.maxIntervalMs (3 s): not waited for
    reply = post(envoy, "long-retry-after")
    assert reply.status == 200 and reply.upstream == "backup"
    assert reply.elapsed_s < 0.9, reply.elapsed_s  # exponential back-off: at most 50 ms here
    primary.fail(503)
    for _ in range(3):
        reply = post(envoy, "backoff")
        assert reply.status == 200 and reply.upstream == "backup"
        assert reply.elapsed_s < 0.9, reply.elapsed_s


def test_a_slow_primary_hits_the_per_try_timeout_and_the_fallback_answers(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, _ = upstreams
    primary.slow(4000)
    reply = post(envoy, "slow")
    assert reply.status == 200 and reply.upstream == "backup"
    assert 0.9 <= reply.elapsed_s < 2.5, reply.elapsed_s  # perTryTimeoutMs 1000


def test_model_is_rewritten_for_the_fallback_only(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, _ = fixed
    primary, backup = upstreams
    served = post(envoy, "model-primary", model="gpt-4o")
    assert served.upstream == "primary"
    seen = primary.stats()["last_request"]
    assert seen["body"]["model"] == "gpt-4o"
    assert host_header(seen) == primary.url.removeprefix("http://")
    primary.fail(500)
    served = post(envoy, "model-backup", model="gpt-4o")
    assert served.status == 200 and served.upstream == "backup"
    seen = backup.stats()["last_request"]
    assert seen["body"]["model"] == "backup-model"
    assert seen["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert host_header(seen) == backup.url.removeprefix("http://")
    assert primary.stats()["last_request"]["body"]["model"] == "gpt-4o"
    # The backup gets the gateway's own key (from Envoy's environment); the primary, which
    # names no key, gets the client's.
    assert header(seen, "authorization") == f"Bearer {BACKUP_KEY}"
    assert header(primary.stats()["last_request"], "authorization") == CLIENT_AUTHORIZATION


def host_header(request: dict[str, Any]) -> str | None:
    return header(request, "host")


def header(request: dict[str, Any], name: str) -> str | None:
    return {k.lower(): v for k, v in request["headers"].items()}.get(name)


# --- toggles on the running gateway --------------------------------------------------------------


class Traffic:
    """Requests in a loop from another thread; records every outcome."""

    def __init__(self, envoy: Envoy) -> None:
        self.envoy = envoy
        self.outcomes: list[tuple[int, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A key per request: this test is about routes, not budgets.
                reply = post(self.envoy, f"traffic-{next(_KEYS)}")
                self.outcomes.append((reply.status, reply.upstream))
                if reply.status != 200:
                    self.errors.append(f"{reply.status} {reply.headers} {reply.body[:300]!r}")
            except OSError as exc:
                self.errors.append(str(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)


_KEYS = itertools.count()


def upstreams_now(envoy: Envoy, n: int = 6) -> set[str | None]:
    return {post(envoy, f"probe-{next(_KEYS)}").upstream for _ in range(n)}


def cli(state: Path, *args: str) -> str:
    result = CliRunner().invoke(fallback_group, [*args, "--state", str(state)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_toggles_switch_a_running_envoy_without_restart_or_failed_requests(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, state = fixed
    primary, _ = upstreams
    pid = envoy.proc.pid if envoy.proc else None
    with Traffic(envoy) as traffic:
        # Through the commands the CLI registers: each waits until Envoy serves the change.
        out = cli(state, "enable", ROUTE, "--to", "backup")
        assert out.startswith("route chat: automatic -> forced to backup (Envoy serves route")
        assert upstreams_now(envoy) == {"backup"}
        before_primary = primary.requests
        assert upstreams_now(envoy) == {"backup"} and primary.requests == before_primary

        assert "forced to backup -> off (Envoy serves" in cli(state, "disable", ROUTE)
        assert upstreams_now(envoy) == {"primary"}

        back = toggles.enable(state, ROUTE)
        assert back.applied and back.after.mode == "auto"
        assert upstreams_now(envoy) == {"primary"}
    assert traffic.errors == []
    assert traffic.outcomes and all(status == 200 for status, _ in traffic.outcomes)
    assert {u for _, u in traffic.outcomes} == {"primary", "backup"}
    assert envoy.proc is not None and envoy.proc.pid == pid and envoy.proc.poll() is None
    rows = toggles.status(state)
    assert rows[0]["mode"] == "auto" and rows[0]["inSync"] is True
    # Off means off: with the primary failing, nothing falls back.
    toggles.disable(state, ROUTE)
    try:
        primary.fail(503)
        assert post(envoy, "off").status == 503
    finally:
        toggles.enable(state, ROUTE)
    assert post(envoy, "on-again").upstream == "backup"


def test_auto_switch_enters_and_leaves_forced_fallback_on_envoys_stats(
    fixed: tuple[Envoy, Path], upstreams: tuple[Upstream, Upstream]
) -> None:
    envoy, state = fixed
    primary, _ = upstreams
    switches: list[Switch] = []
    watcher = Watcher(str(state), notify=[switches.append], sleep=lambda _: None)
    cluster = upstream_cluster_name(ROUTE, "primary")
    try:
        assert watcher.step() == []  # the first sample
        primary.fail(429)
        before = host_counts(envoy.admin_url)[cluster]
        for _ in range(6):
            assert post(envoy, f"auto-{next(_KEYS)}").upstream == "backup"
        after = host_counts(envoy.admin_url)[cluster]
        # What the watcher reads: every attempt at the primary, every one failed (retried 429s).
        assert after - before == Counts(6, 6)
        (entered,) = watcher.step()
        assert (entered.after.mode, entered.after.to, entered.after.by) == (
            "forced",
            "backup",
            "auto",
        )
        assert entered.window == Counts(6, 6)
        assert toggles.status(state)[0]["inSync"] is True

        primary.heal()
        served = [post(envoy, f"auto-probe-{next(_KEYS)}").upstream for _ in range(40)]
        assert set(served) == {"primary", "backup"}  # 50% probe traffic still tries the primary
        (left,) = watcher.step()
        assert left.after.mode == "auto" and left.cause == "recovered"
        assert left.window.failures == 0 and left.window.attempts >= 4
        assert upstreams_now(envoy) == {"primary"}
    finally:
        toggles.enable(state, ROUTE)
    assert [s.after.mode for s in switches] == ["forced", "auto"]


# --- TLS upstreams -------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA and a server certificate for `localhost` (openssl)."""
    openssl = require_binary("openssl", "install OpenSSL (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=tokenlimit test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for argv in run:
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=30)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    return ca_crt, context


def test_tls_upstreams_through_the_chain_and_the_rewrite_listener(work: Path, wasm: str) -> None:
    """https upstreams: the member clusters' TLS (SNI, CA, SAN) holds behind the aggregate
    cluster, and the rewritten upstream's TLS behind its internal listener."""
    ca, context = make_certificates(work / "tls")
    primary, backup = Upstream("tls-primary", context), Upstream("tls-backup", context)
    base = work / "tls-gateway"
    spec = fallback_spec(primary, backup)
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = EnvoyOptions(
        upstream=spec.routes[0].primary.upstream,
        filter=EcdsFilter(str(ecds)),
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_ca_file=str(ca),
    )
    toggles.init_state(base / "state.json", spec, rds)
    envoy = Envoy(
        base,
        fallback_bootstrap(options, spec, str(rds), wasm),
        options.listen_port,
        options.admin_port,
    )
    envoy.start()
    try:
        assert post(envoy, "tls-1", model="gpt-4o").upstream == "tls-primary"
        primary.fail(429)
        reply = post(envoy, "tls-2", model="gpt-4o", prompt=3, completion=4)
        assert reply.status == 200 and reply.upstream == "tls-backup", reply
        seen = backup.stats()["last_request"]
        assert seen["body"]["model"] == "backup-model"
        assert host_header(seen) == f"localhost:{backup.port}"
        assert envoy.counter("cluster.fallback_chat_backup_direct.ssl.handshake") >= 1
        assert envoy.counter("cluster.fallback_chat_primary.ssl.handshake") >= 1
    finally:
        envoy.stop()
        primary.stop()
        backup.stop()
