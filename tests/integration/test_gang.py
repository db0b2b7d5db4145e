"""Gang scheduling (Coscheduling's PodGroup) by gputopo-scheduler's runtime on a real API server.

The PodGroup CRD is daemonset/crds/podgroups.yaml, installed as shipped; the runtime runs as
daemonset/scheduler's ServiceAccount with that RBAC; nodes are kwok's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.gang import POD_GROUP_LABEL
from scheduler.runtime.kube import JsonDict
from scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import ControlPlane
from tests.integration.scheduler_env import (
    Cluster,
    eventually,
    gpu_node,
    gpu_pod,
    running_runtime,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(control_plane: ControlPlane, gputopo_crds: list[str]) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


def _pod_group(cluster: Cluster, namespace: str, name: str, min_member: int, **spec: Any) -> None:
    body = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name},
        "spec": {"minMember": min_member, **spec},
    }
    cluster.api.request(
        "POST", f"/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{namespace}/podgroups", body=body
    )


def _pod_group_phase(cluster: Cluster, namespace: str, name: str) -> str:
    path = f"/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{namespace}/podgroups/{name}"
    return str(cluster.api.request("GET", path).get("status", {}).get("phase") or "")


def _member(group: str, index: int, gated: bool = False) -> JsonDict:
    pod = gpu_pod(f"{group}-{index}", 1)
    pod["metadata"]["labels"] = {POD_GROUP_LABEL: group}
    if gated:
        pod["spec"]["schedulingGates"] = [{"name": "gputopo.io/test-hold"}]
    return pod


def _bound(cluster: Cluster, namespace: str, group: str) -> list[str]:
    return [
        pod["metadata"]["name"]
        for pod in cluster.pods(namespace)
        if pod["metadata"].get("labels", {}).get(POD_GROUP_LABEL) == group
        and pod["spec"].get("nodeName")
    ]


def _event_notes(cluster: Cluster, namespace: str, needle: str) -> list[str]:
    notes = [str(event.get("note") or "") for event in cluster.events(namespace)]
    return [note for note in notes if needle in note]


def _capacity(cluster: Cluster, *gpus: int) -> None:
    for index, count in enumerate(gpus):
        cluster.create_node(gpu_node(f"gang-{index}", count))


def test_no_member_binds_until_min_member_pods_exist_then_all_bind(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _capacity(cluster, 4, 4)
    _pod_group(cluster, namespace, "train", 8)
    for index in range(7):
        cluster.create_pod(namespace, _member("train", index))
    eventually(
        lambda: _event_notes(cluster, namespace, "cannot find enough sibling pods"),
        30,
        "Coscheduling's too-few-siblings message",
    )
    assert _bound(cluster, namespace, "train") == []
    cluster.create_pod(namespace, _member("train", 7))
    eventually(lambda: len(_bound(cluster, namespace, "train")) == 8, 30, "all 8 members bound")


def test_two_competing_gangs_one_binds_whole_the_other_not_at_all(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _capacity(cluster, 4, 4)  # room for exactly one gang of eight
    _pod_group(cluster, namespace, "left", 8)
    _pod_group(cluster, namespace, "right", 8)
    for index in range(8):  # interleaved: each gang grabs places the other needs
        cluster.create_pod(namespace, _member("left", index))
        cluster.create_pod(namespace, _member("right", index))

    def one_whole() -> str | None:
        counts = {g: len(_bound(cluster, namespace, g)) for g in ("left", "right")}
        return next((g for g, n in counts.items() if n == 8), None)

    winner = eventually(one_whole, 60, "one gang bound whole (no deadlock)")
    loser = "right" if winner == "left" else "left"
    # The loser keeps trying and keeps being turned away, never binding a member.
    eventually(
        lambda: _event_notes(cluster, namespace, "Insufficient nvidia.com/gpu"),
        30,
        "the losing gang's members turned away",
    )
    assert _bound(cluster, namespace, loser) == []
    assert len(_bound(cluster, namespace, winner)) == 8


def test_timeout_releases_held_places_then_the_gang_binds_when_complete(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _capacity(cluster, 4, 4)
    _pod_group(cluster, namespace, "held", 8, scheduleTimeoutSeconds=2)
    for index in range(7):
        cluster.create_pod(namespace, _member("held", index))
    cluster.create_pod(namespace, _member("held", 7, gated=True))  # counts, but never placed
    eventually(
        lambda: _event_notes(cluster, namespace, "waited past scheduleTimeoutSeconds"),
        30,
        "the gang's held places released at its timeout",
    )
    assert _bound(cluster, namespace, "held") == []
    eventually(lambda: _pod_group_phase(cluster, namespace, "held") == "Pending", 30, "phase")
    regarding_group = [
        event
        for event in cluster.events(namespace)
        if event.get("regarding", {}).get("kind") == "PodGroup"
        and "scheduleTimeoutSeconds" in str(event.get("note"))
    ]
    assert regarding_group, "no event on the PodGroup itself"
    last = cluster.pod(namespace, "held-7")
    last["spec"]["schedulingGates"] = []
    cluster.api.request("PUT", f"/api/v1/namespaces/{namespace}/pods/held-7", body=last)
    eventually(lambda: len(_bound(cluster, namespace, "held")) == 8, 60, "all 8 members bound")
    eventually(
        lambda: _pod_group_phase(cluster, namespace, "held") in ("Scheduled", "Running"), 30, "phase"
    )
