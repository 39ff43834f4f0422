"""`tokenlimit up --redis URL --jobs-port PORT`: the jobs service beside the local gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from jobs_support import wait_for
from support.redis_server import RedisServer
from tokenlimit.dev.process import free_port

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "examples" / "policy.yaml"


def test_up_starts_the_jobs_service_beside_the_gateway(filter_wasm: Path) -> None:
    listen, admin, jobs_port = free_port(), free_port(), free_port()
    with RedisServer() as server:
        argv = [sys.executable, "-m", "tokenlimit.cli", "up", "--policy", str(POLICY)]
        argv += ["--redis", server.url, "--listen", str(listen), "--admin-port", str(admin)]
        argv += ["--wasm", str(filter_wasm), "--jobs-port", str(jobs_port)]
        up = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        try:
            assert up.stdout is not None
            assert "tokenlimit up: gateway" in up.stdout.readline()
            jobs_line = up.stdout.readline()
            url = f"http://127.0.0.1:{jobs_port}"
            assert jobs_line.startswith(f"tokenlimit up: jobs {url} "), jobs_line
            headers = {"x-api-key": "up-user", "prefer": "respond-async"}
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            request = urllib.request.Request(
                url + "/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={**headers, "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                assert reply.status == 202
                location = reply.headers["Location"]

            def done() -> object:
                check = urllib.request.Request(url + location, headers={"x-api-key": "up-user"})
                with urllib.request.urlopen(check, timeout=10) as reply:
                    job = json.load(reply)
                return job if job["status"] == "completed" else None

            job = wait_for(done, 20, "the job through `up`'s gateway")
            assert job["response"]["status_code"] == 200
        finally:
            up.send_signal(signal.SIGINT)
            assert up.wait(timeout=20) == 0, up.stderr.read() if up.stderr else ""


def test_jobs_port_without_redis_is_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from tokenlimit.cli import main

    result = CliRunner().invoke(main, ["up", "--policy", str(POLICY), "--jobs-port", "8099"])
    assert result.exit_code == 2
    assert "--jobs-port needs --redis URL" in result.output
