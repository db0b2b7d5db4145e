"""SLA failover end to end: a mocked XID lowers a node's SLA score, the agent updates its
``NoExecute`` SLA taint, kube-controller-manager's taint-eviction controller (KEP-5471 gate on)
evicts the Pods whose ``Gt`` toleration no longer holds once their ``tolerationSeconds`` ran out,
the ReplicaSet controller replaces them, and gputopo's scheduler runtime binds the replacements
to a healthy node.

Machine: the mocked DGX H100 (fake pynvml + fake sysfs) behind the in-process agent, publishing
to a kwok-managed Node of the same name (kwok makes it Ready and runs the Pods bound to it); a
second kwok Node stands for a healthy node whose agent published ``gputopo.io/sla=1000``. Real
kube-apiserver, kube-controller-manager (taint-eviction, replicaset and deployment controllers),
kwok, and the scheduler runtime acting as its ServiceAccount.

How a Pod asks for failover with a grace period (docs/sla.md, "Failover"): tolerations are
matched in order, first match per taint, so

* ``{key: gputopo.io/sla, operator: Gt, value: "950", effect: NoExecute}`` (no
  ``tolerationSeconds``) tolerates the taint for ever while the score is above 950, and
* ``{key: gputopo.io/sla, operator: Exists, effect: NoExecute, tolerationSeconds: N}`` takes over
  once it is not: the Pod is evicted N seconds later.

A single ``Gt`` toleration *with* ``tolerationSeconds`` would evict the Pod N seconds after it
landed even on a healthy node; a single ``Gt`` toleration without it evicts at once. The Pod's
required node affinity ``gputopo.io/sla Gt 950`` (the label the agent publishes beside the taint)
keeps its replacement off the sick node, which the ``Exists`` toleration alone would not.

The time from XID to replacement Running is the benchmark's to measure
(tests/bench/test_sla_failover_bench.py), not this test's.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.desired import PublishOptions
from gputopo.agent.publish.writer import Publisher
from gputopo.core.kube import KubeClient, load_kubeconfig
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from tests.controlplane import TAINT_EVICTION_CONTROLLER, ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster, gpu_container, gpu_node, running_runtime
from tests.polling import eventually

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"
SLA = "gputopo.io/sla"
# kube-controller-manager's names (cmd/kube-controller-manager/names): a Deployment's evicted
# Pods are replaced by its ReplicaSet. The node lifecycle controller is there because it is what
# adds the shared Pod informer's `spec.nodeName` index that the taint-eviction controller reads
# (v1.37.2: alone, taint eviction logs "Index with name spec.nodeName does not exist" and never
# evicts); its grace periods are raised so that it never judges a kwok node unhealthy itself.
NODE_LIFECYCLE_CONTROLLER = "node-lifecycle-controller"
FAILOVER_CONTROLLERS = (
    TAINT_EVICTION_CONTROLLER,
    NODE_LIFECYCLE_CONTROLLER,
    "replicaset-controller",
    "deployment-controller",
)
NODE_LIFECYCLE_ARGS = ("--node-monitor-grace-period=1h", "--node-startup-grace-period=1h")
# "internal micro-controller warning": the GPU keeps working (no gpu-health taint), the node's
# SLA score drops to 900 (agent/sla.py: warning XID, -100).
DEGRADING_XID = 61
XID_GPU = 3


@contextlib.contextmanager
def failover_controller_manager(plane: ControlPlane) -> Iterator[ManagedProcess]:
    """kube-controller-manager with taint eviction on, stopped afterwards so that it never
    evicts another test's Pods (the `controller_manager` fixture starts its own set again)."""
    process = plane.start_controller_manager(FAILOVER_CONTROLLERS, NODE_LIFECYCLE_ARGS)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def sla_agent(plane: ControlPlane, node_name: str, sysfs_root: Path) -> Iterator[Any]:
    """The agent on a mocked DGX H100 publishing ``NoExecute`` SLA taints to ``node_name``
    (``gputopo-agent run --sla-taint-effect NoExecute``); yields the mock's control object."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile(PROFILE)
    nvml = make_fake_pynvml(profile)
    build_sysfs(profile, sysfs_root)
    api = KubeClient(load_kubeconfig(str(plane.admin_kubeconfig)))
    with Discoverer(nvml, sysfs_root, node_name) as discoverer:
        agent = Agent(
            discoverer,
            publisher=Publisher(api, node_name, PublishOptions(sla_taint_effect="NoExecute")),
            config=RunLoopConfig(
                interval_s=3600, health_interval_s=0.2, min_trigger_interval_s=0.2, udev=False
            ),
        )
        thread = threading.Thread(target=agent.run, name="sla-agent", daemon=True)
        thread.start()
        try:
            yield nvml.control
        finally:
            agent.stop()
            thread.join(timeout=30)
            api.close()
        assert not thread.is_alive(), "the agent did not stop"


def sla_tolerations(threshold: int, grace_s: int) -> list[JsonDict]:
    """Tolerate the SLA taint for ever above ``threshold``, for ``grace_s`` seconds below it."""
    return [
        {"key": SLA, "operator": "Gt", "value": str(threshold), "effect": "NoExecute"},
        {"key": SLA, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": grace_s},
    ]


def sla_deployment(
    name: str,
    threshold: int,
    grace_s: int,
    gpus: int,
    tolerations: list[JsonDict] | None = None,
) -> JsonDict:
    """One replica needing ``gpus`` GPUs on a node whose SLA score is above ``threshold``
    (``tolerations`` replace :func:`sla_tolerations`)."""
    labels = {"app": name}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": SLA, "operator": "Gt", "values": [str(threshold)]}
                        ]
                    }
                ]
            }
        }
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "schedulerName": "gputopo-scheduler",
                    "terminationGracePeriodSeconds": 0,
                    "affinity": affinity,
                    "tolerations": (
                        sla_tolerations(threshold, grace_s) if tolerations is None else tolerations
                    ),
                    "containers": [gpu_container(gpus)],
                },
            },
        },
    }


def healthy_node(name: str) -> JsonDict:
    """A kwok GPU node as its own agent would have published it: SLA 1000, NoExecute taint."""
    return gpu_node(
        name, 8, labels={SLA: "1000"}, taints=[{"key": SLA, "value": "1000", "effect": "NoExecute"}]
    )


@dataclass(frozen=True)
class PodView:
    name: str
    node: str
    phase: str
    terminating: bool


class Workloads:
    """Deployments in one namespace, read back through the admin's client."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.deployments: list[str] = []

    def create(self, deployment: JsonDict) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        self.api.request("POST", path, body=deployment)
        self.deployments.append(str(deployment["metadata"]["name"]))

    def pods(self, app: str) -> list[PodView]:
        items = self.api.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/pods",
            query={"labelSelector": f"app={app}"},
        ).get("items")
        return [
            PodView(
                name=str(pod["metadata"]["name"]),
                node=str(pod.get("spec", {}).get("nodeName") or ""),
                phase=str(pod.get("status", {}).get("phase") or ""),
                terminating=bool(pod["metadata"].get("deletionTimestamp")),
            )
            for pod in items or []
        ]

    def running_on(self, app: str, node: str) -> PodView | None:
        for pod in self.pods(app):
            if pod.node == node and pod.phase == "Running" and not pod.terminating:
                return pod
        return None

    def delete_all(self) -> None:
        """Deployments, then their ReplicaSets (no garbage collector runs), then the Pods."""
        ns = self.namespace
        for name in self.deployments:
            with contextlib.suppress(KubeApiError):
                self.api.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        with contextlib.suppress(KubeApiError):
            self.api.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/replicasets")
        with contextlib.suppress(KubeApiError):
            self.api.request(
                "DELETE", f"/api/v1/namespaces/{ns}/pods", query={"gracePeriodSeconds": "0"}
            )


