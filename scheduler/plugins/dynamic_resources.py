"""DynamicResources: allocate the pod's DRA ResourceClaims, aligned by topology.

kube-scheduler's plugin of the same name resolves a pod's claims in PreFilter (a missing claim
or template claim not yet created stops the cycle), restricts the pod to the node an allocated
claim is pinned to, and in Filter tries to allocate the unallocated claims on each node. This
one does the same on the DRA state attached to the snapshot
(:class:`gputopo.scheduler.dra.state.DraState`), with gputopo's allocator: among the device sets
that fit it takes the best aligned one (one NVLink domain and one NUMA node, best fit).

The score follows GpuTopology's tiers for the whole GPUs a node would give: 60 plus the group
fit points when aligned, 30 within one NVLink domain, 20 on one NUMA node, 0 spread; nodes that
give only partitions (MIG) or devices the topology annotation does not know score 60.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from gputopo.scheduler.dra.state import ClaimProblem, DraState, PodAllocation, PodClaim
from gputopo.scheduler.gpu_alloc import LEVEL_ALIGNED, LEVEL_NUMA, LEVEL_NVLINK
from gputopo.scheduler.model import Node
from gputopo.scheduler.plugins.context import CycleContext, PreFilterResult
from gputopo.scheduler.plugins.gpu_topology import (
    FIT_POINTS,
    TIER_ALIGNED,
    TIER_NUMA,
    TIER_NVLINK,
    TIER_SPREAD,
)
from gputopo.scheduler.plugins.verdict import MaskVerdict, Reason
from gputopo.scheduler.snapshot import IntArray

NAME: Final = "DynamicResources"


def dra_state(ctx: CycleContext) -> DraState | None:
    return ctx.snapshot.attached(DraState)


def pod_claims(ctx: CycleContext, state: DraState) -> list[PodClaim]:
    return state.pod_claims(ctx.pod, invent_from_templates=state.invent_from_templates)


def node_claims(
    ctx: CycleContext, state: DraState, claims: list[PodClaim], node: Node
) -> list[PodClaim] | str:
    """The pod's claims on this node: its own, plus the claim for its extended resources that
    DRA serves here (those the node does not advertise)."""
    extended = {
        resource: wanted
        for resource, wanted in state.extended_requests(ctx.pod).items()
        if node.allocatable.get(resource, 0) <= 0
    }
    if not extended:
        return claims
    return [*claims, state.extended_claim(ctx.pod, extended)]


def has_dra_work(ctx: CycleContext, state: DraState | None) -> bool:
    if ctx.pod.resource_claims:
        return True
    return state is not None and bool(state.extended_requests(ctx.pod))


def outcome_score(outcome: PodAllocation) -> int:
    allocation = outcome.allocation
    if allocation.level == LEVEL_ALIGNED:
        leftover = allocation.leftover
        points = FIT_POINTS[min(leftover, 4)] if leftover < 8 else 0
        return TIER_ALIGNED + points
    return {LEVEL_NVLINK: TIER_NVLINK, LEVEL_NUMA: TIER_NUMA}.get(allocation.level, TIER_SPREAD)


class DynamicResources:
    name: Final = NAME

    def pre_filter(self, ctx: CycleContext) -> PreFilterResult | None:
        if not ctx.pod.resource_claims:
            return None
        state = dra_state(ctx)
        if state is None or state.unavailable:
            why = state.unavailable if state is not None else None
            return PreFilterResult(
                refusal=f"pod uses DRA resourceClaims, which cannot be allocated here: "
                f"{why or 'no DRA objects are known'}"
            )
        if not state.watched:
            return None  # the extender: kube-scheduler allocates, this plugin has no opinion
        try:
            claims = pod_claims(ctx, state)
        except ClaimProblem as problem:
            return PreFilterResult(refusal=str(problem))
        pinned = {c.claim.allocated_node for c in claims if c.claim.allocated_node}
        if pinned:
            return PreFilterResult(node_names=frozenset(pinned))
        return None

    def filter(self, ctx: CycleContext) -> MaskVerdict | None:
        state = dra_state(ctx)
        if state is None or not state.watched or not has_dra_work(ctx, state):
            return None
        claims = pod_claims(ctx, state)
        masks: dict[str, np.ndarray] = {}
        for slot in ctx.passing():
            node = ctx.snapshot.nodes[int(slot)]
            assert node is not None
            on_node = node_claims(ctx, state, claims, node)
            outcome = (
                on_node if isinstance(on_node, str) else state.allocate(ctx.pod, node, on_node)
            )
            if isinstance(outcome, str):
                mask = masks.get(outcome)
                if mask is None:
                    mask = masks[outcome] = np.zeros(ctx.snapshot.capacity, dtype=np.bool_)
                mask[slot] = True
        if not masks:
            nothing = np.zeros(ctx.snapshot.capacity, dtype=np.bool_)
            return MaskVerdict([(Reason("cannot allocate all claims"), nothing)])
        return MaskVerdict([(Reason(reason), mask) for reason, mask in masks.items()])

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        state = dra_state(ctx)
        if state is None or not state.watched or not has_dra_work(ctx, state):
            return None
        claims = pod_claims(ctx, state)
        scores = np.zeros(len(feasible), dtype=np.int64)
        for i, slot in enumerate(feasible):
            node = ctx.snapshot.nodes[int(slot)]
            assert node is not None
            on_node = node_claims(ctx, state, claims, node)
            if isinstance(on_node, str):
                continue
            outcome = state.allocate(ctx.pod, node, on_node)
            if not isinstance(outcome, str):
                scores[i] = outcome_score(outcome)
        return scores


PLUGIN: Final = DynamicResources()
