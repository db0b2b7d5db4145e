"""Per-GPU health as DRA device taints, with the real kube-apiserver, kube-scheduler and
kube-controller-manager (resourceclaim and device-taint-eviction controllers) and kwok nodes.

Machine: the mocked DGX H100 (fake pynvml + fake sysfs from the ``dgx-h100`` profile); its
ResourceSlices and DeviceClasses are what NVIDIA's DRA driver would publish for it
(mocks/resourceslices.py). The agent runs as its own ServiceAccount, its token bound to a Pod on
the node (the shipped RBAC and admission policies apply), one publish cycle at a time
(:func:`agent.publish.cycle.run_cycle`, what the run loop repeats), so the hysteresis is counted
in cycles, not seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.device_taints import DeviceTaintOptions, DeviceTaintPublisher
from gputopo.agent.discovery import Discoverer
from gputopo.agent.publish.cycle import CycleResult, run_cycle
from gputopo.agent.publish.writer import Publisher
from gputopo.core.kube import KubeClient
from tests.controlplane import ClusterObjects, ControlPlane, ManagedProcess, kwok_node
from tests.integration.test_publisher import (  # noqa: F401  (fixtures)
    agent_bound_to,
    agent_client,
    agent_rbac_and_policy,
    fast_backoff,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"
GROUP, VERSION = "resource.k8s.io", "v1"
HEALTH_TAINT = "gputopo.io/gpu-health"
GPU_CLASS = "gpu.nvidia.com"
REMOVAL_AFTER = 3  # the agent's default hysteresis, as for the node taint


def _custom(admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin)


def device_taint_rules(admin: client.ApiClient, node: str) -> dict[str, dict[str, Any]]:
    """The node's DeviceTaintRules by name (its pool is the node's name)."""
    listed = _custom(admin).list_cluster_custom_object(GROUP, VERSION, "devicetaintrules")
    return {
        rule["metadata"]["name"]: rule
        for rule in listed["items"]
        if rule["spec"].get("deviceSelector", {}).get("pool") == node
    }


def taint_text(rule: dict[str, Any]) -> str:
    taint = rule["spec"]["taint"]
    return f"{taint['key']}={taint.get('value', '')}:{taint['effect']}"


@pytest.fixture(scope="module")
def device_classes(control_plane: ControlPlane) -> Iterator[None]:
    """NVIDIA's DeviceClasses (gpu.nvidia.com, mig.nvidia.com), created if absent."""
    from gputopo.mocks.resourceslices import device_classes as classes

    created = []
    for body in classes():
        try:
            _custom(control_plane.admin).create_cluster_custom_object(
                GROUP, VERSION, "deviceclasses", body
            )
            created.append(body["metadata"]["name"])
        except client.ApiException as error:
            if error.status != 409:
                raise
    yield
    for name in created:
        with contextlib.suppress(client.ApiException):
            _custom(control_plane.admin).delete_cluster_custom_object(
                GROUP, VERSION, "deviceclasses", name
            )


@dataclass
class GpuNode:
    """A kwok Node backed by the fake DGX H100, and its agent's publishers."""

    name: str
    control: Any  # mocks.fake_pynvml.FakeNvmlControl
    discoverer: Discoverer
    publisher: Publisher
    device_taints: DeviceTaintPublisher
    device_of_gpu: dict[int, str]  # GPU index -> ResourceSlice device name

    def cycle(self) -> CycleResult:
        result = run_cycle(
            self.discoverer.discover, self.publisher, device_taints=self.device_taints
        )
        assert result.ok, (result.node.message, result.device_taints)
        return result


