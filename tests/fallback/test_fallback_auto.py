"""The automatic switch: hysteresis with an injected clock, and the webhooks it notifies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tokenlimit.fallback import toggles
from tokenlimit.fallback.auto import (
    Counts,
    Switch,
    Watcher,
    WatchError,
    Webhook,
    dingtalk_signed_url,
    parse_host_counts,
    webhook_body,
)
from tokenlimit.fallback.toggles import RouteToggle
from tokenlimit.model import parse_fallback

PRIMARY = "fallback_chat_openai"
AUTO = {
    "enterRatio": 0.5,
    "exitRatio": 0.1,
    "minRequests": 10,
    "windowS": 60,
    "holdS": 120,
    "probePercent": 5,
    "intervalS": 5,
}


def spec(auto: dict[str, Any] | None = None) -> Any:
    return parse_fallback(
        {
            "routes": [
                {
                    "name": "chat",
                    "primary": {"name": "openai", "url": "https://api.openai.com"},
                    "fallbacks": [
                        {"name": "deepseek", "url": "https://api.deepseek.com"},
                        {"name": "vllm", "url": "http://10.0.0.7:8000"},
                    ],
                    "autoSwitch": auto if auto is not None else AUTO,
                },
                {
                    "name": "plain",
                    "pathPrefix": "/plain/",
                    "primary": {"name": "a", "url": "http://10.0.0.1"},
                    "fallbacks": [{"name": "b", "url": "http://10.0.0.2"}],
                },
            ]
        }
    )


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Envoy:
    """Envoy's cumulative host counters, as the watcher would read them."""

    def __init__(self) -> None:
        self.attempts = 0
        self.failures = 0

    def traffic(self, attempts: int, failures: int) -> None:
        self.attempts += attempts
        self.failures += failures

    def __call__(self, admin_url: str) -> dict[str, Counts]:
        return {PRIMARY: Counts(self.attempts, self.failures)}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Clock, Envoy, list[Switch], Watcher]:
    state = tmp_path / "state.json"
    toggles.init_state(state, spec(), tmp_path / "rds" / "routes.yaml", admin_url="http://x")
    clock, envoy, seen = Clock(), Envoy(), []
    watcher = Watcher(
        str(state), counts=envoy, clock=clock, notify=[seen.append], wait_applied=False
    )
    return state, clock, envoy, seen, watcher


def tick(watcher: Watcher, clock: Clock, seconds: float = 5) -> list[Switch]:
    clock.now += seconds
    return watcher.step()


def mode(state: Path) -> RouteToggle:
    return toggles.load_state(state).toggle("chat")


def test_enters_forced_fallback_when_the_primary_fails(setup: Any, caplog: Any) -> None:
    state, clock, envoy, seen, watcher = setup
    assert tick(watcher, clock) == []
    envoy.traffic(20, 12)  # 60% >= 50%
    caplog.set_level(logging.INFO, logger="tokenlimit.fallback")
    (switch,) = tick(watcher, clock)
    assert (switch.after.mode, switch.after.to, switch.after.probe_percent) == (
        "forced",
        "deepseek",
        5,
    )
    assert switch.after.by == "auto" and switch.cause == "failing"
    assert switch.window == Counts(20, 12)
    assert mode(state) == switch.after
    routes = (state.parent / "rds" / "routes.yaml").read_text()
    assert "fallback_chat_chain_from_deepseek" in routes and "weight: 95" in routes
    assert seen == [switch]
    assert switch.text() == (
        "[tokenlimit] fallback route chat: automatic -> forced to deepseek, 5% probe to the "
        "primary. Primary openai failed 12 of 20 attempts (60%) in the last 5s, at or above 50%."
    )
    assert switch.text() in caplog.text


def test_too_few_attempts_or_a_ratio_below_enter_do_not_switch(setup: Any) -> None:
    _, clock, envoy, seen, watcher = setup
    tick(watcher, clock)
    envoy.traffic(9, 9)  # 100%, but fewer than minRequests
    assert tick(watcher, clock) == []
    envoy.traffic(30, 10)  # 19/39 = 49%
    assert tick(watcher, clock) == []
    assert seen == []


def test_hysteresis_hold_and_exit(setup: Any) -> None:
    state, clock, envoy, seen, watcher = setup
    tick(watcher, clock)
    envoy.traffic(20, 20)
    (entered,) = tick(watcher, clock)
    # Recovered at once, but held for holdS.
    for _ in range(5):
        envoy.traffic(4, 0)
        assert tick(watcher, clock, 10) == []
    assert mode(state).mode == "forced"
    # Past the hold, the probe traffic's ratio is at most exitRatio: back to automatic.
    clock.now = entered.at + 121
    envoy.traffic(20, 1)  # the last 60 s: 24 attempts, 1 failed
    (left,) = tick(watcher, clock, 0)
    assert left.after.mode == "auto" and left.cause == "recovered"
    assert left.window.ratio <= 0.1
    assert mode(state).mode == "auto" and mode(state).by == "auto"
    assert [s.after.mode for s in seen] == ["forced", "auto"]


