"""The pieces of the Envoy fallback tests (tests/e2e/test_fallback_envoy_*.py): upstreams, Envoy.

The upstreams are the project's mock LLM (`tokenlimit.dev.mockllm.make_app`) served in-process,
each behind a small fault injector: `upstream.fail(status=429, retry_after=1)` makes *that*
upstream answer with the mock's provider-shaped error for every request (the client's own
headers reach every attempt, so they cannot make only the primary fail). `Envoy` is one real
Envoy (1.40, 2 workers) on a bootstrap of the test's making; `post` is a client request to it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from tokenlimit.apply import envoy_admin
from tokenlimit.dev import process
from tokenlimit.dev.gateway import GatewayError, envoy_binary
from tokenlimit.dev.mockllm import make_app
from tokenlimit.fallback import toggles
from tokenlimit.model import FallbackSpec, FilterConfig, parse_fallback, parse_filter_config
from tokenlimit.render.envoy import FILTER_NAME, EnvoyOptions, to_yaml
from tokenlimit.render.envoy.bootstrap import FallbackRoutes
from tokenlimit.render.envoy.bootstrap import bootstrap as render_bootstrap

BUDGET = 100  # tokens per hour per key
ROUTE = "chat"
READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 15.0


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


def host_header(request: dict[str, Any]) -> str | None:
    return header(request, "host")


def header(request: dict[str, Any], name: str) -> str | None:
    return {k.lower(): v for k, v in request["headers"].items()}.get(name)
