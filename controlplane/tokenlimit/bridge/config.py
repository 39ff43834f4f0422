"""The bridge's configuration: where Redis is, and secrets taken by reference (files or the
environment, never a command line)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tokenlimit.model.limits import BRIDGE_TOKEN_ENV

TOKEN_ENV = BRIDGE_TOKEN_ENV  # contract/limits.json: the filter reads the same variable
PASSWORD_ENV = "TOKENLIMIT_REDIS_PASSWORD"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_CONNECTIONS = 512
READ_TIMEOUT_MS = 5000

MAX_COMMANDS = 64
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect; parsed from ``redis://[user[:password]@]host:port[/db]``."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> RedisTarget:
        """``password`` (from a file) overrides one in the URL."""
        if "://" not in url:
            url = "redis://" + url
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (use redis://)")
        try:
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"invalid port in Redis URL: {e}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"Redis URL database must be a number, got {path!r}")
        user = unquote(parts.username) if parts.username else None
        url_password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=int(path or 0),
            username=user,
            password=password if password is not None else url_password,
        )

    def describe(self) -> str:
        """``host:port/db`` -- never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.db}"


def read_secret(path: str | os.PathLike[str]) -> str:
    """A secret from a file, surrounding whitespace (the usual trailing newline) removed."""
    value = Path(path).read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


@dataclass
class BridgeConfig:
    """Everything the bridge needs. Secrets are values here; take them from files or the
    environment with :meth:`from_options`, never from a command line."""

    redis: str = "redis://127.0.0.1:6379/0"
    port: int = 0  # 0: any free port (see Bridge.port)
    host: str = "127.0.0.1"
    token: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)
    pool_size: int = 8
    timeout_ms: int = 500
    max_commands: int = MAX_COMMANDS
    max_body: int = MAX_BODY
    reconnect_max_ms: int = 1000
    # Without a token any client that reaches the port runs tokenlimit's scripts with any
    # keys (resetting budgets); allowed only when asked for, and only on loopback.
    insecure: bool = False
    max_connections: int = MAX_CONNECTIONS  # past it: 503 bridge-full at once
    read_timeout_ms: int = READ_TIMEOUT_MS  # a request head must arrive within this
    # Scripts EVAL/EVALSHA/SCRIPT LOAD may run, besides contract/*.lua (tests add their own).
    extra_scripts: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.token is None and not self.insecure:
            raise ValueError(
                f"no token: give one with --token-file FILE or ${TOKEN_ENV} (`tokenlimit up "
                "--redis` makes one itself); to run without one on this machine only, pass "
                "--insecure with --host 127.0.0.1"
            )
        if self.insecure and self.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"--insecure runs without a token, so only on loopback (127.0.0.1 or ::1), "
                f"not {self.host}: give a token with --token-file FILE or ${TOKEN_ENV}"
            )
        if self.max_connections < 1 or self.read_timeout_ms < 1:
            raise ValueError("max_connections and read_timeout_ms must be at least 1")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.timeout_ms < 1:
            raise ValueError("timeout_ms must be at least 1")
        self.target()  # validates the URL early

    def target(self) -> RedisTarget:
        return RedisTarget.parse(self.redis, self.redis_password)

    @classmethod
    def from_options(
        cls,
        *,
        redis: str,
        port: int,
        host: str = "127.0.0.1",
        token_file: str | os.PathLike[str] | None = None,
        redis_password_file: str | os.PathLike[str] | None = None,
        pool_size: int = 8,
        timeout_ms: int = 500,
        environ: Mapping[str, str] | None = None,
        insecure: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout_ms: int = READ_TIMEOUT_MS,
    ) -> BridgeConfig:
        """Resolves secret references: the token from ``token_file``, else from
        ``$TOKENLIMIT_BRIDGE_TOKEN``; the Redis password from ``redis_password_file``, else
        from ``$TOKENLIMIT_REDIS_PASSWORD``. A password inside ``redis`` (a command-line
        value, visible to every local user in `ps`) is refused."""
        env = os.environ if environ is None else environ
        if RedisTarget.parse(redis).password is not None:
            raise ValueError(
                "the Redis URL holds a password, which the command line shows to every local "
                f"user (ps): remove it and use --redis-password-file FILE or ${PASSWORD_ENV}"
            )
        token = read_secret(token_file) if token_file else (env.get(TOKEN_ENV) or None)
        password = (
            read_secret(redis_password_file)
            if redis_password_file
            else (env.get(PASSWORD_ENV) or None)
        )
        return cls(
            redis=redis,
            port=port,
            host=host,
            token=token,
            redis_password=password,
            pool_size=pool_size,
            timeout_ms=timeout_ms,
            insecure=insecure,
            max_connections=max_connections,
            read_timeout_ms=read_timeout_ms,
        )
