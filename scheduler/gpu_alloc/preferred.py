"""The device plugin's preferred allocation, predicted: which free GPUs a pod of `k` GPUs gets."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    for group in sorted(group_by(members, key), key=lambda g: (-len(g), g[0].index)):
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
    aligned = _best_fit(group_by(candidates, lambda g: (domain_key(g), g.numa_node)), count)
    if aligned is not None:
        return GpuChoice(
            tuple(g.index for g in aligned[:count]), LEVEL_ALIGNED, len(aligned) - count
        )
    in_domain = _best_fit(group_by(candidates, domain_key), count)
    if in_domain is not None:
        chosen = _take_largest_first(in_domain, lambda g: g.numa_node, count)
        return GpuChoice(
            tuple(sorted(g.index for g in chosen)), LEVEL_NVLINK, len(in_domain) - count
        )
    in_numa = _best_fit(group_by(candidates, lambda g: g.numa_node), count)
    if in_numa is not None:
        chosen = _take_largest_first(in_numa, domain_key, count)
        return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_NUMA, len(in_numa) - count)
    chosen = _take_largest_first(candidates, lambda g: g.numa_node, count)
    return GpuChoice(tuple(sorted(g.index for g in chosen)), LEVEL_SPREAD, len(candidates) - count)
