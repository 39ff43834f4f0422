"""Helpers for the jobs tests (fixtures are in conftest.py): the budget the gateway runs,
`tokenlimit jobs` processes, batch input lines, polling."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenlimit.dev import process
from tokenlimit.dev.gateway import Gateway
from tokenlimit.jobs import launch
from tokenlimit.model import FilterConfig, parse_filter_config

TOKENS_PER_SECOND = 120
#: A killed worker's job is taken over after this (the tests' bound; production: 30 s).
CLAIM_IDLE_MS = 1500
LOG_TAIL = 40


def budget(tokens_per_second: int = TOKENS_PER_SECOND) -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "jobs",
            "rule_items": [
                {
                    "limit_by_per_header": "authorization",
                    "limit_keys": [{"key": "*", "token_per_second": tokens_per_second}],
                }
            ],
        }
    )


class Services:
    """`tokenlimit jobs` processes on the test's Redis (stopped at the end of the test)."""

    def __init__(self, gateway: Gateway, redis_url: str, work: Path) -> None:
        self.gateway = gateway
        self.redis_url = redis_url
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(
        self, workers: int = 2, *extra: str, key_file: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        """A service; without `key_file`, every service of the test shares one generated
        credential key (made beside their logs), as replicas share one in production."""
        log = self.work / f"jobs-{len(self.procs)}.log"
        args = ["--claim-idle-ms", str(CLAIM_IDLE_MS), *extra]
        proc, url = launch.start(
            self.gateway.listen_url,
            self.redis_url,
            log,
            workers=workers,
            extra_args=args,
            credential_key_file=key_file,
        )
        self.procs.append(proc)
        self.logs.append(log)
        return proc, url

    def log_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def stop(self) -> None:
        for proc in self.procs:
            process.terminate(proc)


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_lines(count: int, max_tokens: int = 40, prefix: str = "req") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"line {i}"}],
                "max_tokens": max_tokens,
            },
        }
        for i in range(count)
    ]


def wait_for(
    check: Callable[[], Any], timeout_s: float, what: str, services: Services | None = None
) -> Any:
    """Poll `check` until it returns something true; on time-out the services' logs say why."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    logs = "\n".join(services.log_text().splitlines()[-LOG_TAIL:]) if services else ""
    raise AssertionError(f"{what} did not happen within {timeout_s:g}s\n{logs}")


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples on a service's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )
