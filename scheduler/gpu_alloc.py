"""Which GPUs and MIG devices on each node are free, and which ones a new pod would get.

The kubelet, not the scheduler, picks the concrete devices: it asks the NVIDIA device plugin's
`GetPreferredAllocation`, which returns the set with the best aggregate NVLink score. The
scheduler predicts that choice so it can score nodes by what the pod will really get:

* **Layout** — a node's GPUs, their NUMA node and NVLink domain, MIG devices and health, from
  the agent's ``gputopo.io/topology`` annotation. Without the annotation (an older agent, or a
  node described only by labels) a layout is inferred from labels: ``nvidia.com/gpu``
  allocatable GPUs, ``gputopo.io/gpu.nvlink-domain-size`` consecutive GPUs per domain,
  ``gputopo.io/gpu.numa-max`` consecutive GPUs per NUMA node, and GPUs beyond
  ``gputopo.io/gpu.healthy`` counted as failed.
* **Bookkeeping** — every pod the scheduler knows on the node (bound or assumed) holds the GPUs
  the preferred allocation gives it, in the order the pods arrived; a deleted pod frees them.
* **NodeResourceTopology** — the agent's per-NUMA ``available`` count of ``nvidia.com/gpu``
  reveals GPUs held by pods the scheduler does not know (other schedulers, static pods). It is
  used only while *fresh*: observed after the last change the scheduler saw in that node's GPU
  pods (an NRT older than our own last bind cannot know about it) **and**, when
  ``nrt_max_age_s`` is set, at most that long ago. The agent writes its NRT only when it
  changes, so by default a watched NRT has no age limit: an unchanged object is current. A
  fresh NRT can only lower a zone's free count below the bookkeeping's, never raise it: a pod
  the scheduler knows stays counted until its deletion is watched, because NRT lags the
  kubelet's admission. A stale NRT is ignored; bookkeeping alone decides.

Failed GPUs (annotation ``health: failed``) are never free, and neither are their MIG devices.

Preferred allocation of `k` GPUs among the free ones, best first: one NVLink domain and one NUMA
node ("aligned"), else one NVLink domain, else one NUMA node, else spread over the fewest groups;
within a level, best fit — the group with the fewest free GPUs that still holds `k` — so large
groups stay whole for large pods. Ties go to the lowest GPU index.

Per-node results are cached and recomputed only for nodes whose object, pod count or GPU/MIG
requests changed since the last look (a cheap vector comparison), so a scheduling cycle touches
in Python only the nodes the previous binds changed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    AnnotatedMigInstance,
    Contract,
    ContractError,
    parse_topology_annotation,
)
from gputopo.scheduler.model import Node, Pod
from gputopo.scheduler.snapshot import ClusterSnapshot, IntArray

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

_NO_FIT: Final = np.iinfo(np.int64).max


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

    def aligned_key(self, gpu: GpuSlot) -> tuple[object, ...]:
        return (self.domain_key(gpu), gpu.numa_node)

    @staticmethod
    def domain_key(gpu: GpuSlot) -> object:
        # A GPU with no NVLink peers is a domain of its own.
        return gpu.nvlink_domain if gpu.nvlink_domain is not None else ("pcie", gpu.index)


def _label_int(labels: Mapping[str, str], key: str) -> int | None:
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
    domain_size = _label_int(node.labels, contract.gpu_nvlink_domain_size) or 1
    numa_size = _label_int(node.labels, contract.gpu_numa_max) or count
    healthy_label = _label_int(node.labels, contract.gpu_healthy)
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


@dataclass(frozen=True, slots=True)
class GpuChoice:
    """The GPUs a request would get, the level it reaches and the GPUs left free in its group."""

    gpus: tuple[int, ...]
    level: int
    leftover: int


def _groups(gpus: Iterable[GpuSlot], key: Callable[[GpuSlot], object]) -> list[list[GpuSlot]]:
    grouped: dict[object, list[GpuSlot]] = {}
    for gpu in gpus:
        grouped.setdefault(key(gpu), []).append(gpu)
    return [sorted(members, key=lambda g: g.index) for members in grouped.values()]


def _best_fit(groups: list[list[GpuSlot]], count: int) -> list[GpuSlot] | None:
    fitting = [group for group in groups if len(group) >= count]
    if not fitting:
        return None
    return min(fitting, key=lambda group: (len(group), group[0].index))


def _take_largest_first(
    members: list[GpuSlot], key: Callable[[GpuSlot], object], count: int
) -> list[GpuSlot]:
    """`count` GPUs from `members`, from the fewest sub-groups (largest sub-groups first)."""
    chosen: list[GpuSlot] = []
    for group in sorted(_groups(members, key), key=lambda g: (-len(g), g[0].index)):
        chosen.extend(group[: count - len(chosen)])
        if len(chosen) == count:
            break
    return chosen


def preferred_allocation(free: Iterable[GpuSlot], count: int) -> GpuChoice | None:
    """The device plugin's (approximated) preferred set of `count` GPUs out of `free`."""
    candidates = [gpu for gpu in free if gpu.healthy]
    if count <= 0 or len(candidates) < count:
        return None
    domain_key = NodeGpuLayout.domain_key
    aligned = _best_fit(_groups(candidates, lambda g: (domain_key(g), g.numa_node)), count)
    if aligned is not None:
        return GpuChoice(
            tuple(g.index for g in aligned[:count]), LEVEL_ALIGNED, len(aligned) - count
        )
    in_domain = _best_fit(_groups(candidates, domain_key), count)
    if in_domain is not None:
        chosen = _take_largest_first(in_domain, lambda g: g.numa_node, count)
        return GpuChoice(
            tuple(sorted(g.index for g in chosen)), LEVEL_NVLINK, len(in_domain) - count
        )
    in_numa = _best_fit(_groups(candidates, lambda g: g.numa_node), count)
    if in_numa is not None:
        chosen = _take_largest_first(in_numa, domain_key, count)
        return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_NUMA, len(in_numa) - count)
    chosen = _take_largest_first(candidates, lambda g: g.numa_node, count)
    return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_SPREAD, len(candidates) - count)