@contextlib.contextmanager
def gpu_node(
    plane: ControlPlane,
    cluster_objects: ClusterObjects,
    sysfs_root: Path,
    *,
    with_slices: bool = True,
) -> Iterator[GpuNode]:
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.resourceslices import resource_slices
    from gputopo.mocks.sysfs import build_sysfs

    admin = plane.admin
    name = f"dra-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node(kwok_node(name))
    profile = load_profile(PROFILE)
    slices = resource_slices(profile, name) if with_slices else []
    for body in slices:
        _custom(admin).create_cluster_custom_object(GROUP, VERSION, "resourceslices", body)
        cluster_objects.track(
            "ResourceSlice",
            body["metadata"]["name"],
            lambda api, n: _custom(api).delete_cluster_custom_object(
                GROUP, VERSION, "resourceslices", n
            ),
        )
    device_of_uuid = {
        device["attributes"]["uuid"]["string"]: device["name"]
        for body in slices
        for device in body["spec"].get("devices") or ()
    }
    nvml = make_fake_pynvml(profile)
    build_sysfs(profile, sysfs_root)
    with agent_bound_to(plane, admin, name) as agent_api:
        api: KubeClient = agent_client(agent_api)
        try:
            with Discoverer(nvml, sysfs_root, name) as discoverer:
                uuids = {gpu.index: gpu.uuid for gpu in discoverer.discover().gpus}
                yield GpuNode(
                    name,
                    nvml.control,
                    discoverer,
                    Publisher(api, name, backoff=fast_backoff()),
                    DeviceTaintPublisher(api, name, DeviceTaintOptions(), backoff=fast_backoff()),
                    {
                        index: device_of_uuid[uuid_]
                        for index, uuid_ in uuids.items()
                        if uuid_ in device_of_uuid
                    },
                )
        finally:
            api.close()
            for rule in device_taint_rules(admin, name):
                with contextlib.suppress(client.ApiException):
                    _custom(admin).delete_cluster_custom_object(
                        GROUP, VERSION, "devicetaintrules", rule
                    )


@pytest.fixture
def dra_node(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kwok: ManagedProcess,
    device_classes: None,
    tmp_path: Path,
) -> Iterator[GpuNode]:
    with gpu_node(control_plane, cluster_objects, tmp_path / "sys") as node:
        node.cycle()  # the healthy node's first publish
        yield node


def node_taints(admin: client.ApiClient, name: str) -> dict[str, str]:
    node = client.CoreV1Api(admin).read_node(name)
    return {t.key: f"{t.value}:{t.effect}" for t in node.spec.taints or []}


# -- the agent's rules ----------------------------------------------------------------------------


def test_a_lost_gpu_gets_a_no_schedule_rule_on_its_device_cleared_after_the_hysteresis(
    dra_node: GpuNode, kube_admin: client.ApiClient
) -> None:
    assert device_taint_rules(kube_admin, dra_node.name) == {}

    dra_node.control.set_lost(3)
    dra_node.cycle()

    rules = device_taint_rules(kube_admin, dra_node.name)
    device = dra_node.device_of_gpu[3]
    assert {r["spec"]["deviceSelector"]["device"] for r in rules.values()} == {device}
    (rule,) = rules.values()
    assert rule["spec"]["deviceSelector"] == {
        "driver": GPU_CLASS,
        "pool": dra_node.name,
        "device": device,
    }
    assert taint_text(rule) == f"{HEALTH_TAINT}=failed:NoSchedule"
    # the device taint stands for the failed GPU: the node itself stays schedulable
    assert HEALTH_TAINT not in node_taints(kube_admin, dra_node.name)

    dra_node.control.set_lost(3, False)
    for _ in range(REMOVAL_AFTER - 1):
        dra_node.cycle()
        assert list(device_taint_rules(kube_admin, dra_node.name)) == list(rules)
    dra_node.cycle()
    assert device_taint_rules(kube_admin, dra_node.name) == {}


def test_a_degraded_gpu_gets_an_informational_rule_and_a_reset_xid_a_no_execute_one(
    dra_node: GpuNode, kube_admin: client.ApiClient
) -> None:
    dra_node.control.set_nvlink_active(1, 0, False)  # degraded: an NVLink down
    dra_node.control.inject_xid(6, 48)  # double-bit ECC: the GPU needs a reset
    dra_node.cycle()

    by_device = {
        rule["spec"]["deviceSelector"]["device"]: taint_text(rule)
        for rule in device_taint_rules(kube_admin, dra_node.name).values()
    }
    assert by_device == {
        dra_node.device_of_gpu[1]: f"{HEALTH_TAINT}=degraded:None",
        dra_node.device_of_gpu[6]: f"{HEALTH_TAINT}=reset-required:NoExecute",
    }


