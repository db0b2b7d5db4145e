"""Small builders for Kubernetes dicts used by the scheduler tests (no __init__: module name
must not shadow the real `scheduler` package)."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.framework import ScheduleResult, schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import ClusterSnapshot


def node(
    name: str,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    allocatable: dict[str, str] | None = None,
    zone: str | None = None,
) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name}
    if zone is not None:
        all_labels["topology.kubernetes.io/zone"] = zone
    all_labels.update(labels or {})
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {
            "allocatable": allocatable
            if allocatable is not None
            else {"cpu": "8", "memory": "32Gi", "pods": "110"}
        },
    }


def pod(
    name: str,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    node_name: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    container: dict[str, Any] = {"name": "main", "image": "busybox", "resources": resources}
    if "ports" in spec:
        container["ports"] = spec.pop("ports")
    full_spec: dict[str, Any] = {"containers": [container], **spec}
    if node_name:
        full_spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": full_spec,
    }


def cluster(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]] | None = None,
    namespaces: list[dict[str, Any]] | None = None,
) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for namespace in namespaces or []:
        snapshot.add_namespace(namespace)
    for item in nodes:
        snapshot.add_node(item)
    for item in pods or []:
        snapshot.add_pod(item)
    return snapshot


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def schedule(
    pod_dict: dict[str, Any], snapshot: ClusterSnapshot, profile: SchedulerProfile | None = None
) -> ScheduleResult:
    return schedule_one(parse_pod(pod_dict), snapshot, profile)


def reasons(result: ScheduleResult) -> dict[str, tuple[str, ...]]:
    """node -> reasons, for infeasible nodes only."""
    return {name: d.reasons for name, d in result.diagnosis().items() if not d.feasible}