@dataclass(frozen=True, slots=True)
class NrtReport:
    """Free `nvidia.com/gpu` per NUMA zone from one NodeResourceTopology, and when it was seen."""

    available: Mapping[int, int]
    observed_at: float


def parse_nrt(obj: Mapping[str, Any]) -> tuple[str, dict[int, int]]:
    """(node name, {numa id: available nvidia.com/gpu}) from a NodeResourceTopology object."""
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("NodeResourceTopology: metadata.name: must be set")
    available: dict[int, int] = {}
    for zone in obj.get("zones") or []:
        zone_name = str(zone.get("name", ""))
        if not zone_name.startswith(NRT_GPU_ZONE_PREFIX):
            continue
        suffix = zone_name[len(NRT_GPU_ZONE_PREFIX) :]
        if not suffix.isdigit():
            continue
        for resource in zone.get("resources") or []:
            if resource.get("name") != GPU_RESOURCE:
                continue
            value = resource.get("available")
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"NodeResourceTopology {name}: zone {zone_name}: {GPU_RESOURCE} available "
                    f"must be a non-negative integer, got {resource.get('available')!r}"
                )
            available[int(suffix)] = value
    return name, available


class NodeGpuState:
    """Bookkeeping for one node: which pod holds which GPUs / MIG devices, and what is free."""

    __slots__ = ("changed_at", "foreign", "layout", "mig_owner", "node", "owner", "pod_gpus")

    def __init__(self, node: Node, layout: NodeGpuLayout) -> None:
        self.node = node
        self.layout = layout
        self.owner: dict[int, str] = {}
        self.mig_owner: dict[tuple[int, int, int], str] = {}
        self.pod_gpus: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]] = {}
        self.foreign: frozenset[int] = frozenset()
        self.changed_at = -math.inf

    def copy(self) -> NodeGpuState:
        """An independent copy (which pod holds which device), to put back after a what-if."""
        twin = NodeGpuState(self.node, self.layout)
        twin.owner = dict(self.owner)
        twin.mig_owner = dict(self.mig_owner)
        twin.pod_gpus = dict(self.pod_gpus)
        twin.foreign = self.foreign
        twin.changed_at = self.changed_at
        return twin

    def sync_pods(self, pods: Iterable[Pod], now: float, initial: bool = False) -> None:
        """Free GPUs of pods gone, then allocate for new pods in arrival order.

        A change marks the time an NRT must postdate to be trusted; the first sync of a node
        (pods already there when the scheduler started) does not.
        """
        current = {pod.key: pod for pod in pods if pod_gpu_count(pod) or pod_mig_requests(pod)}
        gone = [key for key in self.pod_gpus if key not in current]
        for key in gone:
            gpus, migs = self.pod_gpus.pop(key)
            for index in gpus:
                self.owner.pop(index, None)
            for device in migs:
                self.mig_owner.pop(device, None)
        added = [pod for key, pod in current.items() if key not in self.pod_gpus]
        for pod in added:
            self._allocate(pod)
        if (gone or added) and not initial:
            self.changed_at = now

    def _allocate(self, pod: Pod) -> None:
        count = pod_gpu_count(pod)
        gpus: tuple[int, ...] = ()
        if count:
            free = self.free_gpus(include_foreign=False)
            choice = preferred_allocation(free, count)
            # An over-committed node (e.g. fewer healthy GPUs than the labels' count) still
            # records what it can, so later pods see the node as full.
            gpus = choice.gpus if choice else tuple(g.index for g in free[:count])
            for index in gpus:
                self.owner[index] = pod.key
        migs: list[tuple[int, int, int]] = []
        for resource, amount in sorted(pod_mig_requests(pod).items()):
            for device in self._best_mig_devices(resource, amount):
                self.mig_owner[device] = pod.key
                migs.append(device)
        self.pod_gpus[pod.key] = (gpus, tuple(migs))

    def free_gpus(self, include_foreign: bool = True) -> list[GpuSlot]:
        blocked = self.foreign if include_foreign else frozenset()
        return [
            gpu
            for gpu in self.layout.gpus
            if gpu.healthy and gpu.index not in self.owner and gpu.index not in blocked
        ]

    def free_migs(self, resource: str) -> list[MigSlot]:
        return [
            mig
            for mig in self.layout.migs
            if mig.resource == resource and mig.key not in self.mig_owner
        ]

    def _best_mig_devices(self, resource: str, amount: int) -> list[tuple[int, int, int]]:
        """Best fit for MIG: devices from the GPU with the fewest free ones of the profile."""
        by_gpu: dict[int, list[MigSlot]] = {}
        for mig in self.free_migs(resource):
            by_gpu.setdefault(mig.gpu, []).append(mig)
        chosen: list[tuple[int, int, int]] = []
        for _, devices in sorted(by_gpu.items(), key=lambda item: (len(item[1]), item[0])):
            for mig in devices:
                if len(chosen) == amount:
                    return chosen
                chosen.append(mig.key)
        return chosen

    def apply_nrt(self, report: NrtReport | None) -> None:
        """Mark GPUs held by pods the scheduler does not know, from a fresh NRT (or clear)."""
        if report is None:
            self.foreign = frozenset()
            return
        foreign: set[int] = set()
        free = self.free_gpus(include_foreign=False)
        for numa, available in report.available.items():
            zone_free = [gpu for gpu in free if gpu.numa_node == numa]
            hidden = len(zone_free) - available
            if hidden <= 0:
                continue
            choice = preferred_allocation(zone_free, hidden)
            foreign.update(choice.gpus if choice else (g.index for g in zone_free[:hidden]))
        self.foreign = frozenset(foreign)


