"""What each watched change does: the informers' adds, updates and deletes, handled.

Pods go to the cache (bound), to the pending set and the queue (ours, pending) or nowhere (not
ours, gated, finished); Nodes, Namespaces and NodeResourceTopologies go to the cache and, when
they change what the filters read, move the unschedulable pods back to be tried again;
PriorityClasses go to the priorities; PodGroups and gang members to the gang hooks.
"""

from __future__ import annotations

from collections.abc import Callable

from gputopo.scheduler.dra.state import KINDS as DRA_OBJECT_KINDS
from gputopo.scheduler.gang import NATIVE_PODGROUP_KIND, group_key_of
from gputopo.scheduler.runtime.cache import ClusterCache, is_terminal, node_name_of
from gputopo.scheduler.runtime.core_adapter import SchedulingFramework
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.gang_hooks import GangHooks
from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.runtime.pending import PendingPods
from gputopo.scheduler.runtime.priorities import PriorityClasses
from gputopo.scheduler.runtime.queue import SchedulingQueue, pod_key

NRT_KIND = "NodeResourceTopology"
DRA_KINDS = DRA_OBJECT_KINDS  # ResourceSlice, DeviceClass, ResourceClaim, templates, rules
_PODGROUP_KINDS = ("PodGroup", NATIVE_PODGROUP_KIND)


