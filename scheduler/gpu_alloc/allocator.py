"""Per-node GPU bookkeeping, and the allocator's per-slot summary arrays for scoring."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gputopo.core.contract import DEFAULT_CONTRACT, Contract
from gputopo.scheduler.gpu_alloc.layout import (
    DEFAULT_NRT_MAX_AGE_S,
    NO_FIT,
    GpuSlot,
    MigSlot,
    NodeGpuLayout,
    label_int,
    layout_of,
    pod_gpu_count,
    pod_mig_requests,
)
from gputopo.scheduler.gpu_alloc.nrt import NrtReport, parse_nrt
from gputopo.scheduler.gpu_alloc.preferred import preferred_allocation
from gputopo.scheduler.model import Node, Pod
from gputopo.scheduler.snapshot import ClusterSnapshot, IntArray

# Distinct layouts an allocator keeps before starting over (machine types x GPU health).
_LAYOUTS_LIMIT = 256


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
            layout = self.layout
            key = ("allocate", count, layout.free_bits(self.owner))
            kept: tuple[int, ...] | None = layout.memo.get(key)
            if kept is None:
                free = self.free_gpus(include_foreign=False)
                choice = preferred_allocation(free, count)
                # An over-committed node (e.g. fewer healthy GPUs than the labels' count) still
                # records what it can, so later pods see the node as full.
                kept = choice.gpus if choice else tuple(g.index for g in free[:count])
                layout.remember(key, kept)
            gpus = kept
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
        # Per slot, the snapshot's slot version last summarised (-1: never, or invalidated),
        # and until when the NRT it used counts as fresh.
        self._seen_versions: IntArray = np.zeros(0, dtype=np.int64)
        self._nrt_until: npt.NDArray[np.float64] = np.zeros(0)
        # Per slot, whether its summary is behind the snapshot (seen != slot version): worked
        # out over every slot once per snapshot change (`_stale_at`, the snapshot's latest slot
        # version then), so the several refreshes of one cycle each read it for their slots.
        self._stale: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._stale_at = -1
        # How many slots `_stale` still marks: none, and a refresh has nothing to look at.
        self._stale_count = 0
        # No NRT goes stale before this (a lower bound: every slot's NRT until, at most).
        self._nrt_soonest = math.inf
        # One object per distinct layout (nodes of one model share it, and its `memo`).
        self._layouts: dict[NodeGpuLayout, NodeGpuLayout] = {}
        # Per slot, a number that changes whenever the slot's summary below is rewritten (one
        # counter for all slots): scores computed from the summary are kept by it.
        self.summary_version: IntArray = np.zeros(0, dtype=np.int64)
        self._summary_versions = 0
        self.free_total: IntArray = np.zeros(0, dtype=np.int64)
        # Per slot, per group (-1 pads): the five group summaries below are the rows of one
        # (5, capacity, width) array, so a node's summary is written in one assignment.
        self._groups: IntArray = np.full((5, 0, 1), -1, dtype=np.int64)
        self.aligned_free: IntArray = self._groups[0]
        self.aligned_domain_free: IntArray = self._groups[1]
        self.aligned_domain_size: IntArray = self._groups[2]
        self.domain_free: IntArray = self._groups[3]
        self.numa_free: IntArray = self._groups[4]
        # Per slot summarised from a layout, that layout and the free GPUs summarised (its
        # `free_bits`): what the slot's summary, and so a score read from it, is a function of.
        self.summary_keys: dict[int, tuple[NodeGpuLayout, int]] = {}
        # Per slot, the largest of its aligned groups' domain sizes (0: no free GPU).
        self.largest_aligned_domain: IntArray = np.zeros(0, dtype=np.int64)
        self.sla: IntArray = np.zeros(0, dtype=np.int64)

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> GpuAllocator:
        """The allocator attached to ``snapshot``; one with the defaults is attached on first use.

        The allocator keeps which GPUs each pod holds across cycles, so it lives as long as its
        snapshot and is kept by it (a runtime attaches one configured with its NRT age and clock).
        """
        return snapshot.attached_or_new(cls, lambda: cls(snapshot))

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
            self._seen_versions[slot] = -1
            self._stale_at = -1

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
        self._seen_versions = np.concatenate(
            [self._seen_versions, np.full(extra, -1, dtype=np.int64)]
        )
        self._nrt_until = np.concatenate([self._nrt_until, np.full(extra, math.inf)])
        self._stale_at = -1
        self.summary_version = np.concatenate(
            [self.summary_version, np.zeros(extra, dtype=np.int64)]
        )
        self.free_total = np.concatenate([self.free_total, np.zeros(extra, dtype=np.int64)])
        self.sla = np.concatenate([self.sla, np.zeros(extra, dtype=np.int64)])
        self.largest_aligned_domain = np.concatenate(
            [self.largest_aligned_domain, np.zeros(extra, dtype=np.int64)]
        )
        self._reshape_groups(capacity, self._width)
        self._capacity = capacity

    def _widen(self, width: int) -> None:
        self._reshape_groups(self._capacity, width)
        self._width = width

    def _reshape_groups(self, capacity: int, width: int) -> None:
        groups = np.full((5, capacity, width), -1, dtype=np.int64)
        kept = self._groups
        groups[:, : kept.shape[1], : kept.shape[2]] = kept
        self._groups = groups
        (
            self.aligned_free,
            self.aligned_domain_free,
            self.aligned_domain_size,
            self.domain_free,
            self.numa_free,
        ) = groups

    def refresh(self, slots: IntArray) -> None:
        """Bring the given node slots up to date with the snapshot (and NRT freshness): those
        whose node or pods changed since they were last summarised (the snapshot's slot
        versions) and those whose NRT has since gone stale."""
        snapshot = self.snapshot
        if snapshot.capacity > self._capacity:
            self._grow(snapshot.capacity)
        if not len(slots):
            return
        now = self.clock()
        if self._stale_at != snapshot.last_slot_version:
            self._stale = self._seen_versions != snapshot.slot_version
            self._stale_count = int(np.count_nonzero(self._stale))
            self._stale_at = snapshot.last_slot_version
        nrt_expiring = self._nrt_soonest < now
        if not self._stale_count and not nrt_expiring:
            return  # the common case after a cycle's first refresh: every slot is current
        changed = self._stale[slots]
        if nrt_expiring:
            changed |= self._nrt_until[slots] < now
        if changed.any():
            for slot in slots[changed].tolist():
                self._update(slot, now)
        if nrt_expiring:
            self._nrt_soonest = float(self._nrt_until.min())

    def _update(self, slot: int, now: float) -> None:
        node = self.snapshot.nodes[slot]
        self._seen_versions[slot] = self.snapshot.slot_version[slot]
        if self._stale[slot]:
            self._stale[slot] = False
            self._stale_count -= 1
        self._summary_versions += 1
        self.summary_version[slot] = self._summary_versions
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
            if len(self._layouts) >= _LAYOUTS_LIMIT:
                self._layouts.clear()
            layout = self._layouts.setdefault(layout, layout)
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
            self._nrt_soonest = min(self._nrt_soonest, self._nrt_until[slot])
        self._summarise(slot, state, node)

    def _clear(self, slot: int) -> None:
        self.summary_keys.pop(slot, None)
        self.free_total[slot] = 0
        self._groups[:, slot] = -1
        self.largest_aligned_domain[slot] = 0
        self.sla[slot] = 0

    def _summarise(self, slot: int, state: NodeGpuState, node: Node) -> None:
        layout = state.layout
        bits = layout.free_bits(state.owner, state.foreign)
        self.summary_keys[slot] = (layout, bits)
        summary = layout.memo.get(("summary", self._width, bits))
        if summary is None:
            summary = self._summary_of(state)
            # at the width it was padded to (a wider node may have widened the arrays)
            layout.remember(("summary", self._width, bits), summary)
        rows, largest, free_total = summary
        self._groups[:, slot] = rows
        self.largest_aligned_domain[slot] = largest
        self.free_total[slot] = free_total
        sla = label_int(node.labels, self.contract.sla)
        self.sla[slot] = min(sla, 1000) if sla is not None else 0

    def _summary_of(self, state: NodeGpuState) -> tuple[IntArray, int, int]:
        """The node's group rows (padded with -1 to the arrays' width, widened first if they
        need more), its largest aligned domain and its free GPUs: a function of the layout and
        the free GPUs alone (`_summarise` keeps it in the layout's memo)."""
        # One pass over the free GPUs counts every group: aligned (NVLink domain x NUMA node),
        # NVLink domain (GPUs with NVLink peers only) and NUMA node. Group order does not
        # matter: the score reads maxima and minima across a node's groups.
        aligned_of: dict[tuple[object, int | None], int] = {}
        domain_free_of: dict[object, int] = {}
        nvlink_of: dict[object, int] = {}
        numa_of: dict[int | None, int] = {}
        free = state.free_gpus()
        domain_key = NodeGpuLayout.domain_key
        for gpu in free:
            domain = domain_key(gpu)
            group = (domain, gpu.numa_node)
            aligned_of[group] = aligned_of.get(group, 0) + 1
            domain_free_of[domain] = domain_free_of.get(domain, 0) + 1
            if gpu.nvlink_domain is not None:
                nvlink_of[domain] = nvlink_of.get(domain, 0) + 1
            numa_of[gpu.numa_node] = numa_of.get(gpu.numa_node, 0) + 1
        sizes = state.layout.healthy_domain_sizes
        aligned = list(aligned_of.values())
        aligned_domain = [domain_free_of[domain] for domain, _ in aligned_of]
        aligned_size = [sizes[domain] for domain, _ in aligned_of]
        domains = list(nvlink_of.values())
        numas = list(numa_of.values())
        width = max(len(aligned), len(domains), len(numas), 1)
        if width > self._width:
            self._widen(width)
        width = self._width
        rows = np.array(
            [
                counts + [-1] * (width - len(counts))
                for counts in (aligned, aligned_domain, aligned_size, domains, numas)
            ],
            dtype=np.int64,
        )
        rows.flags.writeable = False  # kept and shared: `_summarise` copies it in
        return rows, max(aligned_size, default=0), len(free)

    # ------------------------------------------------------------ queries

    def state(self, slot: int) -> NodeGpuState | None:
        self.refresh(np.array([slot], dtype=np.int64))
        return self.states.get(slot)

    def best_leftover(self, matrix: IntArray, slots: IntArray, count: int) -> IntArray:
        """Per slot, free GPUs left in the best-fitting group holding `count` (or NO_FIT)."""
        groups = matrix[slots]
        best: IntArray = np.where(groups >= count, groups - count, NO_FIT).min(axis=1)
        return best
