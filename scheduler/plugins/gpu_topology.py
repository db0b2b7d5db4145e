"""GpuTopology: place multi-GPU pods inside one NVLink domain and one NUMA node, best fit.

Pods ask through annotations:

* ``gputopo.io/gpu-topology``: ``single-nvlink-domain`` | ``single-numa`` | ``nvlink-and-numa``
* ``gputopo.io/gpu-topology-policy``: ``required`` (a filter) | ``preferred`` (the default; only
  the score)

The filter also refuses, for every GPU pod, a node whose *healthy free* GPUs (or free MIG
devices of the requested profile) are too few — failed GPUs still count in the node's
``nvidia.com/gpu`` allocatable, so NodeResourcesFit alone would place pods on them.

The score (0..100) is a placement tier, then packing terms, then an SLA tie-break. Tiers, by
the best set of free GPUs the node can offer (see `scheduler.gpu_alloc.preferred_allocation`):

    60..96       one NVLink domain and one NUMA node ("aligned"): 60 plus three terms, each
                 by how many GPUs are left over (0 / 1 / 2 / 3 / 4-7 / more):
                 * domain size: GPUs of the group's NVLink domain beyond the request,
                   16/12/8/8/0/0 — small pods go to small domains first, so 1-GPU pods take
                   PCIe GPUs and NVLink pairs before an NVSwitch machine, even a half-used one;
                 * group fit: free GPUs left in the aligned group, 10/8/6/5/2/0 (best fit);
                 * domain packing: free GPUs left in the domain, 10/7/5/4/2/0, and 0 when the
                   pod would be the first in an intact domain of 4+ GPUs larger than it — so a
                   4-GPU pod fills the half-used NVSwitch machine and leaves whole ones whole
    40           the requested scope met otherwise (one NVLink domain across NUMA nodes for
                 single-nvlink-domain or no annotation, one NUMA node for single-numa)
    30/20        one NVLink domain across NUMA nodes / one NUMA node over PCIe otherwise
    0            spread over NUMA nodes and NVLink domains

Among a node's aligned groups the best-scoring one counts. MIG requests score 60 + the group
fit term over the free devices of the profile on one GPU. The node's ``gputopo.io/sla``
(0..1000) adds 0..4 (``sla * 5 // 1001``), so among nodes that place the pod equally well the
higher SLA wins. Pods that request no GPU and no MIG device get no score from this plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.kept_scores import KeptScores
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason
from gputopo.scheduler.snapshot import IntArray

NAME: Final = "GpuTopology"
ANNOTATION_TOPOLOGY: Final = "gputopo.io/gpu-topology"
ANNOTATION_POLICY: Final = "gputopo.io/gpu-topology-policy"

SINGLE_NVLINK_DOMAIN: Final = "single-nvlink-domain"
SINGLE_NUMA: Final = "single-numa"
NVLINK_AND_NUMA: Final = "nvlink-and-numa"
TOPOLOGIES: Final = (SINGLE_NVLINK_DOMAIN, SINGLE_NUMA, NVLINK_AND_NUMA)
REQUIRED: Final = "required"
PREFERRED: Final = "preferred"
POLICIES: Final = (REQUIRED, PREFERRED)

CODE_UNHEALTHY: Final = 1
CODE_NVLINK: Final = 2
CODE_NUMA: Final = 3
CODE_ALIGNED: Final = 4
CODE_MIG: Final = 5
CODE_INVALID: Final = 6
REASONS: Final = {
    CODE_UNHEALTHY: "node(s) didn't have enough healthy free GPUs",
    CODE_NVLINK: "node(s) couldn't fit the GPUs in one NVLink domain",
    CODE_NUMA: "node(s) couldn't fit the GPUs on one NUMA node",
    CODE_ALIGNED: "node(s) couldn't fit the GPUs in one NVLink domain and one NUMA node",
    CODE_MIG: "node(s) didn't have enough free MIG devices of the requested profile",
    CODE_INVALID: "pod's gputopo.io/gpu-topology annotations are invalid",
}
_VERDICT_REASONS: Final = {code: Reason(reason) for code, reason in REASONS.items()}

TIER_SPREAD: Final = 0
TIER_NUMA: Final = 20
TIER_NVLINK: Final = 30
TIER_REQUESTED_SCOPE: Final = 40
TIER_ALIGNED: Final = 60  # plus domain size, group fit and domain packing
# Points for 0, 1, 2, 3 and 4-7 GPUs left over (more: 0).
SIZE_POINTS: Final = (16, 12, 8, 8, 0)  # GPUs of the NVLink domain beyond the request
FIT_POINTS: Final = (10, 8, 6, 5, 2)  # free GPUs left in the aligned group
PACK_POINTS: Final = (10, 7, 5, 4, 2)  # free GPUs left in the domain (0: intact)
# An intact NVLink domain of at least this many GPUs earns no packing points. NVLink pairs are
# left out: group fit already keeps them for 2-GPU pods.
PROTECTED_DOMAIN: Final = 4
TIER_ALIGNED_BEST: Final = 96
SLA_BONUS_MAX: Final = 4

Codes = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class TopologyRequest:
    gpus: int
    migs: dict[str, int]
    scope: str | None
    required: bool
    problem: str | None = None


def request_of(pod: Pod) -> TopologyRequest | None:
    """The pod's GPU request and topology ask; None when it requests no GPU or MIG device."""
    gpus = gpu_alloc.pod_gpu_count(pod)
    migs = gpu_alloc.pod_mig_requests(pod)
    if not gpus and not migs:
        return None
    scope = pod.annotations.get(ANNOTATION_TOPOLOGY)
    policy = pod.annotations.get(ANNOTATION_POLICY, PREFERRED)
    problem = None
    if scope is not None and scope not in TOPOLOGIES:
        problem = f"{ANNOTATION_TOPOLOGY}={scope!r}, expected one of {', '.join(TOPOLOGIES)}"
    elif policy not in POLICIES:
        problem = f"{ANNOTATION_POLICY}={policy!r}, expected one of {', '.join(POLICIES)}"
    return TopologyRequest(gpus, migs, scope, policy == REQUIRED and scope is not None, problem)


