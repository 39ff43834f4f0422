"""`Upstream`: where requests go after the filter, parsed from `scheme://host[:port]`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Upstream:
    """Where requests go after the filter: `scheme://host[:port]`."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """`http://127.0.0.1:8000` or `https://api.openai.com`; raises ValueError saying why."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"upstream must be scheme://host[:port] without a path, got {url!r} "
                "(requests keep their own path, e.g. /v1/chat/completions)"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"upstream port is not a number from 1 to 65535 in {url!r}") from None
        tls = parts.scheme == "https"
        return cls(host=parts.hostname, port=port or (443 if tls else 80), tls=tls)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def authority(self) -> str:
        """The Host header the upstream expects (default port left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True
