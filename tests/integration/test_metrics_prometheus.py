"""The agent's /metrics scraped by a real Prometheus, answered through PromQL.

The agent runs as in production (``agent.loop.Agent`` with its health tick, XID watcher and
metrics server) on a mocked DGX H100: the fake ``pynvml`` from ``mocks/`` scripted through its
control object (utilisation, temperature, XIDs), a fake sysfs from the same profile, and a fake
kubelet serving pod-resources over gRPC. Prometheus is the real server, scraping every second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.podresources import PodResourcesClient
from gputopo.agent.runloop import serve
from tests.conftest import StartPrometheus
from tests.controlplane import PrometheusServer
from tests.polling import eventually
from tests.unit.agent.fake_kubelet import FakeKubeletState, fake_kubelet, short_socket_dir

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"


class MockedNode:
    """The mocked DGX H100 and the knobs the tests turn (the mocks' control object)."""

    def __init__(self, sysfs_root: Path) -> None:
        from gputopo.mocks.fake_pynvml import make_fake_pynvml
        from gputopo.mocks.profile import load_profile
        from gputopo.mocks.sysfs import build_sysfs

        self.profile = load_profile(PROFILE)
        self.nvml = make_fake_pynvml(self.profile)
        build_sysfs(self.profile, sysfs_root)
        self.control: Any = self.nvml.control

    def set_utilization(self, gpu: int, percent: int) -> None:
        self.control.set_utilization(gpu, gpu=percent, memory=percent // 2)

    def set_temperature(self, gpu: int, celsius: int) -> None:
        self.control.set_temperature(gpu, celsius)

    def inject_xid(self, gpu: int, code: int) -> None:
        self.control.inject_xid(gpu, code)


@pytest.fixture
def node(tmp_path: Path) -> MockedNode:
    return MockedNode(tmp_path / "sys")


@pytest.fixture
def kubelet() -> Iterator[tuple[str, FakeKubeletState]]:
    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with fake_kubelet(socket_path) as state:
            yield socket_path, state


@pytest.fixture
def agent(
    node: MockedNode, tmp_path: Path, kubelet: tuple[str, FakeKubeletState]
) -> Iterator[tuple[Agent, str]]:
    socket_path, _ = kubelet
    config = RunLoopConfig(
        interval_s=3600,
        health_interval_s=0.2,
        pod_resources_interval_s=0.5,
        min_trigger_interval_s=0,
        udev=False,
    )
    with Discoverer(node.nvml, tmp_path / "sys", "dgx-test") as discoverer:
        agent = Agent(
            discoverer,
            publisher=None,
            pod_resources=PodResourcesClient(socket_path),
            config=config,
        )
        server = serve(agent, "127.0.0.1:0", registry_version="test")
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        try:
            # The tests read the snapshot: it exists once the first discovery is done, which
            # on a loaded machine can take longer than starting Prometheus.
            eventually(lambda: agent.holder.get().topology is not None, 30, "the first discovery")
            yield agent, f"127.0.0.1:{server.port}"
        finally:
            agent.stop()
            thread.join(timeout=10)
            server.stop()


@pytest.fixture
def prometheus(start_prometheus: StartPrometheus, agent: tuple[Agent, str]) -> PrometheusServer:
    return start_prometheus({"gputopo-agent": [agent[1]]}, scrape_interval="1s")


def _values(prometheus: PrometheusServer, promql: str, label: str) -> dict[str, float]:
    return {s.labels.get(label, ""): s.value for s in prometheus.query(promql)}


def _eventually(prometheus: PrometheusServer, promql: str, timeout: float = 20.0) -> list[Any]:
    return prometheus.wait_for(promql, timeout=timeout)


def test_every_gpu_is_a_series_with_topology_labels(prometheus: PrometheusServer) -> None:
    samples = _eventually(prometheus, "gputopo_gpu_info")
    assert len(samples) == 8
    labels = samples[0].labels
    for name in ("gpu", "uuid", "pci_bus_id", "model", "numa_node", "nvlink_domain"):
        assert labels.get(name), f"{name} missing on {labels}"
    assert labels["job"] == "gputopo-agent"
    (domain,) = prometheus.query("gputopo_nvlink_domain_gpus")
    assert domain.value == 8 and domain.labels["via"] == "nvswitch"


def test_scripted_utilisation_comes_back_through_promql(
    node: MockedNode, prometheus: PrometheusServer
) -> None:
    node.set_utilization(3, 75)
    _eventually(prometheus, 'gputopo_gpu_utilization_ratio{gpu="3"} == 0.75')
    node.set_utilization(3, 10)
    _eventually(prometheus, 'gputopo_gpu_utilization_ratio{gpu="3"} == 0.1')


def test_gpus_hotter_than_85_celsius(node: MockedNode, prometheus: PrometheusServer) -> None:
    node.set_temperature(5, 91)
    hot = _eventually(prometheus, "gputopo_gpu_temperature_celsius > 85")
    assert [s.labels["gpu"] for s in hot] == ["5"]


def test_xid_rate_by_code(node: MockedNode, prometheus: PrometheusServer) -> None:
    _eventually(prometheus, "gputopo_gpu_info")
    node.inject_xid(2, 79)
    node.inject_xid(2, 79)
    node.inject_xid(6, 48)
    _eventually(prometheus, 'gputopo_gpu_xid_errors_total{xid="79"} == 2')
    by_code = _values(prometheus, "sum by (xid) (gputopo_gpu_xid_errors_total)", "xid")
    assert by_code == {"79": 2.0, "48": 1.0}
    # The documented rate query parses and answers once two scrapes have seen the counter.
    time.sleep(2.5)
    rates = _values(
        prometheus, "sum by (instance, xid) (rate(gputopo_gpu_xid_errors_total[1m]))", "xid"
    )
    assert set(rates) == {"79", "48"}


def test_free_idle_four_gpu_nvlink_domain(
    node: MockedNode,
    prometheus: PrometheusServer,
    kubelet: tuple[str, FakeKubeletState],
    agent: tuple[Agent, str],
) -> None:
    _, state = kubelet
    topology = agent[0].holder.get().topology
    assert topology is not None
    uuids = [gpu.uuid for gpu in topology.gpus]
    # Two GPUs held by a training pod, one busy but unallocated: five are free and idle.
    state.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(uuids[0], 0), (uuids[1], 0)])
    node.set_utilization(2, 90)
    _eventually(prometheus, 'gputopo_gpu_allocated_containers{pod="trainer-0"}')
    query = """
        count by (instance, nvlink_domain) (
            (gputopo_gpu_allocated_containers == 0)
          and on (instance, uuid)
            (max_over_time(gputopo_gpu_utilization_ratio[5m]) < 0.05)
        ) >= 4
    """
    (domain,) = _eventually(prometheus, query)
    assert domain.value == 5
    held = prometheus.query('gputopo_gpu_utilization_ratio{namespace="ml"}')
    assert sorted(s.labels["gpu"] for s in held) == ["0", "1"]
