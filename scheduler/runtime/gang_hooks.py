"""The runtime's gang hooks: what `SchedulerRuntime` calls for a pod labelled into a PodGroup.

`scheduler/gang.py` keeps the state (groups, held places, back-off, the chosen domain) and the
pure logic; this module wires it to the runtime's cache, queue, events and metrics, and owns the
PodGroup status writer. The runtime calls, per member cycle (`cycle.py`): `prefilter` (turned
away before the filters?), `schedule` (the cycle, kept to the group's topology domain), then
`unschedulable` or `held`; per loop turn (`runner.py`): `tick` (timeouts, ended back-offs); per
watch event (`handlers.py`): `pod_event`, `podgroup_upserted`, `podgroup_deleted`,
`member_deleted`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gputopo.scheduler.gang import (
    GangCoordinator,
    backing_off_message,
    domain_of_placed,
    free_capacity,
    group_key_of,
    group_key_of_podgroup,
    in_domain,
    min_resources_message,
    no_domain_message,
    not_found_message,
    plan_domain,
    rejected_message,
    resource_gap,
    timeout_message,
    too_few_message,
)
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.runtime.cache import ClusterCache, is_terminal, node_name_of
from gputopo.scheduler.runtime.core_adapter import CoreFramework, Placement, SchedulingFramework
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi
from gputopo.scheduler.runtime.metrics import SchedulerMetrics
from gputopo.scheduler.runtime.podgroup_status import PodGroupStatusWriter
from gputopo.scheduler.runtime.queue import QueuedPod, SchedulingQueue, pod_key

log = logging.getLogger("gputopo.scheduler.runtime")


class GangHooks:
    def __init__(
        self,
        api: KubeApi,
        recorder: EventRecorder,
        cache: ClusterCache,
        queue: SchedulingQueue,
        framework: SchedulingFramework,
        metrics: SchedulerMetrics,
        *,
        backoff_s: float,
        pods: Callable[[], list[JsonDict]],
        pending: Callable[[], list[tuple[str, JsonDict]]],
        pod_group: Callable[[str], JsonDict | None],
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.queue = queue
        self.recorder = recorder
        self.framework = framework
        self.metrics = metrics
        self.backoff_s = backoff_s
        self._pods = pods
        self._pending = pending
        self.gang = GangCoordinator(clock=clock)
        self.status = PodGroupStatusWriter(
            api,
            recorder,
            pod_group=pod_group,
            members=lambda key: self.members(key, finished=True),
            holding=self.gang.waiting_count,
            min_member=lambda key: spec.min_member if (spec := self.gang.group(key)) else None,
            active=is_leader,
        )

    def close(self) -> None:
        self.status.close()

    # -- watch events ---------------------------------------------------------------------------

    def pod_event(self, pod: JsonDict) -> None:
        group_key = group_key_of(pod)
        if group_key is not None:
            self.status.touch(group_key)

    def member_deleted(self, group_key: str, key: str) -> None:
        self.gang.drop(group_key, key)
        self.status.touch(group_key)

    def podgroup_upserted(self, pod_group: JsonDict, native: bool = False) -> None:
        self.gang.upsert_group(pod_group, native)
        self.queue.move_all_to_active_or_backoff()
        self.status.touch(group_key_of_podgroup(pod_group, native))

    def podgroup_deleted(self, pod_group: JsonDict, native: bool = False) -> None:
        self.gang.delete_group(pod_group, native)
        self.status.forget(group_key_of_podgroup(pod_group, native))

    # -- members ----------------------------------------------------------------------------------

    def members(self, group_key: str, finished: bool = False) -> list[JsonDict]:
        """Every live pod labelled into the group, bound or not, gated or not (as Coscheduling
        counts them), from the Pod watch's store; ``finished`` adds Succeeded/Failed ones."""
        return [
            pod
            for pod in self._pods()
            if group_key_of(pod) == group_key
            and (finished or not is_terminal(pod))
            and not pod.get("metadata", {}).get("deletionTimestamp")
        ]

    def bound_members(self, group_key: str) -> int:
        return sum(1 for pod in self.cache.bound_pods() if group_key_of(pod) == group_key)

    # -- the loop ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Let go of groups past their timeout; wake the members of groups done backing off."""
        for group_key, members in self.gang.expired().items():
            self.let_go(group_key, members, "Timeout", timeout_message(group_key))
        for group_key in self.gang.backoffs_ended():
            self.queue.activate(pod_key(m) for m in self.members(group_key))

    # -- one member's cycle -----------------------------------------------------------------------

    def prefilter(self, pod_key: str, group_key: str) -> str | None:
        """Why the member is turned away before the filters, or None to go on."""
        spec = self.gang.group(group_key)
        refusal: str | None = None
        reason = "Unschedulable"
        group_note: str | None = None  # for the PodGroup when the pod's message names the pod
        if spec is None:
            refusal = not_found_message(group_key)
        elif spec.invalid is not None:
            refusal, reason = spec.invalid, "InvalidPodGroup"
        elif self.gang.backoff_remaining(group_key) > 0:
            self.metrics.gang_cycles.labels("backing_off").inc()
            return backing_off_message(group_key, self.backoff_s)
        elif (total := len(self.members(group_key))) < spec.min_member:
            refusal = too_few_message(pod_key, total, spec.min_member, group_key)
            reason = "NotEnoughPods"
            group_note = (
                f"pod group {group_key}: current pods number: {total}, "
                f"minMember of group: {spec.min_member}"
            )
        elif spec.min_resources and isinstance(self.framework, CoreFramework):
            wanted = [name for name, _ in spec.min_resources] + ["pods"]
            with self.cache.lock:
                gap = resource_gap(spec, free_capacity(self.framework.snapshot, wanted, group_key))
            if gap:
                refusal, reason = min_resources_message(group_key, gap), "InsufficientResources"
                self.gang.back_off(group_key, self.backoff_s)
        if refusal is None:
            return None
        self.metrics.gang_cycles.labels("refused").inc()
        if spec is not None:
            self.status.turned_away(group_key, reason, group_note or refusal)
        return refusal

    def schedule(self, pod: JsonDict, group_key: str) -> Placement:
        """The member's cycle, kept to the group's topology domain when the PodGroup asks for
        one (`preferred`: anywhere else when the domain has no room). Cache lock held."""
        spec = self.gang.group(group_key)
        cycle_pod = self._in_domain(pod, group_key)
        if isinstance(cycle_pod, str):  # required, and no domain holds the gang
            return Placement(None, cycle_pod)
        placement = self.framework.schedule(cycle_pod)
        required = spec is not None and spec.topology is not None and spec.topology.required
        if placement.node_name is None and cycle_pod is not pod and not required:
            placement = self.framework.schedule(pod)
        return placement

    def unschedulable(self, group_key: str, queued: QueuedPod, reason: str) -> None:
        """A member found no node: the whole group lets go of its places and backs off."""
        self.metrics.gang_cycles.labels("unschedulable").inc()
        held = self.gang.release(group_key)
        message = rejected_message(group_key, queued.key, reason)
        self.let_go(group_key, held, "Unschedulable", message)

    def held(self, group_key: str, queued: QueuedPod, node: str) -> list[tuple[Any, str]] | None:
        """A member holds ``node``: every held member to bind once the gang is whole, else None
        (its siblings are woken so it does not wait out its timeout behind their backoff)."""
        self.metrics.gang_cycles.labels("held").inc()
        ready = self.gang.hold(group_key, queued.key, queued, node, self.bound_members(group_key))
        if ready is None:
            self.queue.activate(pod_key(m) for m in self.members(group_key))
            self.status.touch(group_key)
        else:
            self.status.placed(group_key)
        return ready

    def let_go(
        self, group_key: str, members: list[tuple[Any, str]], reason: str, message: str
    ) -> None:
        """Give up every place the group held; the whole group backs off, then is retried."""
        for member, _ in members:
            self.cache.forget(member.key)
            self.queue.requeue_error(member)
            self.recorder.failed_scheduling(member.pod, message)
        self.gang.back_off(group_key, self.backoff_s)
        log.info("pod group released its places", extra={"group": group_key, "reason": message})
        if members:
            self.queue.move_all_to_active_or_backoff()
        self.status.turned_away(group_key, reason, message)

    # -- topology ---------------------------------------------------------------------------------

    def _in_domain(self, pod: JsonDict, group_key: str) -> JsonDict | str:
        """The member kept to the group's domain, or why no domain can take it (required)."""
        spec = self.gang.group(group_key)
        if spec is None or spec.topology is None or not isinstance(self.framework, CoreFramework):
            return pod
        label_key = spec.topology.label_key
        snapshot = self.framework.snapshot
        placed = self.gang.held_nodes(group_key) + [
            node_name_of(other)
            for other in self.cache.bound_pods()
            if group_key_of(other) == group_key
        ]
        domain = self.gang.domain(group_key) or domain_of_placed(
            node.labels.get(label_key) if (node := snapshot.node(name)) else None for name in placed
        )
        if domain is None:
            domain = self._plan_domain(pod, group_key, label_key, len(placed))
        if domain is None:
            if spec.topology.required:
                self.gang.back_off(group_key, self.backoff_s)
                message = no_domain_message(group_key, spec.topology, spec.min_member)
                self.status.turned_away(group_key, "NoTopologyDomain", message)
                return message
            return pod
        self.gang.choose_domain(group_key, domain)
        return in_domain(pod, label_key, domain)

    def _plan_domain(
        self, pod: JsonDict, group_key: str, label_key: str, placed: int
    ) -> str | None:
        """Try each value of ``label_key`` for the members still to place, this one first."""
        assert isinstance(self.framework, CoreFramework)
        framework, snapshot = self.framework, self.framework.snapshot
        spec = self.gang.group(group_key)
        needed = max((spec.min_member if spec else 1) - placed, 1)
        own = pod_key(pod)
        siblings = sorted(
            (
                other
                for key, other in self._pending()
                if key != own
                and group_key_of(other) == group_key
                and not self.gang.is_waiting(group_key, key)
            ),
            key=pod_key,
        )
        members = [pod, *siblings][:needed]
        values = {
            value
            for _, node in snapshot.iter_nodes()
            if (value := node.labels.get(label_key)) is not None
        }
        trial: list[str] = []

        def place(member: JsonDict) -> str | None:
            node_name = framework.schedule(member).node_name
            if node_name is not None:  # counted for the rest of the trial, not for the load
                trial.append(snapshot.assume(parse_pod(member), node_name).key)
            return node_name

        def undo() -> None:
            for key in trial:
                snapshot.forget(key)
            trial.clear()

        return plan_domain(label_key, values, members, place, undo)
