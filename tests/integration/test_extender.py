"""The real kube-scheduler with `gputopo-scheduler extender` configured, on a real API server.

Why this scenario: gputopo's shipped plugins reproduce kube-scheduler's, so the difference an
extender makes today comes from gputopo's profile — here one that bin-packs nvidia.com/gpu
(MostAllocated on GPUs), which keeps whole GPU machines free for 8-GPU jobs. kube-scheduler's
default scoring (LeastAllocated on cpu and memory) spreads instead: the same pod goes to the
empty machine without the extender and to the partly used one with it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gputopo.scheduler.runtime.kube import JsonDict, KubeApiError
from tests.controlplane import ControlPlane, ManagedProcess, free_port
from tests.integration.extender_tls import (
    ExtenderPki,
    extender_configuration,
    extender_process,
    post,
)
from tests.integration.scheduler_env import (
    GPU,
    Cluster,
    gpu_node,
    gpu_pod,
    scheduler_rbac,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

EXTENDED_SCHEDULER = "kube-with-gputopo"
POOL = {"gputopo.io/test-pool": "extender"}
GPU_PACKING_PROFILE = {
    "apiVersion": "gputopo.io/v1alpha1",
    "kind": "SchedulerProfile",
    "nodeResourcesFit": {"strategy": "MostAllocated", "resources": [{"name": GPU, "weight": 1}]},
}


@pytest.fixture
def rbac(control_plane: ControlPlane) -> Iterator[None]:
    with scheduler_rbac(control_plane):
        yield


@pytest.fixture
def pki(tmp_path: Path) -> ExtenderPki:
    return ExtenderPki.mint(tmp_path / "pki")


def _extender_process(
    plane: ControlPlane, workdir: Path, port: int, pki: ExtenderPki
) -> ManagedProcess:
    """`gputopo-scheduler extender` as its own process, as the scheduler's ServiceAccount, over
    mutual TLS (probes on a plain-HTTP port of their own)."""
    profile = workdir / "gpu-packing.yaml"
    profile.write_text(yaml.safe_dump(GPU_PACKING_PROFILE))
    return extender_process(plane, workdir, port, free_port(), pki, [f"--profile={profile}"])


def _scheduler_configuration(extender_port: int, pki: ExtenderPki) -> dict[str, object]:
    """The KubeSchedulerConfiguration docs/extender.md documents, with a test profile name."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "profiles": [{"schedulerName": EXTENDED_SCHEDULER}],
        "extenders": [extender_configuration(pki, extender_port)],
    }


def _logged(workdir: Path, message: str) -> list[JsonDict]:
    """The extender's JSON log entries with this message, in order."""
    entries = []
    for line in (workdir / "extender.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg") == message:
                entries.append(entry)
    return entries


def _pod(name: str, scheduler_name: str, gpus: int, cpu: str = "100m") -> JsonDict:
    pod = gpu_pod(name, gpus, scheduler_name=scheduler_name, node_selector=POOL)
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
    return pod


def test_kube_scheduler_with_the_extender_packs_gpus_where_alone_it_spreads(
    control_plane: ControlPlane,
    kube_scheduler: ManagedProcess,
    cluster: Cluster,
    namespace: str,
    rbac: None,
    pki: ExtenderPki,
    tmp_path: Path,
) -> None:
    cluster.create_node(gpu_node("ext-partly-used", 8, labels=POOL))
    cluster.create_node(gpu_node("ext-empty", 8, labels=POOL))
    training = _pod("training", "default-scheduler", 6, cpu="32")
    training["spec"]["nodeName"] = "ext-partly-used"
    cluster.create_pod(namespace, training)
    # Running (kwok's status patch) comes after the add every watcher, kube-scheduler's
    # included, has seen: without this wait "alone" could race the load onto a tie.
    eventually(
        lambda: cluster.pod(namespace, "training").get("status", {}).get("phase") == "Running",
        30,
        "pod 'training' Running",
    )

    # kube-scheduler alone: LeastAllocated on cpu/memory sends a 2-GPU pod to the empty node.
    cluster.create_pod(namespace, _pod("alone", "default-scheduler", 2))
    eventually(lambda: cluster.node_of(namespace, "alone"), 30, "kube-scheduler binding 'alone'")
    assert cluster.node_of(namespace, "alone") == "ext-empty"
    cluster.api.request(
        "DELETE", f"/api/v1/namespaces/{namespace}/pods/alone", query={"gracePeriodSeconds": 0}
    )

    def alone_gone() -> bool:
        try:
            cluster.pod(namespace, "alone")
        except KubeApiError as err:
            return err.status == 404
        return False

    eventually(alone_gone, 30, "pod 'alone' deleted")

    extender_port = free_port()
    extender = _extender_process(control_plane, tmp_path, extender_port, pki)
    scheduler = control_plane.start_scheduler_with_config(
        "kube-scheduler-extended", _scheduler_configuration(extender_port, pki)
    )
    try:
        cluster.create_pod(namespace, _pod("with-extender", EXTENDED_SCHEDULER, 2))
        eventually(
            lambda: cluster.node_of(namespace, "with-extender"),
            30,
            "kube-scheduler (with the extender) binding 'with-extender'",
        )
        assert cluster.node_of(namespace, "with-extender") == "ext-partly-used"
        # The extender's cache saw that binding: the next 2-GPU pod goes to the other node.
        cluster.create_pod(namespace, _pod("second", EXTENDED_SCHEDULER, 2))
        eventually(lambda: cluster.node_of(namespace, "second"), 30, "binding 'second'")
        assert cluster.node_of(namespace, "second") == "ext-empty"

        # bindVerb: the extender made both bindings, kube-scheduler made none itself.
        bound = _logged(tmp_path, "pod bound by the extender")
        assert [entry["pod"] for entry in bound] == [
            f"{namespace}/with-extender",
            f"{namespace}/second",
        ]
    finally:
        scheduler.stop()
        extender.stop()
        with contextlib.suppress(OSError):
            log = (tmp_path / "extender.log").read_text()
            assert "Traceback" not in log, log


