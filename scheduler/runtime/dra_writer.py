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

from gputopo.scheduler.dra.model import AllocationResult
from gputopo.scheduler.dra.state import EXTENDED_CLAIM, DraState, PodAllocation, PodClaim
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError

log = logging.getLogger("gputopo.scheduler.runtime")

CLAIMS_PATH: Final = "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}"
FINALIZER: Final = "resource.kubernetes.io/delete-protection"
EXTENDED_CLAIM_ANNOTATION: Final = "resource.kubernetes.io/extended-resource-claim"


class DraWriteError(Exception):
    """A claim could not be written; the message names the claim and why."""


@dataclass
class _Written:
    claim: str  # namespace/name
    allocated: bool  # this scheduler wrote the allocation (else: only reservedFor)
    obj: JsonDict  # the claim as the API server returned it
    created: bool = False  # this scheduler created the claim (extended resources)


@dataclass
class PodDraPlan:
    """What the cycle decided for one pod: the node and the claims' allocations."""

    node: str
    claims: tuple[PodClaim, ...]
    outcome: PodAllocation
    written: list[_Written] = field(default_factory=list)
    # DRA-backed extended resources: resource -> device class name
    extended: dict[str, str] = field(default_factory=dict)
    extended_claim: str | None = None  # the created claim, namespace/name

    def synthetic_key(self) -> str:
        for pod_claim in self.claims:
            if pod_claim.pod_claim_name == EXTENDED_CLAIM:
                return pod_claim.claim.key
        return ""


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
                if pod_claim.pod_claim_name == EXTENDED_CLAIM and results is not None:
                    self._write_extended(plan, pod, results, consumer)
                    continue
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
                    status["allocation"] = _allocation(plan.node, [r.wire() for r in results])
                    reserved = status.setdefault("reservedFor", [])
                reserved.append(consumer)
                written = self._put(obj, status=True)
                plan.written.append(_Written(claim.key, results is not None, written))
        except DraWriteError:
            self.release(key)
            raise

    def _write_extended(
        self,
        plan: PodDraPlan,
        pod: JsonDict,
        results: tuple[AllocationResult, ...],
        consumer: dict[str, str],
    ) -> None:
        """kube-scheduler's claim for DRA-backed extended resources (KEP-5004): created with the
        pod as owner, one request per container and resource, allocated, and named in the pod's
        ``status.extendedResourceClaimStatus``."""
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace") or "default"), str(meta["name"])
        by_resource: dict[str, list[AllocationResult]] = {}
        for index, resource in enumerate(sorted(plan.extended)):
            by_resource[resource] = [r for r in results if r.request == f"request-{index}"]
        requests, mappings, assigned = _container_requests(pod, plan.extended, by_resource)
        claim = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {
                "generateName": f"{name}-extended-resources-",
                "namespace": namespace,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": name,
                        "uid": str(meta.get("uid", "")),
                        "controller": True,
                    }
                ],
                "annotations": {EXTENDED_CLAIM_ANNOTATION: "true"},
                "finalizers": [FINALIZER],
            },
            "spec": {"devices": {"requests": requests}},
        }
        try:
            created: JsonDict = dict(
                self.api.request(
                    "POST",
                    f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims",
                    body=claim,
                )
            )
        except (KubeApiError, OSError) as err:
            raise DraWriteError(
                f"extended-resource claim of pod {namespace}/{name}: {err}"
            ) from None
        plan.written.append(
            _Written(f"{namespace}/{created['metadata']['name']}", True, created, True)
        )
        created.setdefault("status", {})["allocation"] = _allocation(plan.node, assigned)
        created["status"]["reservedFor"] = [consumer]
        written = self._put(created, status=True)
        plan.written[-1] = _Written(plan.written[-1].claim, True, written, True)
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                body={
                    "status": {
                        "extendedResourceClaimStatus": {
                            "requestMappings": mappings,
                            "resourceClaimName": created["metadata"]["name"],
                        }
                    }
                },
                content_type="application/merge-patch+json",
            )
        except (KubeApiError, OSError) as err:
            raise DraWriteError(
                f"pod {namespace}/{name}: extendedResourceClaimStatus: {err}"
            ) from None
        plan.extended_claim = f"{namespace}/{created['metadata']['name']}"

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
            if written.created:
                self._delete_created(written)
                continue
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

    def _delete_created(self, written: _Written) -> None:
        obj = copy.deepcopy(written.obj)
        obj["metadata"]["finalizers"] = [
            f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER
        ]
        meta = obj["metadata"]
        path = CLAIMS_PATH.format(namespace=meta["namespace"], name=meta["name"])
        try:
            self._put(obj, status=False)
            self.api.request("DELETE", path)
        except (DraWriteError, KubeApiError, OSError) as err:
            log.warning("cannot delete an extended-resource claim", extra={"error": str(err)})

    def done(self, key: str) -> None:
        """The bind succeeded: the claims' watch events confirm the allocations."""
        plan = self.plans.pop(key, None)
        if plan is not None and plan.extended_claim is not None:
            with self.lock:  # the devices stay taken under the claim's real name
                self.state.rename_assumed(plan.synthetic_key(), plan.extended_claim)


def _pod_name(key: str) -> str:
    return key.partition("/")[2]


def _allocation(node: str, results: list[dict[str, str]]) -> JsonDict:
    return {
        "devices": {"results": results},
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }


def _container_requests(
    pod: JsonDict, extended: dict[str, str], devices: dict[str, list[AllocationResult]]
) -> tuple[list[JsonDict], list[JsonDict], list[dict[str, str]]]:
    """kube-scheduler's requests (``container-<i>-request-<j>``: i counts init containers
    first, j is the resource's place among the container's sorted request names), the pod's
    request mappings, and the allocated devices renamed to those requests."""
    spec = pod.get("spec", {})
    init = spec.get("initContainers") or []
    for container in init:
        if set((container.get("resources") or {}).get("requests") or {}) & set(extended):
            raise DraWriteError(
                "init containers with DRA-backed extended resources are not supported"
            )
    requests: list[JsonDict] = []
    mappings: list[JsonDict] = []
    assigned: list[dict[str, str]] = []
    remaining = {resource: list(found) for resource, found in devices.items()}
    for offset, container in enumerate(spec.get("containers") or []):
        index = len(init) + offset
        container_requests = (container.get("resources") or {}).get("requests") or {}
        names = sorted(container_requests)
        for resource in sorted(extended):
            if resource not in container_requests:
                continue
            count = int(str(container_requests[resource]))
            if count <= 0:
                continue
            request = f"container-{index}-request-{names.index(resource)}"
            requests.append(
                {
                    "name": request,
                    "exactly": {
                        "deviceClassName": extended[resource],
                        "allocationMode": "ExactCount",
                        "count": count,
                    },
                }
            )
            mappings.append(
                {
                    "containerName": container["name"],
                    "resourceName": resource,
                    "requestName": request,
                }
            )
            taken, remaining[resource] = remaining[resource][:count], remaining[resource][count:]
            if len(taken) != count:
                raise DraWriteError(f"extended resource {resource}: too few devices allocated")
            assigned.extend(
                {"request": request, "driver": r.driver, "pool": r.pool, "device": r.device}
                for r in taken
            )
    return requests, mappings, assigned
