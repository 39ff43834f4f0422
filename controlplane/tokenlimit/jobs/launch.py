"""Start `tokenlimit jobs` as a child process (for `tokenlimit up --jobs-port`, tests, bench).

Through `tokenlimit.dev.process`, like the gateway's other children: its own session, dies
with its parent, its output in a log file. The Redis password goes in the environment, never
argv (`ps` shows argv to everyone).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tokenlimit.cli.jobs import PASSWORD_ENV
from tokenlimit.dev import process
from tokenlimit.jobs.service import READY_LINE

_READY = re.compile(re.escape(READY_LINE) + r" (http://\S+)")
READY_TIMEOUT_S = 30.0


def start(
    gateway_url: str,
    redis_url: str,
    log: Path,
    *,
    port: int = 0,
    workers: int = 2,
    extra_args: Sequence[str] = (),
    redis_password: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The running service and its URL, once it printed its ready line."""
    argv = [
        sys.executable,
        "-m",
        "tokenlimit.jobs",
        "--gateway",
        gateway_url,
        "--redis",
        redis_url,
        "--listen",
        str(port),
        "--workers",
        str(workers),
        *extra_args,
    ]
    env = {PASSWORD_ENV: redis_password} if redis_password else {}
    proc = process.spawn(argv, log, env=env)
    try:
        found = process.wait_for_line(proc, log, _READY, READY_TIMEOUT_S, "tokenlimit jobs")
    except process.ProcessError:
        process.terminate(proc)
        raise
    return proc, found.group(1)


def beside(
    gateway_url: str, redis_url: str, work_dir: Path, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """For `tokenlimit up --jobs-port`: the service on `port`, its log in the gateway's work
    directory; a password in `redis_url` moves to the environment. GatewayError if it fails."""
    from tokenlimit.dev.gateway import GatewayError

    url, password = process.split_password(redis_url)
    try:
        return start(gateway_url, url, work_dir / "jobs.log", port=port, redis_password=password)
    except process.ProcessError as exc:
        raise GatewayError(str(exc)) from None
