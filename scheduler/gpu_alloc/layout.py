"""A node's GPUs and MIG devices as the scheduler sees them, and what a pod asks of them.

The layout comes from the agent's ``gputopo.io/topology`` annotation, or is inferred from labels
when a node has none (see the package's docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    AnnotatedMigInstance,
    Contract,
    ContractError,
    parse_topology_annotation,
)
from gputopo.scheduler.model import Node, Pod

log = logging.getLogger(__name__)


GPU_RESOURCE: Final = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
NRT_GPU_ZONE_PREFIX: Final = "node-"
DEFAULT_NRT_MAX_AGE_S: Final[float | None] = None  # no age limit: the watch keeps NRTs current

# Placement levels, best last.
LEVEL_SPREAD: Final = 0  # spans NUMA nodes and NVLink domains
LEVEL_NUMA: Final = 1  # one NUMA node, GPUs talk over PCIe
LEVEL_NVLINK: Final = 2  # one NVLink domain across NUMA nodes
LEVEL_ALIGNED: Final = 3  # one NVLink domain and one NUMA node

NO_FIT: Final = np.iinfo(np.int64).max
# Entries of a layout's `memo`: 256 sets of free GPUs of an 8-GPU node, times a few counts.
MEMO_LIMIT: Final = 4096


def mig_resource(profile: str) -> str:
    """The device plugin's resource name for a MIG profile (mixed strategy)."""
    return MIG_RESOURCE_PREFIX + profile.replace("+", ".")


@dataclass(frozen=True, slots=True)
class GpuSlot:
    index: int
    numa_node: int | None
    nvlink_domain: int | None
    healthy: bool


@dataclass(frozen=True, slots=True)
class MigSlot:
    """One MIG device: a compute instance of a GPU instance (the device plugin's unit)."""

    gpu: int
    instance: int  # GPU instance id
    resource: str
    compute: int = 0  # compute instance id within the GPU instance

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.gpu, self.instance, self.compute)


@dataclass(frozen=True, slots=True)
class NodeGpuLayout:
    """One node's whole GPUs (MIG-enabled GPUs excluded) and MIG devices."""

    gpus: tuple[GpuSlot, ...]
    migs: tuple[MigSlot, ...]
    source: str  # "annotation" | "labels"
    # Healthy GPUs per NVLink domain (`domain_key`), derived once: the allocator's summary
    # reads it at every change of the node's pods.
    healthy_domain_sizes: Mapping[object, int] = field(init=False, compare=False, repr=False)
    # What the allocator works out from a set of free GPUs alone (`free_bits`: bit i for
    # ``gpus[i]``), kept with the layout under (what, a number, the bits): the preferred
    # allocation of a count, the group summary at a width, a GPU score. Nodes of one model
    # share one layout (`GpuAllocator` interns them), so a busy cluster of a few machine types
    # meets each set of free GPUs once.
    memo: dict[tuple[str, int, int], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        sizes: dict[object, int] = {}
        for gpu in self.gpus:
            if gpu.healthy:
                key = self.domain_key(gpu)
                sizes[key] = sizes.get(key, 0) + 1
        object.__setattr__(self, "healthy_domain_sizes", sizes)
        object.__setattr__(self, "memo", {})

    def free_bits(self, taken: Container[int], blocked: Container[int] = ()) -> int:
        """The healthy GPUs whose index is neither in ``taken`` nor in ``blocked``, as bits
        (bit i: ``gpus[i]``): the key of `memo`."""
        bits = 0
        for position, gpu in enumerate(self.gpus):
            if gpu.healthy and gpu.index not in taken and gpu.index not in blocked:
                bits |= 1 << position
        return bits

    def remember(self, key: tuple[str, int, int], value: Any) -> None:
        """Keep ``value`` in `memo` (emptied first past `MEMO_LIMIT` entries: a node of many
        GPUs has more sets of free ones than are worth keeping)."""
        if len(self.memo) >= MEMO_LIMIT:
            self.memo.clear()
        self.memo[key] = value

    def aligned_key(self, gpu: GpuSlot) -> tuple[object, ...]:
        return (self.domain_key(gpu), gpu.numa_node)

    @staticmethod
    def domain_key(gpu: GpuSlot) -> object:
        # A GPU with no NVLink peers is a domain of its own.
        return gpu.nvlink_domain if gpu.nvlink_domain is not None else ("pcie", gpu.index)


def label_int(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None or not value.isdigit():
        return None
    return int(value)


def _mig_slots(gpu: int, instances: Iterable[AnnotatedMigInstance]) -> list[MigSlot]:
    """The device plugin's MIG devices: one per compute instance, named by its profile
    (``1c.3g.40gb`` for a GPU instance split into compute instances), as the agent's
    ``nvidia.com/mig-*.count`` labels count them. A GPU instance listed without compute
    instances (an annotation written by hand) counts as one device of its own profile."""
    slots: list[MigSlot] = []
    for gi in instances:
        if not gi.compute_instances:
            slots.append(MigSlot(gpu, gi.id, mig_resource(gi.profile)))
        for ci in gi.compute_instances:
            slots.append(MigSlot(gpu, gi.id, mig_resource(ci.profile), ci.id))
    return slots


def layout_of(node: Node, contract: Contract = DEFAULT_CONTRACT) -> NodeGpuLayout | None:
    """The node's GPU layout (annotation first, labels second); None for a node without GPUs."""
    text = node.annotations.get(contract.topology_annotation)
    if text:
        try:
            annotation = parse_topology_annotation(text)
        except ContractError as error:
            log.warning("node %s: ignoring its topology annotation: %s", node.name, error)
        else:
            gpus: list[GpuSlot] = []
            migs: list[MigSlot] = []
            for gpu in sorted(annotation.gpus, key=lambda g: g.index):
                healthy = gpu.health != "failed"
                if gpu.mig_enabled:
                    if healthy:
                        migs.extend(_mig_slots(gpu.index, gpu.mig))
                    continue
                gpus.append(GpuSlot(gpu.index, gpu.numa_node, gpu.nvlink_domain, healthy))
            if gpus or migs:
                return NodeGpuLayout(tuple(gpus), tuple(migs), "annotation")
            return None
    count = node.allocatable.get(GPU_RESOURCE, 0)
    if count <= 0:
        return None
    domain_size = label_int(node.labels, contract.gpu_nvlink_domain_size) or 1
    numa_size = label_int(node.labels, contract.gpu_numa_max) or count
    healthy_label = label_int(node.labels, contract.gpu_healthy)
    healthy_count = count if healthy_label is None else min(healthy_label, count)
    return NodeGpuLayout(
        tuple(
            GpuSlot(
                index=i,
                numa_node=i // numa_size,
                nvlink_domain=i // domain_size if domain_size > 1 else None,
                healthy=i < healthy_count,
            )
            for i in range(count)
        ),
        (),
        "labels",
    )


def pod_gpu_count(pod: Pod) -> int:
    return pod.requests.get(GPU_RESOURCE, 0)


def pod_mig_requests(pod: Pod) -> dict[str, int]:
    return {
        name: amount
        for name, amount in pod.requests.items()
        if name.startswith(MIG_RESOURCE_PREFIX) and amount > 0
    }