def filter_nodes(pod: Pod, allocator: gpu_alloc.GpuAllocator, candidates: IntArray) -> Codes | None:
    """A failure code per node slot (0 = passes) for the ``candidates`` (the nodes that passed
    the filters before this one); None for pods without GPU requests."""
    request = request_of(pod)
    if request is None:
        return None
    codes: Codes = np.zeros(allocator.snapshot.capacity, dtype=np.int8)
    if request.problem is not None:
        codes[candidates] = CODE_INVALID
        return codes
    allocator.refresh(candidates)
    count = request.gpus
    if count:
        short = allocator.free_total[candidates] < count
        if request.required and count > 1:
            failing = np.zeros(len(candidates), dtype=np.int8)
            matrix, code = {
                SINGLE_NVLINK_DOMAIN: (allocator.domain_free, CODE_NVLINK),
                SINGLE_NUMA: (allocator.numa_free, CODE_NUMA),
                NVLINK_AND_NUMA: (allocator.aligned_free, CODE_ALIGNED),
            }[request.scope or NVLINK_AND_NUMA]
            no_fit = allocator.best_leftover(matrix, candidates, count) == gpu_alloc.NO_FIT
            np.putmask(failing, no_fit, code)
            np.putmask(failing, short, CODE_UNHEALTHY)
            codes[candidates] = failing
        else:  # only the nodes short of GPUs fail: write just those
            codes[candidates[short]] = CODE_UNHEALTHY
    if request.migs:
        for index, slot in enumerate(candidates.tolist()):
            if codes[slot]:
                continue
            state = allocator.states.get(slot)
            if state is None or state.layout.source != "annotation":
                continue  # no per-device knowledge: NodeResourcesFit's counts decide
            for resource, amount in request.migs.items():
                if len(state.free_migs(resource)) < amount:
                    codes[candidates[index]] = CODE_MIG
                    break
    return codes


def _step_table(values: tuple[int, int, int, int, int]) -> IntArray:
    """Lookup table for `_steps`: index = leftover clipped to 0..8."""
    return np.array([*values[:4], values[4], values[4], values[4], values[4], 0], dtype=np.int64)


_STEP_TABLES: Final = {
    points: _step_table(points) for points in (SIZE_POINTS, FIT_POINTS, PACK_POINTS)
}


def _steps(leftover: IntArray, values: tuple[int, int, int, int, int]) -> IntArray:
    """`values` for 0 (or fewer), 1, 2, 3 and 4-7 GPUs left over; 0 for 8 or more."""
    table = _STEP_TABLES.get(values)
    if table is None:
        table = _step_table(values)
    tier: IntArray = table[np.minimum(np.maximum(leftover, 0), 8)]
    return tier


def _fit_tier(leftover: IntArray) -> IntArray:
    """Group fit: GPUs left free in the aligned group."""
    return _steps(leftover, FIT_POINTS)


