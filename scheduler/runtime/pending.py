"""The pods waiting for this scheduler, as the watch last saw them, and their nominated nodes.

The watch thread writes it (`put`, `drop`); the scheduling loop, the binders and the gang hooks
read it. A cycle always schedules the newest version of a pod, and a bind for a pod that has
meanwhile been deleted or bound elsewhere is given up.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from gputopo.scheduler.runtime.kube import JsonDict


def nominated_node(pod: JsonDict) -> str:
    """``status.nominatedNodeName`` (set by a preemption or a reservation), or ""."""
    return str((pod.get("status") or {}).get("nominatedNodeName") or "")


class PendingPods:
    """Pending pods by key; the keys of those with ``status.nominatedNodeName`` kept apart."""

    def __init__(self) -> None:
        self._pods: dict[str, JsonDict] = {}
        self._nominated: set[str] = set()
        self._lock = threading.Lock()

    def put(self, key: str, pod: JsonDict) -> None:
        with self._lock:
            self._pods[key] = pod
            if pod.get("status", {}).get("nominatedNodeName"):
                self._nominated.add(key)
            else:
                self._nominated.discard(key)

    def drop(self, key: str) -> None:
        with self._lock:
            self._pods.pop(key, None)

    def get(self, key: str) -> JsonDict | None:
        with self._lock:
            return self._pods.get(key)

    def items(self) -> list[tuple[str, JsonDict]]:
        with self._lock:
            return list(self._pods.items())

    def any_nominated(self) -> bool:
        """Unlocked: the common case, nothing nominated, costs no lock."""
        return bool(self._nominated)

    def nominations(self, besides: str, held: Mapping[str, str]) -> list[tuple[JsonDict, str]]:
        """Other pending pods with a node: the one ``held`` for them, else their nomination."""
        with self._lock:
            # Drop bound or deleted ones (intersection_update would walk all of the pods).
            self._nominated = {k for k in self._nominated if k in self._pods}
            return [
                (other, held.get(other_key) or nominated_node(other))
                for other_key in self._nominated | held.keys()
                if other_key != besides and (other := self._pods.get(other_key)) is not None
            ]

    def nominated_nodes(self, besides: str) -> set[str]:
        """The nodes other pending pods are nominated to."""
        with self._lock:
            return {
                nominated_node(other)
                for other_key in self._nominated
                if other_key != besides and (other := self._pods.get(other_key)) is not None
            }
