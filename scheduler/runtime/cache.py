"""The runtime's cluster cache: the core snapshot fed by the watch, plus assumed pods.

A pod the runtime has placed counts on its node from the moment it is *assumed* — before the
binding request is even sent — so the next cycle never offers the same last GPU twice. The
assumption ends one of three ways:

* confirmed: the watch shows the pod bound (on whatever node the API server recorded);
* forgotten: the binding failed (conflict, pod gone, node gone, error);
* expired: the binding succeeded but the watch never confirmed it within ``assume_ttl_s``
  (a safety net: the relist that follows a broken watch normally confirms it).

Pods bound by anyone else (kube-scheduler, a user setting nodeName) come in through the watch
and count as load like any other. Finished pods (Succeeded/Failed) free their resources.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gputopo.scheduler.runtime.core_adapter import SchedulingFramework
from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.runtime.queue import pod_key


def is_terminal(pod: JsonDict) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def node_name_of(pod: JsonDict) -> str:
    return str(pod.get("spec", {}).get("nodeName") or "")


@dataclass
class AssumedPod:
    pod: JsonDict
    node_name: str
    deadline: float | None = None


@dataclass
class ClusterCache:
    """Thread-safe: informer threads write, the scheduling loop and bind workers read."""

    framework: SchedulingFramework
    assume_ttl_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _assumed: dict[str, AssumedPod] = field(default_factory=dict, init=False)
    _bound_pods: dict[str, JsonDict] = field(default_factory=dict, init=False)
    _nodes: dict[str, JsonDict] = field(default_factory=dict, init=False)
    # The earliest confirmation deadline that may be due (a lower bound): the scheduling loop
    # asks for expiries every pass, and this keeps that a clock read instead of a locked scan.
    _next_deadline: float = field(default=math.inf, init=False)

    # -- nodes ------------------------------------------------------------------------------

    def upsert_node(self, node: JsonDict) -> None:
        with self.lock:
            name = str(node["metadata"]["name"])
            self._nodes[name] = node
            self.framework.upsert_node(node)

    def delete_node(self, node: JsonDict) -> None:
        with self.lock:
            name = str(node["metadata"]["name"])
            self._nodes.pop(name, None)
            self.framework.delete_node(name)

    def has_node(self, name: str) -> bool:
        return name in self._nodes  # one dict lookup is atomic; no need to wait for a cycle

    def node_count(self) -> int:
        with self.lock:
            return len(self._nodes)

    # -- pods seen through the watch --------------------------------------------------------

    def upsert_bound_pod(self, pod: JsonDict) -> None:
        """A pod with spec.nodeName: it is load on that node unless it has finished."""
        key = pod_key(pod)
        with self.lock:
            assumed = self._assumed.pop(key, None)
            if (
                assumed is not None
                and _confirms(assumed, pod)
                and self.framework.confirm(key, pod.get("metadata", {}).get("labels") or {})
            ):
                # The watch echoing our own binding: the core already counts this exact pod
                # there, so only the assumption ends (no re-parse, no detach and re-attach).
                self._bound_pods[key] = pod
                return
            if is_terminal(pod):
                self._remove_pod_locked(key)
                return
            self._bound_pods[key] = pod
            self.framework.upsert_pod(pod)

    def refresh_bound_pod(self, pod: JsonDict) -> None:
        """A newer version of a bound pod that changes nothing the core reads (its status, as the
        kubelet or kwok reports it): kept in place of the old one, the core left alone.

        Keeping the old version would hold two copies of every such pod, the cache's and the
        watch store's, for as long as the pod lives. A pod not counted (gone, finished) stays
        uncounted.
        """
        key = pod_key(pod)
        with self.lock:
            if key in self._bound_pods:
                self._bound_pods[key] = pod

    def delete_pod(self, pod: JsonDict) -> None:
        key = pod_key(pod)
        with self.lock:
            self._assumed.pop(key, None)
            self._remove_pod_locked(key)

    def _remove_pod_locked(self, key: str) -> None:
        if self._bound_pods.pop(key, None) is not None:
            self.framework.delete_pod(key)

    # -- assumptions ------------------------------------------------------------------------

    def assume(self, pod: JsonDict, node_name: str) -> None:
        """Count ``pod`` on ``node_name`` now; the binding request follows."""
        key = pod_key(pod)
        with self.lock:
            if key in self._bound_pods:
                bound_to = node_name_of(self._bound_pods[key])
                raise ValueError(f"Pod {key}: already bound to node {bound_to}")
            self.framework.assume(pod, node_name)
            self._assumed[key] = AssumedPod(pod=pod, node_name=node_name)
            self._bound_pods[key] = pod

    def finish_binding(self, key: str) -> None:
        """The binding succeeded: start the confirmation clock."""
        with self.lock:
            assumed = self._assumed.get(key)
            if assumed is not None:
                assumed.deadline = self.clock() + self.assume_ttl_s
                self._next_deadline = min(self._next_deadline, assumed.deadline)

    def forget(self, key: str) -> None:
        """The binding failed: the pod no longer counts where it was assumed."""
        with self.lock:
            if self._assumed.pop(key, None) is not None:
                self._bound_pods.pop(key, None)
                self.framework.forget(key)

    def expire_assumptions(self) -> list[str]:
        """Drop bound-but-never-confirmed assumptions past their deadline; their keys."""
        now = self.clock()
        if now < self._next_deadline:
            return []
        expired: list[str] = []
        with self.lock:
            upcoming = math.inf
            for key, assumed in list(self._assumed.items()):
                if assumed.deadline is None:
                    continue
                if assumed.deadline <= now:
                    expired.append(key)
                    del self._assumed[key]
                    self._bound_pods.pop(key, None)
                    self.framework.forget(key)
                else:
                    upcoming = min(upcoming, assumed.deadline)
            self._next_deadline = upcoming
        return expired

    def bound_pods(self) -> list[JsonDict]:
        """Pods the watch shows bound (assumed ones excluded): preemption's victim pool."""
        with self.lock:
            return [pod for key, pod in self._bound_pods.items() if key not in self._assumed]

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed  # atomic lookup

    def assumed_count(self) -> int:
        with self.lock:
            return len(self._assumed)


def _confirms(assumed: AssumedPod, pod: JsonDict) -> bool:
    """``pod`` (from the watch) is the assumed pod, bound where it was assumed, unchanged.

    Only then may the core's copy stand: a changed spec or a finished phase means the watch's
    version must replace it. Labels are the core's to compare (see ``ClusterSnapshot.confirm``):
    the binding itself may add topology labels.
    """
    if node_name_of(pod) != assumed.node_name or is_terminal(pod):
        return False
    spec = dict(pod.get("spec") or {})
    spec.pop("nodeName", None)
    return spec == assumed.pod.get("spec")
