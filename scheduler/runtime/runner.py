"""`gputopo-scheduler run`: watch the cluster, schedule pending pods, bind them.

Threads: one reflector per resource (Nodes, Pods, Namespaces, PriorityClasses; PodGroups and
NodeResourceTopologies where their CRDs are installed) feeding the cache and the queue; the
leader elector; one scheduling loop (cycles are sequential, like kube-scheduler's, so each
decision sees every earlier assumption); a small bind pool (the binding request is the slow
part); the events pool; the metrics server.

Only the Lease holder pops the queue and binds. Losing the Lease stops new cycles at once and
makes queued binds give their pods back; the informers keep running so a standby is warm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gputopo.scheduler.gang import PODGROUP_API, PODGROUPS_PATH, group_key_of
from gputopo.scheduler.preemption import (
    POLICY_NEVER_MESSAGE,
    TERMINATING_MESSAGE,
    DisruptionBudget,
    Preemption,
    PreemptionOutcome,
    PreemptionPlan,
    may_preempt,
    reserve_nominated,
)
from gputopo.scheduler.reservation import Reservations, reservation_message
from gputopo.scheduler.runtime.cache import ClusterCache, is_terminal, node_name_of
from gputopo.scheduler.runtime.core_adapter import CoreFramework, SchedulingFramework
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.gangs import GangHooks
from gputopo.scheduler.runtime.informer import Reflector
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.leader import LeaderElector, LeaseConfig
from gputopo.scheduler.runtime.metrics import HealthServer, RuntimeState, SchedulerMetrics
from gputopo.scheduler.runtime.queue import QueuedPod, SchedulingQueue, pod_key
from gputopo.scheduler.runtime.workers import WorkerPool

log = logging.getLogger("gputopo.scheduler.runtime")

NODES_PATH = "/api/v1/nodes"
PODS_PATH = "/api/v1/pods"
NAMESPACES_PATH = "/api/v1/namespaces"
PRIORITY_CLASSES_PATH = "/apis/scheduling.k8s.io/v1/priorityclasses"
PDBS_PATH = "/apis/policy/v1/poddisruptionbudgets"
NRT_API = "/apis/topology.node.k8s.io/v1alpha2"
NRTS_PATH = f"{NRT_API}/noderesourcetopologies"
NRT_KIND = "NodeResourceTopology"


@dataclass(frozen=True)
class RuntimeConfig:
    scheduler_name: str = "gputopo-scheduler"
    lease: LeaseConfig | None = None
    metrics_address: str | None = ":10259"
    bind_workers: int = 16
    assume_ttl_s: float = 30.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    preemption: bool = True  # evict lower-priority pods for a pod that fits nowhere
    gang_backoff_s: float = 10.0  # a gang that failed an attempt waits this long as a whole


@dataclass
class PriorityClasses:
    """PriorityClass values, for pods whose spec.priority admission has not filled in."""

    values: dict[str, int] = field(default_factory=dict)
    global_default: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upsert(self, priority_class: JsonDict) -> None:
        name = str(priority_class["metadata"]["name"])
        value = int(priority_class.get("value") or 0)
        with self.lock:
            self.values[name] = value
            self.global_default.pop(name, None)
            if priority_class.get("globalDefault"):
                self.global_default[name] = value

    def delete(self, priority_class: JsonDict) -> None:
        name = str(priority_class["metadata"]["name"])
        with self.lock:
            self.values.pop(name, None)
            self.global_default.pop(name, None)

    def priority_of(self, pod: JsonDict) -> int:
        spec = pod.get("spec", {})
        if spec.get("priority") is not None:
            return int(spec["priority"])
        with self.lock:
            class_name = spec.get("priorityClassName")
            if class_name and class_name in self.values:
                return self.values[class_name]
            return max(self.global_default.values(), default=0)


class SchedulerRuntime:
    def __init__(
        self,
        api: KubeApi,
        framework: SchedulingFramework,
        config: RuntimeConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.framework = framework
        self.config = config
        self.cache = ClusterCache(framework, assume_ttl_s=config.assume_ttl_s, clock=clock)
        self.priorities = PriorityClasses()
        self.queue = SchedulingQueue(
            priority_of=self.priorities.priority_of,
            initial_backoff_s=config.initial_backoff_s,
            max_backoff_s=config.max_backoff_s,
            clock=clock,
        )
        self.metrics = SchedulerMetrics(self._state)
        identity = config.lease.identity if config.lease else "standalone"
        self.recorder = EventRecorder(api, controller=config.scheduler_name, instance=identity)
        self.elector: LeaderElector | None = None
        if config.lease is not None:
            self.elector = LeaderElector(
                api, config.lease, self._started_leading, self._stopped_leading
            )
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._binds = WorkerPool("bind", config.bind_workers)
        self._loop: threading.Thread | None = None
        self._server: HealthServer | None = None
        self._pod_reflector = Reflector(api, "Pod", PODS_PATH, self, on_error=self._watch_error)
        self.reflectors = [
            Reflector(api, "Node", NODES_PATH, self, on_error=self._watch_error),
            self._pod_reflector,
            Reflector(api, "Namespace", NAMESPACES_PATH, self, on_error=self._watch_error),
            Reflector(
                api, "PriorityClass", PRIORITY_CLASSES_PATH, self, on_error=self._watch_error
            ),
        ]
        self._pending: dict[str, JsonDict] = {}
        self._pending_lock = threading.Lock()
        self._nominated: set[str] = set()  # pending keys with status.nominatedNodeName
        # Gangs (scheduler/gang.py, runtime/gangs.py). The PodGroup CRD is optional: its watch
        # is not waited for.
        self._podgroups = Reflector(
            api, "PodGroup", PODGROUPS_PATH, self, on_error=self._watch_error
        )
        self.gangs = GangHooks(
            api,
            self.recorder,
            self.cache,
            self.queue,
            framework,
            self.metrics,
            backoff_s=config.gang_backoff_s,
            pods=lambda: list(self._pod_reflector.store.values()),
            pending=self._pending_items,
            pod_group=lambda key: self._podgroups.store.get(key),
            is_leader=self.is_leader,
            clock=clock,
        )
        self.gang = self.gangs.gang
        # The agent's NodeResourceTopologies (GPUs held by pods this scheduler does not know).
        # Optional like PodGroup: without the CRD the GPU bookkeeping alone decides.
        self._nrts = Reflector(api, NRT_KIND, NRTS_PATH, self, on_error=self._watch_error)
        self._preemption: Preemption | None = None
        if config.preemption and isinstance(framework, CoreFramework):
            self._preemption = Preemption(framework.snapshot, framework.profile)
        # Nodes held for large GPU pods (scheduler/reservation.py), on the same nominations.
        self._reservations: Reservations | None = None
        if isinstance(framework, CoreFramework) and framework.profile.reservation_min_gpus > 0:
            self._reservations = Reservations(framework.snapshot, framework.profile, clock)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.metrics_address:
            self._server = HealthServer(
                self.config.metrics_address, self.metrics, self.healthy, self.ready
            )
            self._server.start()
        for reflector in self.reflectors:
            reflector.start()
        if self._api_served(PODGROUP_API):
            self._podgroups.start()
        else:
            log.info(
                "PodGroup CRD not installed: gang scheduling off until restart",
                extra={"api": PODGROUP_API},
            )
        if self._api_served(NRT_API):
            self._nrts.start()
        else:
            log.info(
                "NodeResourceTopology CRD not installed: GPU availability from the scheduler's "
                "own bookkeeping only, until restart",
                extra={"api": NRT_API},
            )
        self._loop = threading.Thread(target=self._schedule_loop, name="schedule", daemon=True)
        self._loop.start()
        if self.elector is not None:
            self.elector.start()
        else:
            self._started_leading()
        log.info(
            "scheduler runtime started",
            extra={
                "scheduler_name": self.config.scheduler_name,
                "metrics_port": self.metrics_port,
            },
        )

    def _api_served(self, api_path: str) -> bool:
        """False only when the API server says the group/version (a CRD's) does not exist."""
        try:
            self.api.request("GET", api_path, timeout_s=10)
        except KubeApiError as err:
            return err.status != 404
        except OSError:
            return True  # unreachable now: let the watch retry
        return True

    def stop(self) -> None:
        """Stop scheduling, finish in-flight binds, release the Lease, stop the watches."""
        self._stop.set()
        self._leading.clear()
        self.queue.close()
        if self._loop is not None:
            self._loop.join(timeout=10)
        self._binds.shutdown(wait=True)
        if self.elector is not None:
            self.elector.stop(release=True)
        for reflector in self.reflectors:
            reflector.stop()
        self._podgroups.stop()
        self.gangs.close()
        self._nrts.stop()
        self.recorder.close()
        if self._server is not None:
            self._server.stop()
        log.info("scheduler runtime stopped")

    def wait_synced(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(r.synced.wait(max(deadline - time.monotonic(), 0)) for r in self.reflectors)

    @property
    def metrics_port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def healthy(self) -> bool:
        loop_ok = self._loop is None or self._loop.is_alive() or self._stop.is_set()
        return loop_ok and all(r.alive() or self._stop.is_set() for r in self.reflectors)

    def ready(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def is_leader(self) -> bool:
        if not self._leading.is_set():
            return False
        return self.elector is None or self.elector.is_leader()

    def _started_leading(self) -> None:
        self._leading.set()

    def _stopped_leading(self) -> None:
        self._leading.clear()
        log.warning("stopped leading: scheduling paused")

    def _state(self) -> RuntimeState:
        return RuntimeState(
            queue_depth=self.queue.depth(),
            leader=self.is_leader(),
            assumed_pods=self.cache.assumed_count(),
            nodes=self.cache.node_count(),
            reserved_nodes=len(self._reservations.held()) if self._reservations is not None else 0,
        )

    def _watch_error(self, kind: str, _: Exception) -> None:
        self.metrics.watch_errors.labels(kind).inc()

    # -- informer events --------------------------------------------------------------------

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
        elif kind == "PodGroup":
            self.gangs.podgroup_upserted(obj)
        elif kind == NRT_KIND:
            self._nrt_changed(obj)

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
        elif kind == "PodGroup":
            self.gangs.podgroup_upserted(new)
        elif kind == NRT_KIND:
            self._nrt_changed(new)

    def on_delete(self, kind: str, obj: JsonDict) -> None:
        if kind == "Pod":
            key = pod_key(obj)
            with self._pending_lock:
                self._pending.pop(key, None)
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
        elif kind == "PodGroup":
            self.gangs.podgroup_deleted(obj)
        elif kind == NRT_KIND:
            with self.cache.lock:
                self.framework.delete_nrt(str(obj["metadata"]["name"]))
            self.queue.move_all_to_active_or_backoff()

    def _nrt_changed(self, nrt: JsonDict) -> None:
        """Fewer or more GPUs held by others: pods waiting for GPUs may fit now, or not."""
        with self.cache.lock:
            self.framework.upsert_nrt(nrt)  # a malformed NRT raises: the reflector logs it
        self.queue.move_all_to_active_or_backoff()

    def _pod_changed(self, old: JsonDict | None, pod: JsonDict) -> None:
        key = pod_key(pod)
        if node_name_of(pod):
            with self._pending_lock:
                self._pending.pop(key, None)
            self.queue.delete(key)
            finished_now = is_terminal(pod) and not (old is not None and is_terminal(old))
            if (
                old is not None
                and not finished_now
                and node_name_of(old) == node_name_of(pod)
                and old.get("spec") == pod.get("spec")
                and old["metadata"].get("labels") == pod["metadata"].get("labels")
                and not self.cache.is_assumed(key)
            ):
                return  # a status-only change (kubelet/kwok): nothing the filters read moved
            self.cache.upsert_bound_pod(pod)
            if finished_now:
                self.queue.move_all_to_active_or_backoff()
            return
        spec = pod.get("spec", {})
        ours = spec.get("schedulerName") == self.config.scheduler_name
        gated = bool(spec.get("schedulingGates"))  # kube-scheduler's PreEnqueue: wait, untried
        if (
            not ours
            or gated
            or is_terminal(pod)
            or pod.get("metadata", {}).get("deletionTimestamp")
        ):
            with self._pending_lock:
                self._pending.pop(key, None)
            self.queue.delete(key)
            if ours and gated and self.is_leader():
                self.recorder.scheduling_gated(pod)
            return
        with self._pending_lock:
            self._pending[key] = pod
            if pod.get("status", {}).get("nominatedNodeName"):
                self._nominated.add(key)
            else:
                self._nominated.discard(key)
        if old is None or not self.queue.contains(key):
            self.queue.add(pod)
            if old is None and group_key_of(pod) is not None:
                self.queue.move_all_to_active_or_backoff()  # siblings parked as "too few"
        else:
            self.queue.update(pod)

    def _still_pending(self, key: str) -> JsonDict | None:
        with self._pending_lock:
            return self._pending.get(key)

    # -- scheduling -------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        for reflector in self.reflectors:
            while not reflector.synced.wait(0.5):
                if self._stop.is_set():
                    return
        while not self._stop.is_set():
            if not self._leading.wait(0.5):
                continue
            for key in self.cache.expire_assumptions():
                self.metrics.assumptions_expired.inc()
                log.warning("assumed pod expired unconfirmed", extra={"pod": key})
            self.gangs.tick()
            self._expire_reservations()
            item = self.queue.pop(timeout_s=0.5)
            if item is None:
                continue
            queued, cycle = item
            try:
                self._schedule_one(queued, cycle)
            except Exception:  # a bug in one pod's cycle must not stop the loop
                log.exception("scheduling cycle failed", extra={"pod": queued.key})
                self.metrics.attempts.labels("error").inc()
                self.cache.forget(queued.key)
                self.queue.requeue_error(queued)

    def _schedule_one(self, queued: QueuedPod, cycle: int) -> None:
        pod = self._still_pending(queued.key)
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
        snapshot = self._preemption.snapshot if self._preemption is not None else None
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
            outcome = self._plan_preemption(pod) if group_key is None else None
            held = None
            if group_key is None and (outcome is None or outcome.plan is None):
                held = self._reserve(pod)
            self.queue.requeue_unschedulable(queued, cycle)
            message = (
                placement.message if outcome is None else outcome.fit_message(placement.message)
            )
            if held is not None:
                message = reservation_message(message, held)
            self.recorder.failed_scheduling(pod, message)
            if outcome is not None and outcome.plan is not None:
                if self._reservations is not None:
                    self._reservations.release(queued.key)
                self._binds.submit(self._preempt, pod, outcome.plan)
            elif held is not None:
                if _nominated_node(pod) != held:
                    self._binds.submit(self._set_nominated_node, pod, held)
            elif outcome is not None and outcome.clear_nomination and _nominated_node(pod):
                self._binds.submit(self._set_nominated_node, pod, None)  # as kube-scheduler
            return
        if group_key is not None:
            ready = self.gangs.held(group_key, queued, placement.node_name)
            for member, node in ready or ():
                self._binds.submit(self._bind, member, node)
            return  # None: the member holds its place (assumed, in flight) until the gang is whole
        self._binds.submit(self._bind, queued, placement.node_name)

    # -- gangs (scheduler/gang.py keeps the state, scheduler/runtime/gangs.py the hooks) ------

    def _pending_items(self) -> list[tuple[str, JsonDict]]:
        with self._pending_lock:
            return list(self._pending.items())

    # -- preemption (scheduler/preemption.py plans; this carries the plan out) ---------------

    def _nominated_besides(self, pod: JsonDict) -> list[tuple[JsonDict, str]]:
        """Pending pods nominated (a preemption, a reservation), of at least ``pod``'s priority."""
        # Reservations count from the moment they are made, before their nomination is watched.
        held = self._reservations.held() if self._reservations is not None else {}
        if not self._nominated and not held:
            return []  # the common case: nothing to reserve, no lock, no priority lookup
        key, priority = pod_key(pod), self.priorities.priority_of(pod)
        with self._pending_lock:
            # Drop bound or deleted ones (intersection_update would walk all of _pending).
            self._nominated = {k for k in self._nominated if k in self._pending}
            candidates = [
                (other, held.get(other_key) or _nominated_node(other))
                for other_key in self._nominated | held.keys()
                if other_key != key and (other := self._pending.get(other_key)) is not None
            ]
        return [
            (other, node)
            for other, node in candidates
            if node and self.priorities.priority_of(other) >= priority
        ]

    # -- reservations (scheduler/reservation.py decides; this nominates and clears) ----------

    def _reserve(self, pod: JsonDict) -> str | None:
        """The node held for this large unschedulable pod, if any (one pod per node)."""
        if self._reservations is None:
            return None
        key = pod_key(pod)
        with self._pending_lock:
            taken = {
                _nominated_node(other)
                for other_key in self._nominated
                if other_key != key and (other := self._pending.get(other_key)) is not None
            }
        with self.cache.lock:
            before = self._reservations.node_of(key)
            node = self._reservations.reserve(pod, taken)
        if node is not None and node != before:
            self.metrics.reservations.labels("made").inc()
            log.info("node reserved", extra={"pod": key, "node": node})
        return node

    def _expire_reservations(self) -> None:
        """Clear the nominations of pods whose reservation ran out: the room is everyone's."""
        if self._reservations is None:
            return
        for key, node in self._reservations.expire(lambda k: self._still_pending(k) is not None):
            log.info("reservation expired", extra={"pod": key, "node": node})
            self.metrics.reservations.labels("expired").inc()
            pod = self._still_pending(key)
            if pod is not None and _nominated_node(pod) == node:
                self._binds.submit(self._set_nominated_node, pod, None)
            self.queue.move_all_to_active_or_backoff()

    def _plan_preemption(self, pod: JsonDict) -> PreemptionOutcome | None:
        """None when preemption is off; else a plan or kube-scheduler's reason for none."""
        if self._preemption is None:
            return None
        if not may_preempt(pod):
            return PreemptionOutcome(None, POLICY_NEVER_MESSAGE)
        priority_of = self.priorities.priority_of
        priority = priority_of(pod)
        nominated = _nominated_node(pod)
        bound = self.cache.bound_pods()
        if nominated and any(
            node_name_of(other) == nominated
            and other["metadata"].get("deletionTimestamp")
            and priority_of(other) < priority
            for other in bound
        ):
            return PreemptionOutcome(None, TERMINATING_MESSAGE)  # the room is being freed
        listed: list[JsonDict] = []
        if any(priority_of(other) < priority for other in bound):  # else: no API call
            try:
                listed = self.api.request("GET", PDBS_PATH).get("items") or []
            except (KubeApiError, OSError) as err:
                log.warning("cannot list PodDisruptionBudgets", extra={"error": str(err)})
        budgets = [DisruptionBudget.from_json(pdb) for pdb in listed]
        with self.cache.lock:
            return self._preemption.evaluate(pod, bound, priority_of, budgets)

    def _set_nominated_node(self, pod: JsonDict, node: str | None) -> bool:
        """Merge-patch status.nominatedNodeName (None clears it); False when that failed."""
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace") or "default"), str(meta["name"])
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                body={"status": {"nominatedNodeName": node}},
                content_type="application/merge-patch+json",
            )
        except (KubeApiError, OSError) as err:
            log.warning(
                "cannot set nominatedNodeName",
                extra={"pod": f"{namespace}/{name}", "node": node, "error": str(err)},
            )
            return False
        return True

    def _preempt(self, pod: JsonDict, plan: PreemptionPlan) -> None:
        """Nominate the node, then delete the victims with their own grace period."""
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace") or "default"), str(meta["name"])
        if not self._set_nominated_node(pod, plan.node):
            return
        note = f"Preempting {len(plan.victims)} pod(s) on node {plan.node}"
        violated = [victim.key for victim in plan.victims if victim.violates_pdb]
        if violated:
            note += f"; violating PodDisruptionBudget for {', '.join(violated)}"
        log.info(
            "preempting",
            extra={
                "pod": f"{namespace}/{name}",
                "node": plan.node,
                "victims": [v.key for v in plan.victims],
                "pdb_violations": len(violated),
            },
        )
        self.recorder.preempting(pod, note)
        for victim in plan.victims:
            victim_meta = victim.pod["metadata"]
            try:
                self.api.request(
                    "DELETE",
                    f"/api/v1/namespaces/{victim_meta.get('namespace') or 'default'}"
                    f"/pods/{victim_meta['name']}",
                    body={"preconditions": {"uid": victim_meta.get("uid")}},
                )
            except KubeApiError as err:
                if err.status not in (404, 409):
                    log.warning(
                        "cannot delete victim", extra={"pod": victim.key, "error": str(err)}
                    )
                continue
            self.recorder.preempted(victim.pod, pod, plan.node)

    def _bind(self, queued: QueuedPod, node_name: str) -> None:
        pod = queued.pod
        key = queued.key
        meta = pod["metadata"]
        if not self.is_leader():
            self.cache.forget(key)
            self.queue.requeue_error(queued)
            return
        if not self.cache.has_node(node_name):
            self._bind_failed(queued, "node_gone", f"node {node_name} was deleted")
            return
        started = time.perf_counter()
        try:
            self.api.bind(
                str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", "")), node_name
            )
        except KubeApiError as err:
            reason = {409: "conflict", 404: "not_found"}.get(err.status, "error")
            self._bind_failed(queued, reason, str(err))
            return
        except Exception as err:
            self._bind_failed(queued, "error", str(err))
            return
        finally:
            self.metrics.bind_duration.observe(time.perf_counter() - started)
        self.cache.finish_binding(key)
        self.queue.done(key)
        self.metrics.attempts.labels("scheduled").inc()
        self.recorder.scheduled(pod, node_name)
        log.info("pod bound", extra={"pod": key, "node": node_name})
        if _nominated_node(pod) not in ("", node_name):  # bound elsewhere: as kube-scheduler
            self._set_nominated_node(pod, None)

    def _bind_failed(self, queued: QueuedPod, reason: str, detail: str) -> None:
        self.cache.forget(queued.key)
        self.metrics.bind_errors.labels(reason).inc()
        log.warning("binding failed", extra={"pod": queued.key, "reason": reason, "error": detail})
        if reason == "not_found" or self._still_pending(queued.key) is None:
            self.queue.done(queued.key)
            return
        if reason == "error":
            self.metrics.attempts.labels("error").inc()
        self.queue.requeue_error(queued)


def _nominated_node(pod: JsonDict) -> str:
    return str((pod.get("status") or {}).get("nominatedNodeName") or "")


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
