"""Write a pod's DRA allocations before its bind, and take them back when the bind fails.

As kube-scheduler's DynamicResources PreBind: each claim the cycle allocated gets the
``resource.kubernetes.io/delete-protection`` finalizer, then ``status.allocation`` (results and
a nodeSelector naming the node) and the pod in ``status.reservedFor``; a claim already allocated
(shared by several pods) only gets the pod added to ``reservedFor``. Every write carries the
``resourceVersion`` the scheduler last saw, so the API server refuses it (409) when anyone —
kube-scheduler writing allocations on the same nodes, another gputopo replica — changed the
claim since: a device is never allocated twice. A refused write fails the bind; what was
already written for the pod is released (the pod leaves ``reservedFor``, an allocation this
scheduler made is removed), and the pod is tried again with the newer state.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.scheduler.dra.state import DraState, PodAllocation, PodClaim
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError

log = logging.getLogger("gputopo.scheduler.runtime")

CLAIMS_PATH: Final = "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}"
FINALIZER: Final = "resource.kubernetes.io/delete-protection"


class DraWriteError(Exception):
    """A claim could not be written; the message names the claim and why."""


@dataclass
class _Written:
    claim: str  # namespace/name
    allocated: bool  # this scheduler wrote the allocation (else: only reservedFor)
    obj: JsonDict  # the claim as the API server returned it


@dataclass
class PodDraPlan:
    """What the cycle decided for one pod: the node and the claims' allocations."""

    node: str
    claims: tuple[PodClaim, ...]
    outcome: PodAllocation
    written: list[_Written] = field(default_factory=list)


class DraWriter:
    def __init__(self, api: KubeApi, state: DraState, lock: threading.RLock) -> None:
        self.api = api
        self.state = state
        self.lock = lock
        self.plans: dict[str, PodDraPlan] = {}

    # -- the cycle's side (under the cache lock) ------------------------------------------------

    def plan(self, key: str, plan: PodDraPlan) -> None:
        self.plans[key] = plan

    # -- the binder's side ------------------------------------------------------------------------

    def write(self, key: str, pod: JsonDict) -> None:
        """Write every claim of the pod's plan; DraWriteError (after releasing) on a refusal."""
        plan = self.plans.get(key)
        if plan is None:
            return
        meta = pod["metadata"]
        consumer = {"resource": "pods", "name": str(meta["name"]), "uid": str(meta.get("uid", ""))}
        try:
            for pod_claim in plan.claims:
                claim = pod_claim.claim
                results = plan.outcome.allocation.results.get(claim.key)
                with self.lock:
                    current = self.state.claims.get(claim.key)
                if current is None:
                    raise DraWriteError(f"resourceclaim {claim.key} is gone")
                obj: JsonDict = copy.deepcopy(dict(current.raw))
                status = obj.setdefault("status", {})
                reserved = status.setdefault("reservedFor", [])
                if any(entry.get("uid") == consumer["uid"] for entry in reserved):
                    continue
                if results is None and not status.get("allocation"):
                    raise DraWriteError(
                        f"resourceclaim {claim.key}: its allocation is not written yet"
                    )
                if results is not None:
                    if status.get("allocation"):
                        raise DraWriteError(
                            f"resourceclaim {claim.key} was allocated by someone else meanwhile"
                        )
                    obj = self._protect(obj)
                    status = obj.setdefault("status", {})
                    status["allocation"] = {
                        "devices": {"results": [r.wire() for r in results]},
                        "nodeSelector": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {
                                            "key": "metadata.name",
                                            "operator": "In",
                                            "values": [plan.node],
                                        }
                                    ]
                                }
                            ]
                        },
                    }
                    reserved = status.setdefault("reservedFor", [])
                reserved.append(consumer)
                written = self._put(obj, status=True)
                plan.written.append(_Written(claim.key, results is not None, written))
        except DraWriteError:
            self.release(key)
            raise

    def _protect(self, obj: JsonDict) -> JsonDict:
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if FINALIZER in finalizers:
            return obj
        finalizers.append(FINALIZER)
        return self._put(obj, status=False)

    def _put(self, obj: JsonDict, *, status: bool) -> JsonDict:
        meta = obj["metadata"]
        path = CLAIMS_PATH.format(namespace=meta["namespace"], name=meta["name"])
        try:
            answer: Any = self.api.request("PUT", path + ("/status" if status else ""), body=obj)
        except KubeApiError as err:
            raise DraWriteError(
                f"resourceclaim {meta['namespace']}/{meta['name']}: "
                f"{'conflict: changed since it was read' if err.status == 409 else err}"
            ) from None
        except OSError as err:
            raise DraWriteError(
                f"resourceclaim {meta['namespace']}/{meta['name']}: {err}"
            ) from None
        return dict(answer)

    def release(self, key: str) -> None:
        """Undo what ``write`` wrote for the pod and drop its assumed allocations."""
        plan = self.plans.pop(key, None)
        if plan is None:
            return
        with self.lock:
            self.state.forget(plan.outcome.allocation.results)
        for written in reversed(plan.written):
            obj = copy.deepcopy(written.obj)
            status = obj.setdefault("status", {})
            status["reservedFor"] = [
                entry
                for entry in status.get("reservedFor") or []
                if entry.get("name") != _pod_name(key)
            ]
            if written.allocated and not status["reservedFor"]:
                status.pop("allocation", None)
            try:
                self._put(obj, status=True)
            except DraWriteError as err:
                # the resourceclaim controller clears reservations of pods that are gone
                log.warning("cannot release a claim", extra={"pod": key, "error": str(err)})
        plan.written.clear()

    def done(self, key: str) -> None:
        """The bind succeeded: the claims' watch events confirm the allocations."""
        self.plans.pop(key, None)


def _pod_name(key: str) -> str:
    return key.partition("/")[2]
