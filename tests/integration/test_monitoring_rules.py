"""gputopo's shipped rule files in the real Prometheus, scraping mocked agents.

Two agents run as in production (the run loop, its health tick and XID watcher, its /metrics
server) on mocked machines: a DGX H100 after a bad night (``dgx-h100-degraded``: GPU 6 lost, an
uncorrectable ECC error on GPU 1) and a healthy one (``dgx-h100``). Prometheus loads
charts/gputopo/files' alert and DCGM-compat rule files, scrapes both every second and evaluates
the rules as often; the tests read the recorded DCGM-named series and the ALERTS series back
through PromQL.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import StartPrometheus
from tests.controlplane import PrometheusServer
from tests.packaging.monitoring import ALERTS_RULES, DCGM_RULES, MockedAgent, mocked_agent

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockedAgent]:
    with mocked_agent("dgx-h100-degraded", tmp_path_factory.mktemp("degraded"), "dgx-bad") as agent:
        yield agent


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockedAgent]:
    with mocked_agent("dgx-h100", tmp_path_factory.mktemp("healthy"), "dgx-good") as agent:
        yield agent


@pytest.fixture
def prometheus(
    start_prometheus: StartPrometheus, degraded: MockedAgent, healthy: MockedAgent
) -> PrometheusServer:
    return start_prometheus(
        {"gputopo-agent": [degraded.address, healthy.address]},
        scrape_interval="1s",
        rule_files=[ALERTS_RULES, DCGM_RULES],
    )


def _gpu(agent: MockedAgent, pci_bus_id: str) -> str:
    topology = agent.agent.holder.get().topology
    assert topology is not None
    (gpu,) = [g for g in topology.gpus if g.pci_bus_id == pci_bus_id]
    return str(gpu.index)


def _firing(prometheus: PrometheusServer, alert: str) -> list[dict[str, str]]:
    samples = prometheus.wait_for(f'ALERTS{{alertname="{alert}", alertstate="firing"}}', 30)
    return [sample.labels for sample in samples]


def test_gputopo_series_come_back_under_dcgm_exporter_names(
    prometheus: PrometheusServer, healthy: MockedAgent
) -> None:
    healthy.control.set_utilization(3, gpu=75, memory=40)
    healthy.control.set_temperature(3, 71)
    good = f'instance="{healthy.address}", gpu="3"'
    (util,) = prometheus.wait_for(f"DCGM_FI_DEV_GPU_UTIL{{{good}}} == 75", 30)
    labels = util.labels
    topology = healthy.agent.holder.get().topology
    assert topology is not None
    gpu3 = topology.gpus[3]
    assert labels["UUID"] == labels["uuid"] == gpu3.uuid
    assert labels["device"] == "nvidia3"
    assert labels["modelName"] == gpu3.name
    assert labels["Hostname"] == "dgx-good"
    (temperature,) = prometheus.wait_for(f"DCGM_FI_DEV_GPU_TEMP{{{good}}} == 71", 30)
    assert temperature.labels["UUID"] == gpu3.uuid
    (copy_util,) = prometheus.wait_for(f"DCGM_FI_DEV_MEM_COPY_UTIL{{{good}}} == 40", 30)
    assert copy_util.labels["device"] == "nvidia3"
    # Memory in MiB: the same numbers as gputopo's bytes, recorded at the same evaluation.
    (used,) = prometheus.wait_for(f"DCGM_FI_DEV_FB_USED{{{good}}}", 30)
    (free,) = prometheus.wait_for(f"DCGM_FI_DEV_FB_FREE{{{good}}}", 30)
    (total,) = prometheus.wait_for(
        f'gputopo_gpu_memory_total_bytes{{instance="{healthy.address}", gpu="3"}}', 30
    )
    assert used.value + free.value == pytest.approx(total.value / MIB)
    # One series per GPU NVML can read: the healthy DGX's eight.
    assert len(prometheus.wait_for(f'DCGM_FI_DEV_POWER_USAGE{{instance="{healthy.address}"}}')) == 8


def test_a_lost_gpu_has_no_dcgm_readings_and_the_rest_do(
    prometheus: PrometheusServer, degraded: MockedAgent
) -> None:
    bad = f'instance="{degraded.address}"'
    lost = _gpu(degraded, "0000:d1:00.0")
    temperatures = prometheus.wait_for(f"DCGM_FI_DEV_GPU_TEMP{{{bad}}}", 30)
    assert sorted(sample.labels["gpu"] for sample in temperatures) == sorted(
        str(i) for i in range(8) if str(i) != lost
    )
    (dbe,) = prometheus.wait_for(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{bad}}} > 0", 30)
    assert dbe.labels["gpu"] == _gpu(degraded, "0000:43:00.0")
    assert dbe.value == 1


def test_the_degraded_node_fires_its_alerts_and_the_healthy_one_none(
    prometheus: PrometheusServer, degraded: MockedAgent, healthy: MockedAgent
) -> None:
    lost = _firing(prometheus, "GputopoGPULost")
    assert [(a["instance"], a["gpu"]) for a in lost] == [
        (degraded.address, _gpu(degraded, "0000:d1:00.0"))
    ]
    ecc = _firing(prometheus, "GputopoGPUUncorrectableECC")
    assert [(a["instance"], a["gpu"]) for a in ecc] == [
        (degraded.address, _gpu(degraded, "0000:43:00.0"))
    ]
    # The SLA alert waits 10 minutes; until then it is pending, and only for the degraded node.
    pending = prometheus.wait_for(
        'ALERTS{alertname="GputopoNodeSLABelowThreshold", alertstate="pending"}', 30
    )
    assert [sample.labels["instance"] for sample in pending] == [degraded.address]
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert healthy.address not in {sample.labels["instance"] for sample in firing}


def test_an_injected_fatal_xid_fires_at_once(
    prometheus: PrometheusServer, degraded: MockedAgent
) -> None:
    # On the degraded node (the agents live for the module; the healthy one must stay quiet).
    prometheus.wait_for(f'gputopo_gpu_info{{instance="{degraded.address}"}}', 30)
    degraded.control.inject_xid(5, 48)
    prometheus.wait_for(
        'ALERTS{alertname="GputopoFatalXID", alertstate="firing", gpu="5", xid="48"}', 30
    )
    # An application fault (XID 13) does not page anyone.
    degraded.control.inject_xid(4, 13)
    prometheus.wait_for(
        f'gputopo_gpu_xid_errors_total{{instance="{degraded.address}", xid="13"}}', 30
    )
    firing = prometheus.query('ALERTS{alertname="GputopoFatalXID", alertstate="firing"}')
    assert "13" not in {sample.labels["xid"] for sample in firing}
    assert {sample.labels["instance"] for sample in firing} == {degraded.address}


def test_alert_rules_load_without_errors(prometheus: PrometheusServer) -> None:
    prometheus.wait_for("ALERTS", 30)
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=10) as response:
        body = json.loads(response.read())
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert len(rules) == 31
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"]
    assert unhealthy == []
