"""Kubernetes dicts for the extender/preemption unit tests (no __init__: a unique module name)."""

from __future__ import annotations

from typing import Any

GPU = "nvidia.com/gpu"


def gpu_node(
    name: str, gpus: int = 8, cpu: str = "64", taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": "512Gi", "pods": "110", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints or []},
        "status": {"capacity": allocatable, "allocatable": allocatable},
    }


def gpu_pod(
    name: str,
    gpus: int = 0,
    cpu: str = "1",
    node_name: str | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    requests = {"cpu": cpu, "memory": "1Gi"}
    if gpus:
        requests[GPU] = str(gpus)
    full_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {"requests": requests, "limits": {GPU: str(gpus)} if gpus else {}},
            }
        ],
        **spec,
    }
    if node_name:
        full_spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": {}},
        "spec": full_spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


# A profile that bin-packs GPUs: what kube-scheduler's default LeastAllocated (cpu, memory)
# would never do, and the behaviour the extender tests pin.
GPU_PACKING_PROFILE: dict[str, Any] = {
    "apiVersion": "gputopo.io/v1alpha1",
    "kind": "SchedulerProfile",
    "scores": {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 0},
    "nodeResourcesFit": {
        "strategy": "MostAllocated",
        "resources": [{"name": GPU, "weight": 1}],
    },
}
