"""The DRA writer: claims written before the bind, resourceVersion-guarded, released on failure."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from gputopo.core.kube.errors import KubeApiError
from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.model import parse_node, parse_pod
from gputopo.scheduler.runtime.dra_writer import DraWriteError, DraWriter, PodDraPlan
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly, node_object


class RecordingApi:
    """Answers PUTs like the API server (resourceVersion bumps; 409 when stale)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse: str | None = None

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path))
        if self.refuse and path.endswith(self.refuse):
            raise KubeApiError(method, path, 409, "Conflict")
        if method == "PATCH":
            self.objects[path] = body
            return body
        if method == "DELETE":
            self.objects.pop(path, None)
            return {}
        if method == "POST":
            created = copy.deepcopy(body)
            created["metadata"]["name"] = body["metadata"]["generateName"] + "x7k2q"
            created["metadata"]["resourceVersion"] = "1"
            self.objects[f"{path}/{created['metadata']['name']}"] = created
            return created
        key = path.removesuffix("/status")
        stored = self.objects.get(key)
        if stored is not None and (
            stored["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]
        ):
            raise KubeApiError(method, path, 409, "Conflict")
        answer = copy.deepcopy(body)
        answer["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        self.objects[key] = answer
        return answer


def _setup(api: RecordingApi) -> tuple[DraWriter, DraState, dict[str, Any]]:
    state = DraState()
    for one in resourceslices.resource_slices(load_profile("l4-pcie"), "n1"):
        state.observe("ResourceSlice", one)
    for device_class in resourceslices.device_classes():
        state.observe("DeviceClass", device_class)
    claim = claim_object("c", [exactly("gpu", 2)])
    claim["metadata"]["resourceVersion"] = "7"
    state.observe("ResourceClaim", claim)
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "pod-uid"},
        "spec": {"containers": [], "resourceClaims": [{"name": "g", "resourceClaimName": "c"}]},
    }
    parsed = parse_pod(pod)
    node = parse_node(node_object("l4-pcie", "n1"))
    claims = state.pod_claims(parsed)
    outcome = state.allocate(parsed, node, claims)
    assert not isinstance(outcome, str), outcome
    state.assume(parsed, outcome)
    writer = DraWriter(api, state, threading.RLock())  # type: ignore[arg-type]
    writer.plan("default/p", PodDraPlan("n1", tuple(claims), outcome))
    return writer, state, pod


def test_writes_finalizer_then_allocation_and_reservation() -> None:
    api = RecordingApi()
    writer, _, pod = _setup(api)
    writer.write("default/p", pod)
    path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c"
    assert api.calls == [("PUT", path), ("PUT", path + "/status")]
    written = api.objects[path]
    assert "resource.kubernetes.io/delete-protection" in written["metadata"]["finalizers"]
    assert len(written["status"]["allocation"]["devices"]["results"]) == 2
    terms = written["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["n1"]
    assert written["status"]["reservedFor"] == [{"resource": "pods", "name": "p", "uid": "pod-uid"}]


def test_a_conflict_fails_the_write_and_gives_the_devices_back() -> None:
    api = RecordingApi()
    api.refuse = "/status"
    writer, state, pod = _setup(api)
    assert state.assumed
    with pytest.raises(DraWriteError, match="conflict"):
        writer.write("default/p", pod)
    assert not state.assumed
    assert "default/p" not in writer.plans


def test_release_after_a_failed_bind_removes_allocation_and_reservation() -> None:
    api = RecordingApi()
    writer, state, pod = _setup(api)
    writer.write("default/p", pod)
    writer.release("default/p")
    path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c"
    released = api.objects[path]
    assert not released["status"].get("allocation")
    assert not released["status"].get("reservedFor")
    assert not state.assumed


def test_dra_backed_gpus_get_kube_schedulers_extended_resource_claim() -> None:
    api = RecordingApi()
    state = DraState()
    state.watched = True
    for one in resourceslices.resource_slices(load_profile("l4-pcie"), "n1"):
        state.observe("ResourceSlice", one)
    for device_class in resourceslices.device_classes():
        state.observe("DeviceClass", device_class)
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "pod-uid"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "2"}},
                }
            ]
        },
    }
    parsed = parse_pod(pod)
    node = parse_node(node_object("l4-pcie", "n1"))  # advertises no nvidia.com/gpu
    extended = state.extended_requests(parsed)
    claims = [state.extended_claim(parsed, extended)]
    outcome = state.allocate(parsed, node, claims)
    assert not isinstance(outcome, str), outcome
    state.assume(parsed, outcome)
    writer = DraWriter(api, state, threading.RLock())  # type: ignore[arg-type]
    plan = PodDraPlan("n1", tuple(claims), outcome)
    plan.extended = {"nvidia.com/gpu": "gpu.nvidia.com"}
    writer.plan("default/p", plan)
    writer.write("default/p", pod)
    claims_path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
    created = api.objects[f"{claims_path}/p-extended-resources-x7k2q"]
    assert created["metadata"]["annotations"] == {
        "resource.kubernetes.io/extended-resource-claim": "true"
    }
    assert created["metadata"]["ownerReferences"][0]["uid"] == "pod-uid"
    (request,) = created["spec"]["devices"]["requests"]
    assert request["name"] == "container-0-request-1"  # "cpu" sorts first
    assert request["exactly"]["count"] == 2
    results = created["status"]["allocation"]["devices"]["results"]
    assert [r["request"] for r in results] == ["container-0-request-1"] * 2
    patch = api.objects["/api/v1/namespaces/default/pods/p/status"]
    assert patch["status"]["extendedResourceClaimStatus"] == {
        "requestMappings": [
            {
                "containerName": "main",
                "resourceName": "nvidia.com/gpu",
                "requestName": "container-0-request-1",
            }
        ],
        "resourceClaimName": "p-extended-resources-x7k2q",
    }
    writer.release("default/p")
    assert f"{claims_path}/p-extended-resources-x7k2q" not in api.objects
