"""The Grafana dashboard: every PromQL expression parses (promtool) and reads only series that the
agent (a mocked DGX H100 with a bad night behind it, its real /metrics; the collector on the
snapshots the mocks cannot make) and the scheduler (its real metrics registry) export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.monitoring import (
    collector_series_names,
    dashboard_expressions,
    load_dashboard,
    metric_names,
    mocked_agent,
    rule_file,
    run_promtool,
    scheduler_series_names,
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def exported_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    with mocked_agent("dgx-h100-degraded", tmp_path_factory.mktemp("agent")) as agent:
        agent.control.inject_xid(2, 48)
        names = agent.series_names()
    yield names | collector_series_names() | scheduler_series_names()


def test_every_dashboard_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) > 30
    result = run_promtool("check", "rules", rule_file(tmp_path / "dashboard.yaml", expressions))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expression_fails_the_parse_check(tmp_path: Path) -> None:
    broken = [("panel 'x' A", "sum by (gpu (gputopo_gpu_utilization_ratio)")]
    result = run_promtool("check", "rules", rule_file(tmp_path / "broken.yaml", broken))
    assert result.returncode != 0


def test_every_series_the_dashboard_reads_is_exported(
    dashboard: dict[str, Any], exported_names: set[str]
) -> None:
    missing = {
        where: sorted(metric_names(expression) - exported_names)
        for where, expression in dashboard_expressions(dashboard)
        if metric_names(expression) - exported_names
    }
    assert missing == {}


def test_the_exposition_has_what_the_dashboard_is_about(exported_names: set[str]) -> None:
    # The cross-check above only means something if the mocked agent exported these.
    for name in (
        "gputopo_gpu_info",
        "gputopo_gpu_health",
        "gputopo_node_sla_score",
        "gputopo_gpu_xid_errors_total",
        "gputopo_gpu_allocated_containers",
        "gputopo_numa_node_gpus_free",
        "gputopo_scheduler_attempts_total",
        "gputopo_scheduler_scheduling_duration_seconds_bucket",
        "gputopo_scheduler_queue_depth",
    ):
        assert name in exported_names


def test_names_are_read_from_promql_not_from_labels_or_functions() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{instance=~"x"}[5m]))) '
        "* on (instance) group_left (node) b_info or vector(0) unless c offset 10m"
    )
    assert metric_names(expression) == {"a_bucket", "b_info", "c"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_panels_cover_the_node_and_the_scheduler(dashboard: dict[str, Any]) -> None:
    read = {
        name
        for panel in _panels(dashboard)
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    wanted = {
        "gputopo_gpu_info",  # GPUs with their topology
        "gputopo_gpu_health",
        "gputopo_gpu_utilization_ratio",
        "gputopo_node_sla_score",
        "gputopo_scheduler_attempts_total",
        "gputopo_scheduler_scheduling_duration_seconds_bucket",
        "gputopo_scheduler_queue_depth",
    }
    assert wanted <= read


def test_node_panels_follow_the_node_variable(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "node", "instance"} <= variables
    agent_targets = [
        target["expr"]
        for panel in _panels(dashboard)
        for target in panel["targets"]
        if "gputopo_scheduler_" not in target["expr"]
        and "by (node)" not in target["expr"]
        and "by (state)" not in target["expr"]
    ]
    assert agent_targets
    unfiltered = [expr for expr in agent_targets if '$instance"' not in expr]
    assert unfiltered == []


def test_panel_ids_are_unique_and_every_panel_uses_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    assert dashboard["uid"] == "gputopo-overview"


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
