"""The run loop publishing to a real kube-apiserver: an XID reaches the Node as a health taint
within seconds, not at the next minute's rediscovery; GPU allocations reach the NRT.

Mocked DGX H100 (the fake pynvml's control object delivers the XID as an NVML event), real
apiserver with the NodeResourceTopology CRD, a fake kubelet on a unix socket.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.podresources import PodResourcesClient
from gputopo.agent.publish.nrt import GROUP, PLURAL, VERSION, NrtPublisher
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.runloop import serve
from gputopo.core.kube import KubeClient, load_kubeconfig
from tests.controlplane import ClusterObjects, ControlPlane
from tests.polling import eventually
from tests.unit.agent.fake_kubelet import fake_kubelet, short_socket_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def node_name(cluster_objects: ClusterObjects, gputopo_crds: list[str]) -> str:
    name = f"dgx-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}
    )
    return name


@pytest.fixture
def running(
    node_name: str, control_plane: ControlPlane, tmp_path: Path
) -> Iterator[tuple[Agent, Any, Any]]:
    """The agent publishing through its own client (gputopo.core.kube), as the admin."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile("dgx-h100")
    nvml = make_fake_pynvml(profile)
    build_sysfs(profile, tmp_path / "sys")
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with (
            fake_kubelet(socket_path) as kubelet,
            Discoverer(nvml, tmp_path / "sys", node_name) as discoverer,
        ):
            agent = Agent(
                discoverer,
                publisher=Publisher(api, node_name),
                nrt=NrtPublisher(api, node_name),
                pod_resources=PodResourcesClient(socket_path),
                config=RunLoopConfig(
                    interval_s=3600,
                    health_interval_s=0.2,
                    pod_resources_interval_s=0.3,
                    min_trigger_interval_s=0.5,
                    udev=False,
                ),
            )
            server = serve(agent, "127.0.0.1:0", registry_version="test")
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            try:
                yield agent, nvml.control, kubelet
            finally:
                agent.stop()
                thread.join(timeout=10)
                server.stop()
                api.close()


def _taints(kube_admin: client.ApiClient, node_name: str) -> dict[str, str]:
    node = client.CoreV1Api(kube_admin).read_node(node_name)
    return {t.key: f"{t.value}:{t.effect}" for t in node.spec.taints or []}


def test_fatal_xid_taints_the_node_within_seconds(
    running: tuple[Agent, Any, Any], kube_admin: client.ApiClient, node_name: str
) -> None:
    agent, control, _ = running
    eventually(lambda: agent.readiness()[0])
    node = client.CoreV1Api(kube_admin).read_node(node_name)
    assert node.metadata.labels["nvidia.com/gpu.count"] == "8"
    assert "gputopo.io/gpu-health" not in _taints(kube_admin, node_name)
    cycles = agent.cycles
    control.inject_xid(4, 79)  # "GPU has fallen off the bus": fatal
    eventually(lambda: "gputopo.io/gpu-health" in _taints(kube_admin, node_name), timeout_s=10)
    # One cycle, triggered by the event: the discovery interval is an hour, so the taint cannot
    # come from the schedule (how fast it comes is the benchmark's to measure, not this test's).
    assert _taints(kube_admin, node_name)["gputopo.io/gpu-health"] == "failed:NoSchedule"
    assert agent.cycles == cycles + 1
    writes = agent.stats.snapshot().api_writes
    assert writes.get("success", 0) >= 2
    assert agent.stats.snapshot().last_successful_publish is not None


def test_uncorrectable_ecc_error_taints_the_node_like_an_xid(
    running: tuple[Agent, Any, Any], kube_admin: client.ApiClient, node_name: str
) -> None:
    """A double-bit ECC error arrives as an NVML event and triggers a cycle of its own: the
    discovery interval is an hour, so the taint cannot come from the schedule."""
    agent, control, _ = running
    eventually(lambda: agent.readiness()[0])
    assert "gputopo.io/gpu-health" not in _taints(kube_admin, node_name)
    cycles = agent.cycles
    control.inject_ecc_error(6, uncorrectable=True)
    eventually(lambda: "gputopo.io/gpu-health" in _taints(kube_admin, node_name), timeout_s=10)
    assert _taints(kube_admin, node_name)["gputopo.io/gpu-health"] == "failed:NoSchedule"
    assert agent.cycles == cycles + 1
    topology = agent.holder.get().topology
    assert topology is not None
    reasons = topology.gpu(6).health_reasons
    assert "uncorrectable ECC errors since boot: 1" in reasons
    control.inject_ecc_error(6, uncorrectable=False)  # a corrected error: no cycle for it
    time.sleep(1.0)
    assert agent.cycles == cycles + 1


def test_gpu_allocation_reaches_the_node_resource_topology(
    running: tuple[Agent, Any, Any], kube_admin: client.ApiClient, node_name: str
) -> None:
    agent, _, kubelet = running
    custom = client.CustomObjectsApi(kube_admin)
    eventually(lambda: agent.readiness()[0])

    def gpu_available(zone_name: str) -> int | None:
        nrt = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, node_name)
        for zone in nrt["zones"]:
            if zone["name"] == zone_name:
                for resource in zone.get("resources", []):
                    if resource["name"] == "nvidia.com/gpu":
                        return int(resource["available"])
        return None

    assert gpu_available("node-0") == 4
    topology = agent.holder.get().topology
    assert topology is not None
    on_numa0 = [g.uuid for g in topology.gpus if g.numa_node == 0]
    kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(on_numa0[0], 0)])
    eventually(lambda: gpu_available("node-0") == 3)
    assert gpu_available("node-1") == 4
