"""Headroom: keep the machines that large GPU pods need for large GPU pods.

An 8-GPU pod fits only on a node with 8 free GPUs in one NVLink domain (an NVSwitch machine such
as a DGX H100). When smaller pods take a few GPUs of each such machine, the 8-GPU pods wait
although the cluster has GPUs to spare: fragmentation. GpuTopology's best fit alone cannot stop
it, because a 4-GPU pod's only aligned place (one NVLink domain and one NUMA node) is often half
of exactly such a machine, and the small pods arrive before the large ones.

So a node with an NVLink domain of at least ``headroom.minGpus`` healthy GPUs (profile, default 8;
0 switches this off) is *kept* for pods requesting at least that many GPUs. A GPU pod requesting
fewer whole GPUs is kept off every kept node for as long as some other node passes every filter
for it and places it at least as the headroom asks:

* a 1-GPU pod: anywhere;
* a multi-GPU pod: inside one NVLink domain, or inside the scope its ``gputopo.io/gpu-topology``
  annotation asks for (a GpuTopology placement class of "one NVLink domain" or better).

The pod's own preferences come first: with preferred node affinity, "some other node" means one
the pod prefers at least as much as its most preferred kept node (a pod that prefers H100 GPUs
is not sent to an A100 machine to keep an H100 one whole).

When no other node does, the kept nodes are candidates as usual and GpuTopology's best fit picks
among them (a half-used machine before a whole one). So the rule never leaves a pod pending that
would otherwise run, and never sends a multi-GPU pod to a placement spread over NVLink domains and
NUMA nodes while a kept machine could align it. Pods requesting only MIG devices, or no GPU, are not
affected; neither are pods of ``minGpus`` GPUs or more.

It is the last filter, so a node it keeps off reports "node(s) kept for
pods of N or more GPUs (headroom)" in the diagnosis; it never appears in a failure message, because
when it would be the only reason no node fits, it steps aside.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins import gpu_topology, node_affinity
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason
from gputopo.scheduler.snapshot import IntArray

NAME: Final = "Headroom"
CODE_KEPT: Final = 1
# The GpuTopology placement class a multi-GPU pod must get elsewhere for the kept nodes to be
# left out: one NVLink domain (3), the requested scope (4) or aligned (6).
MIN_CLASS_ELSEWHERE: Final = gpu_topology.TIER_NVLINK // 10


def reason(min_gpus: int) -> str:
    return f"node(s) kept for pods of {min_gpus} or more GPUs (headroom)"


def large_domain_nodes(
    allocator: gpu_alloc.GpuAllocator, slots: IntArray, min_gpus: int
) -> npt.NDArray[np.bool_]:
    """Per slot, whether the node has an NVLink domain of at least ``min_gpus`` healthy GPUs.

    Read from the largest of the aligned groups' domain sizes (the allocator's
    ``largest_aligned_domain``), which cover every domain with a free GPU: a node
    whose large domain is fully taken has no group left there, and holds no room for the pods
    this rule is about either.
    """
    kept: npt.NDArray[np.bool_] = allocator.largest_aligned_domain[slots] >= min_gpus
    return kept


def filter_nodes(
    pod: Pod,
    allocator: gpu_alloc.GpuAllocator,
    feasible: IntArray,
    min_gpus: int,
    preference: IntArray | None = None,
) -> npt.NDArray[np.int8] | None:
    """A code per node slot (CODE_KEPT for the nodes the pod is kept off), or None.

    ``feasible``: the slots that passed every other filter. ``preference``: per slot, the
    pod's preferred node affinity (the weights of the terms a node matches), if it has any.
    None when the rule does not apply to the pod or keeps it off no node.
    """
    if min_gpus <= 0:
        return None
    count = gpu_alloc.pod_gpu_count(pod)
    if count <= 0 or count >= min_gpus or not len(feasible):
        return None
    allocator.refresh(feasible)
    kept = large_domain_nodes(allocator, feasible, min_gpus)
    if not kept.any():
        return None
    elsewhere = feasible[~kept]
    if preference is not None and len(elsewhere):
        elsewhere = elsewhere[preference[elsewhere] >= preference[feasible[kept]].max()]
    if not len(elsewhere):
        return None
    if count > 1:
        scores = gpu_topology.score(pod, allocator, elsewhere)
        if scores is not None:
            good = gpu_topology.placement_class(scores) >= MIN_CLASS_ELSEWHERE
            if not good.any():
                return None
    codes = np.zeros(allocator.snapshot.capacity, dtype=np.int8)
    codes[feasible[kept]] = CODE_KEPT
    return codes


class Headroom:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        min_gpus = ctx.profile.headroom_min_gpus
        if min_gpus <= 0:
            return None
        count = gpu_alloc.pod_gpu_count(ctx.pod)
        if count <= 0 or count >= min_gpus:
            return None
        preference = node_affinity.state(ctx).preferred if ctx.pod.preferred_node_affinity else None
        codes = filter_nodes(ctx.pod, ctx.gpus, ctx.passing(), min_gpus, preference)
        if codes is None:
            return None
        return CodedVerdict(codes, {CODE_KEPT: Reason(reason(min_gpus))})


PLUGIN: Final = Headroom()