def test_a_node_without_resource_slices_gets_the_node_taint_and_no_rule(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
    kwok: ManagedProcess,
    tmp_path: Path,
) -> None:
    with gpu_node(control_plane, cluster_objects, tmp_path / "sys", with_slices=False) as node:
        node.control.set_lost(2)
        result = node.cycle()

        assert result.device_taints is not None and result.device_taints.status == "unchanged"
        assert device_taint_rules(kube_admin, node.name) == {}
        assert node_taints(kube_admin, node.name)[HEALTH_TAINT] == "failed:NoSchedule"


# -- what kube-scheduler and kube-controller-manager make of them ---------------------------------


def claim_body(name: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpus",
                        "exactly": {
                            "deviceClassName": GPU_CLASS,
                            "allocationMode": "ExactCount",
                            "count": count,
                        },
                    }
                ]
            }
        },
    }


def pod_with_claim(
    admin: client.ApiClient, namespace: str, node: str, name: str, count: int
) -> str:
    """A Pod on ``node`` using a new ResourceClaim for ``count`` GPUs; returns the claim's name."""
    claim = f"{name}-gpus"
    _custom(admin).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resourceclaims", claim_body(claim, count)
    )
    client.CoreV1Api(admin).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "resourceClaims": [{"name": "gpus", "resourceClaimName": claim}],
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"claims": [{"name": "gpus"}]},
                    }
                ],
            },
        },
    )
    return claim


def allocated_devices(admin: client.ApiClient, namespace: str, claim: str) -> set[str] | None:
    body = _custom(admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "resourceclaims", claim
    )
    allocation = (body.get("status") or {}).get("allocation")
    if allocation is None:
        return None
    return {result["device"] for result in allocation["devices"]["results"]}


def unschedulable_message(admin: client.ApiClient, namespace: str, pod: str) -> str | None:
    status = client.CoreV1Api(admin).read_namespaced_pod(pod, namespace).status
    for condition in status.conditions or ():
        if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
            return str(condition.message)
    return None


def test_kube_scheduler_never_allocates_the_tainted_gpu_and_does_again_after_recovery(
    dra_node: GpuNode,
    kube_admin: client.ApiClient,
    kube_scheduler: ManagedProcess,
    controller_manager: ManagedProcess,
    namespace: str,
) -> None:
    tainted = dra_node.device_of_gpu[0]  # the device a first fit would take
    dra_node.control.set_lost(0)
    dra_node.cycle()
    assert len(device_taint_rules(kube_admin, dra_node.name)) == 1

    one = pod_with_claim(kube_admin, namespace, dra_node.name, "one", 1)
    got = eventually(
        lambda: allocated_devices(kube_admin, namespace, one), what="the 1-GPU claim allocated"
    )
    assert tainted not in got and len(got) == 1
    # 7 more: only 6 untainted GPUs are left, so it must wait for the tainted one
    seven = pod_with_claim(kube_admin, namespace, dra_node.name, "seven", 7)
    message = eventually(
        lambda: unschedulable_message(kube_admin, namespace, "seven"),
        what="the 7-GPU pod found unschedulable",
    )
    assert "1 cannot allocate all claims" in message, message
    assert allocated_devices(kube_admin, namespace, seven) is None

    dra_node.control.set_lost(0, False)
    for _ in range(REMOVAL_AFTER):
        dra_node.cycle()
    assert device_taint_rules(kube_admin, dra_node.name) == {}
    client.CoreV1Api(kube_admin).delete_namespaced_pod("seven", namespace, grace_period_seconds=0)
    _custom(kube_admin).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "resourceclaims", seven
    )

    again = pod_with_claim(kube_admin, namespace, dra_node.name, "again", 7)
    regained = eventually(
        lambda: allocated_devices(kube_admin, namespace, again),
        timeout_s=60,
        what="a new 7-GPU claim allocated after recovery",
    )
    assert tainted in regained and not regained & got