def aligned_scores(allocator: gpu_alloc.GpuAllocator, slots: IntArray, count: int) -> IntArray:
    """Per slot, the best aligned group's 60 + domain size + fit + packing, or -1 where none
    holds `count`."""
    groups = allocator.aligned_free[slots]
    domain_free = allocator.aligned_domain_free[slots]
    domain_size = allocator.aligned_domain_size[slots]
    intact = (domain_free == domain_size) & (domain_size > count)
    intact &= domain_size >= PROTECTED_DOMAIN
    pack = np.where(intact, 0, _steps(domain_free - count, PACK_POINTS))
    size = _steps(domain_size - count, SIZE_POINTS)
    per_group = np.where(
        groups >= count, TIER_ALIGNED + _fit_tier(groups - count) + pack + size, -1
    )
    best: IntArray = per_group.max(axis=1) if per_group.shape[1] else np.full(len(slots), -1)
    return best


def score(pod: Pod, allocator: gpu_alloc.GpuAllocator, feasible: IntArray) -> IntArray | None:
    """Per feasible slot (see the module docstring); None for pods without GPU requests. Whole-
    GPU scores are kept per (count, scope) for the nodes whose GPU summary did not change
    (`KeptScores`); MIG requests read per-device state and are computed every time."""
    request = request_of(pod)
    if request is None or request.problem is not None:
        return None
    allocator.refresh(feasible)
    if request.migs:
        return _scores(request, allocator, feasible)
    memo_key = f"{NAME} {request.scope}"
    return KeptScores.of(allocator.snapshot).scores(
        (NAME, request.gpus, request.scope),
        feasible,
        allocator.summary_version,
        lambda slots: (
            _scores(request, allocator, slots)
            if len(slots) > _FEW
            else np.array(
                [_slot_score(request, allocator, s, memo_key) for s in slots.tolist()],
                dtype=np.int64,
            )
        ),
    )


# Up to this many nodes to (re)score, `_slot_score` in plain Python beats `_scores`' thirty
# array operations (a cycle usually finds one or two nodes changed since the last of its shape).
_FEW: Final = 8


def _step(leftover: int, values: tuple[int, int, int, int, int]) -> int:
    """`_steps` for one leftover."""
    return int(_STEP_TABLES[values][min(max(leftover, 0), 8)])


def _slot_score(
    request: TopologyRequest, allocator: gpu_alloc.GpuAllocator, slot: int, memo_key: str
) -> int:
    """`_scores` of one slot for a whole-GPU request (no MIG), without arrays; a property test
    holds the two equal. The tier is a function of the slot's summary, so it is kept in the
    memo of the layout summarised, under (``memo_key``: the plugin and the scope, the count,
    the free GPUs): nodes of one model with the same GPUs free score alike."""
    summarised = allocator.summary_keys.get(slot)
    tier: int | None
    if summarised is None:
        tier = _slot_tier(request, allocator, slot)
    else:
        layout, bits = summarised
        key = (memo_key, request.gpus, bits)
        tier = layout.memo.get(key)
        if tier is None:
            tier = _slot_tier(request, allocator, slot)
            layout.remember(key, tier)
    return tier + int(allocator.sla[slot]) * (SLA_BONUS_MAX + 1) // 1001


def _slot_tier(request: TopologyRequest, allocator: gpu_alloc.GpuAllocator, slot: int) -> int:
    """`_slot_score` without the SLA bonus: read from the slot's group summary alone."""
    count = request.gpus
    best_aligned = -1
    for free, domain_free, domain_size in zip(
        allocator.aligned_free[slot].tolist(),
        allocator.aligned_domain_free[slot].tolist(),
        allocator.aligned_domain_size[slot].tolist(),
        strict=True,
    ):
        if free < count:
            continue
        intact = domain_free == domain_size and domain_size > count
        intact = intact and domain_size >= PROTECTED_DOMAIN
        pack = 0 if intact else _step(domain_free - count, PACK_POINTS)
        value = (
            TIER_ALIGNED
            + _step(free - count, FIT_POINTS)
            + pack
            + _step(domain_size - count, SIZE_POINTS)
        )
        best_aligned = max(best_aligned, value)
    scope = request.scope
    if best_aligned >= 0:
        tier = best_aligned
    else:
        fits_domain = count > 1 and any(
            free >= count for free in allocator.domain_free[slot].tolist()
        )
        fits_numa = count > 1 and any(free >= count for free in allocator.numa_free[slot].tolist())
        if scope == SINGLE_NUMA and fits_numa:
            tier = TIER_REQUESTED_SCOPE  # meeting the ask beats a cross-NUMA NVLink domain
        elif fits_domain:
            tier = TIER_REQUESTED_SCOPE if scope in (None, SINGLE_NVLINK_DOMAIN) else TIER_NVLINK
        elif fits_numa:
            tier = TIER_NUMA
        else:
            tier = TIER_SPREAD
    return tier


