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

    def __post_init__(self) -> None:
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
    ) -> BridgeConfig:
        """Resolves secret references: the token from ``token_file``, else from
        ``$TOKENLIMIT_BRIDGE_TOKEN``; the Redis password from ``redis_password_file``, else
        from the URL."""
        env = os.environ if environ is None else environ
        token = read_secret(token_file) if token_file else (env.get(TOKEN_ENV) or None)
        password = read_secret(redis_password_file) if redis_password_file else None
        return cls(
            redis=redis,
            port=port,
            host=host,
            token=token,
            redis_password=password,
            pool_size=pool_size,
            timeout_ms=timeout_ms,
        )
