"""What users read in `kubectl describe pod`: events and the PodScheduled condition.

Events are events.k8s.io/v1 like kube-scheduler's (reason FailedScheduling / Scheduled,
action Scheduling / Binding). A failure repeated with the same message within six minutes
updates the first event's ``series`` instead of creating another object, the way client-go's
events recorder deduplicates. Writes run on a small worker pool so a slow API server never
holds up a scheduling cycle; their failures are logged, never raised into the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.leader import micro_time
from gputopo.scheduler.runtime.workers import WorkerPool

log = logging.getLogger("gputopo.scheduler.events")

SERIES_WINDOW_S = 360.0
SCHEDULING_GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"
# Events remembered for a series before those older than the window are dropped.
REMEMBERED_EVENTS = 10000


@dataclass
class _Recorded:
    name: str
    namespace: str
    count: int
    last_seen: float


@dataclass
class EventRecorder:
    api: KubeApi
    controller: str
    instance: str
    workers: int = 4
    _pool: WorkerPool = field(init=False)
    _recorded: dict[tuple[str, str, str], _Recorded] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _expire_above: int = field(default=REMEMBERED_EVENTS, init=False)

    def __post_init__(self) -> None:
        self._pool = WorkerPool("events", self.workers)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def scheduled(self, pod: JsonDict, node_name: str) -> None:
        """One per binding: a pod is bound once, so this event never repeats and is not
        remembered for a series (remembering it would keep an entry per bound pod)."""
        meta = pod.get("metadata", {})
        note = f"Successfully assigned {meta.get('namespace')}/{meta.get('name')} to {node_name}"
        self._pool.submit(self._emit_once, pod, "Normal", "Scheduled", "Binding", note)

    def _emit_once(
        self, pod: JsonDict, event_type: str, reason: str, action: str, note: str
    ) -> None:
        self._emit(pod, event_type, reason, action, note, remember=False)

    def failed_scheduling(self, pod: JsonDict, message: str) -> None:
        """FailedScheduling event plus PodScheduled=False/Unschedulable, both saying ``message``."""
        self._pool.submit(self._failed, pod, message)

    def _failed(self, pod: JsonDict, message: str) -> None:
        self._emit(pod, "Warning", "FailedScheduling", "Scheduling", message)
        self._set_pod_scheduled_false(pod, "Unschedulable", message)

    def preempted(self, victim: JsonDict, preemptor: JsonDict, node_name: str) -> None:
        """kube-scheduler's event on a preemption victim."""
        uid = preemptor.get("metadata", {}).get("uid")
        note = f"Preempted by pod {uid} on node {node_name}"
        self._pool.submit(self._emit, victim, "Normal", "Preempted", "Preempting", note)

    def preempting(self, preemptor: JsonDict, note: str) -> None:
        """On the preemptor: which pods it evicts where, and any PodDisruptionBudget violated."""
        self._pool.submit(self._emit, preemptor, "Normal", "Preempting", "Preempting", note)

    def scheduling_gated(self, pod: JsonDict) -> None:
        """PodScheduled=False/SchedulingGated, as kube-scheduler marks a gated pod (no event)."""
        self._pool.submit(
            self._set_pod_scheduled_false, pod, "SchedulingGated", SCHEDULING_GATED_MESSAGE
        )

    def pod_group(self, pod_group: JsonDict, event_type: str, reason: str, note: str) -> None:
        """An event regarding a PodGroup (scheduling.x-k8s.io/v1alpha1)."""
        self._pool.submit(
            self._emit,
            pod_group,
            event_type,
            reason,
            "Scheduling",
            note,
            ("scheduling.x-k8s.io/v1alpha1", "PodGroup"),
        )

    def record(self, pod: JsonDict, event_type: str, reason: str, action: str, note: str) -> None:
        """Any other event regarding a pod (the rebalance controller's), deduplicated alike."""
        self._pool.submit(self._emit, pod, event_type, reason, action, note)

    def _emit(
        self,
        pod: JsonDict,
        event_type: str,
        reason: str,
        action: str,
        note: str,
        regarding: tuple[str, str] = ("v1", "Pod"),
        *,
        remember: bool = True,
    ) -> None:
        meta = pod.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid") or "")
        key = (uid, reason, note)
        now = time.monotonic()
        known: _Recorded | None = None
        with self._lock:
            if remember:
                known = self._recorded.get(key)
            if known is not None and now - known.last_seen < SERIES_WINDOW_S:
                known.count += 1
                known.last_seen = now
                count, name = known.count, known.name
            else:
                known = None
        try:
            if known is not None:
                self.api.request(
                    "PATCH",
                    f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}",
                    body={"series": {"count": count, "lastObservedTime": micro_time()}},
                    content_type="application/merge-patch+json",
                )
                return
            name = f"{meta.get('name')}.{time.time_ns():x}"
            body: JsonDict = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "eventTime": micro_time(),
                "type": event_type,
                "reason": reason,
                "action": action,
                "note": note[:1024],
                "reportingController": self.controller,
                "reportingInstance": self.instance[:128],
                "regarding": {
                    "apiVersion": regarding[0],
                    "kind": regarding[1],
                    "namespace": namespace,
                    "name": meta.get("name"),
                    "uid": uid,
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
            }
            self.api.request(
                "POST",
                f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                body=body,
                decode=False,
            )
            if not remember:
                return
            with self._lock:
                self._recorded[key] = _Recorded(name, namespace, 1, now)
                if len(self._recorded) > self._expire_above:
                    self._expire_locked(now)
                    # a scan per event while more than that are within the window would cost
                    # O(n) each: the next scan waits until the map has doubled
                    self._expire_above = max(REMEMBERED_EVENTS, 2 * len(self._recorded))
        except (KubeApiError, OSError, ValueError) as err:
            log.warning(
                "event write failed",
                extra={
                    "reason": reason,
                    "pod": f"{namespace}/{meta.get('name')}",
                    "error": str(err),
                },
            )
            with self._lock:
                self._recorded.pop(key, None)

    def _expire_locked(self, now: float) -> None:
        for key, recorded in list(self._recorded.items()):
            if now - recorded.last_seen >= SERIES_WINDOW_S:
                del self._recorded[key]

    def _set_pod_scheduled_false(self, pod: JsonDict, reason: str, message: str) -> None:
        """Patch PodScheduled=False with ``reason`` unless the pod already says exactly that."""
        meta = pod.get("metadata", {})
        for condition in pod.get("status", {}).get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == reason
                and condition.get("message") == message
            ):
                return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": reason,
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                    }
                ]
            }
        }
        path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}/status"
        try:
            self.api.request(
                "PATCH", path, body=patch, content_type="application/strategic-merge-patch+json"
            )
        except (KubeApiError, OSError, ValueError) as err:
            log.warning("pod status patch failed", extra={"path": path, "error": str(err)})