def _scores(
    request: TopologyRequest, allocator: gpu_alloc.GpuAllocator, feasible: IntArray
) -> IntArray:
    no_fit = gpu_alloc.NO_FIT
    tier = np.full(len(feasible), TIER_ALIGNED_BEST, dtype=np.int64)
    count = request.gpus
    if count:
        aligned_score = aligned_scores(allocator, feasible, count)
        aligned = np.where(aligned_score >= 0, 0, no_fit)
        domain = allocator.best_leftover(allocator.domain_free, feasible, count)
        numa = allocator.best_leftover(allocator.numa_free, feasible, count)
        scope = request.scope
        domain_tier = TIER_REQUESTED_SCOPE if scope in (None, SINGLE_NVLINK_DOMAIN) else TIER_NVLINK
        numa_tier = TIER_REQUESTED_SCOPE if scope == SINGLE_NUMA else TIER_NUMA
        if count == 1:
            domain = numa = np.full(len(feasible), no_fit, dtype=np.int64)
        tier = np.where(
            aligned != no_fit,
            aligned_score,
            np.where(
                domain != no_fit,
                domain_tier,
                np.where(numa != no_fit, numa_tier, TIER_SPREAD),
            ),
        )
        if scope == SINGLE_NUMA:
            # Meeting the ask beats a cross-NUMA NVLink domain.
            tier = np.where((aligned == no_fit) & (numa != no_fit), TIER_REQUESTED_SCOPE, tier)
    if request.migs:
        tier = np.minimum(tier, _mig_tiers(allocator, feasible, request.migs))
    bonus = allocator.sla[feasible] * (SLA_BONUS_MAX + 1) // 1001
    return np.asarray(tier + bonus, dtype=np.int64)


def placement_class(scores: IntArray) -> IntArray:
    """The tier class of `score` results: 6 aligned (60..100), 4 the requested scope, 3 one
    NVLink domain, 2 one NUMA node, 0 spread (the SLA bonus never crosses a ten)."""
    classes: IntArray = np.minimum(scores // 10, TIER_ALIGNED // 10)
    return classes


def _mig_tiers(
    allocator: gpu_alloc.GpuAllocator, feasible: IntArray, migs: dict[str, int]
) -> IntArray:
    tiers = np.full(len(feasible), TIER_REQUESTED_SCOPE, dtype=np.int64)
    for index, slot in enumerate(feasible.tolist()):
        state = allocator.states.get(slot)
        if state is None or state.layout.source != "annotation":
            continue  # unknown layout: neutral
        worst = TIER_ALIGNED_BEST
        for resource, amount in migs.items():
            per_gpu: dict[int, int] = {}
            for mig in state.free_migs(resource):
                per_gpu[mig.gpu] = per_gpu.get(mig.gpu, 0) + 1
            leftovers = [free - amount for free in per_gpu.values() if free >= amount]
            if leftovers:
                fit = TIER_ALIGNED + int(_fit_tier(np.array([min(leftovers)], dtype=np.int64))[0])
            else:
                fit = TIER_SPREAD
            worst = min(worst, fit)
        tiers[index] = worst
    return tiers


def dra_served(ctx: CycleContext) -> IntArray | None:
    """Slots where DRA serves the pod's ``nvidia.com/gpu`` (a DeviceClass maps it and the node
    does not advertise it): there the device plugin's prediction does not apply."""
    dra = ctx.snapshot.attached(DraState)
    if dra is None or not ctx.pod.requests.get(gpu_alloc.GPU_RESOURCE):
        return None
    if dra.extended_class(gpu_alloc.GPU_RESOURCE) is None:
        return None
    allocatable, _ = ctx.snapshot.resource_arrays(gpu_alloc.GPU_RESOURCE)
    served: IntArray = np.flatnonzero(allocatable == 0).astype(np.int64)
    return served


class GpuTopology:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        if not gpu_alloc.pod_gpu_count(ctx.pod) and not gpu_alloc.pod_mig_requests(ctx.pod):
            return None  # before `passing()`, which costs an array operation over every node
        codes = filter_nodes(ctx.pod, ctx.gpus, ctx.passing())
        if codes is None:
            return None
        served = dra_served(ctx)
        if served is not None:
            codes[served] = 0  # DynamicResources judges these nodes
        return CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        scores = score(ctx.pod, ctx.gpus, feasible)
        served = dra_served(ctx)
        if scores is None or served is None:
            return scores
        dra_scores = ctx.scores.get("DynamicResources")
        on_dra = np.isin(feasible, served)
        scores[on_dra] = dra_scores[on_dra] if dra_scores is not None else 0
        return scores


PLUGIN: Final = GpuTopology()
