"""The alert and DCGM-compat rule files: `promtool check rules`, `promtool test rules` for every
alert firing and not firing and for the DCGM-named series, and only series that exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.agent.health import FATAL_XIDS
from tests.packaging.monitoring import (
    ALERTS_RULES,
    DCGM_RULES,
    collector_series_names,
    metric_names,
    mocked_agent,
    recorded_names,
    rule_expressions,
    rule_groups,
    run_promtool,
    scheduler_series_names,
)

AGENT = {"instance": "dgx-1:9465", "job": "gputopo-agent"}
GPU3 = {
    **AGENT,
    "gpu": "3",
    "uuid": "GPU-33333333-0000-4000-8000-000000000003",
    "pci_bus_id": "0000:38:00.0",
    "model": "NVIDIA H100 80GB HBM3",
    "numa_node": "0",
    "nvlink_domain": "0",
}


def series(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"


def _alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for group in rule_groups(ALERTS_RULES)
        for rule in group["rules"]
        if "alert" in rule
    }


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value)\s*\}\}")


def render_annotations(
    rule: dict[str, Any], labels: dict[str, str], value: float
) -> dict[str, str]:
    """The alert's annotations for these labels: ``{{ $labels.x }}`` and ``{{ $value }}`` only
    (a label the template names but the series lacks is a KeyError: a broken annotation)."""

    def one(match: re.Match[str]) -> str:
        return f"{value:g}" if match.group(1) == "$value" else labels[match.group(2)]

    return {key: _TEMPLATE.sub(one, text) for key, text in rule.get("annotations", {}).items()}


@dataclass
class Firing:
    at: str  # eval time
    labels: list[dict[str, str]]  # one per alert expected, the series' labels
    values: list[float] = field(default_factory=list)  # $value per alert, for the annotations


@dataclass
class AlertCase:
    alert: str
    inputs: dict[str, str]  # series -> promtool values notation
    quiet_at: list[str]  # eval times at which the alert must not fire
    firing: list[Firing]


CASES = [
    AlertCase(
        "GputopoGPULost",
        {
            series("gputopo_gpu_lost", GPU3): "0 0 1 1",
            series("gputopo_gpu_lost", {**GPU3, "gpu": "4"}): "0x3",
        },
        ["1m"],
        [Firing("3m", [GPU3], [1])],
    ),
    AlertCase(
        "GputopoGPUFailed",
        {
            series("gputopo_gpu_health", {**GPU3, "state": "failed"}): "0 0 1x5",
            series("gputopo_gpu_health", {**GPU3, "state": "ok"}): "1 1 0x5",
        },
        ["1m", "2m"],  # 2m: pending for its minute
        [Firing("4m", [{**GPU3, "state": "failed"}], [1])],
    ),
    AlertCase(
        "GputopoFatalXID",
        {
            # XID 79 first seen at 3m: its counter series appears at 1.
            series("gputopo_gpu_xid_errors_total", {**GPU3, "xid": "79"}): "_x2 1x20",
            # XID 13 (an application fault) never fires.
            series("gputopo_gpu_xid_errors_total", {**GPU3, "xid": "13"}): "_ 1x5 2x15",
        },
        ["1m", "15m"],  # 15m: more than 10 minutes since the one XID 79
        [Firing("4m", [{**GPU3, "xid": "79"}], [1])],
    ),
    AlertCase(
        "GputopoFatalXID",
        {
            # A counter that has existed for a while and rises again at 21m.
            series("gputopo_gpu_xid_errors_total", {**GPU3, "xid": "48"}): "1x20 2x10",
        },
        ["15m"],
        [Firing("22m", [{**GPU3, "xid": "48"}], [1])],
    ),
    AlertCase(
        "GputopoFatalXID",
        {
            # An old XID 79; at 13m another pod takes the GPU, which renames the counter's series.
            series("gputopo_gpu_xid_errors_total", {**GPU3, "xid": "79", "pod": "a"}): "1x12",
            series("gputopo_gpu_xid_errors_total", {**GPU3, "xid": "79", "pod": "b"}): "_x13 1x10",
        },
        ["14m", "20m"],
        [Firing("5m", [{**GPU3, "xid": "79", "pod": "a"}], [1])],
    ),
    AlertCase(
        "GputopoGPUUncorrectableECC",
        {
            series(
                "gputopo_gpu_ecc_errors_total", {**GPU3, "type": "uncorrected", "scope": "volatile"}
            ): "0 0 1 1",
            # Lifetime counts and corrected errors do not fire.
            series(
                "gputopo_gpu_ecc_errors_total",
                {**GPU3, "type": "uncorrected", "scope": "aggregate"},
            ): "5x3",
            series(
                "gputopo_gpu_ecc_errors_total", {**GPU3, "type": "corrected", "scope": "volatile"}
            ): "9x3",
        },
        ["1m"],
        [Firing("3m", [{**GPU3, "type": "uncorrected", "scope": "volatile"}], [1])],
    ),
    AlertCase(
        "GputopoNodeSLABelowThreshold",
        {
            series("gputopo_node_sla_score", AGENT): "1000 1000 850x20",
            # At the threshold is not below it.
            series("gputopo_node_sla_score", {**AGENT, "instance": "dgx-2:9465"}): "900x22",
        },
        ["1m", "8m"],  # 8m: pending for 10 minutes
        [Firing("15m", [AGENT], [850])],
    ),
    AlertCase(
        "GputopoAgentDown",
        {
            series("up", {**AGENT, "job": "gputopo-agent-metrics"}): "1 1 0x10",
            series("up", {"instance": "node-exporter:9100", "job": "node"}): "0x12",
        },
        ["1m", "5m"],
        [Firing("8m", [{**AGENT, "job": "gputopo-agent-metrics"}], [0])],
    ),
    AlertCase(
        "GputopoAgentNotPublishing",
        {
            # Published every minute until 5m, then stuck.
            series(
                "gputopo_agent_last_successful_publish_timestamp_seconds", AGENT
            ): "0+60x5 300x20",
        },
        ["5m", "14m"],
        [Firing("16m", [AGENT], [660])],
    ),
    AlertCase(
        "GputopoAgentNeverPublished",
        {
            series("up", AGENT): "1x25",
            series("up", {**AGENT, "instance": "dgx-2:9465"}): "1x25",
            series(
                "gputopo_agent_last_successful_publish_timestamp_seconds",
                {**AGENT, "instance": "dgx-2:9465"},
            ): "0+60x25",
        },
        ["10m"],
        [Firing("20m", [AGENT], [1])],
    ),
    AlertCase(
        "GputopoNVMLDown",
        {
            series("gputopo_nvml_up", AGENT): "0x10",
            series(
                "gputopo_pci_only_gpu_info",
                {**AGENT, "pci_bus_id": "0000:38:00.0", "numa_node": "0", "driver": "nvidia"},
            ): "1x10",
            # A CPU-only node without NVML is not an alert.
            series("gputopo_nvml_up", {**AGENT, "instance": "cpu-1:9465"}): "0x10",
        },
        ["3m"],
        [Firing("7m", [AGENT], [0])],
    ),
    AlertCase(
        "GputopoPodsPendingOnTopology",
        {
            series(
                "gputopo_scheduler_queue_depth",
                {"instance": "s1:10259", "job": "gputopo-scheduler", "queue": "unschedulable"},
            ): "3x30",
            series(
                "gputopo_scheduler_leader", {"instance": "s1:10259", "job": "gputopo-scheduler"}
            ): "1x30",
            # The standby: its queue would not count even if it had pods.
            series(
                "gputopo_scheduler_queue_depth",
                {"instance": "s2:10259", "job": "gputopo-scheduler", "queue": "unschedulable"},
            ): "5x30",
            series(
                "gputopo_scheduler_leader", {"instance": "s2:10259", "job": "gputopo-scheduler"}
            ): "0x30",
        },
        ["10m"],
        [
            Firing(
                "20m",
                [{"instance": "s1:10259", "job": "gputopo-scheduler", "queue": "unschedulable"}],
                [3],
            )
        ],
    ),
]


def promtool_alert_test(case: AlertCase, rules: Path) -> dict[str, Any]:
    rule = _alerts()[case.alert]
    checks: list[dict[str, Any]] = [
        {"eval_time": at, "alertname": case.alert, "exp_alerts": []} for at in case.quiet_at
    ]
    for firing in case.firing:
        expected = []
        for labels, value in zip(firing.labels, firing.values, strict=True):
            expected.append(
                {
                    "exp_labels": {**labels, **rule.get("labels", {})},
                    "exp_annotations": render_annotations(rule, labels, value),
                }
            )
        checks.append({"eval_time": firing.at, "alertname": case.alert, "exp_alerts": expected})
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": name, "values": values} for name, values in case.inputs.items()
                ],
                "alert_rule_test": checks,
            }
        ],
    }


def _promtool_test(tmp_path: Path, document: dict[str, Any]) -> None:
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False))
    result = run_promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_files_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", ALERTS_RULES, DCGM_RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.alert)
def test_alert_fires_on_its_fault_and_not_before(case: AlertCase, tmp_path: Path) -> None:
    _promtool_test(tmp_path, promtool_alert_test(case, ALERTS_RULES))


def test_every_alert_has_a_firing_case() -> None:
    assert set(_alerts()) == {case.alert for case in CASES}


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    # The harness can fail: GPU 4 never got lost.
    case = CASES[0]
    wrong = AlertCase(
        case.alert, case.inputs, case.quiet_at, [Firing("3m", [{**GPU3, "gpu": "4"}], [1])]
    )
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump(promtool_alert_test(wrong, ALERTS_RULES)))
    assert run_promtool("test", "rules", test_file).returncode != 0


def test_the_fatal_xid_alert_names_the_agents_fatal_xids() -> None:
    expression = _alerts()["GputopoFatalXID"]["expr"]
    matchers = set(re.findall(r'xid=~"([0-9|]+)"', expression))
    assert len(matchers) == 1, expression
    assert {int(code) for code in matchers.pop().split("|")} == set(FATAL_XIDS)


def test_every_alert_has_a_severity_summary_and_runbook() -> None:
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        page = rule["annotations"]["runbook"].split("#")[0]
        assert (ALERTS_RULES.parents[3] / page).is_file(), f"{name}: {page}"


# -- DCGM-exporter names --------------------------------------------------------------------------

MIB = 1024 * 1024
DCGM_LABELS = {
    **GPU3,
    "UUID": GPU3["uuid"],
    "device": "nvidia3",
    "modelName": GPU3["model"],
    "Hostname": "dgx-1",
}
# DCGM name -> (gputopo series labels beyond GPU3, value, expected DCGM value)
DCGM_INPUTS: dict[str, str] = {
    series("gputopo_gpu_utilization_ratio", GPU3): "0.75",
    series("gputopo_gpu_memory_bandwidth_utilization_ratio", GPU3): "0.5",
    series("gputopo_gpu_memory_used_bytes", GPU3): str(2048 * MIB),
    series("gputopo_gpu_memory_total_bytes", GPU3): str(81559 * MIB),
    series("gputopo_gpu_temperature_celsius", GPU3): "45",
    series("gputopo_gpu_power_watts", GPU3): "312.5",
    series("gputopo_gpu_power_limit_watts", GPU3): "700",
    series("gputopo_gpu_ecc_errors_total", {**GPU3, "type": "corrected", "scope": "volatile"}): "2",
    series(
        "gputopo_gpu_ecc_errors_total", {**GPU3, "type": "uncorrected", "scope": "volatile"}
    ): "1",
    series(
        "gputopo_gpu_ecc_errors_total", {**GPU3, "type": "corrected", "scope": "aggregate"}
    ): "7",
    series(
        "gputopo_gpu_ecc_errors_total", {**GPU3, "type": "uncorrected", "scope": "aggregate"}
    ): "3",
    series("gputopo_gpu_retired_pages", {**GPU3, "cause": "single_bit"}): "4",
    series("gputopo_gpu_retired_pages", {**GPU3, "cause": "double_bit"}): "5",
    series("gputopo_gpu_remapped_rows", {**GPU3, "type": "correctable"}): "6",
    series("gputopo_gpu_remapped_rows", {**GPU3, "type": "uncorrectable"}): "8",
    series("gputopo_gpu_nvlink_errors_total", {**GPU3, "counter": "crc_flit"}): "10",
    series("gputopo_gpu_nvlink_errors_total", {**GPU3, "counter": "crc_data"}): "11",
    series("gputopo_gpu_nvlink_errors_total", {**GPU3, "counter": "replay"}): "12",
    series("gputopo_gpu_nvlink_errors_total", {**GPU3, "counter": "recovery"}): "13",
    series(
        "gputopo_gpu_info",
        {**GPU3, "architecture": "hopper", "compute_capability": "9.0", "mig_enabled": "false"},
    ): "1",
    series(
        "gputopo_node_info",
        {**AGENT, "node": "dgx-1", "product": "DGX-H100", "interconnect": "nvswitch"},
    ): "1",
}
DCGM_EXPECTED: dict[str, float] = {
    "DCGM_FI_DEV_GPU_UTIL": 75,
    "DCGM_FI_DEV_MEM_COPY_UTIL": 50,
    "DCGM_FI_DEV_FB_USED": 2048,
    "DCGM_FI_DEV_FB_FREE": 81559 - 2048,
    "DCGM_FI_DEV_FB_TOTAL": 81559,
    "DCGM_FI_DEV_GPU_TEMP": 45,
    "DCGM_FI_DEV_POWER_USAGE": 312.5,
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": 700,
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 2,
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 1,
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 7,
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 3,
    "DCGM_FI_DEV_RETIRED_SBE": 4,
    "DCGM_FI_DEV_RETIRED_DBE": 5,
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 6,
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 8,
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": 10,
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": 11,
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": 12,
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": 13,
}


def test_every_dcgm_name_is_tested() -> None:
    assert recorded_names(DCGM_RULES) - {"gputopo:dcgm_gpu_labels"} == set(DCGM_EXPECTED)


def test_gputopo_series_come_back_under_dcgm_names_units_and_labels(tmp_path: Path) -> None:
    checks = [
        {
            "expr": name,
            "eval_time": "1m",
            "exp_samples": [{"labels": series(name, DCGM_LABELS), "value": value}],
        }
        for name, value in DCGM_EXPECTED.items()
    ]
    document = {
        "rule_files": [str(DCGM_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": name, "values": f"{values}x2"}
                    for name, values in DCGM_INPUTS.items()
                ],
                "promql_expr_test": checks,
            }
        ],
    }
    _promtool_test(tmp_path, document)


def test_a_gpu_without_a_reading_gets_no_dcgm_series(tmp_path: Path) -> None:
    # gputopo leaves an unknown value out; the DCGM name must not make it up.
    inputs = {
        name: values
        for name, values in DCGM_INPUTS.items()
        if not name.startswith("gputopo_gpu_temperature_celsius")
    }
    document = {
        "rule_files": [str(DCGM_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": f"{v}x2"} for k, v in inputs.items()],
                "promql_expr_test": [
                    {"expr": "DCGM_FI_DEV_GPU_TEMP", "eval_time": "1m", "exp_samples": []}
                ],
            }
        ],
    }
    _promtool_test(tmp_path, document)


# -- only series that exist -------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    with mocked_agent("dgx-h100-degraded", tmp_path_factory.mktemp("agent")) as agent:
        agent.control.inject_xid(2, 48)
        names = agent.series_names()
    # `up` is Prometheus' own, per target.
    yield names | collector_series_names() | scheduler_series_names() | {"up"}


@pytest.mark.parametrize("source", [ALERTS_RULES, DCGM_RULES], ids=lambda path: path.name)
def test_rules_read_only_series_that_are_exported(source: Path, exported_names: set[str]) -> None:
    known = exported_names | recorded_names(source)
    missing = {
        name: sorted(metric_names(expression) - known)
        for name, expression in rule_expressions(source)
        if metric_names(expression) - known
    }
    assert missing == {}
