"""GPU reservations: hold one node for a large GPU pod that fits nowhere, until its GPUs free up.

Scoring keeps whole NVLink domains free while it can, but once every large machine holds a few
smaller pods, an 8-GPU pod waits while the freed GPUs of those machines go, one by one, to the
next small pods. A reservation stops that: the waiting pod is nominated to one node
(``status.nominatedNodeName``, a placement expectation since KEP-5278, set without evicting
anything) and the runtime's existing nominated-pod accounting (`reserve_nominated`, kube-scheduler's
semantics) counts it on that node in every other cycle of a pod of lower or equal priority, so
those pods are steered to other nodes, or wait when nothing else fits. Higher-priority pods do not
see it and still win.

A pod gets a reservation only when all of these hold:

1. it requests at least ``reservation.minGpus`` GPUs (profile, default 8; 0 switches this off) —
   the requests that need a whole NVLink domain of an NVSwitch machine and so fragment;
2. it fits on no node now (the cycle failed) and preemption has no plan for it;
3. the nodes it could use at all (taints, affinity and the like allow it) have at least that many
   free GPUs in total: it waits because they are scattered, not because they are taken;
4. some node without another pod's nomination would take it once that node's current GPU pods
   finished: every filter passes on the node with those pods taken out (taints, affinity,
   capacity, topology: nothing a finishing pod cannot cure is overlooked).

Among such nodes the one with the fewest GPUs still held wins (the soonest to free, as far as a
scheduler that does not know lifetimes can tell), then the node name. One reservation per node,
one node per pod. It ends when the pod binds or is deleted, or after ``reservation.ttlSeconds``
(default 300): the runtime then clears the nomination (so the room goes back to everyone) and
the pod may not reserve again for as long, so a hold is at most half of any stretch of time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import Pod, parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import ClusterSnapshot

JsonDict = dict[str, Any]

MESSAGE_FORMAT: Final = "reservation: nominated node {node} reserved until its GPUs free up."


def reservation_message(fit_message: str, node: str) -> str:
    """The FailedScheduling message with the reservation said after kube's FitError text."""
    return f"{fit_message} {MESSAGE_FORMAT.format(node=node)}"


@dataclass(frozen=True, slots=True)
class NodeChoice:
    node: str
    held_gpus: int  # GPUs still held on the node when it was chosen


def choose_node(
    pod: Pod,
    snapshot: ClusterSnapshot,
    profile: SchedulerProfile,
    taken: Collection[str] = (),
) -> NodeChoice | None:
    """The node to hold for ``pod``, or None (see the module docstring for the rule).

    Call with the snapshot held still (the runtime's cache lock); it is left as it was, GPU
    bookkeeping included. ``taken``: nodes nominated for other pods.
    """
    count = gpu_alloc.pod_gpu_count(pod)
    if profile.reservation_min_gpus <= 0 or count < profile.reservation_min_gpus:
        return None
    result = schedule_one(pod, snapshot, profile)
    if result.node is not None:
        return None
    allocator = gpu_alloc.GpuAllocator.of(snapshot)
    allocator.refresh(np.flatnonzero(snapshot.alive).astype(np.int64))
    usable_free = 0  # free GPUs on nodes the pod could use at all
    candidates: list[tuple[int, str, int]] = []
    for name, verdict in result.diagnosis().items():
        if verdict.unresolvable:
            continue
        slot = snapshot.slot_of(name)
        state = allocator.states.get(slot) if slot is not None else None
        if slot is None or state is None:
            continue  # no GPU layout
        free = int(allocator.free_total[slot])
        usable_free += free
        healthy = sum(1 for gpu in state.layout.gpus if gpu.healthy)
        held = healthy - free
        if name not in taken and healthy >= count and held > 0:
            candidates.append((held, name, slot))
    if usable_free < count:
        return None  # the usable part of the cluster is full, not fragmented
    for held, name, slot in sorted(candidates):
        if _fits_once_gpu_pods_finish(pod, snapshot, profile, name, slot):
            return NodeChoice(name, held)
    return None


