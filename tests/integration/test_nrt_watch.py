"""The runtime watches NodeResourceTopology on a real API server and schedules by it.

The NRT CRD is the shipped one (daemonset/crds), installed as in a cluster; the runtime runs as
the ServiceAccount with daemonset/scheduler's RBAC (NRT: list, watch), so these tests also prove
the ClusterRole grants what the watch needs. Objects are written the way the agent writes them
(`agent.nrt.build_nrt`'s shape: one ``node-<numa>`` zone per NUMA node).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.kube import KubeApi, KubeApiError
from gputopo.scheduler.runtime.runner import NRTS_PATH, RuntimeConfig, SchedulerRuntime
from tests.controlplane import ControlPlane
from tests.integration.scheduler_env import (
    Cluster,
    gpu_node,
    gpu_pod,
    scheduler_rbac,
    service_account_api,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

SELECTOR = {"gputopo-test": "nrt"}
# dgx-h100 shape from labels: one NVSwitch domain of 8, 4 GPUs per NUMA node.
DGX_LABELS = {
    DEFAULT_CONTRACT.gpu_nvlink_domain_size: "8",
    DEFAULT_CONTRACT.gpu_numa_max: "4",
    **SELECTOR,
}
MAX_AGE_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def nrt(node: str, available: dict[int, int]) -> dict[str, Any]:
    return {
        "apiVersion": "topology.node.k8s.io/v1alpha2",
        "kind": "NodeResourceTopology",
        "metadata": {"name": node},
        "topologyPolicies": ["None"],
        "zones": [
            {
                "name": f"node-{numa}",
                "type": "Node",
                "resources": [
                    {"name": "nvidia.com/gpu", "capacity": 4, "allocatable": 4, "available": free}
                ],
            }
            for numa, free in available.items()
        ],
    }


class Nrts:
    """Admin-side writer of NRT objects, deleting what it wrote afterwards."""

    def __init__(self, plane: ControlPlane) -> None:
        self.api = KubeApi(plane.admin)
        self.written: set[str] = set()

    def write(self, node: str, available: dict[int, int]) -> None:
        body = nrt(node, available)
        if node in self.written:
            current = self.api.request("GET", f"{NRTS_PATH}/{node}")
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.api.request("PUT", f"{NRTS_PATH}/{node}", body=body)
        else:
            self.api.request("POST", NRTS_PATH, body=body)
            self.written.add(node)

    def delete_all(self) -> None:
        for node in self.written:
            with contextlib.suppress(KubeApiError):
                self.api.request("DELETE", f"{NRTS_PATH}/{node}")


@pytest.fixture
def nrts(control_plane: ControlPlane, gputopo_crds: list[str]) -> Iterator[Nrts]:
    writer = Nrts(control_plane)
    try:
        yield writer
    finally:
        writer.delete_all()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(
    control_plane: ControlPlane, gputopo_crds: list[str], clock: Clock
) -> Iterator[SchedulerRuntime]:
    """The runtime with --nrt-max-age 30 on a test clock, as its ServiceAccount."""
    with scheduler_rbac(control_plane):
        framework = CoreFramework(nrt_max_age_s=MAX_AGE_S, clock=clock)
        config = RuntimeConfig(lease=None, metrics_address=None)
        runtime = SchedulerRuntime(service_account_api(control_plane), framework, config)
        runtime.start()
        try:
            assert runtime.wait_synced(30), "runtime watches never synced"
            yield runtime
        finally:
            runtime.stop()


def two_dgx(cluster: Cluster) -> None:
    """Node a is preferred whenever both fit equally (SLA 1000 against 0)."""
    cluster.create_node(gpu_node("nrt-a", 8, labels={**DGX_LABELS, DEFAULT_CONTRACT.sla: "1000"}))
    cluster.create_node(gpu_node("nrt-b", 8, labels={**DGX_LABELS, DEFAULT_CONTRACT.sla: "0"}))


def seen(runtime: SchedulerRuntime, node: str, available: dict[int, int]) -> bool:
    framework = runtime.framework
    assert isinstance(framework, CoreFramework)
    report = framework.gpus.nrt.get(node)
    return report is not None and dict(report.available) == available


def place(cluster: Cluster, namespace: str, name: str, gpus: int) -> str:
    cluster.create_pod(namespace, gpu_pod(name, gpus, node_selector=SELECTOR))
    return eventually(lambda: cluster.node_of(namespace, name), 30, f"{name} bound")


def test_nrt_written_after_start_moves_a_four_gpu_pod_and_its_update_makes_room(
    runtime: SchedulerRuntime, cluster: Cluster, nrts: Nrts, namespace: str
) -> None:
    two_dgx(cluster)
    # Another scheduler's pods hold 2 GPUs on each of nrt-a's NUMA nodes: 4 free, but no 4 of
    # them on one NUMA node. nrt-b can give the pod 4 GPUs on one NUMA node; without the NRT
    # nrt-a (higher SLA, same placement) would win.
    nrts.write("nrt-a", {0: 2, 1: 2})
    eventually(lambda: seen(runtime, "nrt-a", {0: 2, 1: 2}), 30, "the NRT through the watch")
    assert place(cluster, namespace, "first", 4) == "nrt-b"
    # Those pods ended; the agent rewrites the NRT: nrt-a is whole again, the only node with 8.
    nrts.write("nrt-a", {0: 4, 1: 4})
    eventually(lambda: seen(runtime, "nrt-a", {0: 4, 1: 4}), 30, "the NRT update")
    assert place(cluster, namespace, "whole", 8) == "nrt-a"


def test_nrt_saying_a_node_is_full_parks_the_pod_until_it_changes(
    runtime: SchedulerRuntime, cluster: Cluster, nrts: Nrts, namespace: str
) -> None:
    cluster.create_node(gpu_node("nrt-a", 8, labels=DGX_LABELS))
    nrts.write("nrt-a", {0: 0, 1: 0})
    eventually(lambda: seen(runtime, "nrt-a", {0: 0, 1: 0}), 30, "the NRT through the watch")
    cluster.create_pod(namespace, gpu_pod("waits", 1, node_selector=SELECTOR))
    eventually(
        lambda: any(
            event.get("reason") == "FailedScheduling"
            and "didn't have enough healthy free GPUs" in str(event.get("note"))
            for event in cluster.events(namespace, "waits")
        ),
        30,
        "FailedScheduling naming the GPUs",
    )
    assert cluster.node_of(namespace, "waits") == ""
    nrts.write("nrt-a", {0: 1, 1: 0})  # one GPU freed: the NRT change retries the parked pod
    assert eventually(lambda: cluster.node_of(namespace, "waits"), 30, "bound") == "nrt-a"


def test_nrt_older_than_max_age_is_ignored_and_deleting_it_forgets_it(
    runtime: SchedulerRuntime, cluster: Cluster, nrts: Nrts, namespace: str, clock: Clock
) -> None:
    two_dgx(cluster)
    nrts.write("nrt-a", {0: 0, 1: 0})
    eventually(lambda: seen(runtime, "nrt-a", {0: 0, 1: 0}), 30, "the NRT through the watch")
    assert place(cluster, namespace, "fresh", 8) == "nrt-b"
    clock.now += MAX_AGE_S + 1  # older than --nrt-max-age: bookkeeping alone decides
    assert place(cluster, namespace, "stale", 8) == "nrt-a"
    # nrt-b empties; then its NRT says someone else holds all of it (fresh: written after the
    # deletion the scheduler saw), so the next 8-GPU pod waits...
    cluster.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/fresh")
    eventually(
        lambda: not any(p["metadata"]["name"] == "fresh" for p in runtime.cache.bound_pods()),
        30,
        "the deletion through the watch",
    )
    nrts.write("nrt-b", {0: 0, 1: 0})
    eventually(lambda: seen(runtime, "nrt-b", {0: 0, 1: 0}), 30, "nrt-b's NRT")
    cluster.create_pod(namespace, gpu_pod("third", 8, node_selector=SELECTOR))
    eventually(
        lambda: any(
            event.get("reason") == "FailedScheduling"
            for event in cluster.events(namespace, "third")
        ),
        30,
        "FailedScheduling for 'third'",
    )
    # ...until the NRT is deleted: forgotten, and the parked pod is retried at once.
    nrts.api.request("DELETE", f"{NRTS_PATH}/nrt-b")
    assert eventually(lambda: cluster.node_of(namespace, "third"), 30, "bound") == "nrt-b"
