"""Priority preemption by gputopo-scheduler's runtime against a real kube-apiserver (kwok nodes).

The runtime runs as daemonset/scheduler's ServiceAccount with that RBAC (so the manifests grant
the deletes and PDB reads preemption needs). No kube-controller-manager runs here, so a
PodDisruptionBudget's status stays at disruptionsAllowed 0: every pod it covers is protected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from gputopo.scheduler.runtime.kube import JsonDict, KubeApiError
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import KWOK_NODE_ANNOTATION, ControlPlane
from tests.integration.scheduler_env import (
    Cluster,
    gpu_node,
    gpu_pod,
    pod_scheduled_condition,
    running_runtime,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

LOW, HIGH, HIGH_NEVER = "gputopo-test-low", "gputopo-test-high", "gputopo-test-high-never"


@pytest.fixture(scope="module")
def priority_classes(control_plane: ControlPlane) -> Iterator[None]:
    api = Cluster(control_plane).api
    path = "/apis/scheduling.k8s.io/v1/priorityclasses"
    for name, value, policy in (
        (LOW, 10, "PreemptLowerPriority"),
        (HIGH, 1000, "PreemptLowerPriority"),
        (HIGH_NEVER, 1000, "Never"),  # admission copies it into the pod's preemptionPolicy
    ):
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "preemptionPolicy": policy,
        }
        with contextlib.suppress(KubeApiError):
            api.request("POST", path, body=body)
    yield
    for name in (LOW, HIGH, HIGH_NEVER):
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", f"{path}/{name}")


@pytest.fixture
def runtime(control_plane: ControlPlane, priority_classes: None) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


def _exists(cluster: Cluster, namespace: str, name: str) -> bool:
    try:
        cluster.pod(namespace, name)
    except KubeApiError as err:
        if err.status == 404:
            return False
        raise
    return True


def _nominations(cluster: Cluster, namespace: str, created: JsonDict) -> set[str]:
    """Every status.nominatedNodeName the pod has had since it was created (a watch replay)."""
    seen: set[str] = set()
    events = cluster.api.stream_lines(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "watch": True,
            "fieldSelector": f"metadata.name={created['metadata']['name']}",
            "resourceVersion": created["metadata"]["resourceVersion"],
            "timeoutSeconds": 1,
        },
        timeout_s=10,
    )
    for event in events:
        nominated = event.get("object", {}).get("status", {}).get("nominatedNodeName")
        if nominated:
            seen.add(str(nominated))
    return seen


def _bound(cluster: Cluster, namespace: str, pod: JsonDict) -> str:
    name = pod["metadata"]["name"]
    cluster.create_pod(namespace, pod)
    return eventually(lambda: cluster.node_of(namespace, name), 30, f"{name} bound")


def test_high_priority_pod_evicts_the_fewest_lowest_priority_pods_and_binds(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("pre-one", 8))
    for name in ("low-a", "low-b"):
        assert _bound(cluster, namespace, gpu_pod(name, 4, priority_class=LOW)) == "pre-one"

    created = cluster.create_pod(namespace, gpu_pod("urgent", 4, priority_class=HIGH))
    eventually(lambda: cluster.node_of(namespace, "urgent"), 30, "urgent bound after preemption")
    assert cluster.node_of(namespace, "urgent") == "pre-one"
    # kwok rewrites status once the pod runs, so read the nomination from the pod's history.
    assert "pre-one" in _nominations(cluster, namespace, created)
    survivors = [name for name in ("low-a", "low-b") if _exists(cluster, namespace, name)]
    assert len(survivors) == 1, survivors  # one 4-GPU victim was enough
    reasons = {event.get("reason") for event in cluster.events(namespace)}
    assert {"Preempted", "Preempting", "Scheduled"} <= reasons


def test_preemption_policy_never_waits_instead_of_evicting(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("pre-never", 8))
    _bound(cluster, namespace, gpu_pod("low", 8, priority_class=LOW))
    created = cluster.create_pod(namespace, gpu_pod("polite", 8, priority_class=HIGH_NEVER))
    assert created["spec"]["preemptionPolicy"] == "Never"

    def unschedulable() -> bool:
        condition = pod_scheduled_condition(cluster.pod(namespace, "polite"))
        return condition is not None and condition.get("status") == "False"

    eventually(unschedulable, 30, "polite marked unschedulable")
    condition = pod_scheduled_condition(cluster.pod(namespace, "polite")) or {}
    assert condition.get("message") == (
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
        "preemption: not eligible due to preemptionPolicy=Never.."
    )
    assert _exists(cluster, namespace, "low")
    assert not cluster.pod(namespace, "polite")["status"].get("nominatedNodeName")
    assert "Preempting" not in {event.get("reason") for event in cluster.events(namespace)}


def test_pdb_protected_pod_is_spared_when_another_node_can_be_freed(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("pre-guarded", 8, labels={"pool": "pre-pdb"}))
    cluster.create_node(gpu_node("pre-open", 8, labels={"pool": "pre-pdb"}))
    guarded = gpu_pod(
        "guarded", 8, priority_class=LOW, node_selector={"kubernetes.io/hostname": "pre-guarded"}
    )
    guarded["metadata"]["labels"] = {"app": "db"}
    _bound(cluster, namespace, guarded)
    _bound(
        cluster,
        namespace,
        gpu_pod(
            "open", 8, priority_class=LOW, node_selector={"kubernetes.io/hostname": "pre-open"}
        ),
    )
    cluster.api.request(
        "POST",
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        body={
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "db"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
        },
    )
    cluster.create_pod(
        namespace, gpu_pod("urgent", 8, priority_class=HIGH, node_selector={"pool": "pre-pdb"})
    )
    eventually(lambda: cluster.node_of(namespace, "urgent"), 30, "urgent bound after preemption")
    assert cluster.node_of(namespace, "urgent") == "pre-open"
    assert _exists(cluster, namespace, "guarded")
    assert not _exists(cluster, namespace, "open")


def _nominate(cluster: Cluster, namespace: str, name: str, node: str) -> None:
    """What an earlier preemption would have left on the pod (admin writes pods/status)."""
    cluster.api.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        body={"status": {"nominatedNodeName": node}},
        content_type="application/merge-patch+json",
    )


def _nominated(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.pod(namespace, name).get("status", {}).get("nominatedNodeName") or "")


def _unschedulable_message(cluster: Cluster, namespace: str, name: str) -> str:
    condition = pod_scheduled_condition(cluster.pod(namespace, name)) or {}
    return str(condition.get("message") or "") if condition.get("status") == "False" else ""


def test_no_candidate_reports_kube_schedulers_preemption_reasons_and_clears_the_nomination(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("pre-peer", 8))
    taint = {"key": "gputopo.io/test-dedicated", "value": "infer", "effect": "NoSchedule"}
    cluster.create_node(gpu_node("pre-tainted", 8, taints=[taint]))
    _bound(cluster, namespace, gpu_pod("peer", 8, priority_class=HIGH))  # equal: no victim
    cluster.create_pod(namespace, gpu_pod("urgent", 8, priority_class=HIGH))
    suffix = (
        " preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling.."
    )
    message = eventually(
        lambda: _unschedulable_message(cluster, namespace, "urgent"), 30, "urgent unschedulable"
    )
    assert message == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) had untolerated taint {gputopo.io/test-dedicated: infer}." + suffix
    )
    # A nomination left from earlier no longer fits anywhere: the next attempt clears it.
    _nominate(cluster, namespace, "urgent", "pre-peer")
    assert _nominated(cluster, namespace, "urgent") == "pre-peer"
    cluster.create_node(gpu_node("pre-small", 1))  # a cluster event: urgent is tried again
    eventually(
        lambda: _nominated(cluster, namespace, "urgent") == "", 30, "nominatedNodeName cleared"
    )
    assert cluster.node_of(namespace, "urgent") == ""


def test_binding_elsewhere_than_the_nominated_node_clears_the_nomination(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    cluster.create_node(gpu_node("pre-nominated", 8, labels={"pool": "pre-old"}))
    waiting = gpu_pod("mover", 8, priority_class=HIGH, node_selector={"pool": "pre-new"})
    cluster.create_pod(namespace, waiting)
    eventually(
        lambda: _unschedulable_message(cluster, namespace, "mover"), 30, "mover unschedulable"
    )
    _nominate(cluster, namespace, "mover", "pre-nominated")
    # No kwok annotation: nothing but the scheduler writes this pod's status once it is bound.
    plain = gpu_node("pre-plain", 8, labels={"pool": "pre-new"})
    del plain["metadata"]["annotations"][KWOK_NODE_ANNOTATION]
    cluster.create_node(plain)
    eventually(lambda: cluster.node_of(namespace, "mover") == "pre-plain", 30, "mover bound")
    eventually(
        lambda: _nominated(cluster, namespace, "mover") == "", 30, "nominatedNodeName cleared"
    )
