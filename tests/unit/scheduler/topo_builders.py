"""Nodes with a `gputopo.io/topology` annotation and GPU pods, for the topology tests (no
__init__: the module name must not shadow a real package)."""

from __future__ import annotations

from typing import Any

from gputopo.core.contract import (
    AnnotatedGpu,
    AnnotatedMigInstance,
    AnnotatedNumaNode,
    AnnotatedNvlinkDomain,
    TopologyAnnotation,
)
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import ClusterSnapshot


def annotation(
    numa: list[int | None],
    domains: list[int | None],
    *,
    failed: tuple[int, ...] = (),
    mig: dict[int, list[str]] | None = None,
) -> str:
    """A topology annotation: GPU i on NUMA node numa[i] and NVLink domain domains[i]."""
    gpus = []
    for i, (numa_node, domain) in enumerate(zip(numa, domains, strict=True)):
        profiles = (mig or {}).get(i, [])
        gpus.append(
            AnnotatedGpu(
                index=i,
                uuid=f"GPU-{i:04d}",
                model="NVIDIA H100 80GB HBM3",
                memory_mib=81559,
                numa_node=numa_node,
                nvlink_domain=domain,
                pci_bus_id=f"00000000:{i + 0x10:02x}:00.0",
                mig_enabled=bool(profiles),
                mig=tuple(
                    AnnotatedMigInstance(id=j, profile=profile)
                    for j, profile in enumerate(profiles)
                ),
                health="failed" if i in failed else None,
            )
        )
    domain_ids = sorted({d for d in domains if d is not None})
    numa_ids = sorted({n for n in numa if n is not None})
    return TopologyAnnotation(
        interconnect="nvswitch" if domain_ids else "pcie",
        gpus=tuple(gpus),
        nvlink_domains=tuple(
            AnnotatedNvlinkDomain(
                id=d, gpus=tuple(i for i, x in enumerate(domains) if x == d), via="nvswitch"
            )
            for d in domain_ids
        ),
        numa_nodes=tuple(
            AnnotatedNumaNode(
                id=n,
                cpus=(n,),
                distances=tuple(10 if m == n else 20 for m in numa_ids),
                gpus=tuple(i for i, x in enumerate(numa) if x == n),
            )
            for n in numa_ids
        ),
    ).to_json()


# 8 GPUs on one NVSwitch fabric, 4 per NUMA node (DGX H100-like).
NVSWITCH_8 = annotation([0, 0, 0, 0, 1, 1, 1, 1], [0] * 8)
# Two NVLink quads, each on its own NUMA node.
QUADS_8 = annotation([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
# Two NVLink quads that each straddle both NUMA nodes.
CROSSED_8 = annotation([0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
# 4 PCIe GPUs, 2 per NUMA node.
PCIE_4 = annotation([0, 0, 1, 1], [None] * 4)


def gpu_node(
    name: str,
    topology: str | None,
    gpus: int = 8,
    labels: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"kubernetes.io/hostname": name, **(labels or {})},
    }
    if topology is not None:
        metadata["annotations"] = {"gputopo.io/topology": topology}
    allocatable = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    allocatable.update(extra or {})
    return {
        "kind": "Node",
        "metadata": metadata,
        "spec": {},
        "status": {"allocatable": allocatable},
    }


def gpu_pod(
    name: str,
    gpus: int = 0,
    *,
    topology: str | None = None,
    policy: str | None = None,
    mig: dict[str, int] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    requests = {"cpu": "1"}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
    for profile, count in (mig or {}).items():
        requests[f"nvidia.com/mig-{profile}"] = str(count)
    annotations = {}
    if topology is not None:
        annotations["gputopo.io/gpu-topology"] = topology
    if policy is not None:
        annotations["gputopo.io/gpu-topology-policy"] = policy
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "x", "resources": {"requests": requests}}]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    }


def cluster(*nodes: dict[str, Any], pods: tuple[dict[str, Any], ...] = ()) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for node in nodes:
        snapshot.add_node(node)
    for pod in pods:
        snapshot.add_pod(pod)
    return snapshot


def place(
    snapshot: ClusterSnapshot, pod: dict[str, Any], profile: SchedulerProfile | None = None
) -> str | None:
    """Schedule ``pod`` and, when it lands, assume it there (the next pod sees it)."""
    parsed = parse_pod(pod)
    result = schedule_one(parsed, snapshot, profile)
    if result.node is not None:
        snapshot.assume(parsed, result.node)
    return result.node
