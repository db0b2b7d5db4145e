"""Monitoring as shipped: the kustomize component (rendered by the pinned kustomize) and the Helm
chart's templates/monitoring (rendered by the pinned helm) carry the one source in
charts/gputopo/files unchanged, and the two agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import monitoring
from hack.monitoring import RULE_OBJECTS, main, stale_files
from tests.packaging import helm
from tests.packaging.kustomize import REPO, overlay, render
from tests.packaging.monitoring import DASHBOARD, rule_groups, run_promtool

MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
ALL_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
        "dcgmCompat": {"enabled": True},
    }
}


def _named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(scope="module")
def kustomized(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    where = tmp_path_factory.mktemp("overlay")
    return render(overlay(where, components=("monitoring", "monitoring/dcgm-compat"))) + render(
        REPO / "daemonset" / "scheduler"
    )


@pytest.fixture(scope="module")
def charted() -> list[dict[str, Any]]:
    return helm.template({**ALL_ON, "scheduler": {"enabled": True}})


# -- the kustomize copies ----------------------------------------------------------------------


def test_the_kustomize_copies_equal_the_chart_files() -> None:
    assert stale_files() == [], "run `python -m hack.monitoring` and commit the copies"
    assert main(["--check"]) == 0


def test_a_stale_copy_is_reported_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "gputopo-dashboard.json"
    copy.write_text("{}")
    monkeypatch.setattr(monitoring, "DASHBOARD_COPY", copy)
    monkeypatch.setattr(monitoring, "RULE_OBJECTS", ())
    assert stale_files() == [copy]
    assert main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert copy.read_text() == "{}"  # --check writes nothing
    assert main([]) == 0
    assert copy.read_text() == DASHBOARD.read_text(encoding="utf-8")
    assert main(["--check"]) == 0


def test_the_component_ships_the_rules_unchanged(kustomized: list[dict[str, Any]]) -> None:
    rules = _named(kustomized, "PrometheusRule")
    assert set(rules) == {rule.name for rule in RULE_OBJECTS}
    for rule in RULE_OBJECTS:
        assert rules[rule.name]["spec"]["groups"] == rule_groups(rule.source)
        assert rules[rule.name]["metadata"]["namespace"] == "gputopo-system"


def test_the_rendered_prometheusrules_pass_promtool(
    kustomized: list[dict[str, Any]], tmp_path: Path
) -> None:
    files = []
    for name, rule in _named(kustomized, "PrometheusRule").items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        files.append(path)
    result = run_promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_configmap_is_for_grafanas_sidecar(kustomized: list[dict[str, Any]]) -> None:
    config_map = _named(kustomized, "ConfigMap")["gputopo-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _selects(monitor: dict[str, Any], service: dict[str, Any]) -> bool:
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"].get("labels", {})
    namespaces = monitor["spec"]["namespaceSelector"]["matchNames"]
    ports = {port.get("name") for port in service["spec"]["ports"]}
    return (
        all(labels.get(key) == value for key, value in wanted.items())
        and service["metadata"]["namespace"] in namespaces
        and {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports
    )


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_each_servicemonitor_selects_its_metrics_service(
    source: str, kustomized: list[dict[str, Any]], charted: list[dict[str, Any]]
) -> None:
    objects = kustomized if source == "kustomize" else charted
    services = _named(objects, "Service")
    monitors = _named(objects, "ServiceMonitor")
    expected = {
        "gputopo-agent": "gputopo-agent-metrics",
        "gputopo-scheduler": "gputopo-scheduler-metrics",
    }
    assert set(monitors) == set(expected)
    for monitor, service in expected.items():
        selected = [name for name, svc in services.items() if _selects(monitors[monitor], svc)]
        assert selected == [service], f"{source}: {monitor} selects {selected}"


# -- the chart ------------------------------------------------------------------------------------


def test_the_chart_renders_no_monitoring_by_default() -> None:
    objects = helm.template()
    assert [o["kind"] for o in objects if o["kind"] in MONITORING_KINDS] == []
    assert "gputopo-dashboard" not in _named(objects, "ConfigMap")


@pytest.mark.parametrize("part", ["serviceMonitor", "prometheusRule", "dashboard", "dcgmCompat"])
def test_each_monitoring_switch_renders_only_its_part(part: str) -> None:
    values = {"monitoring": {name: {"enabled": name == part} for name in ALL_ON["monitoring"]}}
    objects = helm.template(values)
    rendered = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["kind"] in MONITORING_KINDS or o["metadata"]["name"] == "gputopo-dashboard"
    }
    expected = {
        "serviceMonitor": {
            ("ServiceMonitor", "gputopo-agent"),
            ("ServiceMonitor", "gputopo-scheduler"),
        },
        "prometheusRule": {("PrometheusRule", "gputopo-alerts")},
        "dashboard": {("ConfigMap", "gputopo-dashboard")},
        "dcgmCompat": {("PrometheusRule", "gputopo-dcgm-compat")},
    }[part]
    assert rendered == expected


def test_the_chart_and_the_component_ship_the_same_monitoring(
    kustomized: list[dict[str, Any]], charted: list[dict[str, Any]]
) -> None:
    for kind in ("PrometheusRule", "ServiceMonitor"):
        from_chart = {name: o["spec"] for name, o in _named(charted, kind).items()}
        from_kustomize = {name: o["spec"] for name, o in _named(kustomized, kind).items()}
        assert from_chart == from_kustomize, kind
    chart_map = _named(charted, "ConfigMap")["gputopo-dashboard"]
    kustomize_map = _named(kustomized, "ConfigMap")["gputopo-dashboard"]
    assert chart_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {k: json.loads(v) for k, v in chart_map["data"].items()} == {
        k: json.loads(v) for k, v in kustomize_map["data"].items()
    }


def _sla_expression(objects: list[dict[str, Any]]) -> str:
    rule = _named(objects, "PrometheusRule")["gputopo-alerts"]
    (expression,) = [
        r["expr"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if r.get("alert") == "GputopoNodeSLABelowThreshold"
    ]
    return str(expression)


def test_the_sla_threshold_is_the_charts_value(tmp_path: Path) -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True, "slaThreshold": 750}}}
    objects = helm.template(values)
    assert _sla_expression(objects) == "gputopo_node_sla_score < 750"
    changed = _named(objects, "PrometheusRule")["gputopo-alerts"]["spec"]["groups"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": changed}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing else changes.
    default = helm.template({"monitoring": {"prometheusRule": {"enabled": True}}})
    unchanged = _named(default, "PrometheusRule")["gputopo-alerts"]["spec"]["groups"]
    for groups in (changed, unchanged):
        for group in groups:
            for rule in group["rules"]:
                if rule.get("alert") == "GputopoNodeSLABelowThreshold":
                    rule["expr"] = "<threshold>"
    assert changed == unchanged


@pytest.mark.parametrize("threshold", [1001, -1, "high"])
def test_a_threshold_outside_the_sla_range_is_refused(threshold: object) -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True, "slaThreshold": threshold}}}
    result = helm.run("template", helm.RELEASE, str(helm.CHART), values=values)
    assert result.returncode != 0
    assert "slaThreshold" in result.stderr


def test_helm_lint_strict_passes_with_all_monitoring_on() -> None:
    result = helm.run("lint", "--strict", str(helm.CHART), values=ALL_ON)
    assert result.returncode == 0, result.stdout + result.stderr