def _fits_once_gpu_pods_finish(
    pod: Pod, snapshot: ClusterSnapshot, profile: SchedulerProfile, node: str, slot: int
) -> bool:
    """Whether ``pod`` passes every filter on ``node`` with the node's GPU pods taken out.

    Pods assumed by a binding in flight stay (as in preemption). The node's GPU bookkeeping is
    put back as it was: re-adding the pods would recompute which GPUs each holds from scratch,
    which need not be what the device plugin gave them.
    """
    allocator = gpu_alloc.GpuAllocator.of(snapshot)
    saved = allocator.states.get(slot)
    if saved is None:
        return False
    saved = saved.copy()
    removed = [
        entry.pod
        for key, entry in list(snapshot.node_pods[slot].items())
        if not snapshot.is_assumed(key)
        and (gpu_alloc.pod_gpu_count(entry.pod) or gpu_alloc.pod_mig_requests(entry.pod))
    ]
    for gpu_pod in removed:
        snapshot.remove_pod(gpu_pod.key)
    try:
        verdict = schedule_one(pod, snapshot, profile).diagnosis().get(node)
        return verdict is not None and verdict.feasible
    finally:
        for gpu_pod in removed:
            snapshot.add_pod(gpu_pod)
        allocator.states[slot] = saved
        allocator.refresh(np.array([slot], dtype=np.int64))


@dataclass(frozen=True, slots=True)
class Reservation:
    node: str
    expires_at: float


class Reservations:
    """Which pending pods hold a node, until when; and which may not hold one again yet.

    State only (no API calls): the runtime patches ``status.nominatedNodeName`` on what this
    decides. Used from the scheduling loop's thread only; `reserve` under the cache lock.
    """

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        profile: SchedulerProfile,
        clock: Callable[[], float],
    ) -> None:
        self.snapshot = snapshot
        self.profile = profile
        self.clock = clock
        self.ttl_s = float(profile.reservation_ttl_s)
        self._held: dict[str, Reservation] = {}
        self._cooldown: dict[str, float] = {}  # pod key -> may reserve again from then

    def held(self) -> dict[str, str]:
        """Pod key -> node of every reservation made and not yet expired or released."""
        return {key: held.node for key, held in self._held.items()}

    def node_of(self, key: str) -> str | None:
        held = self._held.get(key)
        return held.node if held is not None else None

    def reserve(self, pod_json: JsonDict, taken: Collection[str]) -> str | None:
        """The node held for this unschedulable pod (kept, or newly chosen), else None."""
        try:
            pod = parse_pod(pod_json)
        except SchedulerInputError:
            return None
        now = self.clock()
        held = self._held.get(pod.key)
        if held is not None and self.snapshot.slot_of(held.node) is None:
            del self._held[pod.key]  # the node is gone: choose again
        elif held is not None:
            return held.node if now < held.expires_at else None  # `expire` clears it
        until = self._cooldown.get(pod.key)
        if until is not None and now < until:
            return None
        others = {other.node for key, other in self._held.items() if key != pod.key}
        choice = choose_node(pod, self.snapshot, self.profile, set(taken) | others)
        if choice is None:
            return None
        self._held[pod.key] = Reservation(choice.node, now + self.ttl_s)
        return choice.node

    def release(self, key: str) -> None:
        """The pod's nomination is someone else's now (a preemption plan), or it is gone."""
        self._held.pop(key, None)

    def expire(self, still_pending: Callable[[str], bool]) -> list[tuple[str, str]]:
        """Drop reservations that ran out or whose pod left the queue.

        Returns (pod key, node) of pending pods whose time ran out: their nomination is to be
        cleared, and they may not reserve again for ``ttl_s``.
        """
        now = self.clock()
        expired: list[tuple[str, str]] = []
        for key, held in list(self._held.items()):
            if not still_pending(key):
                del self._held[key]
            elif now >= held.expires_at:
                del self._held[key]
                self._cooldown[key] = now + self.ttl_s
                expired.append((key, held.node))
        for key, until in list(self._cooldown.items()):
            if now >= until or not still_pending(key):
                del self._cooldown[key]
        return expired
