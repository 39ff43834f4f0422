"""`tokenlimit dashboard` in a real browser: Debian's headless Chromium loads the page, runs its
script against the server and the DOM it builds is checked (--dump-dom); the same run saves the
README's screenshot (docs/images/dashboard.png)."""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from observe.servers import FakeEnvoy, Served
from support.redis_server import RedisServer
from support.require import require_binary
from tokenlimit.cli import main
from tokenlimit.observe.dashboard import make_app
from tokenlimit.observe.sources import Policy, Sources
from tokenlimit.usage import hash_value

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshot is refreshed only on request (TOKENLIMIT_UPDATE_SCREENSHOT=1), so a
# test run never changes a tracked file; otherwise the shot goes to the test's temporary folder.
README_SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
UPDATE_SCREENSHOT = os.environ.get("TOKENLIMIT_UPDATE_SCREENSHOT") == "1"
CHROMIUM_HINT = "install Debian's Chromium: apt-get install chromium (.ci/run does, as root)"
TOKEN = "s3cret-panel-token"
MODELS = {"gpt-4o": (1200, 40_000), "claude-sonnet-4": (700, 21_000), "deepseek-chat": (300, 500)}


def chromium(*args: str, timeout_s: float = 90) -> str:
    binary = require_binary("chromium", CHROMIUM_HINT)
    with tempfile.TemporaryDirectory(prefix="tokenlimit-chromium-") as profile:
        done = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests run as root in CI containers
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=8000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def traffic_until(envoy: FakeEnvoy, stop: threading.Event) -> None:
    """Steady traffic that swells and ebbs, added in small steps as Envoy's counters grow."""
    started = time.monotonic()
    while not stop.wait(0.02):
        swell = 1.5 + math.sin((time.monotonic() - started) * 2.5)
        traffic(envoy, swell / 50)


def traffic(envoy: FakeEnvoy, step: float) -> None:
    """Traffic on two rules and three models, `step` times the amounts in MODELS."""
    for model, (requests, tokens) in MODELS.items():
        rule = "chat" if model != "deepseek-chat" else "batch"
        labels = f'rule="{rule}",model="{model}"'
        envoy.add(f'tokenlimit_requests{{{labels},outcome="allowed"}}', requests // 10 * step)
        envoy.add(f'tokenlimit_requests{{{labels},outcome="rejected"}}', requests // 60 * step)
        envoy.add(f'tokenlimit_requests{{{labels},outcome="cached"}}', requests // 30 * step)
        envoy.add(f'tokenlimit_requests{{{labels},outcome="waited"}}', requests // 50 * step)
        envoy.add(f'tokenlimit_requests{{{labels},outcome="downgraded"}}', 3 * step)
        envoy.add(f"tokenlimit_tokens{{{labels}}}", tokens * step)
        envoy.add(f"tokenlimit_cost_microusd{{{labels}}}", tokens * 5 * step)
    envoy.add('tokenlimit_upstream_rate_limited{rule="chat",model="gpt-4o"}', 7 * step)


@pytest.fixture
def panel(envoy: FakeEnvoy) -> Iterator[str]:
    """The dashboard over the fake Envoy and a real Redis holding three callers' budgets."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        seconds, _ = client.time()
        start = int(seconds) * 1000 // 86_400_000 * 86_400_000
        for name, used in (("alice-key", 182_000), ("bob-key", 61_500), ("carol-key", 9_800)):
            key = "tokenlimit:{chat}:per_header:x-api-key:tokens:86400:" + hash_value(name)
            client.hset(key, mapping={"s": start, "u": used, "p": 0})
        client.hset(
            "tokenlimit:{chat}:global:tokens:86400:global",
            mapping={"s": start, "u": 253_300, "p": 0},
        )
        policy = Policy()
        from tokenlimit.model import parse_filter_config

        policy.add(
            parse_filter_config(
                {
                    "rule_name": "chat",
                    "rule_items": [
                        {
                            "limit_by_per_header": "x-api-key",
                            "limit_keys": [{"key": "*", "token_per_day": 200_000}],
                        },
                    ],
                }
            )
        )
        sources = Sources((envoy.admin_url,), server.url, policy)
        served = Served(make_app(sources, token=TOKEN, interval_s=0.2))
        stop = threading.Event()
        busy = threading.Thread(target=traffic_until, args=(envoy, stop), daemon=True)
        busy.start()
        try:
            time.sleep(2.5)  # a dozen looks: curves with points
            yield served.url
        finally:
            stop.set()
            busy.join(5)
            served.close()


def test_the_panel_in_chromium_shows_rules_models_callers_and_curves(
    panel: str, tmp_path: Path
) -> None:
    dom = chromium("--dump-dom", f"{panel}/?token={TOKEN}")
    assert 'data-rendered="20' in dom, dom[-3000:]  # the script ran and drew a snapshot
    for text in ("chat", "batch", "gpt-4o", "claude-sonnet-4", "deepseek-chat", "Redis: ok"):
        assert text in dom
    assert '<polyline data-series="gpt-4o"' in dom and '<polyline data-series="refused"' in dom
    alice = hash_value("alice-key")[:12]
    assert f"<code>{alice}</code>" in dom  # top caller, hashed
    assert "alice-key" not in dom
    assert "<code>(everyone)</code>" in dom  # the global budget, not a caller
    assert "width:91%" in dom  # alice's 182,000 of 200,000 tokens a day
    screenshot = README_SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "dashboard.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1400,1100", f"{panel}/?token={TOKEN}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_panel_refuses_a_viewer_without_the_token(panel: str) -> None:
    for path in ("/", "/api/snapshot", "/api/snapshot?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(panel + path, timeout=5)
        assert refused.value.code == 401
    request = urllib.request.Request(
        panel + "/api/snapshot", headers={"authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert b'"gpt-4o"' in reply.read()


def test_listening_beyond_loopback_needs_a_token() -> None:
    result = CliRunner().invoke(
        main, ["dashboard", "--envoy-admin", "http://127.0.0.1:9901", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "--host 0.0.0.0 exposes budgets beyond this machine: set --token" in result.output
