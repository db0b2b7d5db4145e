"""LoadAware: prefer less-loaded GPUs and nodes, optionally refuse overloaded ones.

Load comes from the cycle context's `scheduler.prometheus_load.LoadTracker` (Prometheus, read in the
background; the runtime attaches it to the snapshot); without one the plugin does nothing. For a
GPU pod the GPU load is the mean over the GPUs it would get (the predicted device-plugin choice
among the node's free GPUs, see `scheduler.gpu_alloc`); CPU load is the node's. Pods without
GPUs only see CPU.

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
from gputopo.scheduler.plugins import gpu_topology
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason
from gputopo.scheduler.prometheus_load import GPU_MEMORY, GPU_UTILIZATION, NODE_CPU, NodeLoad
from gputopo.scheduler.snapshot import IntArray

NAME: Final = "LoadAware"

CODES: Final = {GPU_UTILIZATION: 1, GPU_MEMORY: 2, NODE_CPU: 3}
REASONS: Final = {
    1: "node(s) had GPU utilization above the threshold",
    2: "node(s) had GPU memory use above the threshold",
    3: "node(s) had CPU utilization above the threshold",
}
_VERDICT_REASONS: Final = {code: Reason(reason) for code, reason in REASONS.items()}

Codes = npt.NDArray[np.int8]


def _pod_gpus(allocator: gpu_alloc.GpuAllocator, slot: int, count: int) -> tuple[int, ...] | None:
    state = allocator.states.get(slot)
    if state is None:
        return None
    choice = gpu_alloc.preferred_allocation(state.free_gpus(), count)
    return choice.gpus if choice else None


def _loads(ctx: CycleContext, slot: int, node: NodeLoad) -> dict[str, float]:
    """The pod-relevant load per resource (only resources that are known)."""
    out: dict[str, float] = {}
    count = gpu_alloc.pod_gpu_count(ctx.pod)
    if count:
        gpus = _pod_gpus(ctx.gpus, slot, count)
        for resource in (GPU_UTILIZATION, GPU_MEMORY):
            value = node.gpu_mean(resource, gpus)
            if value is not None:
                out[resource] = value
    if node.cpu is not None:
        out[NODE_CPU] = node.cpu
    return out


def filter_nodes(ctx: CycleContext, candidates: IntArray) -> Codes | None:
    tracker = ctx.load
    if tracker is None or not tracker.config.thresholds:
        return None
    fresh = tracker.fresh()
    if fresh is None:
        return None
    if gpu_alloc.pod_gpu_count(ctx.pod):
        ctx.gpus.refresh(candidates)
    snapshot = ctx.snapshot
    codes: Codes = np.zeros(snapshot.capacity, dtype=np.int8)
    thresholds = tracker.config.thresholds
    for slot in candidates.tolist():
        node_load = tracker.node_load(snapshot.node_names[slot], fresh)
        if node_load is None:
            continue
        for resource, value in _loads(ctx, slot, node_load).items():
            limit = thresholds.get(resource)
            if limit is not None and value > limit:
                codes[slot] = CODES[resource]
                break
    return codes


def score(ctx: CycleContext, feasible: IntArray) -> IntArray | None:
    tracker = ctx.load
    if tracker is None:
        return None
    fresh = tracker.fresh()
    if fresh is None:
        return None
    if gpu_alloc.pod_gpu_count(ctx.pod):
        ctx.gpus.refresh(feasible)
    weights = tracker.config.resource_weights
    scores = np.full(len(feasible), -1, dtype=np.int64)
    for index, slot in enumerate(feasible.tolist()):
        node_load = tracker.node_load(ctx.snapshot.node_names[slot], fresh)
        if node_load is None:
            continue
        loads = _loads(ctx, slot, node_load)
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


class LoadAware:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        if ctx.load is None:
            return None
        codes = filter_nodes(ctx, ctx.passing())
        return None if codes is None else CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        """The load score; when GpuTopology scored this cycle, capped to keep its classes'
        order (`keep_topology_order`)."""
        load = score(ctx, feasible)
        if load is None:
            return None
        topology = ctx.scores.get(gpu_topology.NAME)
        return load if topology is None else keep_topology_order(load, topology)


PLUGIN: Final = LoadAware()