class ClusterEventHandlers:
    """The informers' handler (`informer.EventHandler`), for every kind the runtime watches."""

    def __init__(
        self,
        framework: SchedulingFramework,
        cache: ClusterCache,
        queue: SchedulingQueue,
        pending: PendingPods,
        priorities: PriorityClasses,
        gangs: GangHooks,
        recorder: EventRecorder,
        *,
        scheduler_name: str,
        is_leader: Callable[[], bool],
    ) -> None:
        self.framework = framework
        self.cache = cache
        self.queue = queue
        self.pending = pending
        self.priorities = priorities
        self.gangs = gangs
        self.recorder = recorder
        self.scheduler_name = scheduler_name
        self.is_leader = is_leader

    def on_add(self, kind: str, obj: JsonDict) -> None:
        if kind == "Pod":
            self._pod_changed(None, obj)
            self.gangs.pod_event(obj)
        elif kind == "Node":
            self.cache.upsert_node(obj)
            self.queue.move_all_to_active_or_backoff()
        elif kind == "Namespace":
            with self.cache.lock:
                self.framework.upsert_namespace(obj)
        elif kind == "PriorityClass":
            self.priorities.upsert(obj)
        elif kind in _PODGROUP_KINDS:
            self.gangs.podgroup_upserted(obj, native=kind == NATIVE_PODGROUP_KIND)
        elif kind == NRT_KIND:
            self._nrt_changed(obj)
        elif kind in DRA_KINDS:
            self._dra_changed(kind, obj)

    def on_update(self, kind: str, old: JsonDict, new: JsonDict) -> None:
        if kind == "Pod":
            self._pod_changed(old, new)
            self.gangs.pod_event(new)
        elif kind == "Node":
            self.cache.upsert_node(new)
            if _node_scheduling_changed(old, new):
                self.queue.move_all_to_active_or_backoff()
        elif kind == "Namespace":
            with self.cache.lock:
                self.framework.upsert_namespace(new)
            self.queue.move_all_to_active_or_backoff()
        elif kind == "PriorityClass":
            self.priorities.upsert(new)
        elif kind in _PODGROUP_KINDS:
            self.gangs.podgroup_upserted(new, native=kind == NATIVE_PODGROUP_KIND)
        elif kind == NRT_KIND:
            self._nrt_changed(new)
        elif kind in DRA_KINDS:
            self._dra_changed(kind, new)

    def on_delete(self, kind: str, obj: JsonDict) -> None:
        if kind == "Pod":
            key = pod_key(obj)
            self.pending.drop(key)
            self.queue.delete(key)
            group_key = group_key_of(obj)
            if group_key is not None:
                self.gangs.member_deleted(group_key, key)
            was_load = bool(node_name_of(obj)) or self.cache.is_assumed(key)
            self.cache.delete_pod(obj)
            if was_load:
                self.queue.move_all_to_active_or_backoff()
        elif kind == "Node":
            self.cache.delete_node(obj)
        elif kind == "Namespace":
            with self.cache.lock:
                self.framework.delete_namespace(str(obj["metadata"]["name"]))
        elif kind == "PriorityClass":
            self.priorities.delete(obj)
        elif kind in _PODGROUP_KINDS:
            self.gangs.podgroup_deleted(obj, native=kind == NATIVE_PODGROUP_KIND)
        elif kind == NRT_KIND:
            with self.cache.lock:
                self.framework.delete_nrt(str(obj["metadata"]["name"]))
            self.queue.move_all_to_active_or_backoff()
        elif kind in DRA_KINDS:
            meta = obj.get("metadata", {})
            name = str(meta.get("name", ""))
            key = f"{meta['namespace']}/{name}" if meta.get("namespace") else name
            with self.cache.lock:
                self.framework.delete_dra(kind, key)
            self.queue.move_all_to_active_or_backoff()

    def _dra_changed(self, kind: str, obj: JsonDict) -> None:
        """Devices published, claims allocated or freed, taints: waiting DRA pods may fit."""
        with self.cache.lock:
            self.framework.upsert_dra(kind, obj)  # a malformed object raises: the reflector logs
        self.queue.move_all_to_active_or_backoff()

    def _nrt_changed(self, nrt: JsonDict) -> None:
        """Fewer or more GPUs held by others: pods waiting for GPUs may fit now, or not."""
        with self.cache.lock:
            self.framework.upsert_nrt(nrt)  # a malformed NRT raises: the reflector logs it
        self.queue.move_all_to_active_or_backoff()

    def _pod_changed(self, old: JsonDict | None, pod: JsonDict) -> None:
        key = pod_key(pod)
        if node_name_of(pod):
            self.pending.drop(key)
            self.queue.delete(key)
            finished_now = is_terminal(pod) and not (old is not None and is_terminal(old))
            if (
                old is not None
                and not finished_now
                and node_name_of(old) == node_name_of(pod)
                and old.get("spec") == pod.get("spec")
                and old["metadata"].get("labels") == pod["metadata"].get("labels")
                # Terminating is not status-only: preemption and reservations read it (the room
                # on a nominated node is being freed, kube-scheduler's check).
                and old["metadata"].get("deletionTimestamp")
                == pod["metadata"].get("deletionTimestamp")
                and not self.cache.is_assumed(key)
            ):
                # a status-only change (kubelet/kwok): nothing the filters read moved; the cache
                # keeps the new version only, the one the watch's store holds too
                self.cache.refresh_bound_pod(pod)
                return
            self.cache.upsert_bound_pod(pod)
            if finished_now:
                self.queue.move_all_to_active_or_backoff()
            return
        spec = pod.get("spec", {})
        ours = spec.get("schedulerName") == self.scheduler_name
        gated = bool(spec.get("schedulingGates"))  # kube-scheduler's PreEnqueue: wait, untried
        if (
            not ours
            or gated
            or is_terminal(pod)
            or pod.get("metadata", {}).get("deletionTimestamp")
        ):
            self.pending.drop(key)
            self.queue.delete(key)
            if ours and gated and self.is_leader():
                self.recorder.scheduling_gated(pod)
            return
        self.pending.put(key, pod)
        if old is None or not self.queue.contains(key):
            self.queue.add(pod)
            if old is None and group_key_of(pod) is not None:
                self.queue.move_all_to_active_or_backoff()  # siblings parked as "too few"
        else:
            self.queue.update(pod)


def _node_scheduling_changed(old: JsonDict, new: JsonDict) -> bool:
    """Labels, taints, unschedulable, allocatable or annotations: the fields filters read.

    Status heartbeats (conditions, timestamps) change every few seconds and move nothing.
    """
    old_meta, new_meta = old.get("metadata", {}), new.get("metadata", {})
    return (
        old_meta.get("labels") != new_meta.get("labels")
        or old_meta.get("annotations") != new_meta.get("annotations")
        or old.get("spec") != new.get("spec")
        or old.get("status", {}).get("allocatable") != new.get("status", {}).get("allocatable")
    )
