"""The GPU Operator's driver upgrade against a real kube-apiserver: the test plays the operator's
upgrade controller, flipping ``nvidia.com/gpu-driver-upgrade-state`` on the Node, its driver
pod, unloading and loading the (fake) driver, and the kubelet, recreating the agent's container.
The running agent — mocked DGX H100, its own REST client — lets go of NVML so the unload
succeeds, writes nothing to the Node meanwhile, keeps serving /metrics and ready probes; with
the same driver back it opens NVML in place, with another version it exits to be recreated
(its container's NVML library is the old driver's) and the new container publishes it.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.discovery import Discoverer
from gputopo.agent.driver_upgrade import UPGRADE_STATE_LABEL, UpgradeStateReader
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.runloop import serve
from gputopo.core.contract import Gfd
from gputopo.core.kube import KubeClient, load_kubeconfig
from tests.controlplane import ClusterObjects, ControlPlane
from tests.polling import eventually

pytestmark = pytest.mark.integration

MERGE = "application/merge-patch+json"
NEW_DRIVER = "565.57.01"


@pytest.fixture
def node_name(cluster_objects: ClusterObjects) -> str:
    return cluster_objects.create_kubelet_node(f"upg-{uuid.uuid4().hex[:8]}")


class AgentProcess:
    """The agent as its container runs it: a thread in ``Agent.run``, its /metrics server."""

    def __init__(self, nvml: Any, sysfs: Path, node: str, api: KubeClient) -> None:
        self.discoverer = Discoverer(nvml, sysfs, node)
        self.discoverer.open()
        self.agent = Agent(
            self.discoverer,
            publisher=Publisher(api, node),
            config=RunLoopConfig(
                interval_s=3600,
                health_interval_s=0.1,
                min_trigger_interval_s=0.1,
                upgrade_poll_interval_s=0.2,
                event_wait_s=0.1,
                udev=False,
            ),
            upgrade_state=UpgradeStateReader(api, node),
        )
        self.server = serve(self.agent, "127.0.0.1:0", registry_version="test")
        self.metrics_url = f"{self.server.url}/metrics"
        self.exit_status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.exit_status = self.agent.run()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(timeout=10)
        self.server.stop()
        self.discoverer.close()


@pytest.fixture
def machine(
    node_name: str, control_plane: ControlPlane, tmp_path: Path
) -> Iterator[tuple[Any, Any]]:
    """(``start()``: a new agent process on the mocked DGX H100, the fake NVML's control)."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile("dgx-h100")
    nvml = make_fake_pynvml(profile)
    build_sysfs(profile, tmp_path / "sys")
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    started: list[AgentProcess] = []

    def start() -> AgentProcess:
        process = AgentProcess(nvml, tmp_path / "sys", node_name, api)
        started.append(process)
        return process

    try:
        yield start, nvml.control
    finally:
        for process in started:
            process.stop()
        api.close()


def operator_sets(admin: client.ApiClient, node: str, state: str | None) -> str:
    """The upgrade controller writes the state; the Node's resourceVersion after it."""
    patched = client.CoreV1Api(admin).patch_node(
        node,
        {"metadata": {"labels": {UPGRADE_STATE_LABEL: state}}},
        field_manager="gpu-operator",
        _content_type=MERGE,
    )
    return str(patched.metadata.resource_version)


def node_labels(admin: client.ApiClient, node: str) -> tuple[str, dict[str, str]]:
    read = client.CoreV1Api(admin).read_node(node)
    return str(read.metadata.resource_version), dict(read.metadata.labels or {})


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def unload_succeeds(control: Any) -> bool:
    from gputopo.mocks.fake_pynvml import DriverInUse

    try:
        control.unload_driver()
    except DriverInUse:
        return False
    return True


def test_the_agent_lets_the_operator_replace_the_driver_dgx_h100(
    machine: tuple[Any, Any], kube_admin: client.ApiClient, node_name: str
) -> None:
    start, control = machine
    process = start()
    agent, metrics_url = process.agent, process.metrics_url
    eventually(lambda: agent.readiness()[0], what="the first publish")
    assert node_labels(kube_admin, node_name)[1][Gfd.CUDA_DRIVER_VERSION_FULL] == "550.54.15"
    assert not unload_succeeds(control)  # the agent holds NVML: rmmod would say "in use"

    operator_sets(kube_admin, node_name, "cordon-required")
    operator_sets(kube_admin, node_name, "drain-required")
    eventually(lambda: not control.initialized, timeout_s=10, what="NVML released")
    assert unload_succeeds(control)  # the new driver pod can take the old driver out
    operator_sets(kube_admin, node_name, "pod-restart-required")
    version, _ = node_labels(kube_admin, node_name)
    cycles = agent.cycles
    for _ in range(3):
        agent.trigger("test: a cycle while the driver is out")
    eventually(lambda: agent.cycles > cycles, what="a triggered cycle")
    assert node_labels(kube_admin, node_name)[0] == version  # the agent wrote nothing
    eventually(
        lambda: (
            agent.readiness()
            == (True, "driver upgrade in progress (pod-restart-required): NVML released")
        ),
        what="the ready probe saying so",
    )
    eventually(
        lambda: (
            'gputopo_agent_driver_upgrade_in_progress{state="pod-restart-required"} 1.0'
            in scrape(metrics_url)
        ),
        what="the upgrade on /metrics",
    )

    control.load_driver(NEW_DRIVER)  # the new driver pod finished installing
    version = operator_sets(kube_admin, node_name, "validation-required")
    # The container's NVML library is the old driver's ("Driver/library version mismatch"):
    # the agent exits, without a write, for the kubelet to recreate the container.
    eventually(lambda: not process.thread.is_alive(), timeout_s=15, what="the agent exiting")
    assert process.exit_status == 3
    assert node_labels(kube_admin, node_name)[0] == version

    control.mount_library()  # the recreated container has the new driver's library
    restarted = start()
    eventually(
        lambda: (
            node_labels(kube_admin, node_name)[1].get(Gfd.CUDA_DRIVER_VERSION_FULL) == NEW_DRIVER
        ),
        timeout_s=15,
        what="the new driver's version on the Node",
    )
    assert control.initialized
    eventually(
        lambda: (
            'gputopo_agent_driver_upgrade_in_progress{state=""} 0.0'
            in scrape(restarted.metrics_url)
        ),
        what="no upgrade on /metrics",
    )
    operator_sets(kube_admin, node_name, "upgrade-done")
    labels = node_labels(kube_admin, node_name)[1]
    assert labels[UPGRADE_STATE_LABEL] == "upgrade-done"  # the operator's label, untouched
    assert restarted.agent.liveness()[0], restarted.agent.liveness()


def test_the_same_driver_restarted_is_opened_again_in_place_dgx_h100(
    machine: tuple[Any, Any], kube_admin: client.ApiClient, node_name: str
) -> None:
    start, control = machine
    process = start()
    eventually(lambda: process.agent.readiness()[0], what="the first publish")
    operator_sets(kube_admin, node_name, "pod-restart-required")
    eventually(lambda: not control.initialized, timeout_s=10, what="NVML released")
    assert unload_succeeds(control)
    control.load_driver()
    operator_sets(kube_admin, node_name, "upgrade-done")
    eventually(lambda: control.initialized, timeout_s=10, what="NVML opened again")
    eventually(lambda: process.agent.released_for is None, what="the release ended")
    assert process.thread.is_alive() and process.agent.readiness()[0]
