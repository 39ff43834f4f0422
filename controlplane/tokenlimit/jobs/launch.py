"""Start `tokenlimit jobs` as a child process (for `tokenlimit up --jobs-port`, tests, bench).

Through `tokenlimit.dev.process`, like the gateway's other children: its own session, dies
with its parent, its output in a log file. The Redis password goes in the environment, never
argv (`ps` shows argv to everyone). The credential key goes by file (argv names only the path):
without one given (argument or $TOKENLIMIT_JOBS_CREDENTIAL_KEY_FILE), a key file is made beside
the log (credentials.dev_key_file), so services started with their logs in one directory
share it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tokenlimit.cli.jobs import CREDENTIAL_KEY_FILE_ENV, PASSWORD_ENV
from tokenlimit.dev import process
from tokenlimit.jobs.credentials import dev_key_file
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
    credential_key_file: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The running service and its URL, once it printed its ready line."""
    if credential_key_file is not None:
        key_args = ["--credential-key-file", str(credential_key_file)]
    elif os.environ.get(CREDENTIAL_KEY_FILE_ENV):
        key_args = []  # the child reads the caller's key file from the environment
    else:
        key_args = ["--credential-key-file", str(dev_key_file(log.parent))]
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
        *key_args,
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
    """For `tokenlimit up --jobs-port`: the service on `port`, its log and its credential key
    in the gateway's work directory; a password in `redis_url` moves to the environment.
    GatewayError if it fails."""
    from tokenlimit.dev.gateway import GatewayError

    url, password = process.split_password(redis_url)
    try:
        return start(gateway_url, url, work_dir / "jobs.log", port=port, redis_password=password)
    except process.ProcessError as exc:
        raise GatewayError(str(exc)) from None