def sla_taint(api: KubeApi, node: str) -> str | None:
    for taint in api.request("GET", f"/api/v1/nodes/{node}").get("spec", {}).get("taints") or []:
        if taint.get("key") == SLA:
            return f"{taint.get('value')}:{taint.get('effect')}"
    return None


def sla_label(api: KubeApi, node: str) -> str | None:
    labels = api.request("GET", f"/api/v1/nodes/{node}").get("metadata", {}).get("labels") or {}
    value = labels.get(SLA)
    return str(value) if value is not None else None


@contextlib.contextmanager
def failover_cluster(
    plane: ControlPlane, cluster: Cluster, namespace: str, sysfs_root: Path
) -> Iterator[tuple[str, Any, Workloads]]:
    """The sick-to-be node with its agent (SLA 1000, NoExecute), the controllers and the scheduler
    runtime running; yields (node name, mock NVML control, workloads)."""
    sick = f"dgx-{uuid.uuid4().hex[:8]}"
    cluster.create_node(gpu_node(sick, 8))
    workloads = Workloads(cluster.api, namespace)
    with (
        failover_controller_manager(plane),
        sla_agent(plane, sick, sysfs_root) as control,
        running_runtime(plane),
    ):
        try:
            eventually(lambda: sla_taint(cluster.api, sick) == "1000:NoExecute", what="SLA taint")
            eventually(lambda: sla_label(cluster.api, sick) == "1000", what="SLA label")
            yield sick, control, workloads
        finally:
            workloads.delete_all()


GRACE_S = 5