LOW, HIGH = "gputopo-test-ext-low", "gputopo-test-ext-high"


@pytest.fixture
def priority_classes(control_plane: ControlPlane) -> Iterator[None]:
    api = Cluster(control_plane).api
    path = "/apis/scheduling.k8s.io/v1/priorityclasses"
    for name, value in ((LOW, 10), (HIGH, 1000)):
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        with contextlib.suppress(KubeApiError):
            api.request("POST", path, body=body)
    yield
    for name in (LOW, HIGH):
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", f"{path}/{name}")


def test_kube_scheduler_preempts_through_the_extender_and_it_binds(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    rbac: None,
    priority_classes: None,
    pki: ExtenderPki,
    tmp_path: Path,
) -> None:
    cluster.create_node(gpu_node("ext-preempt", 8, labels=POOL))
    extender_port = free_port()
    extender = _extender_process(control_plane, tmp_path, extender_port, pki)
    scheduler = control_plane.start_scheduler_with_config(
        "kube-scheduler-extended-preempt", _scheduler_configuration(extender_port, pki)
    )
    try:
        low = _pod("low", EXTENDED_SCHEDULER, 8)
        low["spec"]["priorityClassName"] = LOW
        cluster.create_pod(namespace, low)
        eventually(lambda: cluster.node_of(namespace, "low"), 30, "binding 'low'")
        urgent = _pod("urgent", EXTENDED_SCHEDULER, 8)
        urgent["spec"]["priorityClassName"] = HIGH
        cluster.create_pod(namespace, urgent)
        eventually(
            lambda: cluster.node_of(namespace, "urgent") == "ext-preempt",
            60,
            "'urgent' bound on the node its preemption freed",
        )

        def low_gone() -> bool:
            try:
                cluster.pod(namespace, "low")
            except KubeApiError as err:
                return err.status == 404
            return False

        eventually(low_gone, 30, "the victim 'low' deleted")
        # kube-scheduler asked gputopo about its preemption plan, and gputopo kept the node.
        preempts = _logged(tmp_path, "extender preempt")
        assert [(e["pod"], e["kept"]) for e in preempts][-1:] == [
            (f"{namespace}/urgent", ["ext-preempt"])
        ]
        bound = [entry["pod"] for entry in _logged(tmp_path, "pod bound by the extender")]
        assert bound == [f"{namespace}/low", f"{namespace}/urgent"]
    finally:
        scheduler.stop()
        extender.stop()


def test_extender_answers_kube_scheduler_wire_format_over_https(
    control_plane: ControlPlane, cluster: Cluster, rbac: None, pki: ExtenderPki, tmp_path: Path
) -> None:
    """The same process, called the way kube-scheduler calls it (nodeCacheCapable)."""
    cluster.create_node(gpu_node("ext-wire-a", 8, labels=POOL))
    cluster.create_node(gpu_node("ext-wire-b", 1, labels=POOL))
    port = free_port()
    extender = _extender_process(control_plane, tmp_path, port, pki)
    try:
        args = {
            "Pod": _pod("probe", EXTENDED_SCHEDULER, 2)
            | {"metadata": {"name": "p", "namespace": "d"}},
            "NodeNames": ["ext-wire-a", "ext-wire-b"],
        }
        status, answer = post(port, "filter", args, pki.client_context(pki.client))
        assert status == 200
        assert answer["NodeNames"] == ["ext-wire-a"]
        assert answer["FailedNodes"] == {"ext-wire-b": "Insufficient nvidia.com/gpu"}
    finally:
        extender.stop()
