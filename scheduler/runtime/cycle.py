"""One scheduling cycle: a pending pod in, a node assumed and a bind queued, or a reason out.

Cycles run one at a time on the scheduling loop, as in kube-scheduler, so each decision sees
every earlier assumption. A pod that fits nowhere may get a preemption plan
(`scheduler/preemption.py` plans, the binder carries it out) or, when large, a node held for it
(`scheduler/reservation.py` decides, the binder nominates); gang members go through the gang
hooks (`runtime/gang_hooks.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gputopo.scheduler.gang import group_key_of
from gputopo.scheduler.preemption import (
    POLICY_NEVER_MESSAGE,
    TERMINATING_MESSAGE,
    DisruptionBudget,
    Preemption,
    PreemptionOutcome,
    may_preempt,
    reserve_nominated,
)
from gputopo.scheduler.reservation import Reservations, reservation_message
from gputopo.scheduler.runtime.binder import Binder
from gputopo.scheduler.runtime.cache import ClusterCache, node_name_of
from gputopo.scheduler.runtime.core_adapter import SchedulingFramework
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.gang_hooks import GangHooks
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.metrics import SchedulerMetrics
from gputopo.scheduler.runtime.pending import PendingPods, nominated_node
from gputopo.scheduler.runtime.priorities import PriorityClasses
from gputopo.scheduler.runtime.queue import QueuedPod, SchedulingQueue, pod_key

log = logging.getLogger("gputopo.scheduler.runtime")

PDBS_PATH = "/apis/policy/v1/poddisruptionbudgets"


class SchedulingCycle:
    """`schedule_one` for each popped pod; `expire_reservations` once per loop turn."""

    def __init__(
        self,
        api: KubeApi,
        framework: SchedulingFramework,
        cache: ClusterCache,
        queue: SchedulingQueue,
        pending: PendingPods,
        priorities: PriorityClasses,
        gangs: GangHooks,
        binder: Binder,
        recorder: EventRecorder,
        metrics: SchedulerMetrics,
        *,
        preemption: Preemption | None,
        reservations: Reservations | None,
        is_leader: Callable[[], bool],
    ) -> None:
        self.api = api
        self.framework = framework
        self.cache = cache
        self.queue = queue
        self.pending = pending
        self.priorities = priorities
        self.gangs = gangs
        self.binder = binder
        self.recorder = recorder
        self.metrics = metrics
        self.preemption = preemption
        self.reservations = reservations
        self.is_leader = is_leader

    def schedule_one(self, queued: QueuedPod, cycle: int) -> None:
        pod = self.pending.get(queued.key)
        if pod is None:
            self.queue.done(queued.key)
            return
        if not self.is_leader():
            self.queue.requeue_error(queued)
            return
        queued.pod = pod
        group_key = group_key_of(pod)
        if group_key is not None:
            refusal = self.gangs.prefilter(queued.key, group_key)
            if refusal is not None:
                self.metrics.attempts.labels("unschedulable").inc()
                self.queue.requeue_unschedulable(queued, cycle)
                self.recorder.failed_scheduling(pod, refusal)
                return
        started = time.perf_counter()
        nominated = self._nominated_besides(pod)
        snapshot = self.preemption.snapshot if self.preemption is not None else None
        with self.cache.lock:
            reserved: list[str] = []
            if snapshot is not None and nominated:  # room a preemption freed stays theirs
                reserved = reserve_nominated(snapshot, nominated)
            try:
                if group_key is None:
                    placement = self.framework.schedule(pod)
                else:  # kept to the group's topology domain when it asks for one
                    placement = self.gangs.schedule(pod, group_key)
            finally:
                if snapshot is not None:
                    for key in reserved:
                        snapshot.forget(key)
            if placement.node_name is not None:
                self.cache.assume(pod, placement.node_name)
        self.metrics.scheduling_duration.observe(time.perf_counter() - started)
        if placement.node_name is None and group_key is not None:
            self.gangs.unschedulable(group_key, queued, placement.message)
        if placement.node_name is None:
            self.metrics.attempts.labels("unschedulable").inc()
            log.info(
                "pod unschedulable",
                extra={"pod": queued.key, "reason_message": placement.message},
            )
            room_coming = group_key is None and self._room_on_its_way(pod)
            outcome = self._plan_preemption(pod, room_coming) if group_key is None else None
            held = None
            # A pod nominated to a node by someone else (a rebalance move, whose evictions may
            # not even have started) or whose lower-priority pods are terminating there (room
            # being made for it) keeps that nomination: no reservation elsewhere, whatever its
            # preemptionPolicy.
            if (
                group_key is None
                and (outcome is None or outcome.plan is None)
                and not room_coming
                and not self._nominated_by_another(pod)
            ):
                held = self._reserve(pod)
            self.queue.requeue_unschedulable(queued, cycle)
            message = (
                placement.message if outcome is None else outcome.fit_message(placement.message)
            )
            if held is not None:
                message = reservation_message(message, held)
            self.recorder.failed_scheduling(pod, message)
            if outcome is not None and outcome.plan is not None:
                if self.reservations is not None:
                    self.reservations.release(queued.key)
                self.binder.submit_preemption(pod, outcome.plan)
            elif held is not None:
                if nominated_node(pod) != held:
                    self.binder.submit_nomination(pod, held)
            elif outcome is not None and outcome.clear_nomination and nominated_node(pod):
                self.binder.submit_nomination(pod, None)  # as kube-scheduler
            return
        if group_key is not None:
            ready = self.gangs.held(group_key, queued, placement.node_name)
            for member, node in ready or ():
                self.binder.submit_bind(member, node)
            return  # None: the member holds its place (assumed, in flight) until the gang is whole
        self.binder.submit_bind(queued, placement.node_name)

    # -- preemption (scheduler/preemption.py plans; the binder carries the plan out) ---------

    def _nominated_besides(self, pod: JsonDict) -> list[tuple[JsonDict, str]]:
        """Pending pods nominated (a preemption, a reservation), of at least ``pod``'s priority."""
        # Reservations count from the moment they are made, before their nomination is watched.
        held = self.reservations.held() if self.reservations is not None else {}
        if not self.pending.any_nominated() and not held:
            return []  # the common case: nothing to reserve, no lock, no priority lookup
        key, priority = pod_key(pod), self.priorities.priority_of(pod)
        candidates = self.pending.nominations(key, held)
        return [
            (other, node)
            for other, node in candidates
            if node and self.priorities.priority_of(other) >= priority
        ]

    def _plan_preemption(self, pod: JsonDict, room_coming: bool) -> PreemptionOutcome | None:
        """None when preemption is off; else a plan or kube-scheduler's reason for none
        (``room_coming``: `_room_on_its_way`, computed once by the caller)."""
        if self.preemption is None:
            return None
        if not may_preempt(pod):
            return PreemptionOutcome(None, POLICY_NEVER_MESSAGE)
        if room_coming:
            return PreemptionOutcome(None, TERMINATING_MESSAGE)  # the room is being freed
        priority_of = self.priorities.priority_of
        priority = priority_of(pod)
        bound = self.cache.bound_pods()
        listed: list[JsonDict] = []
        if any(priority_of(other) < priority for other in bound):  # else: no API call
            try:
                listed = self.api.request("GET", PDBS_PATH).get("items") or []
            except (KubeApiError, OSError) as err:
                log.warning("cannot list PodDisruptionBudgets", extra={"error": str(err)})
        budgets = [DisruptionBudget.from_json(pdb) for pdb in listed]
        with self.cache.lock:
            return self.preemption.evaluate(pod, bound, priority_of, budgets)

    def _room_on_its_way(self, pod: JsonDict) -> bool:
        """Whether a pod of lower priority is terminating on the node ``pod`` is nominated to
        (kube-scheduler's check before preempting again: the room is being freed for it)."""
        nominated = nominated_node(pod)
        if not nominated:
            return False
        priority_of = self.priorities.priority_of
        priority = priority_of(pod)
        return any(
            node_name_of(other) == nominated
            and other["metadata"].get("deletionTimestamp")
            and priority_of(other) < priority
            for other in self.cache.bound_pods()
        )

    def _nominated_by_another(self, pod: JsonDict) -> bool:
        """Whether ``pod`` is nominated to a node its reservation did not choose (then the
        reservation, if any, is let go: the nomination holds the room instead)."""
        nominated = nominated_node(pod)
        if not nominated or self.reservations is None:
            return False
        key = pod_key(pod)
        with self.cache.lock:
            own = self.reservations.node_of(key)
            if own is not None and own != nominated:
                self.reservations.release(key)
        return own != nominated

    # -- reservations (scheduler/reservation.py decides; the binder nominates and clears) ----

    def _reserve(self, pod: JsonDict) -> str | None:
        """The node held for this large unschedulable pod, if any (one pod per node)."""
        if self.reservations is None:
            return None
        key = pod_key(pod)
        taken = self.pending.nominated_nodes(key)
        with self.cache.lock:
            before = self.reservations.node_of(key)
            node = self.reservations.reserve(pod, taken)
        if node is not None and node != before:
            self.metrics.reservations.labels("made").inc()
            log.info("node reserved", extra={"pod": key, "node": node})
        return node

    def expire_reservations(self) -> None:
        """Clear the nominations of pods whose reservation ran out: the room is everyone's."""
        if self.reservations is None:
            return
        for key, node in self.reservations.expire(lambda k: self.pending.get(k) is not None):
            log.info("reservation expired", extra={"pod": key, "node": node})
            self.metrics.reservations.labels("expired").inc()
            pod = self.pending.get(key)
            if pod is not None and nominated_node(pod) == node:
                self.binder.submit_nomination(pod, None)
            self.queue.move_all_to_active_or_backoff()
