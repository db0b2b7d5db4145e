"""GPU reservations by gputopo-scheduler's runtime against a real kube-apiserver (kwok nodes).

An 8-GPU pod that fits nowhere, while enough GPUs are free but scattered, gets the node with the
fewest GPUs still held nominated for it; 1-GPU pods that keep arriving land elsewhere (or wait
when nothing else fits) instead of taking that node's freed GPUs, and the 8-GPU pod binds there
once the node's pods finish. The runtime runs as the shipped ServiceAccount and RBAC.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.kube import JsonDict, KubeApiError
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from gputopo.scheduler.scheduling_profile import default_profile
from tests.controlplane import ControlPlane
from tests.integration.scheduler_env import (
    Cluster,
    gpu_node,
    gpu_pod,
    pod_scheduled_condition,
    running_runtime,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

RESERVED = "reservation: nominated node resv-big reserved until its GPUs free up."
HIGH = "gputopo-test-resv-high"
PRIORITY_CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"


@pytest.fixture(scope="module")
def high_priority(control_plane: ControlPlane) -> Iterator[str]:
    api = Cluster(control_plane).api
    body = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": HIGH},
        "value": 1000,
    }
    with contextlib.suppress(KubeApiError):
        api.request("POST", PRIORITY_CLASSES, body=body)
    yield HIGH
    with contextlib.suppress(KubeApiError):
        api.request("DELETE", f"{PRIORITY_CLASSES}/{HIGH}")


@pytest.fixture
def runtime(control_plane: ControlPlane) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


def _bound(cluster: Cluster, namespace: str, pod: JsonDict) -> str:
    name = pod["metadata"]["name"]
    cluster.create_pod(namespace, pod)
    return eventually(lambda: cluster.node_of(namespace, name), 30, f"{name} bound")


def _created(cluster: Cluster, namespace: str, pod: JsonDict) -> bool:
    try:
        cluster.create_pod(namespace, pod)
    except KubeApiError as error:
        if error.status == 403 and "PriorityClass" in str(error):
            return False
        raise
    return True


def _nominated(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.pod(namespace, name).get("status", {}).get("nominatedNodeName") or "")


def _unschedulable_message(cluster: Cluster, namespace: str, name: str) -> str:
    condition = pod_scheduled_condition(cluster.pod(namespace, name)) or {}
    return str(condition.get("message") or "") if condition.get("status") == "False" else ""


def _small(name: str) -> JsonDict:
    """A 1-GPU pod that would rather go to resv-big (preferred node affinity, the top weight)."""
    pod = gpu_pod(name, 1)
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": ["resv-big"],
                            }
                        ]
                    },
                }
            ]
        }
    }
    return pod


def _setup(cluster: Cluster, namespace: str) -> None:
    """resv-big: 8 GPUs, 4 held by two 2-GPU pods; resv-other: 4 GPUs, free. 8 free in all."""
    cluster.create_node(gpu_node("resv-big", 8))
    pin = {"kubernetes.io/hostname": "resv-big"}
    for name in ("holder-a", "holder-b"):
        assert _bound(cluster, namespace, gpu_pod(name, 2, node_selector=pin)) == "resv-big"
    cluster.create_node(gpu_node("resv-other", 4))


def test_waiting_8_gpu_pod_holds_a_node_small_pods_go_elsewhere_and_it_binds_there(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _setup(cluster, namespace)
    # Without a reservation a preferring 1-GPU pod takes resv-big's free GPUs.
    assert _bound(cluster, namespace, _small("before")) == "resv-big"
    cluster.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/before")
    eventually(
        lambda: all(p["metadata"]["name"] != "before" for p in cluster.pods(namespace)),
        30,
        "before deleted",
    )

    cluster.create_pod(namespace, gpu_pod("big", 8))
    message = eventually(
        lambda: _unschedulable_message(cluster, namespace, "big"), 30, "big unschedulable"
    )
    assert message.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    assert message.endswith(RESERVED), message
    eventually(lambda: _nominated(cluster, namespace, "big") == "resv-big", 30, "big nominated")
    metrics = runtime.metrics.render().decode()
    assert 'gputopo_scheduler_reservations_total{event="made"} 1.0' in metrics
    assert "gputopo_scheduler_reserved_nodes 1.0" in metrics

    # 1-GPU pods keep arriving: they fill resv-other, never resv-big's four free GPUs.
    for i in range(4):
        assert _bound(cluster, namespace, _small(f"small-{i}")) == "resv-other"
    # Nothing else fits: the next one waits rather than take the held GPUs.
    cluster.create_pod(namespace, _small("late"))
    late = eventually(
        lambda: _unschedulable_message(cluster, namespace, "late"), 30, "late unschedulable"
    )
    assert late.startswith("0/2 nodes are available:"), late
    assert cluster.node_of(namespace, "late") == ""

    # The node's pods finish: the 8-GPU pod gets the whole node.
    for name in ("holder-a", "holder-b"):
        cluster.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
    assert eventually(lambda: cluster.node_of(namespace, "big"), 30, "big bound") == "resv-big"
    assert cluster.node_of(namespace, "late") == ""


def test_a_higher_priority_pod_may_take_the_held_gpus(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime, high_priority: str
) -> None:
    _setup(cluster, namespace)
    cluster.create_pod(namespace, gpu_pod("big", 8))
    eventually(lambda: _nominated(cluster, namespace, "big") == "resv-big", 30, "big nominated")
    assert _bound(cluster, namespace, _small("peer")) == "resv-other"  # equal priority: held
    urgent = _small("urgent")
    urgent["spec"]["priorityClassName"] = high_priority
    assert _bound(cluster, namespace, urgent) == "resv-big"  # kube semantics: it does not see it


def test_an_expired_reservation_clears_the_nomination(
    cluster: Cluster, namespace: str, control_plane: ControlPlane
) -> None:
    profile = dataclasses.replace(default_profile(), reservation_ttl_s=2)
    with running_runtime(control_plane, framework=CoreFramework(profile)) as runtime:
        _setup(cluster, namespace)
        cluster.create_pod(namespace, gpu_pod("big", 8))
        eventually(lambda: _nominated(cluster, namespace, "big") == "resv-big", 30, "nominated")
        eventually(lambda: _nominated(cluster, namespace, "big") == "", 30, "nomination cleared")
        assert cluster.node_of(namespace, "big") == ""
        metrics = runtime.metrics.render().decode()
        assert 'gputopo_scheduler_reservations_total{event="expired"} 1.0' in metrics
        assert "gputopo_scheduler_reserved_nodes 0.0" in metrics


def test_a_nomination_to_a_node_being_freed_is_kept_over_the_reservation(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime, high_priority: str
) -> None:
    """A pod nominated to a node by someone else (a rebalance move) keeps that nomination when it
    fails again before the node's pods are gone, even with preemptionPolicy Never: its
    reservation never moves it back elsewhere, and it binds on the freed node."""
    _setup(cluster, namespace)  # resv-big holds 4 of 8 GPUs: the reservation's choice
    cluster.create_node(gpu_node("resv-moved", 8))
    victim = gpu_pod("victim", 6, node_selector={"kubernetes.io/hostname": "resv-moved"})
    victim["metadata"]["finalizers"] = ["gputopo.io/test-hold"]  # terminating until released
    assert _bound(cluster, namespace, victim) == "resv-moved"
    never = f"{high_priority}-never"  # high priority, preemptionPolicy Never (admission sets it)
    with contextlib.suppress(KubeApiError):
        cluster.api.request(
            "POST",
            PRIORITY_CLASSES,
            body={
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": never},
                "value": 1000,
                "preemptionPolicy": "Never",
            },
        )
    # The Priority admission plugin reads classes from its informer: a class just created may
    # not be there yet ("no PriorityClass with name ... was found").
    eventually(
        lambda: _created(cluster, namespace, gpu_pod("big", 8, priority_class=never)),
        30,
        "the pod admitted with the new PriorityClass",
    )
    eventually(lambda: _nominated(cluster, namespace, "big") == "resv-big", 30, "reserved")

    # A move (the rebalance controller's order): the waiting pod is nominated to the node first,
    # then that node's pod is evicted. The pod fails again before the eviction lands: it keeps
    # the nomination (no reservation, said without one).
    pods = f"/api/v1/namespaces/{namespace}/pods"
    cluster.api.request(
        "PATCH",
        f"{pods}/big/status",
        body={"status": {"nominatedNodeName": "resv-moved"}},
        content_type="application/merge-patch+json",
    )
    cluster.create_node(gpu_node("resv-new", 2))  # a node joins: the waiting pod is tried again
    eventually(
        lambda: (m := _unschedulable_message(cluster, namespace, "big")) and "reservation" not in m,
        30,
        "a failed cycle after the nomination",
    )
    assert _nominated(cluster, namespace, "big") == "resv-moved"
    cluster.api.request("DELETE", f"{pods}/victim")  # terminating until its finalizer goes
    assert _nominated(cluster, namespace, "big") == "resv-moved"
    cluster.api.request(
        "PATCH",
        f"{pods}/victim",
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert eventually(lambda: cluster.node_of(namespace, "big"), 30, "big bound") == "resv-moved"
