"""PodGroup status, written by the scheduler through the `podgroups/status` subresource.

A native PodGroup (`scheduling.k8s.io`) gets only kube-scheduler's `PodGroupInitiallyScheduled`
condition, by strategic merge so conditions others own (`DisruptionTarget`) stay; what follows
is about Coscheduling's PodGroup.

scheduler-plugins splits this between a PodGroup controller (phase, counts, occupiedBy) and the
scheduler; gputopo has no controller, so the scheduler keeps the whole status: the phase and
counts computed by `scheduler.gang.group_status` from the group's pods, plus a `Scheduled`
condition saying why the group is not placed (turned away, released, backing off). A group is
re-synced whenever one of its pods changes or the scheduler holds, releases or binds it;
syncs are coalesced (one in flight per group) and a status equal to the stored one is never
written, so a restart with nothing changed makes no write. Only the leader writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from gputopo.scheduler.gang import (
    NATIVE_PODGROUP_API,
    NATIVE_SCHEDULED_CONDITION,
    PHASE_PENDING,
    group_status,
    native_group_condition,
    split_group_key,
)
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.workers import WorkerPool

log = logging.getLogger("gputopo.scheduler.podgroups")

CONDITION_TYPE = "Scheduled"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodGroupStatusWriter:
    """Coalesced, idempotent status writes and Warning events for PodGroups."""

    def __init__(
        self,
        api: KubeApi,
        recorder: EventRecorder,
        pod_group: Callable[[str], JsonDict | None],
        members: Callable[[str], list[JsonDict]],
        holding: Callable[[str], int],
        min_member: Callable[[str], int | None],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._api = api
        self._recorder = recorder
        self._pod_group = pod_group
        self._members = members
        self._holding = holding
        self._min_member = min_member
        self._active = active  # only the leader writes: a standby knows no held places
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._problems: dict[str, tuple[str, str]] = {}  # group -> (reason, message)
        self._written: dict[str, JsonDict] = {}
        self._pool = WorkerPool("podgroup-status", 1)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def touch(self, group_key: str) -> None:
        """Something about the group changed: recompute and write its status soon."""
        with self._lock:
            if group_key in self._dirty:
                return
            self._dirty.add(group_key)
        with contextlib.suppress(RuntimeError):  # shut down
            self._pool.submit(self._sync, group_key)

    def turned_away(self, group_key: str, reason: str, message: str) -> None:
        """The group could not be placed: Pending with a condition saying why, and an event
        regarding the PodGroup (repeats fold into the event's series)."""
        with self._lock:
            known = self._problems.get(group_key)
            self._problems[group_key] = (reason, message)
        pod_group = self._pod_group(group_key)
        if pod_group is not None and known != (reason, message):
            self._recorder.pod_group(pod_group, "Warning", "FailedScheduling", message)
        self.touch(group_key)

    def placed(self, group_key: str) -> None:
        """The group is bound: the problem, if any, is over."""
        with self._lock:
            self._problems.pop(group_key, None)
        self.touch(group_key)

    def forget(self, group_key: str) -> None:
        with self._lock:
            self._problems.pop(group_key, None)
            self._written.pop(group_key, None)

    def _sync(self, group_key: str) -> None:
        with self._lock:
            self._dirty.discard(group_key)
            problem = self._problems.get(group_key)
        if not self._active():
            return
        pod_group = self._pod_group(group_key)
        min_member = self._min_member(group_key)
        if pod_group is None or min_member is None:
            return
        previous = pod_group.get("status") or {}
        if split_group_key(group_key)[0] == NATIVE_PODGROUP_API:
            self._sync_native(group_key, min_member, problem, previous)
            return
        status = group_status(
            min_member,
            self._members(group_key),
            self._holding(group_key),
            problem is not None,
            previous,
            _now(),
        )
        status["conditions"] = [self._condition(status["phase"], problem, previous)]
        with self._lock:
            if self._written.get(group_key) == status:
                return
        if _same(previous, status):
            with self._lock:
                self._written[group_key] = status
            return
        if self._patch(group_key, {"status": status}, "application/merge-patch+json"):
            with self._lock:
                self._written[group_key] = status

    def _sync_native(
        self,
        group_key: str,
        min_member: int,
        problem: tuple[str, str] | None,
        previous: JsonDict,
    ) -> None:
        condition = native_group_condition(
            min_member, self._members(group_key), problem, previous, _now()
        )
        if condition is None:
            return
        status = {"conditions": [condition]}
        with self._lock:
            if self._written.get(group_key) == status:
                return
        conditions = previous.get("conditions") or []
        stored = [c for c in conditions if c.get("type") == NATIVE_SCHEDULED_CONDITION]
        if stored == [condition] or self._patch(
            group_key, {"status": status}, "application/strategic-merge-patch+json"
        ):
            with self._lock:
                self._written[group_key] = status

    def _patch(self, group_key: str, body: JsonDict, content_type: str) -> bool:
        api, namespace, name = split_group_key(group_key)
        try:
            self._api.request(
                "PATCH",
                f"{api}/namespaces/{namespace}/podgroups/{name}/status",
                body=body,
                content_type=content_type,
            )
        except (KubeApiError, OSError) as err:
            log.warning(
                "cannot update PodGroup status", extra={"group": group_key, "error": str(err)}
            )
            return False
        return True

    @staticmethod
    def _condition(phase: str, problem: tuple[str, str] | None, previous: JsonDict) -> JsonDict:
        if problem is not None and phase == PHASE_PENDING:
            status, reason, message = "False", problem[0], problem[1]
        elif phase in ("Scheduled", "Running", "Finished", "Failed"):
            status, reason, message = "True", "Scheduled", "minMember members have a node"
        else:
            status, reason, message = "False", "Waiting", f"the group is {phase}"
        for old in previous.get("conditions") or []:
            if old.get("type") == CONDITION_TYPE and old.get("status") == status:
                transition = old.get("lastTransitionTime") or _now()
                break
        else:
            transition = _now()
        return {
            "type": CONDITION_TYPE,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": transition,
        }


def _same(stored: JsonDict, status: JsonDict) -> bool:
    """Whether the stored status already says what ``status`` says (zeros may be omitted)."""
    for key, value in status.items():
        if key == "conditions":
            old = [dict(c) for c in stored.get("conditions") or []]
            if old != value:
                return False
        elif stored.get(key, 0 if isinstance(value, int) else None) != value:
            return False
    return True
