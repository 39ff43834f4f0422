"""`tokenlimit alerts`: each alert fires once and resolves once, posted to every webhook format.

The clock is a fake one stepped 30 s at a time; the stats come from a local Prometheus page
(conftest.FakeEnvoy), budgets from a real redis-server, messages go to a local aiohttp receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from pathlib import Path

import redis
from click.testing import CliRunner
from observe.servers import FakeEnvoy, Receiver
from support.redis_server import RedisServer
from tokenlimit.cli import main
from tokenlimit.dev.process import free_port
from tokenlimit.observe.alert_loop import AlertLoop
from tokenlimit.observe.alerts import Evaluator, Thresholds
from tokenlimit.observe.notify import parse_webhooks
from tokenlimit.observe.sources import Policy, Sources
from tokenlimit.usage import hash_value

STEP_S = 30.0
MODEL_429 = 'tokenlimit_upstream_rate_limited{rule="chat",model="gpt-4o"}'
ALLOWED = 'tokenlimit_requests{rule="chat",model="gpt-4o",outcome="allowed"}'
REJECTED = 'tokenlimit_requests{rule="chat",model="gpt-4o",outcome="rejected"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def a_loop(
    receiver: Receiver,
    *,
    envoys: tuple[str, ...] = (),
    redis_url: str | None = None,
    policy: Policy | None = None,
    thresholds: Thresholds | None = None,
) -> tuple[AlertLoop, Clock]:
    clock = Clock()
    hooks = parse_webhooks(
        [
            f"{receiver.url}/generic",
            f"dingtalk={receiver.url}/robot/send?access_token=T",
            f"wecom={receiver.url}/cgi-bin/webhook/send?key=K",
            f"slack={receiver.url}/slack/services/X",
        ],
        dingtalk_secret="SEC",
    )
    for hook in hooks:
        hook.clock = clock
    sources = Sources(envoys, redis_url, policy, clock=clock)
    return AlertLoop(sources, Evaluator(thresholds or Thresholds()), hooks), clock


def tick(loop: AlertLoop, clock: Clock) -> list[tuple[str, str, str]]:
    clock.now += STEP_S
    return [(e.state, e.alert.kind, e.alert.subject) for e in loop.step()]


def states(events: list[list[tuple[str, str, str]]], kind: str) -> list[tuple[int, str]]:
    """(tick, state) of every message of one kind: what a person on the channel would see."""
    return [(i, state) for i, found in enumerate(events) for state, k, _ in found if k == kind]


def test_upstream_429s_for_five_minutes_fire_once_and_resolve_once(
    envoy: FakeEnvoy, receiver: Receiver
) -> None:
    loop, clock = a_loop(receiver, envoys=(envoy.admin_url,))
    events = []
    for i in range(16):
        if i < 12:  # 429s for 12 ticks (6 minutes), then none
            envoy.add(MODEL_429)
        events.append(tick(loop, clock))
    # First increase seen at tick 1; 5 minutes later (tick 11) it fires; two ticks after the
    # last 429 (the 60 s lookback) it resolves.
    assert states(events, "upstream_rate_limited") == [(11, "firing"), (13, "resolved")]
    (fired, resolved) = receiver.bodies("/generic")
    assert fired["event"] == "tokenlimit.alert.firing" and fired["subject"] == "gpt-4o"
    assert "429" in fired["summary"] and resolved["event"] == "tokenlimit.alert.resolved"
    assert "after 1m00s" in resolved["text"]
    slack = receiver.bodies("/slack")
    assert [b["text"] for b in slack] == [fired["text"], resolved["text"]]
    for robot in ("/robot", "/cgi-bin"):
        assert [b["text"]["content"] for b in receiver.bodies(robot)] == [
            fired["text"],
            resolved["text"],
        ]


def test_dingtalk_messages_are_signed(envoy: FakeEnvoy, receiver: Receiver) -> None:
    loop, clock = a_loop(receiver, envoys=(envoy.admin_url,))
    envoy.gauges["tokenlimit_redis_circuit_open"] = 1
    tick(loop, clock)
    (path,) = [p for p, _ in receiver.received if p.startswith("/robot")]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    now_ms = str(int(clock.now * 1000))
    digest = hmac.new(b"SEC", f"{now_ms}\nSEC".encode(), hashlib.sha256).digest()
    assert query == {
        "access_token": ["T"],
        "timestamp": [now_ms],
        "sign": [base64.b64encode(digest).decode()],
    }


def test_refusal_rate_fires_over_the_threshold_and_resolves_under_it(
    envoy: FakeEnvoy, receiver: Receiver
) -> None:
    thresholds = Thresholds(refusal_window_s=60, refusal_ratio=0.25, refusal_min_requests=20)
    loop, clock = a_loop(receiver, envoys=(envoy.admin_url,), thresholds=thresholds)
    events = []
    for i in range(8):
        envoy.add(ALLOWED, 20)
        if 2 <= i < 4:
            envoy.add(REJECTED, 15)  # over a quarter of the requests for two ticks
        events.append(tick(loop, clock))
    # The 60 s window holds two ticks: it leaves the threshold one window after the refusals.
    assert states(events, "refusal_rate") == [(2, "firing"), (5, "resolved")]
    (fired, _) = [b for b in receiver.bodies("/generic") if b["alert"] == "refusal_rate"]
    assert fired["subject"] == "chat" and "at or above 25%" in fired["summary"]


def test_without_a_policy_budget_alerts_come_from_the_metrics(
    envoy: FakeEnvoy, receiver: Receiver
) -> None:
    loop, clock = a_loop(receiver, envoys=(envoy.admin_url,))
    events = [tick(loop, clock)]
    envoy.add('tokenlimit_budget_warned{rule="chat"}', 3)
    events.append(tick(loop, clock))
    envoy.add(REJECTED, 1)
    events += [tick(loop, clock) for _ in range(4)]
    assert states(events, "budget_warn") == [(1, "firing"), (3, "resolved")]
    assert states(events, "budget_spent") == [(2, "firing"), (4, "resolved")]


def test_a_budget_past_warn_at_then_spent_then_reset(tmp_path: Path, receiver: Receiver) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "rule_name: chat\nwarn_at: 0.5\nrule_items:\n- limit_by_per_header: x-api-key\n"
        "  limit_keys:\n  - key: '*'\n    token_per_minute: 300\n"
    )
    from tokenlimit.loader import load_policy

    policy = Policy()
    policy.add(load_policy(policy_file).config)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        if now_ms % 60_000 > 50_000:  # the fixed window must not reset mid-test
            import time

            time.sleep((60_000 - now_ms % 60_000) / 1000 + 0.2)
            seconds, micros = client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
        start = now_ms - now_ms % 60_000
        key = "tokenlimit:{chat}:per_header:x-api-key:tokens:60:" + hash_value("alice-key")
        loop, clock = a_loop(receiver, redis_url=server.url, policy=policy)
        client.hset(key, mapping={"s": start, "u": 100, "p": 0})
        events = [tick(loop, clock)]
        client.hset(key, mapping={"u": 160})
        events += [tick(loop, clock), tick(loop, clock)]
        client.hset(key, mapping={"u": 300})
        events += [tick(loop, clock), tick(loop, clock)]
        client.delete(key)  # the window ended
        events.append(tick(loop, clock))
    assert states(events, "budget_warn") == [(1, "firing"), (5, "resolved")]
    assert states(events, "budget_spent") == [(3, "firing"), (5, "resolved")]
    spent = next(b for b in receiver.bodies("/generic") if b["alert"] == "budget_spent")
    assert spent["subject"].startswith("chat tokens/minute caller ")
    assert "alice-key" not in str(receiver.received)
    assert spent["summary"] == "spent: 300 of 300 used"


def test_redis_unavailable_fires_once_and_resolves(envoy: FakeEnvoy, receiver: Receiver) -> None:
    with RedisServer() as server:
        loop, clock = a_loop(receiver, envoys=(envoy.admin_url,), redis_url=server.url)
        events = [tick(loop, clock)]
        server.stop()
        events += [tick(loop, clock), tick(loop, clock)]
        server.start()
        events.append(tick(loop, clock))
        envoy.gauges["tokenlimit_redis_circuit_open"] = 1  # Envoy's own view counts too
        events += [tick(loop, clock), tick(loop, clock)]
        envoy.gauges["tokenlimit_redis_circuit_open"] = 0
        events.append(tick(loop, clock))
    assert states(events, "store_unavailable") == [
        (1, "firing"),
        (3, "resolved"),
        (4, "firing"),
        (6, "resolved"),
    ]


def test_alerts_once_from_the_command_line(envoy: FakeEnvoy, receiver: Receiver) -> None:
    envoy.gauges["tokenlimit_redis_circuit_open"] = 1
    result = CliRunner().invoke(
        main,
        [
            "alerts",
            "--envoy-admin",
            envoy.admin_url,
            "--redis",
            f"redis://:secret@127.0.0.1:{free_port()}/0",
            "--webhook",
            f"slack={receiver.url}/slack/x",
            "--once",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[tokenlimit] FIRING store_unavailable redis:")
    assert "secret" not in result.output
    ((path, body),) = receiver.received
    assert path == "/slack/x" and body["text"] == result.output.strip()


def test_alerts_needs_something_to_watch() -> None:
    result = CliRunner().invoke(main, ["alerts", "--once"])
    assert result.exit_code == 2
    assert "--envoy-admin URL and/or --redis URL" in result.output
