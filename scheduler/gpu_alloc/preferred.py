"""The device plugin's preferred allocation, predicted: which free GPUs a pod of `k` GPUs gets."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

from gputopo.scheduler.gpu_alloc.layout import (
    LEVEL_ALIGNED,
    LEVEL_NUMA,
    LEVEL_NVLINK,
    LEVEL_SPREAD,
    GpuSlot,
    NodeGpuLayout,
)


@dataclass(frozen=True, slots=True)
class GpuChoice:
    """The GPUs a request would get, the level it reaches and the GPUs left free in its group."""

    gpus: tuple[int, ...]
    level: int
    leftover: int


def group_by(gpus: Iterable[GpuSlot], key: Callable[[GpuSlot], object]) -> list[list[GpuSlot]]:
    """The GPUs grouped by ``key``: each group in index order, the groups in the order of their
    lowest index."""
    grouped: dict[object, list[GpuSlot]] = {}
    for gpu in sorted(gpus, key=_INDEX):
        members = grouped.get(group := key(gpu))
        if members is None:
            grouped[group] = [gpu]
        else:
            members.append(gpu)
    return list(grouped.values())


_INDEX: Final = attrgetter("index")
_NUMA: Final = attrgetter("numa_node")


def _aligned(gpu: GpuSlot) -> object:
    """`NodeGpuLayout.aligned_key`: NVLink domain and NUMA node."""
    return (NodeGpuLayout.domain_key(gpu), gpu.numa_node)


def _best_fit(groups: list[list[GpuSlot]], count: int) -> list[GpuSlot] | None:
    """The smallest group holding ``count``, the lowest-indexed of equals (``groups`` come in
    the order of their lowest index, `group_by`)."""
    best: list[GpuSlot] | None = None
    for group in groups:
        if count <= len(group) and (best is None or len(group) < len(best)):
            best = group
    return best


def _take_largest_first(
    members: list[GpuSlot], key: Callable[[GpuSlot], object], count: int
) -> list[GpuSlot]:
    """`count` GPUs from `members`, from the fewest sub-groups (largest sub-groups first, the
    lowest-indexed of equals: the sort is stable over `group_by`'s order)."""
    chosen: list[GpuSlot] = []
    for group in sorted(group_by(members, key), key=len, reverse=True):
        chosen.extend(group[: count - len(chosen)])
        if len(chosen) == count:
            break
    return chosen


def preferred_allocation(free: Iterable[GpuSlot], count: int) -> GpuChoice | None:
    """The device plugin's (approximated) preferred set of `count` GPUs out of `free`.

    Computed once per pod placed on a node (the GPU allocator's bookkeeping), so written for
    speed: grouped once per level in index order, no per-group sorting (a property test
    holds it to the plain definition: tests/unit/scheduler/test_gpu_alloc.py)."""
    candidates = [gpu for gpu in free if gpu.healthy]
    if count <= 0 or len(candidates) < count:
        return None
    domain_key = NodeGpuLayout.domain_key
    aligned = _best_fit(group_by(candidates, _aligned), count)
    if aligned is not None:
        return GpuChoice(
            tuple(g.index for g in aligned[:count]), LEVEL_ALIGNED, len(aligned) - count
        )
    in_domain = _best_fit(group_by(candidates, domain_key), count)
    if in_domain is not None:
        chosen = _take_largest_first(in_domain, _NUMA, count)
        return GpuChoice(
            tuple(sorted(g.index for g in chosen)), LEVEL_NVLINK, len(in_domain) - count
        )
    in_numa = _best_fit(group_by(candidates, _NUMA), count)
    if in_numa is not None:
        chosen = _take_largest_first(in_numa, domain_key, count)
        return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_NUMA, len(in_numa) - count)
    chosen = _take_largest_first(candidates, _NUMA, count)
    return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_SPREAD, len(candidates) - count)
