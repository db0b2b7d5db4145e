"""NodeResourcesFit: requests must fit allocatable minus what assigned pods request.

Filter order and wording follow kube-scheduler's `fitsRequest`: the pod count first
("Too many pods"), then cpu, memory, ephemeral-storage, then extended resources; a node can fail
several at once and each is reported. The score is LeastAllocated (or MostAllocated) over the
profile's resources, using kube-scheduler's non-zero defaults (100m CPU, 200Mi memory) for
containers that request nothing.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.kept_scores import KeptNodeScores
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE
from gputopo.scheduler.plugins.verdict import MaskVerdict, Reason
from gputopo.scheduler.quantity import CPU, EPHEMERAL_STORAGE, MEMORY
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray

NAME: Final = "NodeResourcesFit"
REASON_TOO_MANY_PODS: Final = "Too many pods"

_FIRST: Final = (CPU, MEMORY, EPHEMERAL_STORAGE)
_TOO_MANY_PODS: Final = Reason(REASON_TOO_MANY_PODS)


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


def requested_resources(pod: Pod) -> list[str]:
    """The pod's non-zero requests in kube-scheduler's checking order."""
    first = [name for name in _FIRST if name in pod.requests]
    return first + sorted(name for name in pod.requests if name not in _FIRST)


_INSUFFICIENT: dict[str, Reason] = {}


def _insufficient_reason(resource: str) -> Reason:
    reason = _INSUFFICIENT.get(resource)
    if reason is None:
        if len(_INSUFFICIENT) > 1024:
            _INSUFFICIENT.clear()
        reason = _INSUFFICIENT[resource] = Reason(insufficient(resource))
    return reason


def filter_nodes(pod: Pod, snapshot: ClusterSnapshot) -> MaskVerdict:
    """Per reason (too many pods, then each resource short), the node slots failing it.

    An extended resource a DeviceClass maps (``extendedResourceName``) is not checked on nodes
    that do not advertise it: DRA serves it there (DynamicResources), as in kube-scheduler."""
    failing: list[tuple[Reason, BoolArray]] = [(_TOO_MANY_PODS, snapshot.pod_room < 1)]
    dra = snapshot.attached(DraState)
    for name in requested_resources(pod):
        allocatable, free = snapshot.free_arrays(name)
        short = free < pod.requests[name]
        if dra is not None and "/" in name and dra.extended_class(name) is not None:
            short = short & (allocatable > 0)
        failing.append((_insufficient_reason(name), short))
    return MaskVerdict(failing)


def score(
    pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, profile: SchedulerProfile
) -> IntArray:
    """LeastAllocated (or MostAllocated) per feasible slot: per resource the share left free
    (or used) with the pod, x 100, averaged by the profile's weights over the resources the
    node has (allocatable > 0)."""
    total = np.zeros(len(feasible), dtype=np.int64)
    weight_sum: IntArray | int = 0
    most = profile.fit_strategy == "MostAllocated"
    for name, weight in profile.fit_resources:
        if name == CPU:
            allocatable = snapshot.allocatable[CPU][feasible]
            requested = snapshot.nonzero_cpu[feasible] + pod.nonzero_cpu
        elif name == MEMORY:
            allocatable = snapshot.allocatable[MEMORY][feasible]
            requested = snapshot.nonzero_memory[feasible] + pod.nonzero_memory
        else:
            amount = pod.requests.get(name, 0)
            if amount == 0 and name != EPHEMERAL_STORAGE:
                continue  # extended resources count only for pods that request them
            node_allocatable, node_requested = snapshot.resource_arrays(name)
            allocatable = node_allocatable[feasible]
            requested = node_requested[feasible] + amount
        if snapshot.everywhere(name) or (len(allocatable) and allocatable.min() > 0):
            # every node has it: no masking
            if most:
                resource_score = np.minimum(requested, allocatable) * MAX_NODE_SCORE
            else:  # nothing left when the request exceeds allocatable
                resource_score = np.maximum(allocatable - requested, 0) * MAX_NODE_SCORE
            resource_score //= allocatable
            total += resource_score * weight if weight != 1 else resource_score
            weight_sum = weight_sum + weight
            continue
        present = allocatable > 0
        denominator = np.where(present, allocatable, 1)
        if most:
            resource_score = np.minimum(requested, allocatable) * MAX_NODE_SCORE // denominator
        else:
            resource_score = np.maximum(allocatable - requested, 0) * MAX_NODE_SCORE // denominator
        total += np.where(present, resource_score * weight, 0)
        weight_sum = weight_sum + np.where(present, weight, 0)
    if isinstance(weight_sum, int):
        if weight_sum == 0:
            return np.zeros(len(feasible), dtype=np.int64)
        total //= weight_sum
        return total
    out: IntArray = np.where(weight_sum > 0, total // np.maximum(weight_sum, 1), 0)
    return out


def slot_score(pod: Pod, snapshot: ClusterSnapshot, slot: int, profile: SchedulerProfile) -> int:
    """`score` of one live slot, without arrays (a property test holds the two equal)."""
    total = weight_sum = 0
    most = profile.fit_strategy == "MostAllocated"
    for name, weight in profile.fit_resources:
        if name == CPU:
            allocatable = snapshot.allocatable[CPU].item(slot)
            requested = snapshot.nonzero_cpu.item(slot) + pod.nonzero_cpu
        elif name == MEMORY:
            allocatable = snapshot.allocatable[MEMORY].item(slot)
            requested = snapshot.nonzero_memory.item(slot) + pod.nonzero_memory
        else:
            amount = pod.requests.get(name, 0)
            if amount == 0 and name != EPHEMERAL_STORAGE:
                continue
            node_allocatable, node_requested = snapshot.resource_arrays(name)
            allocatable = node_allocatable.item(slot)
            requested = node_requested.item(slot) + amount
        if allocatable <= 0:
            continue  # the node lacks it: not weighed
        if most:
            resource_score = min(requested, allocatable) * MAX_NODE_SCORE // allocatable
        else:
            resource_score = max(allocatable - requested, 0) * MAX_NODE_SCORE // allocatable
        total += resource_score * weight
        weight_sum += weight
    return total // weight_sum if weight_sum > 0 else 0


def shape_of(pod: Pod, profile: SchedulerProfile) -> tuple[object, ...]:
    """What `score` reads of the pod and the profile: pods alike here score every node alike."""
    amounts = tuple(
        pod.nonzero_cpu
        if name == CPU
        else pod.nonzero_memory
        if name == MEMORY
        else pod.requests.get(name, 0)
        for name, _ in profile.fit_resources
    )
    return (NAME, profile.fit_strategy, profile.fit_resources, amounts)


class NodeResourcesFit:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> MaskVerdict:
        return filter_nodes(ctx.pod, ctx.snapshot)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray:
        """`score`, kept for every node per pod shape (`KeptNodeScores`)."""
        pod, snapshot, profile = ctx.pod, ctx.snapshot, ctx.profile
        if not KeptNodeScores.worth_asking(snapshot, feasible):
            return score(pod, snapshot, feasible, profile)
        return KeptNodeScores.of(snapshot).scores(
            shape_of(pod, profile),
            feasible,
            lambda slots: score(pod, snapshot, slots, profile),
            lambda slot: slot_score(pod, snapshot, slot, profile),
        )


PLUGIN: Final = NodeResourcesFit()
