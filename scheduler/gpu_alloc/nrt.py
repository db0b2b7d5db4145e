"""The agent's NodeResourceTopology, read for the GPUs it says are free per NUMA node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gputopo.scheduler.gpu_alloc.layout import (
    GPU_RESOURCE,
    NRT_GPU_ZONE_PREFIX,
)


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
