"""LoadAware: prefer less-loaded GPUs and nodes, optionally refuse overloaded ones.

Load comes from the snapshot's `scheduler.prometheus_load.LoadTracker` (Prometheus, read in the
background); with no tracker attached the plugin does nothing. For a GPU pod the GPU load is
the mean over the GPUs it would get (the predicted device-plugin choice among the node's free
GPUs, see `scheduler.gpu_alloc`); CPU load is the node's. Pods without GPUs only see CPU.

* Filter (off unless a threshold is configured per resource): a node whose known load is above
  the threshold fails with a fixed reason. Unknown load passes.
* Score: 100 x (1 - weighted mean load). A node with unknown load scores the mean of the known
  ones (neutral); if no feasible node's load is known there is no score at all.
* Load never buys a worse GPU topology (`keep_topology_order`): for a GPU pod, a node whose
  placement is in a worse GpuTopology class (aligned > the requested scope > one NVLink domain >
  one NUMA node > spread) scores at most what the worst node of every better class scores. Load
  picks among equally aligned placements; an aligned set on busy GPUs still beats an unaligned
  one on idle GPUs. A load threshold (the filter) is how busy GPUs are ruled out.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler import prometheus_load as load_source
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins import gpu_topology
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE
from gputopo.scheduler.prometheus_load import (
    GPU_MEMORY,
    GPU_UTILIZATION,
    NODE_CPU,
    LoadTracker,
    NodeLoad,
)
from gputopo.scheduler.snapshot import ClusterSnapshot, IntArray

NAME: Final = "LoadAware"
STAGE: Final = 11  # after GpuTopology's

CODES: Final = {GPU_UTILIZATION: 1, GPU_MEMORY: 2, NODE_CPU: 3}
REASONS: Final = {
    1: "node(s) had GPU utilization above the threshold",
    2: "node(s) had GPU memory use above the threshold",
    3: "node(s) had CPU utilization above the threshold",
}

Codes = npt.NDArray[np.int8]


def _pod_gpus(snapshot: ClusterSnapshot, slot: int, count: int) -> tuple[int, ...] | None:
    state = gpu_alloc.allocator_for(snapshot).states.get(slot)
    if state is None:
        return None
    choice = gpu_alloc.preferred_allocation(state.free_gpus(), count)
    return choice.gpus if choice else None


def _loads(pod: Pod, snapshot: ClusterSnapshot, slot: int, node: NodeLoad) -> dict[str, float]:
    """The pod-relevant load per resource (only resources that are known)."""
    out: dict[str, float] = {}
    count = gpu_alloc.pod_gpu_count(pod)
    if count:
        gpus = _pod_gpus(snapshot, slot, count)
        for resource in (GPU_UTILIZATION, GPU_MEMORY):
            value = node.gpu_mean(resource, gpus)
            if value is not None:
                out[resource] = value
    if node.cpu is not None:
        out[NODE_CPU] = node.cpu
    return out


def _tracker(snapshot: ClusterSnapshot) -> LoadTracker | None:
    return load_source.tracker_for(snapshot)


def filter_nodes(pod: Pod, snapshot: ClusterSnapshot, candidates: IntArray) -> Codes | None:
    tracker = _tracker(snapshot)
    if tracker is None or not tracker.config.thresholds:
        return None
    fresh = tracker.fresh()
    if fresh is None:
        return None
    if gpu_alloc.pod_gpu_count(pod):
        gpu_alloc.allocator_for(snapshot).refresh(candidates)
    codes: Codes = np.zeros(snapshot.capacity, dtype=np.int8)
    thresholds = tracker.config.thresholds
    for slot in candidates.tolist():
        node_load = tracker.node_load(snapshot.node_names[slot], fresh)
        if node_load is None:
            continue
        for resource, value in _loads(pod, snapshot, slot, node_load).items():
            limit = thresholds.get(resource)
            if limit is not None and value > limit:
                codes[slot] = CODES[resource]
                break
    return codes


def score(pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray) -> IntArray | None:
    tracker = _tracker(snapshot)
    if tracker is None:
        return None
    fresh = tracker.fresh()
    if fresh is None:
        return None
    if gpu_alloc.pod_gpu_count(pod):
        gpu_alloc.allocator_for(snapshot).refresh(feasible)
    weights = tracker.config.resource_weights
    scores = np.full(len(feasible), -1, dtype=np.int64)
    for index, slot in enumerate(feasible.tolist()):
        node_load = tracker.node_load(snapshot.node_names[slot], fresh)
        if node_load is None:
            continue
        loads = _loads(pod, snapshot, slot, node_load)
        total = sum(weights.get(resource, 1.0) for resource in loads)
        if not loads or total <= 0:
            continue
        mean = sum(value * weights.get(resource, 1.0) for resource, value in loads.items()) / total
        scores[index] = int(MAX_NODE_SCORE * (1 - min(1.0, max(0.0, mean))))
    known = scores >= 0
    if not known.any():
        return None
    neutral = int(scores[known].mean())
    return np.where(known, scores, neutral)


def keep_topology_order(load: IntArray, topology: IntArray) -> IntArray:
    """Cap each node's load score at the lowest one among nodes of a better topology class.

    ``topology`` is GpuTopology's score for the same feasible nodes; its class is the score's
    tens (`gpu_topology.placement_class`), so fit, packing and SLA points within a class do not
    order anything here.
    """
    classes = gpu_topology.placement_class(topology)
    capped = load.copy()
    cap: int | None = None
    for level in sorted(set(classes.tolist()), reverse=True):
        members = classes == level
        if cap is not None:
            capped[members] = np.minimum(capped[members], cap)
        lowest = int(capped[members].min())
        cap = lowest if cap is None else min(cap, lowest)
    return capped
