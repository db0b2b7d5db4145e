"""Gang scheduling, compatible with scheduler-plugins' Coscheduling.

A pod joins a gang with the label `scheduling.x-k8s.io/pod-group: <PodGroup name>` (the
PodGroup, `scheduling.x-k8s.io/v1alpha1`, lives in the pod's namespace). No member is bound
until `minMember` members have a place:

- PreFilter: a member whose group is unknown, or whose group has fewer than `minMember` pods in
  all (pending + bound), is unschedulable at once, with Coscheduling's message.
- Permit: a member that found a node *holds* it (the runtime assumes it there, so no one else
  takes the room) and waits. When held + already bound members reach `minMember`, every held
  member is released to binding together.
- Reject: when a member finds no node while siblings hold places, the whole group lets go of
  its places at once — a half-placed gang never sits on room another gang could complete in
  (that is what keeps two competing gangs from deadlocking).
- Timeout: places held longer than `scheduleTimeoutSeconds` (default 60 s) are let go, the
  members back off and are retried.

This module keeps the state; `scheduler/runtime/runner.py` makes the calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

POD_GROUP_LABEL: Final = "scheduling.x-k8s.io/pod-group"
PODGROUP_GROUP: Final = "scheduling.x-k8s.io"
PODGROUP_VERSION: Final = "v1alpha1"
PODGROUP_API: Final = f"/apis/{PODGROUP_GROUP}/{PODGROUP_VERSION}"
PODGROUPS_PATH: Final = f"{PODGROUP_API}/podgroups"
DEFAULT_TIMEOUT_S: Final = 60.0

JsonDict = dict[str, Any]


def group_key_of(pod: JsonDict) -> str | None:
    """`namespace/podgroup` for a gang member, None for any other pod."""
    meta = pod.get("metadata") or {}
    name = (meta.get("labels") or {}).get(POD_GROUP_LABEL)
    if not name:
        return None
    return f"{meta.get('namespace') or 'default'}/{name}"


@dataclass(frozen=True)
class PodGroupSpec:
    key: str
    min_member: int
    timeout_s: float

    @classmethod
    def from_json(cls, obj: JsonDict) -> PodGroupSpec:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        timeout = spec.get("scheduleTimeoutSeconds")
        return cls(
            key=f"{meta.get('namespace') or 'default'}/{meta.get('name')}",
            min_member=max(int(spec.get("minMember") or 1), 1),
            timeout_s=float(timeout) if timeout else DEFAULT_TIMEOUT_S,
        )


def not_found_message(group_key: str) -> str:
    return f"pod group {group_key} not found"


def too_few_message(pod_key: str, count: int, min_member: int) -> str:
    """Coscheduling's PreFilter message."""
    return (
        f"pre-filter pod {pod_key.split('/', 1)[-1]} cannot find enough sibling pods, "
        f"current pods number: {count}, minMember of group: {min_member}"
    )


def timeout_message(group_key: str) -> str:
    return f"pod group {group_key}: members waited past scheduleTimeoutSeconds for a full gang"


def rejected_message(group_key: str) -> str:
    return f"pod group {group_key}: a member has no place, so the group released its places"


@dataclass
class _Waiting:
    since: float
    members: dict[str, tuple[Any, str]] = field(default_factory=dict)  # pod key -> (item, node)


@dataclass
class GangCoordinator:
    """Thread-safe gang state: known PodGroups and the members holding places."""

    clock: Callable[[], float] = time.monotonic
    _groups: dict[str, PodGroupSpec] = field(default_factory=dict, init=False)
    _waiting: dict[str, _Waiting] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def upsert_group(self, obj: JsonDict) -> None:
        spec = PodGroupSpec.from_json(obj)
        with self._lock:
            self._groups[spec.key] = spec

    def delete_group(self, obj: JsonDict) -> None:
        with self._lock:
            self._groups.pop(PodGroupSpec.from_json(obj).key, None)

    def group(self, key: str) -> PodGroupSpec | None:
        with self._lock:
            return self._groups.get(key)

    def is_waiting(self, group_key: str, pod_key: str) -> bool:
        with self._lock:
            waiting = self._waiting.get(group_key)
            return waiting is not None and pod_key in waiting.members

    def waiting_count(self, group_key: str) -> int:
        with self._lock:
            waiting = self._waiting.get(group_key)
            return 0 if waiting is None else len(waiting.members)

    def hold(
        self, group_key: str, pod_key: str, item: Any, node: str, bound_members: int
    ) -> list[tuple[Any, str]] | None:
        """Record a member holding ``node``; every held member once the gang is complete."""
        with self._lock:
            spec = self._groups.get(group_key)
            waiting = self._waiting.setdefault(group_key, _Waiting(since=self.clock()))
            waiting.members[pod_key] = (item, node)
            min_member = spec.min_member if spec is not None else 1
            if len(waiting.members) + bound_members < min_member:
                return None
            del self._waiting[group_key]
            return list(waiting.members.values())

    def release(self, group_key: str) -> list[tuple[Any, str]]:
        """Let go of every place the group holds (reject); the members held."""
        with self._lock:
            waiting = self._waiting.pop(group_key, None)
            return [] if waiting is None else list(waiting.members.values())

    def drop(self, group_key: str, pod_key: str) -> None:
        """A waiting member is gone (deleted)."""
        with self._lock:
            waiting = self._waiting.get(group_key)
            if waiting is not None:
                waiting.members.pop(pod_key, None)
                if not waiting.members:
                    del self._waiting[group_key]

    def expired(self) -> dict[str, list[tuple[Any, str]]]:
        """Groups whose first held place is older than their timeout, released."""
        now = self.clock()
        out: dict[str, list[tuple[Any, str]]] = {}
        with self._lock:
            for key, waiting in list(self._waiting.items()):
                spec = self._groups.get(key)
                timeout = spec.timeout_s if spec is not None else DEFAULT_TIMEOUT_S
                if now - waiting.since >= timeout:
                    out[key] = list(waiting.members.values())
                    del self._waiting[key]
        return out
