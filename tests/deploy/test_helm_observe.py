"""The chart's Grafana dashboard ConfigMap and PrometheusRule (issue 16), rendered by the real
Helm engine, and the rules themselves run by promtool: `check rules`, and `test rules` with
series that fire and resolve every alert (deploy/prometheus/rules-test.yaml)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import helm_engine
from support.helm_engine import NAMESPACE
from support.helm_scenarios import kube_versions
from support.require import require_binary

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "helm" / "tokenlimit" / "files" / "prometheus-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules-test.yaml"
DASHBOARD = ROOT / "deploy" / "helm" / "tokenlimit" / "dashboards" / "tokenlimit.json"
PROMTOOL_HINT = "install Debian's Prometheus: apt-get install prometheus (.ci/run does, as root)"
ENABLED = {
    "observability": {
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    }
}
# What the filter exports (tokenlimit.observe.prom's docstring; the "metrics" helper's names).
METRICS = {
    "tokenlimit_requests",
    "tokenlimit_tokens",
    "tokenlimit_cost_microusd",
    "tokenlimit_upstream_rate_limited",
    "tokenlimit_budget_warned",
    "tokenlimit_redis_circuit_open",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", PROMTOOL_HINT)
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_both_are_off_by_default() -> None:
    kinds = {o["kind"] for o in helm_engine.render().objects}
    assert "PrometheusRule" not in kinds
    assert not [
        o
        for o in helm_engine.render().of_kind("ConfigMap")
        if o["metadata"]["name"].endswith("-dashboard")
    ]


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar() -> None:
    rendered = helm_engine.render(ENABLED)
    config_map = rendered.get("ConfigMap", "tokenlimit-dashboard")
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(config_map["data"]["tokenlimit.json"]) == json.loads(DASHBOARD.read_text())
    for version in kube_versions():
        helm_engine.validate_kube(config_map, version)


def test_the_prometheusrule_carries_the_tested_rules_file() -> None:
    rule = helm_engine.render(ENABLED).get("PrometheusRule", "tokenlimit-alerts")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_chart_lints_with_both_on() -> None:
    helm_engine.lint(ENABLED)


def test_promtool_checks_the_rules_as_rendered(tmp_path: Path) -> None:
    spec = helm_engine.render(ENABLED).get("PrometheusRule", "tokenlimit-alerts")["spec"]
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump(spec))
    done = promtool("check", "rules", str(RULES), str(rendered))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS: 5 rules found") == 2


def test_promtool_fires_and_resolves_every_alert() -> None:
    done = promtool("test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = yaml.safe_load(RULES_TEST.read_text())["tests"]
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    for alert in alerts:
        checks = [c for t in tested for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in checks), f"{alert} never fires in the test"
        fired_at = min(_minutes(c["eval_time"]) for c in checks if c["exp_alerts"])
        assert any(not c["exp_alerts"] and _minutes(c["eval_time"]) > fired_at for c in checks), (
            f"{alert} never resolves in the test"
        )


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)m", duration)
    assert match, duration
    return int(match.group(1))


def _exprs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["expr"]] if isinstance(value.get("expr"), str) else []
        return found + [e for v in value.values() for e in _exprs(v)]
    if isinstance(value, list):
        return [e for v in value for e in _exprs(v)]
    return []


@pytest.mark.parametrize("source", [DASHBOARD, RULES])
def test_every_query_names_metrics_the_filter_exports(source: Path) -> None:
    text = source.read_text()
    document = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    exprs = _exprs(document)
    assert exprs
    named = {m for e in exprs for m in re.findall(r"\btokenlimit_[a-z_]+\b", e)}
    assert named and named <= METRICS, named - METRICS
