"""The scheduling queue: kube-scheduler's PriorityQueue, reduced to what gputopo needs.

Three places a pending pod can be, as in kube-scheduler:

* active — a heap ordered by priority (higher first), then by when the pod was first queued;
* backoff — pods that failed and wait out 1 s, 2 s, 4 s ... capped at 10 s
  (podInitialBackoff / podMaxBackoff) before going back to active;
* unschedulable — pods no node could take; they stay until a cluster event that could make them
  schedulable (node added or changed, pod deleted or finished) moves them out, or until they
  have waited ``max_unschedulable_s`` (podMaxInUnschedulablePodsDuration, 5 min).

A pod that fails while a move request happened during its attempt goes to backoff instead of
unschedulable, so an event that arrived mid-cycle is never lost (kube's moveRequestCycle).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


def pod_key(pod: JsonDict) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


@dataclass
class QueuedPod:
    """A pending pod and its scheduling history."""

    pod: JsonDict
    priority: int
    first_queued: float
    attempts: int = 0
    last_failure: float = 0.0
    unschedulable_since: float = 0.0

    @property
    def key(self) -> str:
        return pod_key(self.pod)


@dataclass(frozen=True)
class QueueDepth:
    active: int
    backoff: int
    unschedulable: int
    in_flight: int


@dataclass
class SchedulingQueue:
    """Thread-safe priority queue with backoff; ``pop`` blocks until a pod is ready or closed."""

    priority_of: Callable[[JsonDict], int]
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    max_unschedulable_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _active: list[tuple[int, float, int, str]] = field(default_factory=list, init=False)
    _active_keys: set[str] = field(default_factory=set, init=False)
    _backoff: dict[str, QueuedPod] = field(default_factory=dict, init=False)
    _unschedulable: dict[str, QueuedPod] = field(default_factory=dict, init=False)
    _pods: dict[str, QueuedPod] = field(default_factory=dict, init=False)
    _in_flight: dict[str, int] = field(default_factory=dict, init=False)
    _gone_in_flight: set[str] = field(default_factory=set, init=False)
    _move_cycle: int = field(default=0, init=False)
    _cycle: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False)

    # -- feeding ----------------------------------------------------------------------------

    def add(self, pod: JsonDict) -> None:
        """A new pending pod (or one seen again after a relist): straight to active."""
        with self._lock:
            self._add_locked(pod)

    def update(self, pod: JsonDict) -> None:
        """A pending pod changed; a spec change makes an unschedulable pod worth retrying."""
        key = pod_key(pod)
        with self._lock:
            known = self._pods.get(key)
            if known is None:
                self._add_locked(pod)
                return
            changed = known.pod.get("spec") != pod.get("spec") or known.pod.get("metadata", {}).get(
                "labels"
            ) != pod.get("metadata", {}).get("labels")
            known.pod = pod
            known.priority = self.priority_of(pod)
            if changed and key in self._unschedulable:
                del self._unschedulable[key]
                self._to_backoff_or_active(known)

    def delete(self, pod_or_key: JsonDict | str) -> None:
        """The pod is gone or no longer ours (deleted, bound by someone else)."""
        key = pod_or_key if isinstance(pod_or_key, str) else pod_key(pod_or_key)
        with self._lock:
            self._pods.pop(key, None)
            self._backoff.pop(key, None)
            self._unschedulable.pop(key, None)
            self._active_keys.discard(key)
            if key in self._in_flight:
                self._gone_in_flight.add(key)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._pods or key in self._in_flight

    # -- the scheduling cycle ---------------------------------------------------------------

    def pop(self, timeout_s: float | None = None) -> tuple[QueuedPod, int] | None:
        """The highest-priority ready pod and the cycle number it is attempted in.

        None on timeout or after close. The pod stays "in flight" until ``done`` is called.
        """
        deadline = None if timeout_s is None else self.clock() + timeout_s
        with self._lock:
            while True:
                if self._closed:
                    return None
                self._flush_locked()
                while self._active:
                    _, _, _, key = heapq.heappop(self._active)
                    if key not in self._active_keys:
                        continue
                    self._active_keys.discard(key)
                    queued = self._pods.pop(key)
                    queued.attempts += 1
                    self._cycle += 1
                    self._in_flight[key] = self._cycle
                    return queued, self._cycle
                wait = self._next_wakeup_locked()
                if deadline is not None:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._lock.wait(wait)

    def done(self, key: str) -> None:
        """The attempt for ``key`` ended with the pod bound (or given up)."""
        with self._lock:
            self._in_flight.pop(key, None)
            self._gone_in_flight.discard(key)

    def requeue_unschedulable(self, queued: QueuedPod, cycle: int) -> None:
        """No node fits. Park the pod, or back it off if a move request raced the attempt."""
        with self._lock:
            if not self._end_flight_locked(queued.key):
                return
            queued.last_failure = self.clock()
            self._pods[queued.key] = queued
            if self._move_cycle >= cycle:
                self._backoff[queued.key] = queued
            else:
                queued.unschedulable_since = self.clock()
                self._unschedulable[queued.key] = queued
            self._lock.notify_all()

    def requeue_error(self, queued: QueuedPod) -> None:
        """The attempt failed for a reason unrelated to fit (bind error): back off and retry."""
        with self._lock:
            if not self._end_flight_locked(queued.key):
                return
            queued.last_failure = self.clock()
            self._pods[queued.key] = queued
            self._backoff[queued.key] = queued
            self._lock.notify_all()

    def move_all_to_active_or_backoff(self) -> None:
        """A cluster event that may free room: every unschedulable pod gets another chance."""
        with self._lock:
            self._move_cycle = self._cycle
            for key, queued in list(self._unschedulable.items()):
                del self._unschedulable[key]
                self._to_backoff_or_active(queued)
            self._lock.notify_all()

    def activate(self, keys: Iterable[str]) -> None:
        """Retry these pods now, skipping their backoff (a gang sibling is holding a place)."""
        with self._lock:
            for key in keys:
                queued = self._backoff.pop(key, None) or self._unschedulable.pop(key, None)
                if queued is not None:
                    self._push_active(queued)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def depth(self) -> QueueDepth:
        with self._lock:
            return QueueDepth(
                active=len(self._active_keys),
                backoff=len(self._backoff),
                unschedulable=len(self._unschedulable),
                in_flight=len(self._in_flight),
            )

    def backoff_duration(self, attempts: int) -> float:
        """1 s, 2 s, 4 s, ... capped: kube-scheduler's calculateBackoffDuration."""
        duration = self.initial_backoff_s
        for _ in range(1, max(attempts, 1)):
            duration *= 2
            if duration >= self.max_backoff_s:
                return self.max_backoff_s
        return min(duration, self.max_backoff_s)

    # -- internals (lock held) ----------------------------------------------------------------

    def _end_flight_locked(self, key: str) -> bool:
        """Close the attempt; False when the pod must not come back (gone, queued, closed)."""
        self._in_flight.pop(key, None)
        if key in self._gone_in_flight:
            self._gone_in_flight.discard(key)
            return False
        return not (self._closed or key in self._pods)

    def _add_locked(self, pod: JsonDict) -> None:
        key = pod_key(pod)
        known = self._pods.get(key)
        if known is not None:
            known.pod = pod
            known.priority = self.priority_of(pod)
            return
        if key in self._in_flight:
            return
        queued = QueuedPod(pod=pod, priority=self.priority_of(pod), first_queued=self.clock())
        self._pods[key] = queued
        self._push_active(queued)

    def _push_active(self, queued: QueuedPod) -> None:
        self._active_keys.add(queued.key)
        heapq.heappush(
            self._active, (-queued.priority, queued.first_queued, next(self._seq), queued.key)
        )
        self._lock.notify_all()

    def _backoff_expiry(self, queued: QueuedPod) -> float:
        return queued.last_failure + self.backoff_duration(queued.attempts)

    def _to_backoff_or_active(self, queued: QueuedPod) -> None:
        if queued.attempts and self._backoff_expiry(queued) > self.clock():
            self._backoff[queued.key] = queued
        else:
            self._push_active(queued)

    def _flush_locked(self) -> None:
        now = self.clock()
        for key, queued in list(self._backoff.items()):
            if self._backoff_expiry(queued) <= now:
                del self._backoff[key]
                self._push_active(queued)
        for key, queued in list(self._unschedulable.items()):
            if now - queued.unschedulable_since >= self.max_unschedulable_s:
                del self._unschedulable[key]
                self._to_backoff_or_active(queued)

    def _next_wakeup_locked(self) -> float | None:
        now = self.clock()
        times = [self._backoff_expiry(q) - now for q in self._backoff.values()]
        times += [
            q.unschedulable_since + self.max_unschedulable_s - now
            for q in self._unschedulable.values()
        ]
        if not times:
            return None
        return max(min(times), 0.001)