def test_a_ratio_between_the_thresholds_keeps_the_mode(setup: Any) -> None:
    state, clock, envoy, _, watcher = setup
    tick(watcher, clock)
    envoy.traffic(20, 20)
    (entered,) = tick(watcher, clock)
    clock.now = entered.at + 200
    envoy.traffic(40, 12)  # 30%: above exit (10%), so stays forced
    assert tick(watcher, clock, 0) == []
    assert mode(state).mode == "forced"


def test_without_probe_traffic_the_route_returns_to_automatic(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    toggles.init_state(state, spec({**AUTO, "probePercent": 0}), tmp_path / "routes.yaml")
    data = json.loads(state.read_text())
    data["adminUrl"] = "http://x"
    state.write_text(json.dumps(data))
    clock, envoy = Clock(), Envoy()
    watcher = Watcher(str(state), counts=envoy, clock=clock, wait_applied=False)
    tick(watcher, clock)
    envoy.traffic(10, 10)
    (entered,) = tick(watcher, clock)
    assert entered.after.probe_percent == 0
    assert "weighted_clusters" not in (tmp_path / "routes.yaml").read_text()
    clock.now = entered.at + 120 + 59
    assert tick(watcher, clock, 0) == []  # hold passed, but not hold + window
    (left,) = tick(watcher, clock, 1)
    assert left.after.mode == "auto" and left.cause == "unmeasured"
    assert "Too little traffic reached primary openai to measure it" in left.text()


def test_a_persons_toggle_is_never_overridden(setup: Any) -> None:
    state, clock, envoy, seen, watcher = setup
    toggles.set_mode(state, "chat", "forced", to="vllm", wait=False, clock=clock)
    tick(watcher, clock)
    envoy.traffic(100, 0)
    clock.now += 1000
    assert watcher.step() == []
    assert mode(state).to == "vllm" and mode(state).by == "cli"
    toggles.set_mode(state, "chat", "off", wait=False, clock=clock)
    envoy.traffic(100, 100)
    assert tick(watcher, clock, 1000) == []
    assert mode(state).mode == "off"
    assert seen == []


def test_a_toggle_made_while_deciding_wins(setup: Any) -> None:
    state, _, _, _, _ = setup
    before = mode(state)
    toggles.set_mode(state, "chat", "off", wait=False)
    result = toggles.set_mode(
        state, "chat", "forced", by="auto", wait=False, guard=lambda seen: seen == before
    )
    assert result is None and mode(state).mode == "off"


def test_windows_slide_and_survive_an_envoy_restart(setup: Any) -> None:
    _, clock, envoy, seen, watcher = setup
    tick(watcher, clock)
    envoy.traffic(9, 9)  # below minRequests
    for _ in range(14):  # 70 s: those failures leave the 60 s window
        tick(watcher, clock)
    envoy.traffic(11, 2)  # 2 of 11 in the window (without sliding: 11 of 20, 55%)
    assert tick(watcher, clock) == []
    envoy.attempts, envoy.failures = 3, 3  # Envoy restarted: counters start over
    assert tick(watcher, clock) == []  # no negative delta, no spurious switch
    envoy.traffic(10, 7)  # 10 of 13 since the restart
    (switch,) = tick(watcher, clock)
    assert switch.window == Counts(10, 7)
    assert len(seen) == 1


def test_routes_without_auto_switch_are_not_watched(setup: Any, tmp_path: Path) -> None:
    _, _, _, _, watcher = setup
    assert [route.name for route, _ in watcher.watched()] == ["chat"]
    assert watcher.interval_s() == 5.0
    state = tmp_path / "plain.json"
    plain = parse_fallback({"routes": [spec().routes[1].model_dump(by_alias=True)]})
    toggles.init_state(state, plain, tmp_path / "plain-routes.yaml", admin_url="http://x")
    with pytest.raises(WatchError, match="no route has autoSwitch"):
        Watcher(str(state)).interval_s()


def test_parse_host_counts_reads_envoys_clusters_json() -> None:
    body = {
        "cluster_statuses": [
            {
                "name": PRIMARY,
                "host_statuses": [
                    {
                        "stats": [
                            {"name": "cx_connect_fail"},
                            {"value": "3", "name": "rq_error"},
                            {"name": "rq_success"},
                            {"value": "7", "name": "rq_total"},
                            {"type": "GAUGE", "name": "rq_active"},
                        ]
                    },
                    {"stats": [{"value": "2", "name": "rq_total"}]},
                ],
            },
            {"name": "fallback_chat_chain_from_openai"},
        ]
    }
    counts = parse_host_counts(body)
    assert counts[PRIMARY] == Counts(9, 3)
    assert counts["fallback_chat_chain_from_openai"] == Counts(0, 0)


# --- webhooks ------------------------------------------------------------------------------------


def a_switch() -> Switch:
    return Switch(
        route="chat",
        primary="openai",
        before=RouteToggle("auto"),
        after=RouteToggle("forced", "deepseek", by="auto", since=1.0, probe_percent=5),
        window=Counts(20, 12),
        window_s=60,
        threshold=0.5,
        at=1_800_000_000.0,
        cause="failing",
    )


def test_webhook_bodies() -> None:
    generic = webhook_body("generic", a_switch())
    assert generic["event"] == "tokenlimit.fallback.switch"
    assert generic["from"] == {"mode": "auto", "to": None}
    assert generic["to"] == {"mode": "forced", "to": "deepseek", "probePercent": 5}
    assert (generic["attempts"], generic["failures"], generic["ratio"]) == (20, 12, 0.6)
    assert generic["at"] == "2027-01-15T08:00:00Z"
    text = a_switch().text()
    assert webhook_body("dingtalk", a_switch()) == {"msgtype": "text", "text": {"content": text}}
    assert webhook_body("wecom", a_switch()) == {"msgtype": "text", "text": {"content": text}}
    with pytest.raises(ValueError, match="webhook format must be one of"):
        webhook_body("teams", a_switch())
    assert webhook_body("slack", a_switch()) == {"text": text}


def test_wecom_content_is_cut_to_2048_bytes() -> None:
    long = Switch(**{**a_switch().__dict__, "route": "路" * 1000})
    content = webhook_body("wecom", long)["text"]["content"]
    assert len(content.encode()) <= 2048 and content.endswith("...")


def test_dingtalk_signature() -> None:
    url = dingtalk_signed_url("https://oapi.dingtalk.com/robot/send?access_token=T", "SECret", 1700)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    digest = hmac.new(b"SECret", b"1700\nSECret", hashlib.sha256).digest()
    assert query == {
        "access_token": ["T"],
        "timestamp": ["1700"],
        "sign": [base64.b64encode(digest).decode()],
    }


class Receiver:
    """A webhook endpoint on 127.0.0.1 recording what it gets."""

    def __init__(self, reply: dict[str, Any]) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                received.append((self.path, json.loads(self.rfile.read(length))))
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver({"errcode": 0, "errmsg": "ok"})
    yield r
    r.close()


def test_webhooks_post_each_switch(setup: Any, receiver: Receiver) -> None:
    state, clock, envoy, _, _ = setup
    hooks = [
        Webhook(receiver.url + "/generic"),
        Webhook(receiver.url + "/robot/send?access_token=T", "dingtalk", secret="S", clock=clock),
        Webhook(receiver.url + "/cgi-bin/webhook/send?key=K", "wecom"),
    ]
    watcher = Watcher(str(state), counts=envoy, clock=clock, notify=hooks, wait_applied=False)
    tick(watcher, clock)
    envoy.traffic(20, 20)
    (switch,) = tick(watcher, clock)
    paths = [path for path, _ in receiver.received]
    assert paths[0] == "/generic"
    assert paths[1].startswith("/robot/send?access_token=T&timestamp=")
    assert "&sign=" in paths[1]
    assert paths[2] == "/cgi-bin/webhook/send?key=K"
    bodies = [body for _, body in receiver.received]
    assert bodies[0]["route"] == "chat" and bodies[0]["to"]["mode"] == "forced"
    assert bodies[1] == bodies[2] == {"msgtype": "text", "text": {"content": switch.text()}}


def test_a_failing_webhook_is_logged_and_never_stops_the_watcher(setup: Any, caplog: Any) -> None:
    refusing = Receiver({"errcode": 310000, "errmsg": "keywords not in content"})
    try:
        assert Webhook(refusing.url + "/robot/send?access_token=T", "dingtalk")(a_switch()) is False
    finally:
        refusing.close()
    assert "refused the message" in caplog.text and "access_token=T" not in caplog.text
    unreachable = Webhook("http://127.0.0.1:9/hook", timeout_s=1)
    assert unreachable(a_switch()) is False
    state, clock, envoy, _, _ = setup
    watcher = Watcher(
        str(state), counts=envoy, clock=clock, notify=[unreachable], wait_applied=False
    )
    tick(watcher, clock)
    envoy.traffic(20, 20)
    assert len(tick(watcher, clock)) == 1
    with pytest.raises(ValueError, match="signing secret is for DingTalk"):
        Webhook("http://x", "wecom", secret="s")


def test_run_steps_and_sleeps_the_interval(setup: Any) -> None:
    watcher = setup[-1]
    slept: list[float] = []
    watcher.sleep = slept.append
    watcher.run(max_steps=3)
    assert slept == [5.0, 5.0]
