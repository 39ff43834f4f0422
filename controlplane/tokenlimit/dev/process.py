"""Child processes (Envoy, the mock LLM, the bridge, redis-server): the one place that starts
and stops them, for `tokenlimit up`, the demo, the tests and the benchmarks."""

from __future__ import annotations

import ctypes
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05


class ProcessError(Exception):
    """A child did not start (the message carries the end of its log)."""


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
_SIGTERM = int(signal.SIGTERM)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: it only sets a signal, takes no locks.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGTERM)


PORT_LOW = 10_000  # free_port's range starts here and ends below the ephemeral range


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, chosen below the kernel's ephemeral range.

    A port the OS hands out for `bind(0)` comes from the ephemeral range, the same range
    outgoing connections take their source ports from: by the time a child (Envoy) binds it,
    a client connection elsewhere on the machine may hold it ("Address already in use", seen
    when two gateways start back to back). Below that range only listeners compete, and the
    bind here checks that none holds the port now."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(PORT_LOW, max(PORT_LOW + 1, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: any
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    """Linux's ip_local_port_range (32768-60999 by default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    stderr_log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session; it gets SIGTERM when this process dies.

    stdout goes to `log`, stderr to `stderr_log` (or `log` too). `env` is added to ours.
    """
    out = log.open("ab")
    err = stderr_log.open("ab") if stderr_log is not None else None
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err if err is not None else subprocess.STDOUT,
            cwd=cwd if cwd is not None else log.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        out.close()  # the child holds its own descriptors
        if err is not None:
            err.close()


def terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; a process already gone is left alone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_for_line(
    proc: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str], timeout_s: float, what: str
) -> re.Match[str]:
    """Wait until `log` matches `pattern` (a ready line); fail if the child exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found
        if proc.poll() is not None:
            raise ProcessError(f"{what} exited with status {proc.returncode}:\n{tail(log)}")
        time.sleep(POLL_INTERVAL_S)
    raise ProcessError(f"{what} did not print its ready line within {timeout_s:g}s:\n{tail(log)}")


def split_password(url: str) -> tuple[str, str | None]:
    """A Redis URL without its password, and the password: a child gets the password in its
    environment, never on its command line (where `ps` shows it)."""
    parts = urlsplit(url if "://" in url else "redis://" + url)
    if parts.password is None:
        return url, None
    user = f"{parts.username}@" if parts.username else ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=user + host)), unquote(parts.password)
