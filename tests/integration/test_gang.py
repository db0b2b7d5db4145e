"""Gang scheduling (Coscheduling's PodGroup) by gputopo-scheduler's runtime on a real API server.

The PodGroup CRD is daemonset/scheduler/podgroups-crd.yaml, installed as shipped; the runtime
runs as daemonset/scheduler's ServiceAccount with that RBAC; nodes are kwok's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gputopo.scheduler.gang import POD_GROUP_LABEL, TOPOLOGY_ANNOTATION, TOPOLOGY_POLICY_ANNOTATION
from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import ControlPlane
from tests.integration.scheduler_env import (
    Cluster,
    gpu_node,
    gpu_pod,
    running_runtime,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(control_plane: ControlPlane, gputopo_crds: list[str]) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


PODGROUPS = "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{namespace}/podgroups"
RACK = "gputopo.io/test-rack"


def _pod_group(
    cluster: Cluster,
    namespace: str,
    name: str,
    min_member: int,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> None:
    body = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"minMember": min_member, **spec},
    }
    cluster.api.request("POST", PODGROUPS.format(namespace=namespace), body=body)


def _pod_group_status(cluster: Cluster, namespace: str, name: str) -> JsonDict:
    path = f"{PODGROUPS.format(namespace=namespace)}/{name}"
    return dict(cluster.api.request("GET", path).get("status") or {})


def _pod_group_phase(cluster: Cluster, namespace: str, name: str) -> str:
    return str(_pod_group_status(cluster, namespace, name).get("phase") or "")


def _group_events(cluster: Cluster, namespace: str, needle: str) -> list[str]:
    return [
        str(event.get("note"))
        for event in cluster.events(namespace)
        if event.get("regarding", {}).get("kind") == "PodGroup" and needle in str(event.get("note"))
    ]


def _gang_cycles(runtime: SchedulerRuntime, outcome: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "gputopo_scheduler_gang_cycles_total", {"outcome": outcome}
    )
    return float(value or 0)


def _nodes_of(cluster: Cluster, namespace: str, group: str) -> dict[str, str]:
    return {
        pod["metadata"]["name"]: str(pod["spec"]["nodeName"])
        for pod in cluster.pods(namespace)
        if pod["metadata"].get("labels", {}).get(POD_GROUP_LABEL) == group
        and pod["spec"].get("nodeName")
    }


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
    # Events are written by the recorder's workers, so the PodGroup's may land after the pods'.
    eventually(
        lambda: any(
            event.get("regarding", {}).get("kind") == "PodGroup"
            and "scheduleTimeoutSeconds" in str(event.get("note"))
            for event in cluster.events(namespace)
        ),
        30,
        "an event on the PodGroup itself",
    )
    last = cluster.pod(namespace, "held-7")
    last["spec"]["schedulingGates"] = []
    cluster.api.request("PUT", f"/api/v1/namespaces/{namespace}/pods/held-7", body=last)
    eventually(lambda: len(_bound(cluster, namespace, "held")) == 8, 60, "all 8 members bound")
    eventually(
        lambda: _pod_group_phase(cluster, namespace, "held") in ("Scheduled", "Running"),
        30,
        "phase",
    )


@pytest.fixture
def patient_runtime(
    control_plane: ControlPlane, gputopo_crds: list[str]
) -> Iterator[SchedulerRuntime]:
    """A runtime whose group back-off (an hour) outlasts any test: a group attempted twice
    was retried without waiting its back-off out."""
    with running_runtime(control_plane, gang_backoff_s=3600.0) as started:
        yield started


def _another_cluster_event(cluster: Cluster, runtime: SchedulerRuntime, name: str) -> None:
    """A node added: the queue moves every parked pod back (kube's cluster event)."""
    before = _gang_cycles(runtime, "backing_off")
    cluster.create_node(gpu_node(name, 0))
    eventually(
        lambda: _gang_cycles(runtime, "backing_off") > before,
        30,
        "the parked members popped again and turned away as backing off",
    )


def test_min_resources_the_cluster_lacks_turn_the_group_away_without_hot_retry(
    cluster: Cluster, namespace: str, patient_runtime: SchedulerRuntime
) -> None:
    _capacity(cluster, 4, 4)
    _pod_group(cluster, namespace, "big", 2, minResources={"nvidia.com/gpu": 16})
    for index in range(2):
        cluster.create_pod(namespace, _member("big", index))
    gap = "too little free capacity for minResources, resource gap: nvidia.com/gpu: 8"
    eventually(lambda: _group_events(cluster, namespace, gap), 30, "the gap on the PodGroup")

    def pending_with_reason() -> bool:
        status = _pod_group_status(cluster, namespace, "big")
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        scheduled = conditions.get("Scheduled", {})
        return (
            status.get("phase") == "Pending"
            and scheduled.get("status") == "False"
            and scheduled.get("reason") == "InsufficientResources"
            and gap in str(scheduled.get("message"))
        )

    eventually(pending_with_reason, 30, "phase Pending with the InsufficientResources condition")
    refused = _gang_cycles(patient_runtime, "refused")  # too few pods at first, then the gap
    _another_cluster_event(cluster, patient_runtime, "gang-extra-0")
    _another_cluster_event(cluster, patient_runtime, "gang-extra-1")
    # Every pop since the gap was found is turned away as backing off, running no filter.
    assert _gang_cycles(patient_runtime, "refused") == refused
    assert _gang_cycles(patient_runtime, "held") == 0
    assert _gang_cycles(patient_runtime, "unschedulable") == 0
    assert _bound(cluster, namespace, "big") == []

    # Fixing the PodGroup ends its back-off at once: the group is attempted and binds.
    cluster.api.request(
        "PATCH",
        f"{PODGROUPS.format(namespace=namespace)}/big",
        body={"spec": {"minResources": {"nvidia.com/gpu": 2}}},
        content_type="application/merge-patch+json",
    )
    eventually(lambda: len(_bound(cluster, namespace, "big")) == 2, 30, "both members bound")


def test_a_failed_group_attempt_backs_off_the_whole_group(
    cluster: Cluster, namespace: str, patient_runtime: SchedulerRuntime
) -> None:
    _capacity(cluster, 2)  # three members of one GPU each: the third never has a place
    _pod_group(cluster, namespace, "three", 3)
    for index in range(3):
        cluster.create_pod(namespace, _member("three", index))
    eventually(
        lambda: _group_events(cluster, namespace, "released its places and backs off"),
        30,
        "the reject reported on the PodGroup",
    )
    eventually(lambda: _pod_group_phase(cluster, namespace, "three") == "Pending", 30, "Pending")
    _another_cluster_event(cluster, patient_runtime, "gang-extra-0")
    # One attempt: two members held places, the third found none, and that was all.
    assert _gang_cycles(patient_runtime, "held") == 2
    assert _gang_cycles(patient_runtime, "unschedulable") == 1
    assert _bound(cluster, namespace, "three") == []


def _owned_member(group: str, index: int) -> JsonDict:
    pod = _member(group, index)
    pod["metadata"]["ownerReferences"] = [
        # not a batch/v1 Job: kwok completes a Job's pods at once, and the test wants Running
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": group, "uid": f"u-{group}"}
    ]
    return pod


def test_required_topology_keeps_the_gang_on_one_rack_and_status_follows_it(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("rack1-a", 2, labels={RACK: "r1"}))
    cluster.create_node(gpu_node("rack1-b", 1, labels={RACK: "r1"}))  # r1: 3 GPUs, too few
    cluster.create_node(gpu_node("rack2-a", 2, labels={RACK: "r2"}))
    cluster.create_node(gpu_node("rack2-b", 2, labels={RACK: "r2"}))
    cluster.create_node(gpu_node("unlabelled", 8))  # the emptiest node, but in no rack
    annotations = {TOPOLOGY_ANNOTATION: RACK, TOPOLOGY_POLICY_ANNOTATION: "required"}
    _pod_group(cluster, namespace, "ring", 4, annotations)
    for index in range(4):
        cluster.create_pod(namespace, _owned_member("ring", index))
    placed = eventually(
        lambda: nodes if len(nodes := _nodes_of(cluster, namespace, "ring")) == 4 else None,
        30,
        "all 4 members bound",
    )
    assert set(placed.values()) <= {"rack2-a", "rack2-b"}, placed

    def running() -> JsonDict | None:
        status = _pod_group_status(cluster, namespace, "ring")
        return status if status.get("phase") == "Running" and status.get("running") == 4 else None

    status = eventually(running, 30, "PodGroup Running with 4 running members")
    assert status["occupiedBy"] == f"{namespace}/ring"
    assert status["scheduled"] == 4
    assert status["scheduleStartTime"]


def test_required_topology_without_a_rack_big_enough_reports_on_the_podgroup(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("rack1-a", 2, labels={RACK: "r1"}))
    cluster.create_node(gpu_node("rack2-a", 2, labels={RACK: "r2"}))
    annotations = {TOPOLOGY_ANNOTATION: RACK, TOPOLOGY_POLICY_ANNOTATION: "required"}
    _pod_group(cluster, namespace, "wide", 3, annotations)
    for index in range(3):
        cluster.create_pod(namespace, _member("wide", index))
    eventually(
        lambda: _group_events(cluster, namespace, f"no nodes sharing one {RACK} value have room"),
        30,
        "the missing domain reported on the PodGroup",
    )
    assert _bound(cluster, namespace, "wide") == []


def test_preferred_topology_packs_one_rack_when_it_fits_and_spreads_when_none_does(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("rack1-a", 2, labels={RACK: "r1"}))
    cluster.create_node(gpu_node("rack2-a", 4, labels={RACK: "r2"}))
    cluster.create_node(gpu_node("unlabelled", 8))
    _pod_group(cluster, namespace, "packed", 4, {TOPOLOGY_ANNOTATION: RACK})
    for index in range(4):
        cluster.create_pod(namespace, _member("packed", index))
    placed = eventually(
        lambda: nodes if len(nodes := _nodes_of(cluster, namespace, "packed")) == 4 else None,
        30,
        "all 4 members bound",
    )
    assert set(placed.values()) == {"rack2-a"}, placed
    # Now only 2 + 0 GPUs are left in racks and 8 outside: a gang of 6 fits in no rack, and
    # with `preferred` it is placed anyway.
    _pod_group(cluster, namespace, "spread", 6, {TOPOLOGY_ANNOTATION: RACK})
    for index in range(6):
        cluster.create_pod(namespace, _member("spread", index))
    eventually(lambda: len(_bound(cluster, namespace, "spread")) == 6, 30, "all 6 bound")