class GpuAllocator:
    """Per-node GPU state for one ClusterSnapshot, with per-slot summary arrays for scoring.

    For each node slot it keeps the free-GPU count of every aligned group (NVLink domain x NUMA
    node), every NVLink domain and every NUMA node, padded with -1, so a request of `k` GPUs is
    scored over all nodes with a handful of vector operations. Beside each aligned group it
    keeps the free and the healthy GPUs of the group's whole NVLink domain (a GPU without
    NVLink peers is a domain of its own), for the score's packing terms.
    """

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        *,
        contract: Contract = DEFAULT_CONTRACT,
        nrt_max_age_s: float | None = DEFAULT_NRT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = snapshot
        self.contract = contract
        self.nrt_max_age_s = nrt_max_age_s
        self.clock = clock
        self.states: dict[int, NodeGpuState | None] = {}
        self.nrt: dict[str, NrtReport] = {}
        self._capacity = 0
        self._width = 1
        self._seen_nodes: list[Node | None] = []
        self._seen_pods: IntArray = np.zeros(0, dtype=np.int64)
        self._seen_gpus: IntArray = np.zeros(0, dtype=np.int64)
        self._seen_migs: IntArray = np.zeros(0, dtype=np.int64)
        self._nrt_until: npt.NDArray[np.float64] = np.zeros(0)
        # Slots already refreshed against this snapshot generation (a cycle refreshes in its
        # filter and again in its score; the second is then free), valid until _fresh_until.
        self._fresh: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._fresh_generation = -1
        self._fresh_until = math.inf
        self.free_total: IntArray = np.zeros(0, dtype=np.int64)
        self.aligned_free: IntArray = np.zeros((0, 1), dtype=np.int64)
        self.aligned_domain_free: IntArray = np.zeros((0, 1), dtype=np.int64)
        self.aligned_domain_size: IntArray = np.zeros((0, 1), dtype=np.int64)
        self.domain_free: IntArray = np.zeros((0, 1), dtype=np.int64)
        self.numa_free: IntArray = np.zeros((0, 1), dtype=np.int64)
        self.sla: IntArray = np.zeros(0, dtype=np.int64)

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> GpuAllocator:
        """The allocator attached to ``snapshot``; one with the defaults is attached on first use.

        The allocator keeps which GPUs each pod holds across cycles, so it lives as long as its
        snapshot and is kept by it (a runtime attaches one configured with its NRT age and clock).
        """
        allocator = snapshot.attached(cls)
        if allocator is None:
            allocator = cls(snapshot)
            snapshot.attach(allocator)
        return allocator

    # ------------------------------------------------------------ inputs

    def observe_nrt(self, obj: Mapping[str, Any]) -> None:
        """Record a NodeResourceTopology (a watch ADDED/MODIFIED event) as seen now.

        The node's pod changes the snapshot already holds are synced first, so they are stamped
        before this NRT and it counts as newer than them (a lazy sync at the next cycle would
        stamp them later and wrongly make this NRT look older)."""
        name, available = parse_nrt(obj)
        slot = self.snapshot.slot_of(name)
        if slot is not None:
            self.refresh(np.array([slot], dtype=np.int64))
        self.nrt[name] = NrtReport(available, self.clock())
        self._invalidate(name)

    def forget_nrt(self, name: str) -> None:
        self.nrt.pop(name, None)
        self._invalidate(name)

    def _invalidate(self, name: str) -> None:
        slot = self.snapshot.slot_of(name)
        if slot is not None and slot < self._capacity:
            self._seen_nodes[slot] = None
            self._fresh[slot] = False

    def fresh_nrt(self, name: str, state: NodeGpuState, now: float) -> NrtReport | None:
        report = self.nrt.get(name)
        if report is None:
            return None
        if report.observed_at < state.changed_at:
            return None
        if self.nrt_max_age_s is not None and now - report.observed_at > self.nrt_max_age_s:
            return None
        return report

    # ------------------------------------------------------------ refresh

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        self._seen_nodes.extend([None] * extra)
        pad = np.full(extra, -1, dtype=np.int64)
        self._seen_pods = np.concatenate([self._seen_pods, pad])
        self._seen_gpus = np.concatenate([self._seen_gpus, pad])
        self._seen_migs = np.concatenate([self._seen_migs, pad])
        self._nrt_until = np.concatenate([self._nrt_until, np.full(extra, math.inf)])
        self._fresh = np.concatenate([self._fresh, np.zeros(extra, dtype=np.bool_)])
        self.free_total = np.concatenate([self.free_total, np.zeros(extra, dtype=np.int64)])
        self.sla = np.concatenate([self.sla, np.zeros(extra, dtype=np.int64)])
        filler = np.full((extra, self._width), -1, dtype=np.int64)
        self.aligned_free = np.vstack([self.aligned_free, filler])
        self.aligned_domain_free = np.vstack([self.aligned_domain_free, filler])
        self.aligned_domain_size = np.vstack([self.aligned_domain_size, filler])
        self.domain_free = np.vstack([self.domain_free, filler])
        self.numa_free = np.vstack([self.numa_free, filler])
        self._capacity = capacity

    def _widen(self, width: int) -> None:
        def widen(matrix: IntArray) -> IntArray:
            out = np.full((matrix.shape[0], width), -1, dtype=np.int64)
            out[:, : matrix.shape[1]] = matrix
            return out

        self.aligned_free = widen(self.aligned_free)
        self.aligned_domain_free = widen(self.aligned_domain_free)
        self.aligned_domain_size = widen(self.aligned_domain_size)
        self.domain_free = widen(self.domain_free)
        self.numa_free = widen(self.numa_free)
        self._width = width

    def _mig_requested(self) -> IntArray:
        total = np.zeros(self.snapshot.capacity, dtype=np.int64)
        for name, requested in self.snapshot.requested.items():
            if name.startswith(MIG_RESOURCE_PREFIX):
                total = total + requested
        return total

    def refresh(self, slots: IntArray) -> None:
        """Bring the given node slots up to date with the snapshot (and NRT freshness)."""
        snapshot = self.snapshot
        if snapshot.capacity > self._capacity:
            self._grow(snapshot.capacity)
        if not len(slots):
            return
        now = self.clock()
        if snapshot.generation != self._fresh_generation or now >= self._fresh_until:
            self._fresh[:] = False
            self._fresh_generation = snapshot.generation
            self._fresh_until = math.inf
        else:
            slots = slots[~self._fresh[slots]]
            if not len(slots):
                return
        _, gpu_requested = snapshot.resource_arrays(GPU_RESOURCE)
        mig_requested = self._mig_requested()
        changed = (
            (self._seen_pods[slots] != snapshot.pod_count[slots])
            | (self._seen_gpus[slots] != gpu_requested[slots])
            | (self._seen_migs[slots] != mig_requested[slots])
            | (self._nrt_until[slots] < now)
        )
        seen = self._seen_nodes
        nodes = snapshot.nodes
        for slot in slots[~changed].tolist():
            if seen[slot] is not nodes[slot]:
                self._update(slot, now)
        for slot in slots[changed].tolist():
            self._update(slot, now)
        self._seen_pods[slots] = snapshot.pod_count[slots]
        self._seen_gpus[slots] = gpu_requested[slots]
        self._seen_migs[slots] = mig_requested[slots]
        self._fresh[slots] = True
        self._fresh_until = min(self._fresh_until, float(self._nrt_until[slots].min()))

    def _update(self, slot: int, now: float) -> None:
        node = self.snapshot.nodes[slot]
        self._seen_nodes[slot] = node
        self._nrt_until[slot] = math.inf
        state = self.states.get(slot)
        if node is None:
            self.states[slot] = None
            self._clear(slot)
            return
        initial = False
        if state is None or state.node is not node:
            layout = layout_of(node, self.contract)
            if layout is None:
                self.states[slot] = None
                self._clear(slot)
                return
            if state is None or state.layout != layout:
                state = NodeGpuState(node, layout)
                initial = True
            else:
                state.node = node
            self.states[slot] = state
        pods = (entry.pod for entry in self.snapshot.node_pods[slot].values())
        state.sync_pods(pods, now, initial)
        report = self.fresh_nrt(node.name, state, now)
        state.apply_nrt(report)
        if report is not None and self.nrt_max_age_s is not None:
            self._nrt_until[slot] = report.observed_at + self.nrt_max_age_s
        self._summarise(slot, state, node)

    def _clear(self, slot: int) -> None:
        self.free_total[slot] = 0
        self.aligned_free[slot] = -1
        self.aligned_domain_free[slot] = -1
        self.aligned_domain_size[slot] = -1
        self.domain_free[slot] = -1
        self.numa_free[slot] = -1
        self.sla[slot] = 0

    def _summarise(self, slot: int, state: NodeGpuState, node: Node) -> None:
        free = state.free_gpus()
        domain_key = NodeGpuLayout.domain_key
        aligned_groups = _groups(free, lambda g: (domain_key(g), g.numa_node))
        aligned = [len(g) for g in aligned_groups]
        domain_free_of: dict[object, int] = {}
        for gpu in free:
            domain_free_of[domain_key(gpu)] = domain_free_of.get(domain_key(gpu), 0) + 1
        domain_size_of: dict[object, int] = {}
        for gpu in state.layout.gpus:
            if gpu.healthy:
                domain_size_of[domain_key(gpu)] = domain_size_of.get(domain_key(gpu), 0) + 1
        aligned_domain = [domain_free_of[domain_key(g[0])] for g in aligned_groups]
        aligned_size = [domain_size_of[domain_key(g[0])] for g in aligned_groups]
        domains = [
            len(g) for g in _groups([g for g in free if g.nvlink_domain is not None], domain_key)
        ]
        numas = [len(g) for g in _groups(free, lambda g: g.numa_node)]
        width = max(len(aligned), len(domains), len(numas), 1)
        if width > self._width:
            self._widen(width)
        for matrix, counts in (
            (self.aligned_free, aligned),
            (self.aligned_domain_free, aligned_domain),
            (self.aligned_domain_size, aligned_size),
            (self.domain_free, domains),
            (self.numa_free, numas),
        ):
            matrix[slot] = -1
            matrix[slot, : len(counts)] = counts
        self.free_total[slot] = len(free)
        sla = _label_int(node.labels, self.contract.sla)
        self.sla[slot] = min(sla, 1000) if sla is not None else 0

    # ------------------------------------------------------------ queries

    def state(self, slot: int) -> NodeGpuState | None:
        self.refresh(np.array([slot], dtype=np.int64))
        return self.states.get(slot)

    def best_leftover(self, matrix: IntArray, slots: IntArray, count: int) -> IntArray:
        """Per slot, free GPUs left in the best-fitting group holding `count` (or _NO_FIT)."""
        groups = matrix[slots]
        best: IntArray = np.where(groups >= count, groups - count, _NO_FIT).min(axis=1)
        return best


NO_FIT: Final = _NO_FIT
