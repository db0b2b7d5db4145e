"""NodeResourcesBalancedAllocation: prefer nodes whose resource fractions stay close.

Score = (1 - standard deviation of requested/allocatable fractions) x 100, over the profile's
resources, with the incoming pod counted. Skipped for pods that request none of them
(BestEffort), as kube-scheduler does, so they do not all pile onto one node.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.kept_scores import KeptNodeScores
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE
from gputopo.scheduler.quantity import CPU, EPHEMERAL_STORAGE, MEMORY
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import ClusterSnapshot, IntArray

NAME: Final = "NodeResourcesBalancedAllocation"

FloatArray = npt.NDArray[np.float64]


def score(
    pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, profile: SchedulerProfile
) -> IntArray | None:
    requests = pod.requests
    for name, _ in profile.balanced_resources:
        if requests.get(name, 0):
            break
    else:
        return None  # requests none of them (BestEffort)
    return _requesting_score(pod, snapshot, feasible, profile)


def _requesting_score(
    pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, profile: SchedulerProfile
) -> IntArray:
    """`score` of a pod that requests one of the profile's resources."""
    requests = pod.requests
    size = len(feasible)
    fractions: list[FloatArray] = []
    # Per resource, the feasible nodes that have it; None: all of them (no masking needed).
    present: list[npt.NDArray[np.bool_] | None] = []
    for name, _ in profile.balanced_resources:
        amount = requests.get(name, 0)
        if amount == 0 and name not in (CPU, MEMORY, EPHEMERAL_STORAGE):
            continue
        node_allocatable, node_requested = snapshot.resource_arrays(name)
        allocatable = node_allocatable[feasible]
        requested = node_requested[feasible]
        requested += amount
        has = None if snapshot.everywhere(name) else allocatable > 0
        if has is None or np.count_nonzero(has) == size:
            fraction = requested / allocatable
            fractions.append(np.minimum(fraction, 1.0, out=fraction))
            has = None
        else:
            fraction = np.minimum(requested / np.where(has, allocatable, 1), 1.0)
            fractions.append(np.where(has, fraction, 0.0))
        present.append(has)
    if not fractions:
        return np.full(size, MAX_NODE_SCORE, dtype=np.int64)
    if len(fractions) == 2:
        # kube-scheduler's float64 steps in its order, in place: (1 - |f0 - f1| / 2) x 100,
        # truncated (astype truncates toward zero; the value is never negative).
        std2: FloatArray = fractions[0] - fractions[1]
        np.abs(std2, out=std2)
        std2 /= 2
        masks = [has for has in present if has is not None]
        if masks:  # a node that lacks either resource scores 0 deviation
            both = masks[0] if len(masks) == 1 else masks[0] & masks[1]
            std2 = np.where(both, std2, 0.0)
        np.subtract(1, std2, out=std2)
        std2 *= MAX_NODE_SCORE
        scores: IntArray = std2.astype(np.int64)
        return scores
    every: list[npt.NDArray[np.bool_]] = [
        np.ones(size, dtype=np.bool_) if has is None else has for has in present
    ]
    counts = np.sum(every, axis=0)
    first = np.full(size, np.nan)
    second = np.full(size, np.nan)
    total = np.zeros(size)
    for fraction, has in zip(fractions, every, strict=True):
        take_first = has & np.isnan(first)
        take_second = has & ~take_first & np.isnan(second)
        first = np.where(take_first, fraction, first)
        second = np.where(take_second, fraction, second)
        total = total + np.where(has, fraction, 0.0)
    std = np.zeros(size)
    two = counts == 2
    std = np.where(two, np.abs((first - second) / 2), std)
    many = counts > 2
    if many.any():
        mean = total / np.maximum(counts, 1)
        squares = np.zeros(size)
        for fraction, has in zip(fractions, every, strict=True):
            squares = squares + np.where(has, (fraction - mean) * (fraction - mean), 0.0)
        std = np.where(many, np.sqrt(squares / np.maximum(counts, 1)), std)
    return np.trunc((1 - std) * MAX_NODE_SCORE).astype(np.int64)


def slot_score(pod: Pod, snapshot: ClusterSnapshot, slot: int, profile: SchedulerProfile) -> int:
    """`score` of one live slot, without arrays for the usual two resources (a property test
    holds the two equal); for a pod that requests one of them."""
    requests = pod.requests
    fractions: list[float] = []
    present = True
    for name, _ in profile.balanced_resources:
        amount = requests.get(name, 0)
        if amount == 0 and name not in (CPU, MEMORY, EPHEMERAL_STORAGE):
            continue
        node_allocatable, node_requested = snapshot.resource_arrays(name)
        allocatable = node_allocatable.item(slot)
        if allocatable > 0:
            fractions.append(min((node_requested.item(slot) + amount) / allocatable, 1.0))
        else:
            fractions.append(0.0)
            present = False
    if len(fractions) != 2:  # one, or three and more: the arrays'
        return int(_requesting_score(pod, snapshot, np.array([slot], dtype=np.int64), profile)[0])
    # `score`'s float64 steps in its order: (1 - |f0 - f1| / 2) x 100, truncated
    deviation = abs(fractions[0] - fractions[1]) / 2 if present else 0.0
    return int((1 - deviation) * MAX_NODE_SCORE)


class NodeResourcesBalancedAllocation:
    name: Final = NAME

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        """`score`, kept for every node per pod shape (`KeptNodeScores`)."""
        pod, snapshot, profile = ctx.pod, ctx.snapshot, ctx.profile
        if not KeptNodeScores.worth_asking(snapshot, feasible):
            return score(pod, snapshot, feasible, profile)
        requests = pod.requests
        amounts = tuple(requests.get(name, 0) for name, _ in profile.balanced_resources)
        if not any(amounts):
            return None  # requests none of them (BestEffort)
        return KeptNodeScores.of(snapshot).scores(
            (NAME, profile.balanced_resources, amounts),
            feasible,
            lambda slots: _requesting_score(pod, snapshot, slots, profile),
            lambda slot: slot_score(pod, snapshot, slot, profile),
        )


PLUGIN: Final = NodeResourcesBalancedAllocation()