def test_a_reset_xid_evicts_the_pod_holding_that_gpu_and_only_that_pod(
    dra_node: GpuNode,
    kube_admin: client.ApiClient,
    kube_scheduler: ManagedProcess,
    controller_manager: ManagedProcess,
    namespace: str,
) -> None:
    core = client.CoreV1Api(kube_admin)
    claims = {
        pod: pod_with_claim(kube_admin, namespace, dra_node.name, pod, 1) for pod in ("a", "b")
    }
    devices = {
        pod: eventually(
            lambda c=claim: allocated_devices(kube_admin, namespace, c),  # type: ignore[misc]
            what=f"pod {pod}'s claim allocated",
        )
        for pod, claim in claims.items()
    }
    eventually(
        lambda: all(
            core.read_namespaced_pod(pod, namespace).status.phase == "Running" for pod in ("a", "b")
        ),
        what="both pods running on the kwok node",
    )
    (device_a,) = devices["a"]
    (gpu_a,) = [index for index, device in dra_node.device_of_gpu.items() if device == device_a]

    dra_node.control.inject_xid(gpu_a, 48)
    dra_node.cycle()
    (rule,) = device_taint_rules(kube_admin, dra_node.name).values()
    assert rule["spec"]["deviceSelector"]["device"] == device_a
    assert taint_text(rule) == f"{HEALTH_TAINT}=reset-required:NoExecute"

    def evicted() -> bool:
        try:
            pod = core.read_namespaced_pod("a", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return True
            raise
        return pod.metadata.deletion_timestamp is not None

    eventually(evicted, timeout_s=60, what="kube-controller-manager evicting pod a")
    survivor = core.read_namespaced_pod("b", namespace)
    assert survivor.metadata.deletion_timestamp is None
    assert survivor.status.phase == "Running"


# -- the installed command ------------------------------------------------------------------------

AGENT = Path(sys.executable).parent / "gputopo-agent"


def test_run_once_on_the_degraded_dgx_taints_its_three_sick_gpus_and_then_writes_nothing(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
    kwok: ManagedProcess,
    tmp_path: Path,
) -> None:
    """`gputopo-agent run --once --publish-device-taints` as the agent's ServiceAccount on the
    dgx-h100-degraded profile: GPU 6 lost, GPU 4 XID 79, GPU 1 uncorrectable ECC."""
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.resourceslices import resource_slices

    name = f"dra-cli-{uuid.uuid4().hex[:6]}"
    cluster_objects.create_node(kwok_node(name))
    profile = load_profile("dgx-h100-degraded")
    slices = resource_slices(profile, name)
    for body in slices:
        _custom(kube_admin).create_cluster_custom_object(GROUP, VERSION, "resourceslices", body)
        cluster_objects.track(
            "ResourceSlice",
            body["metadata"]["name"],
            lambda api, n: _custom(api).delete_cluster_custom_object(
                GROUP, VERSION, "resourceslices", n
            ),
        )
    device_of_pci = {
        device["attributes"]["resource.kubernetes.io/pciBusID"]["string"]: device["name"]
        for body in slices
        for device in body["spec"]["devices"]
    }
    with agent_bound_to(control_plane, kube_admin, name) as agent_api:
        token = agent_api.configuration.api_key["authorization"]
        kubeconfig = control_plane.kubeconfig_for_token(token, f"agent-{name}")
        argv = [
            str(AGENT),
            "run",
            "--once",
            "--mock",
            "dgx-h100-degraded",
            "--node-name",
            name,
            "--kubeconfig",
            str(kubeconfig),
            "--publish-device-taints",
        ]
        try:
            first = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
            second = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
            rules = device_taint_rules(kube_admin, name)
        finally:
            for rule in device_taint_rules(kube_admin, name):
                with contextlib.suppress(client.ApiException):
                    _custom(kube_admin).delete_cluster_custom_object(
                        GROUP, VERSION, "devicetaintrules", rule
                    )

    assert first.returncode == 0, first.stderr
    assert f"DeviceTaintRules of {name}: written" in first.stdout
    by_device = {r["spec"]["deviceSelector"]["device"]: taint_text(r) for r in rules.values()}
    assert by_device == {
        device_of_pci["0000:d1:00.0"]: f"{HEALTH_TAINT}=failed:NoSchedule",
        device_of_pci["0000:9d:00.0"]: f"{HEALTH_TAINT}=reset-required:NoExecute",
        device_of_pci["0000:43:00.0"]: f"{HEALTH_TAINT}=failed:NoSchedule",
    }
    assert HEALTH_TAINT not in node_taints(kube_admin, name)
    assert second.returncode == 0, second.stderr
    assert f"DeviceTaintRules of {name}: unchanged" in second.stdout
