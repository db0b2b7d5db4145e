"""`gputopo-scheduler run`: watch the cluster, schedule pending pods, bind them.

Threads: one reflector per resource (Nodes, Pods, Namespaces, PriorityClasses; PodGroups and
NodeResourceTopologies where their CRDs are installed) feeding the cache and the queue; the
leader elector; one scheduling loop (cycles are sequential, like kube-scheduler's, so each
decision sees every earlier assumption); a small bind pool (the binding request is the slow
part); the events pool; the metrics server.

Only the Lease holder pops the queue and binds. Losing the Lease stops new cycles at once and
makes queued binds give their pods back; the informers keep running so a standby is warm.

This module wires the parts and runs the loop; each part is its own module: `handlers` (what a
watched change does), `cycle` (one pod's scheduling cycle), `binder` (binds, nominations,
preemptions), `pending` and `priorities` (what the watch last saw).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gputopo.scheduler.gang import (
    NATIVE_PODGROUP_API,
    NATIVE_PODGROUP_KIND,
    NATIVE_PODGROUPS_PATH,
    PODGROUP_API,
    PODGROUPS_PATH,
    split_group_key,
)
from gputopo.scheduler.preemption import Preemption
from gputopo.scheduler.reservation import Reservations
from gputopo.scheduler.runtime.binder import Binder
from gputopo.scheduler.runtime.cache import ClusterCache
from gputopo.scheduler.runtime.core_adapter import CoreFramework, SchedulingFramework
from gputopo.scheduler.runtime.cycle import SchedulingCycle
from gputopo.scheduler.runtime.dra_writer import DraWriter
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.gang_hooks import GangHooks
from gputopo.scheduler.runtime.handlers import NRT_KIND, ClusterEventHandlers
from gputopo.scheduler.runtime.informer import Reflector, strip_managed_fields
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.leader import LeaderElector, LeaseConfig
from gputopo.scheduler.runtime.metrics import HealthServer, RuntimeState, SchedulerMetrics
from gputopo.scheduler.runtime.pending import PendingPods
from gputopo.scheduler.runtime.priorities import PriorityClasses
from gputopo.scheduler.runtime.queue import SchedulingQueue

log = logging.getLogger("gputopo.scheduler.runtime")

NODES_PATH = "/api/v1/nodes"
PODS_PATH = "/api/v1/pods"
NAMESPACES_PATH = "/api/v1/namespaces"
PRIORITY_CLASSES_PATH = "/apis/scheduling.k8s.io/v1/priorityclasses"
NRT_API = "/apis/topology.node.k8s.io/v1alpha2"
NRTS_PATH = f"{NRT_API}/noderesourcetopologies"
DRA_API = "/apis/resource.k8s.io/v1"
DRA_PATHS = {
    "ResourceSlice": f"{DRA_API}/resourceslices",
    "DeviceClass": f"{DRA_API}/deviceclasses",
    "ResourceClaim": f"{DRA_API}/resourceclaims",
    "ResourceClaimTemplate": f"{DRA_API}/resourceclaimtemplates",
    "DeviceTaintRule": f"{DRA_API}/devicetaintrules",
}


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
        self._loop: threading.Thread | None = None
        self._server: HealthServer | None = None
        self.pending = PendingPods()
        self.binder = Binder(
            api,
            self.cache,
            self.queue,
            self.pending,
            self.metrics,
            self.recorder,
            workers=config.bind_workers,
            is_leader=self.is_leader,
        )
        # Gangs (scheduler/gang.py, runtime/gang_hooks.py). The PodGroup CRD is optional: its watch
        # is not waited for.
        self.gangs = GangHooks(
            api,
            self.recorder,
            self.cache,
            self.queue,
            framework,
            self.metrics,
            backoff_s=config.gang_backoff_s,
            pods=lambda: list(self._pod_reflector.store.values()),
            pending=self.pending.items,
            pod_group=self._pod_group,
            is_leader=self.is_leader,
            clock=clock,
        )
        self.gang = self.gangs.gang
        preemption: Preemption | None = None
        if config.preemption and isinstance(framework, CoreFramework):
            preemption = Preemption(framework.snapshot, framework.profile)
        # Nodes held for large GPU pods (scheduler/reservation.py), on the same nominations.
        self._reservations: Reservations | None = None
        if isinstance(framework, CoreFramework) and framework.profile.reservation_min_gpus > 0:
            self._reservations = Reservations(framework.snapshot, framework.profile, clock)
        self.cycle = SchedulingCycle(
            api,
            framework,
            self.cache,
            self.queue,
            self.pending,
            self.priorities,
            self.gangs,
            self.binder,
            self.recorder,
            self.metrics,
            preemption=preemption,
            reservations=self._reservations,
            is_leader=self.is_leader,
        )
        self.handlers = ClusterEventHandlers(
            framework,
            self.cache,
            self.queue,
            self.pending,
            self.priorities,
            self.gangs,
            self.recorder,
            scheduler_name=config.scheduler_name,
            is_leader=self.is_leader,
        )
        handlers, on_error = self.handlers, self._watch_error
        # Pods and Nodes are the objects there are thousands of, kept whole for as long as they
        # exist (the watch's store, preemption's victims); their managedFields are never read
        # and the runtime never writes either back whole.
        trim = strip_managed_fields
        self._pod_reflector = Reflector(
            api, "Pod", PODS_PATH, handlers, on_error=on_error, transform=trim
        )
        self.reflectors = [
            Reflector(api, "Node", NODES_PATH, handlers, on_error=on_error, transform=trim),
            self._pod_reflector,
            Reflector(api, "Namespace", NAMESPACES_PATH, handlers, on_error=on_error),
            Reflector(api, "PriorityClass", PRIORITY_CLASSES_PATH, handlers, on_error=on_error),
        ]
        self._podgroups = Reflector(api, "PodGroup", PODGROUPS_PATH, handlers, on_error=on_error)
        # Kubernetes' own PodGroup (scheduling.k8s.io, gate GenericWorkload): optional the same way.
        self._native_podgroups = Reflector(
            api, NATIVE_PODGROUP_KIND, NATIVE_PODGROUPS_PATH, handlers, on_error=on_error
        )
        # The agent's NodeResourceTopologies (GPUs held by pods this scheduler does not know).
        # Optional like PodGroup: without the CRD the GPU bookkeeping alone decides.
        self._nrts = Reflector(api, NRT_KIND, NRTS_PATH, handlers, on_error=on_error)
        # DRA (resource.k8s.io/v1): optional too; without it pods with claims are refused.
        self._dra = [
            Reflector(api, kind, path, handlers, on_error=on_error)
            for kind, path in DRA_PATHS.items()
        ]
        if isinstance(framework, CoreFramework):
            writer = DraWriter(api, framework.dra, self.cache.lock)
            framework.dra_writer = writer
            self.binder.dra = writer

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
        if self._api_served(NATIVE_PODGROUP_API):
            self._native_podgroups.start()
        else:
            log.info(
                "scheduling.k8s.io PodGroups not served (gate GenericWorkload off): native gangs "
                "off until restart",
                extra={"api": NATIVE_PODGROUP_API},
            )
        if self._api_served(NRT_API):
            self._nrts.start()
        else:
            log.info(
                "NodeResourceTopology CRD not installed: GPU availability from the scheduler's "
                "own bookkeeping only, until restart",
                extra={"api": NRT_API},
            )
        framework = self.cache.framework
        dra = framework.dra if isinstance(framework, CoreFramework) else None
        if self._api_served(DRA_API):
            if dra is not None:
                dra.watched = True
            for reflector in self._dra:
                reflector.start()
            # synced and healthy with the others: a claim must be known before its pod is tried
            self.reflectors.extend(self._dra)
        else:
            if dra is not None:
                dra.unavailable = "the API server does not serve resource.k8s.io/v1"
            log.info("resource.k8s.io/v1 not served: DRA claims are refused", extra={})
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

    def _pod_group(self, group_key: str) -> JsonDict | None:
        """The PodGroup object behind a gang key, from the watch of its kind."""
        api, namespace, name = split_group_key(group_key)
        store = (self._native_podgroups if api == NATIVE_PODGROUP_API else self._podgroups).store
        return store.get(f"{namespace}/{name}")

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
        self.binder.shutdown()
        if self.elector is not None:
            self.elector.stop(release=True)
        for reflector in self.reflectors:
            reflector.stop()
        self._podgroups.stop()
        self._native_podgroups.stop()
        self.gangs.close()
        self._nrts.stop()
        for reflector in self._dra:
            reflector.stop()  # idempotent: those that started were stopped with the others
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

    # -- the scheduling loop ----------------------------------------------------------------

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
            self.cycle.expire_reservations()
            item = self.queue.pop(timeout_s=0.5)
            if item is None:
                continue
            queued, cycle = item
            try:
                self.cycle.schedule_one(queued, cycle)
            except Exception:  # a bug in one pod's cycle must not stop the loop
                log.exception("scheduling cycle failed", extra={"pod": queued.key})
                self.metrics.attempts.labels("error").inc()
                self.cache.forget(queued.key)
                self.queue.requeue_error(queued)
