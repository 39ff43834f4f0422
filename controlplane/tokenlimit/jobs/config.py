"""The jobs service's settings: where the gateway and Redis are, and every bound.

One frozen pydantic model, built from the command line (`tokenlimit jobs`) or by tests. The
bounds are the service's own (the filter's contract/limits.json does not know about batch files):
they keep one upload, one line and the Redis memory a batch takes predictable.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Headers that carry a caller's identity to the gateway (its budget key). Treated as secrets:
#: kept only as long as the job lives, never logged, never returned by the API.
DEFAULT_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")
MIB = 1024 * 1024
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_window(text: str) -> float:
    """A completion window (`24h`, `30m`, `90s`, `2d`) in seconds; ValueError names the form."""
    found = _DURATION.match(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise ValueError(
            f"completion_window {text!r} is not a duration: use a whole number and a unit, "
            "e.g. 24h, 30m or 90s"
        )
    return int(found.group(1)) * _UNIT_S[found.group(2)]


class JobsConfig(BaseModel):
    """Everything one `tokenlimit jobs` process needs; every replica of a fleet shares Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway: str = Field(description="base URL of the gateway every job runs through")
    redis: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    #: Concurrent consumers in this process (each a consumer of the one group).
    workers: int = Field(default=4, ge=0, le=256)
    #: Redis key prefix, so several deployments can share one Redis.
    prefix: str = "tokenlimit:jobs"
    credential_headers: tuple[str, ...] = DEFAULT_CREDENTIAL_HEADERS
    # --- bounds: refused with a clear 400/413 -------------------------------------------------
    max_file_bytes: int = Field(default=20 * MIB, ge=1)
    max_lines: int = Field(default=50_000, ge=1)
    max_line_bytes: int = Field(default=1 * MIB, ge=1)
    max_window_s: float = Field(default=7 * 86400.0, gt=0)
    # --- lifetimes ----------------------------------------------------------------------------
    #: Input files, batches, results and output files live this long after their last change.
    retention_s: int = Field(default=7 * 86400, ge=60)
    # --- delivery -----------------------------------------------------------------------------
    #: A job its worker has not touched for this long is taken over by another worker: the
    #: bound on how long a killed worker's job waits. Live workers touch theirs every third.
    claim_idle_ms: int = Field(default=30_000, ge=100)
    #: Wait on an empty queue before looking again (and for idle jobs to take over).
    block_ms: int = Field(default=1_000, ge=10)
    #: Per attempt through the gateway.
    request_timeout_s: float = Field(default=600.0, gt=0)
    # --- pacing -------------------------------------------------------------------------------
    #: Share of each budget left to interactive traffic: while the gateway reports less than
    #: this fraction of a budget remaining (x-ratelimit-remaining / -limit), workers wait for
    #: its reset instead of spending it.
    interactive_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: Back-off after a 5xx or a connection error (doubled per attempt, capped, jittered).
    backoff_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)

    @field_validator("credential_headers")
    @classmethod
    def _lower(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip().lower() for name in names if name.strip()))

    @field_validator("gateway")
    @classmethod
    def _gateway_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"gateway {url!r} must be an http:// or https:// URL")
        return url.rstrip("/")
