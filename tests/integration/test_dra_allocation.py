"""gputopo-scheduler allocates DRA claims on the real API server: templates (made into claims by
kube-controller-manager), a claim shared by two pods, device taints, MIG counters, and a bind
that fails giving back what it wrote."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster, gpu_pod, running_runtime
from tests.polling import eventually
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly, node_object

pytestmark = pytest.mark.integration

RESOURCE = "/apis/resource.k8s.io/v1"
GPU = "gpu.nvidia.com"
SCHEDULER = "gputopo-scheduler"


@pytest.fixture
def dra_objects(control_plane: ControlPlane) -> Iterator[list[str]]:
    """Paths of cluster-scoped DRA objects a test created, deleted afterwards."""
    created: list[str] = []
    yield created
    api = KubeApi(control_plane.admin)
    for path in reversed(created):
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", path)


def publish_node(
    cluster: Cluster, created: list[str], profile: str, name: str, *, partitionable: bool = False
) -> list[JsonDict]:
    """A kwok node with the agent's topology annotation, its driver's slices and the classes."""
    node = node_object(profile, name)
    node["metadata"]["annotations"]["kwok.x-k8s.io/node"] = "fake"
    node["metadata"]["labels"]["type"] = "kwok"
    cluster.create_node(node)
    slices = resourceslices.resource_slices(
        load_profile(profile), name, partitionable=partitionable
    )
    for one in slices:
        cluster.api.request("POST", f"{RESOURCE}/resourceslices", body=one)
        created.append(f"{RESOURCE}/resourceslices/{one['metadata']['name']}")
    for device_class in resourceslices.device_classes():
        # shared by every test of the session: created once and kept (deleting them after one
        # test would race the next one's create)
        with contextlib.suppress(KubeApiError):
            cluster.api.request("POST", f"{RESOURCE}/deviceclasses", body=device_class)
    return slices


def claim_pod(name: str, claims: list[dict[str, str]]) -> JsonDict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "schedulerName": SCHEDULER,
            "terminationGracePeriodSeconds": 0,
            "resourceClaims": claims,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"claims": [{"name": c["name"]} for c in claims]},
                }
            ],
        },
    }


def read_claim(cluster: Cluster, namespace: str, name: str) -> JsonDict:
    return cluster.api.request("GET", f"{RESOURCE}/namespaces/{namespace}/resourceclaims/{name}")


def allocated(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    status = read_claim(cluster, namespace, name).get("status") or {}
    return list((status.get("allocation") or {}).get("devices", {}).get("results") or [])


def numa_of_devices(profile: str, devices: list[str]) -> set[int]:
    gpus = load_profile(profile).nvml_gpus()
    return {gpus[int(d.split("-")[1])].numa_node for d in devices}


def test_template_claims_get_aligned_gpus_written_before_the_bind(
    control_plane: ControlPlane,
    cluster: Cluster,
    controller_manager: ManagedProcess,
    namespace: str,
    dra_objects: list[str],
) -> None:
    publish_node(cluster, dra_objects, "dgx-h100", "dra-h100-a")
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "four-gpus"},
        "spec": {"spec": {"devices": {"requests": [exactly("gpus", 4)]}}},
    }
    cluster.api.request(
        "POST", f"{RESOURCE}/namespaces/{namespace}/resourceclaimtemplates", body=template
    )
    with running_runtime(control_plane):
        for i in range(2):
            cluster.create_pod(
                namespace,
                claim_pod(
                    f"train-{i}", [{"name": "gpus", "resourceClaimTemplateName": "four-gpus"}]
                ),
            )
        for i in range(2):
            eventually(
                lambda i=i: cluster.node_of(namespace, f"train-{i}"), 120, f"train-{i} bound"
            )
    seen: set[str] = set()
    for i in range(2):
        pod = cluster.pod(namespace, f"train-{i}")
        (status,) = pod["status"]["resourceClaimStatuses"]
        claim = read_claim(cluster, namespace, status["resourceClaimName"])
        results = claim["status"]["allocation"]["devices"]["results"]
        devices = [r["device"] for r in results]
        assert len(devices) == 4
        assert {r["pool"] for r in results} == {"dra-h100-a"}
        assert numa_of_devices("dgx-h100", devices) in ({0}, {1})  # one NUMA node each
        assert not seen & set(devices)
        seen |= set(devices)
        assert [c["uid"] for c in claim["status"]["reservedFor"]] == [pod["metadata"]["uid"]]
        assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]


def test_claim_shared_by_two_pods_is_allocated_once_and_reserved_for_both(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, dra_objects: list[str]
) -> None:
    publish_node(cluster, dra_objects, "l4-pcie", "dra-l4-a")
    cluster.api.request(
        "POST",
        f"{RESOURCE}/namespaces/{namespace}/resourceclaims",
        body=claim_object("shared", [exactly("gpu", 2)], namespace=namespace),
    )
    with running_runtime(control_plane):
        for i in range(2):
            cluster.create_pod(
                namespace, claim_pod(f"reader-{i}", [{"name": "g", "resourceClaimName": "shared"}])
            )
        nodes = [
            eventually(lambda i=i: cluster.node_of(namespace, f"reader-{i}"), 60, "bound")
            for i in range(2)
        ]
        assert nodes == ["dra-l4-a", "dra-l4-a"]
        claim = eventually(
            lambda: (
                c
                if len(
                    (c := read_claim(cluster, namespace, "shared"))["status"].get("reservedFor")
                    or []
                )
                == 2
                else None
            ),
            30,
            "both pods in reservedFor",
        )
    assert len(claim["status"]["allocation"]["devices"]["results"]) == 2


def test_device_taint_rule_keeps_the_sick_gpu_out(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, dra_objects: list[str]
) -> None:
    publish_node(cluster, dra_objects, "l4-pcie", "dra-l4-b")
    rule = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": "dra-l4-b-gpu-0"},
        "spec": {
            "deviceSelector": {"driver": GPU, "pool": "dra-l4-b", "device": "gpu-0"},
            "taint": {"key": "gputopo.io/gpu-health", "value": "failed", "effect": "NoSchedule"},
        },
    }
    cluster.api.request("POST", f"{RESOURCE}/devicetaintrules", body=rule)
    dra_objects.append(f"{RESOURCE}/devicetaintrules/dra-l4-b-gpu-0")
    all_gpus = claim_object(
        "all-of-b",
        [
            exactly(
                "gpus",
                mode="All",
                selectors=("device.attributes['resource.kubernetes.io'].pciBusID != ''",),
            )
        ],
        namespace=namespace,
    )
    # only dra-l4-b's devices: the pool is the node
    all_gpus["spec"]["devices"]["requests"][0]["exactly"]["selectors"] = [
        {"cel": {"expression": "device.attributes['gpu.nvidia.com'].type == 'gpu'"}}
    ]
    cluster.api.request("POST", f"{RESOURCE}/namespaces/{namespace}/resourceclaims", body=all_gpus)
    pod = claim_pod("all", [{"name": "g", "resourceClaimName": "all-of-b"}])
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "dra-l4-b"}
    with running_runtime(control_plane):
        cluster.create_pod(namespace, pod)
        eventually(lambda: cluster.node_of(namespace, "all"), 60, "pod bound")
    devices = {r["device"] for r in allocated(cluster, namespace, "all-of-b")}
    assert devices == {"gpu-1", "gpu-2", "gpu-3"}


def test_partitionable_mig_counters_hold_on_the_api_server(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, dra_objects: list[str]
) -> None:
    publish_node(cluster, dra_objects, "hgx-h200-mig", "dra-h200-a", partitionable=True)
    gpus = len(load_profile("hgx-h200-mig").nvml_gpus())
    selector = (f"device.attributes['{GPU}'].profile.startsWith('7g')",)
    for i in range(gpus + 1):
        cluster.api.request(
            "POST",
            f"{RESOURCE}/namespaces/{namespace}/resourceclaims",
            body=claim_object(
                f"whole-{i}", [exactly("m", 1, "mig.nvidia.com", selector)], namespace=namespace
            ),
        )
    names = [f"mig-{i}" for i in range(gpus + 1)]
    with running_runtime(control_plane):
        for i, name in enumerate(names):
            cluster.create_pod(
                namespace, claim_pod(name, [{"name": "m", "resourceClaimName": f"whole-{i}"}])
            )

        def bound() -> list[str] | None:
            done = [name for name in names if cluster.node_of(namespace, name)]
            return done if len(done) >= gpus else None

        # any order: a pod whose claim the watch had not delivered yet is retried later
        placed = eventually(bound, 120, f"{gpus} of the {gpus + 1} pods bound")
        (last,) = set(names) - set(placed)

        def refused() -> str | None:
            events = cluster.events(namespace, last)
            notes = [e.get("note", "") for e in events if e.get("reason") == "FailedScheduling"]
            latest = notes[-1] if notes else ""
            return latest if "cannot allocate all claims" in latest else None

        note = eventually(refused, 60, "the extra 7g partition refused")
        time.sleep(1.0)
        assert cluster.node_of(namespace, last) == ""
    assert "0 of 1 matching devices available" in note
    parents = set()
    for name in placed:
        (result,) = allocated(cluster, namespace, name.replace("mig-", "whole-"))
        parents.add(result["device"].split("-mig-")[0])
    assert len(parents) == gpus  # one whole-GPU partition per GPU, never two on one


def test_failed_bind_gives_back_the_allocation(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, dra_objects: list[str]
) -> None:
    publish_node(cluster, dra_objects, "l4-pcie", "dra-l4-c")
    cluster.api.request(
        "POST",
        f"{RESOURCE}/namespaces/{namespace}/resourceclaims",
        body=claim_object("doomed", [exactly("gpu", 1)], namespace=namespace),
    )
    attempts: list[str] = []

    def failing_bind(ns: str, name: str, uid: str, node: str) -> None:
        attempts.append(name)
        claim = read_claim(cluster, ns, "doomed")
        assert claim["status"]["allocation"]  # written before the bind
        raise KubeApiError("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", 404, "injected")

    with running_runtime(control_plane) as runtime:
        assert isinstance(runtime, SchedulerRuntime)
        runtime.binder.api.bind = failing_bind  # type: ignore[method-assign]
        cluster.create_pod(
            namespace, claim_pod("p", [{"name": "g", "resourceClaimName": "doomed"}])
        )
        eventually(lambda: attempts, 60, "a bind attempt")
        released = eventually(
            lambda: (
                c
                if not (c := read_claim(cluster, namespace, "doomed"))["status"].get("allocation")
                else None
            ),
            30,
            "the allocation given back",
        )
    assert not released["status"].get("reservedFor")
    assert cluster.node_of(namespace, "p") == ""


def test_plain_gpu_pod_is_served_by_dra_as_kube_scheduler_would(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, dra_objects: list[str]
) -> None:
    # the node advertises no nvidia.com/gpu: the DeviceClass gpu.nvidia.com (extendedResourceName)
    publish_node(cluster, dra_objects, "dgx-h100", "dra-h100-ext")
    with running_runtime(control_plane):
        cluster.create_pod(namespace, gpu_pod("one", 1))
        eventually(lambda: cluster.node_of(namespace, "one"), 120, "one bound")
        cluster.create_pod(namespace, gpu_pod("four", 4))
        eventually(lambda: cluster.node_of(namespace, "four"), 120, "four bound")
    pod = cluster.pod(namespace, "four")
    status = pod["status"]["extendedResourceClaimStatus"]
    assert status["requestMappings"] == [
        {
            "containerName": "main",
            "resourceName": "nvidia.com/gpu",
            "requestName": "container-0-request-1",
        }
    ]
    claim = read_claim(cluster, namespace, status["resourceClaimName"])
    assert (
        claim["metadata"]["annotations"]["resource.kubernetes.io/extended-resource-claim"] == "true"
    )
    assert claim["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    results = claim["status"]["allocation"]["devices"]["results"]
    devices = [r["device"] for r in results]
    assert {r["request"] for r in results} == {"container-0-request-1"}
    assert len(devices) == 4
    assert numa_of_devices("dgx-h100", devices) in ({0}, {1})
    first = cluster.pod(namespace, "one")["status"]["extendedResourceClaimStatus"]
    (taken,) = allocated(cluster, namespace, first["resourceClaimName"])
    assert taken["device"] not in devices