def test_sla_drop_evicts_after_toleration_seconds_and_gputopo_places_the_replacement(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with failover_cluster(control_plane, cluster, namespace, tmp_path / "sys") as (
        sick,
        control,
        workloads,
    ):
        api = cluster.api
        workloads.create(sla_deployment("strict", threshold=950, grace_s=GRACE_S, gpus=4))
        workloads.create(sla_deployment("lenient", threshold=800, grace_s=GRACE_S, gpus=4))
        strict = eventually(lambda: workloads.running_on("strict", sick), what="strict on sick")
        lenient = eventually(lambda: workloads.running_on("lenient", sick), what="lenient on sick")
        healthy = f"healthy-{uuid.uuid4().hex[:8]}"
        cluster.create_node(healthy_node(healthy))

        control.inject_xid(XID_GPU, DEGRADING_XID)
        taint = eventually(
            lambda: (
                (sla_taint(api, sick) or "1000:").split(":")[0] != "1000" and sla_taint(api, sick)
            ),
            what="the SLA taint updated after the XID",
            interval_s=0.02,
        )
        tainted_at = time.monotonic()
        score = int(taint.split(":")[0])
        assert taint == f"{score}:NoExecute" and 800 < score <= 950, taint
        # Inside the grace period: the strict Pod's Exists toleration holds it for GRACE_S.
        assert workloads.running_on("strict", sick) == strict

        replacement = eventually(
            lambda: workloads.running_on("strict", healthy),
            timeout_s=GRACE_S + 30,
            what="the strict Deployment's replacement Running on the healthy node",
        )
        assert time.monotonic() - tainted_at >= GRACE_S - 1.0  # the API's clock is in seconds
        assert replacement.name != strict.name
        eventually(
            lambda: all(p.name != strict.name for p in workloads.pods("strict")),
            what="the evicted Pod gone",
        )
        assert len(workloads.pods("strict")) == 1
        # The lenient Pod's Gt 800 toleration still holds: not evicted, never moved.
        assert sla_label(api, sick) == str(score)
        assert workloads.running_on("lenient", sick) == lenient
        assert [p.name for p in workloads.pods("lenient")] == [lenient.name]


def test_replacement_waits_rather_than_return_to_the_sick_node(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """With no healthy node the evicted Pod's replacement stays Pending: its Exists toleration
    would let it onto the sick node, its node affinity (SLA label Gt 950) does not."""
    with failover_cluster(control_plane, cluster, namespace, tmp_path / "sys") as (
        sick,
        control,
        workloads,
    ):
        workloads.create(sla_deployment("strict", threshold=950, grace_s=0, gpus=8))
        strict = eventually(lambda: workloads.running_on("strict", sick), what="strict on sick")
        control.inject_xid(XID_GPU, DEGRADING_XID)
        eventually(
            lambda: all(p.name != strict.name for p in workloads.pods("strict")),
            what="the strict Pod evicted",
        )
        pending = eventually(
            lambda: [
                pod
                for pod in cluster.api.request(
                    "GET",
                    f"/api/v1/namespaces/{namespace}/pods",
                    query={"labelSelector": "app=strict"},
                ).get("items")
                or []
                if any(
                    c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
                    for c in pod.get("status", {}).get("conditions") or []
                )
            ],
            what="the replacement marked Unschedulable",
        )
        assert len(pending) == 1 and not pending[0]["spec"].get("nodeName")
        assert workloads.running_on("strict", sick) is None


def test_a_single_gt_toleration_with_toleration_seconds_evicts_from_a_healthy_node(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Why docs/sla.md asks for two tolerations: `tolerationSeconds` on the matching `Gt`
    toleration itself bounds the stay on a node whose score never changed (SLA 1000 > 950)."""
    with failover_cluster(control_plane, cluster, namespace, tmp_path / "sys") as (
        sick,
        _,
        workloads,
    ):
        single = [
            {
                "key": SLA,
                "operator": "Gt",
                "value": "950",
                "effect": "NoExecute",
                "tolerationSeconds": 2,
            }
        ]
        workloads.create(sla_deployment("single", 950, 0, gpus=4, tolerations=single))
        workloads.create(sla_deployment("pair", 950, grace_s=2, gpus=4))
        first = eventually(lambda: workloads.running_on("single", sick), what="single on node")
        pair = eventually(lambda: workloads.running_on("pair", sick), what="pair on node")
        eventually(
            lambda: all(p.name != first.name for p in workloads.pods("single")),
            timeout_s=30,
            what="the single-toleration Pod evicted from the healthy node",
        )
        # Its replacement lands on the same node (nothing changed there) and runs: by then the
        # controller has acted on every pod whose time was up at the same moment.
        eventually(
            lambda: (p := workloads.running_on("single", sick)) and p.name != first.name,
            what="the single-toleration Pod's replacement Running",
        )
        assert sla_taint(cluster.api, sick) == "1000:NoExecute"
        # The Gt-then-Exists pair, same seconds, same node: still there.
        assert workloads.running_on("pair", sick) == pair
        assert [p.name for p in workloads.pods("pair")] == [pair.name]
