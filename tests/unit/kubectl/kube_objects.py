"""Node and Pod objects as the API server lists them, for the plugin's unit tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gputopo.agent.annotation import topology_annotation_value
from gputopo.agent.topology import Interconnect, NodeTopology, NvlinkDomain
from gputopo.core.contract import DEFAULT_CONTRACT
from tests.unit.agent.machines import dgx_h100, h100

GPU = "nvidia.com/gpu"


def two_domain_h100() -> NodeTopology:
    """Eight H100 in two NVLink domains of four (0-3 and 4-7), one per NUMA node."""
    gpus = tuple(h100(i, numa=i // 4, domain=i // 4) for i in range(8))
    domains = tuple(
        NvlinkDomain(id=d, gpus=tuple(range(4 * d, 4 * d + 4)), via=Interconnect.NVLINK)
        for d in range(2)
    )
    return replace(dgx_h100(), gpus=gpus, nvlink_domains=domains, interconnect=Interconnect.NVLINK)


def node(
    name: str,
    topology: NodeTopology | None = None,
    *,
    gpus: int = 8,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    annotation: str | None = None,
) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if topology is not None:
        annotations[DEFAULT_CONTRACT.topology_annotation] = topology_annotation_value(topology)
    if annotation is not None:
        annotations[DEFAULT_CONTRACT.topology_annotation] = annotation
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(gpus)}
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {}), "annotations": annotations},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources},
    }


def pod(
    name: str,
    gpus: int,
    node_name: str | None = None,
    *,
    namespace: str = "ml",
    phase: str | None = None,
    scheduler_name: str = "gputopo-scheduler",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedulerName": scheduler_name,
        "containers": [
            {
                "name": "main",
                "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}},
            }
        ],
        **spec,
    }
    if node_name:
        body["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
        "status": {"phase": phase or ("Running" if node_name else "Pending")},
    }
