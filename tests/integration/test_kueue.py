"""Kueue decides who may run, gputopo where: the real Kueue controller manager with quotas,
a cohort, borrowing, lending and preemption, gputopo-scheduler placing the admitted pods, and
Kueue's topology-aware scheduling on the Topology `gputopo-scheduler topology --kueue` wrote.

Jobs are `batch/v1` Jobs run by kube-controller-manager's job controller; nodes are kwok's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gputopo.scheduler.cli import main as scheduler_main
from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from hack.testenv.tools import KWOK_KEEP_RUNNING as KEEP_RUNNING
from tests.controlplane import ControlPlane, ManagedProcess
from tests.controlplane.kueue import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    QUEUE_NAME_LABEL,
    REQUIRED_TOPOLOGY,
    remove_metrics_certs,
    start_kueue,
)
from tests.integration.scheduler_env import Cluster, gpu_container, gpu_node, running_runtime
from tests.polling import eventually

pytestmark = pytest.mark.integration

POOL = "gputopo.io/test-pool"
CLIQUE = "nvidia.com/gpu.clique"
GPU = "nvidia.com/gpu"
PODGROUPS = "/apis/scheduling.k8s.io/v1beta1/namespaces/{namespace}/podgroups"
JOB_CONTROLLERS = ("job-controller",)


@pytest.fixture(scope="module")
def kueue(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    process = start_kueue(control_plane, tmp_path_factory.mktemp("kueue"))
    try:
        yield process
    finally:
        process.stop()
        remove_metrics_certs()


@pytest.fixture
def jobs(control_plane: ControlPlane) -> ManagedProcess:
    """kube-controller-manager's job controller: Jobs Kueue unsuspends get their pods."""
    return control_plane.start_controller_manager(JOB_CONTROLLERS)


@pytest.fixture
def runtime(control_plane: ControlPlane) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


class Kueue:
    """Kueue objects for one test, deleted after it (cluster-scoped ones included)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.custom = client.CustomObjectsApi(plane.admin)
        self.created: list[tuple[str, str, str]] = []  # (plural, namespace, name)

    def create(self, plural: str, body: JsonDict, namespace: str = "") -> None:
        body = {"apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}", **body}
        name = body["metadata"]["name"]
        if namespace:
            self.custom.create_namespaced_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, namespace, plural, body
            )
        else:
            self.custom.create_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, plural, body)
        self.created.append((plural, namespace, name))

    def workloads(self, namespace: str) -> list[JsonDict]:
        answer = self.custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
        )
        return list(answer.get("items") or [])

    def delete_all(self) -> None:
        for plural, namespace, name in reversed(self.created):
            with contextlib.suppress(client.ApiException):
                if namespace:
                    self.custom.delete_namespaced_custom_object(
                        KUEUE_GROUP, KUEUE_VERSION, namespace, plural, name
                    )
                else:
                    self.custom.delete_cluster_custom_object(
                        KUEUE_GROUP, KUEUE_VERSION, plural, name
                    )


@pytest.fixture
def queues(control_plane: ControlPlane, kueue: ManagedProcess) -> Iterator[Kueue]:
    objects = Kueue(control_plane)
    try:
        yield objects
    finally:
        objects.delete_all()


def _condition(obj: JsonDict, kind: str) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((str(c.get("status")) for c in conditions if c.get("type") == kind), "")


def _workload_of(queues: Kueue, namespace: str, job: str) -> JsonDict | None:
    return next(
        (
            w
            for w in queues.workloads(namespace)
            if any(ref.get("name") == job for ref in w["metadata"].get("ownerReferences") or [])
        ),
        None,
    )


def _job(
    name: str,
    pods: int,
    gpus: int,
    pool: str,
    queue: str = "q",
    pod_group: str = "",
    template_annotations: dict[str, str] | None = None,
) -> JsonDict:
    spec: JsonDict = {
        "schedulerName": "gputopo-scheduler",
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {POOL: pool},
        "containers": [gpu_container(gpus)],
    }
    if pod_group:
        spec["schedulingGroup"] = {"podGroupName": pod_group}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_NAME_LABEL: queue}},
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "suspend": True,  # what Kueue's Job webhook would set
            "template": {
                # kwok completes Job pods at once unless told to keep them running.
                "metadata": {"annotations": {KEEP_RUNNING: "true", **(template_annotations or {})}},
                "spec": spec,
            },
        },
    }


def _create_job(plane: ControlPlane, namespace: str, job: JsonDict) -> None:
    client.BatchV1Api(plane.admin).create_namespaced_job(namespace, job)


def _job_pods(cluster: Cluster, namespace: str, job: str) -> list[JsonDict]:
    return [
        pod
        for pod in cluster.pods(namespace)
        if (pod["metadata"].get("labels") or {}).get("job-name") == job
        and not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _bound_nodes(cluster: Cluster, namespace: str, job: str) -> list[str]:
    return sorted(
        str(pod["spec"]["nodeName"])
        for pod in _job_pods(cluster, namespace, job)
        if pod["spec"].get("nodeName")
    )


def _all_bound(cluster: Cluster, namespace: str, job: str, pods: int) -> list[str] | None:
    nodes = _bound_nodes(cluster, namespace, job)
    return nodes if len(nodes) == pods else None


def _flavor(queues: Kueue, name: str, pool: str, topology: str = "") -> None:
    spec: JsonDict = {"nodeLabels": {POOL: pool}}
    if topology:
        spec["topologyName"] = topology
    queues.create(
        "resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": name}, "spec": spec}
    )


def _cluster_queue(
    queues: Kueue,
    name: str,
    flavor: str,
    gpus: int,
    cohort: str = "",
    borrowing: int | None = None,
    lending: int | None = None,
) -> None:
    gpu: JsonDict = {"name": GPU, "nominalQuota": gpus}
    if borrowing is not None:
        gpu["borrowingLimit"] = borrowing
    if lending is not None:
        gpu["lendingLimit"] = lending
    spec: JsonDict = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", GPU],
                "flavors": [
                    {"name": flavor, "resources": [{"name": "cpu", "nominalQuota": 100}, gpu]}
                ],
            }
        ],
        "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"},
    }
    if cohort:
        spec["cohortName"] = cohort
    queues.create(
        "clusterqueues", {"kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}
    )


def _local_queue(queues: Kueue, namespace: str, cluster_queue: str) -> None:
    queues.create(
        "localqueues",
        {"kind": "LocalQueue", "metadata": {"name": "q"}, "spec": {"clusterQueue": cluster_queue}},
        namespace,
    )


def _nodes(cluster: Cluster, pool: str, cliques: dict[str, int]) -> None:
    for clique, count in cliques.items():
        for index in range(count):
            labels = {POOL: pool, CLIQUE: clique}
            cluster.create_node(gpu_node(f"{pool}-{clique}{index}", 8, labels=labels))


def test_kueue_admits_borrows_and_reclaims_while_gputopo_keeps_each_gang_in_one_clique(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    runtime: SchedulerRuntime,
    jobs: ManagedProcess,
    queues: Kueue,
) -> None:
    # Clique x: four 8-GPU nodes; clique y: two. Team a may borrow 16 GPUs team b lends.
    _nodes(cluster, "kq", {"x": 4, "y": 2})
    _flavor(queues, "kq-gpu", "kq")
    _cluster_queue(queues, "team-a", "kq-gpu", 16, cohort="gpus", borrowing=16, lending=16)
    _cluster_queue(queues, "team-b", "kq-gpu", 16, cohort="gpus", borrowing=0, lending=16)
    team_b = control_plane.create_namespace(f"{namespace[:50]}-b")
    try:
        _local_queue(queues, namespace, "team-a")
        _local_queue(queues, team_b, "team-b")
        # Team a: one 4-pod x 8-GPU gang (32 GPUs: its 16 and 16 borrowed), one clique.
        body = {
            "apiVersion": "scheduling.k8s.io/v1beta1",
            "kind": "PodGroup",
            "metadata": {"name": "train"},
            "spec": {
                "schedulingPolicy": {"gang": {"minCount": 4}},
                "schedulingConstraints": {"topology": [{"key": CLIQUE}]},
            },
        }
        cluster.api.request("POST", PODGROUPS.format(namespace=namespace), body=body)
        _create_job(control_plane, namespace, _job("train", 4, 8, "kq", pod_group="train"))
        eventually(
            lambda: (w := _workload_of(queues, namespace, "train")) and _condition(w, "Admitted"),
            60,
            "Kueue admitted team a's job (borrowing)",
        )
        nodes = eventually(
            lambda: _all_bound(cluster, namespace, "train", 4),
            60,
            "gputopo bound the 4 pods",
        )
        assert {node.split("-")[1][0] for node in nodes} == {"x"}, nodes  # one clique
        assert len(set(nodes)) == 4
        # Team b claims its nominal 16: Kueue reclaims what team a borrowed.
        _create_job(control_plane, team_b, _job("eval", 2, 8, "kq"))
        eventually(
            lambda: (
                (w := _workload_of(queues, namespace, "train"))
                and _condition(w, "Evicted") == "True"
            ),
            60,
            "Kueue evicted team a's borrowing workload",
        )
        eventually(
            lambda: (w := _workload_of(queues, team_b, "eval")) and _condition(w, "Admitted"),
            60,
            "Kueue admitted team b's job",
        )
        # Every pod Kueue admitted binds (gputopo never strands Kueue's accounting).
        eventually(lambda: len(_bound_nodes(cluster, team_b, "eval")) == 2, 60, "eval bound")
        eventually(
            lambda: not _bound_nodes(cluster, namespace, "train"), 120, "team a's pods are gone"
        )
        admitted = _workload_of(queues, namespace, "train")
        assert admitted is not None and _condition(admitted, "Admitted") != "True"
    finally:
        control_plane.delete_namespace(team_b)


def test_kueue_topology_aware_scheduling_admits_onto_the_exported_topology(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    runtime: SchedulerRuntime,
    jobs: ManagedProcess,
    queues: Kueue,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Clique p: two 8-GPU nodes; clique q: four. A 4 x 8-GPU job fits one clique only in q.
    _nodes(cluster, "kt", {"p": 2, "q": 4})
    assert (
        scheduler_main(
            [
                "topology",
                "--kueue",
                "--name",
                "gputopo-test",
                "--kubeconfig",
                str(control_plane.admin_kubeconfig),
                "-o",
                "yaml",
            ]
        )
        == 0
    )
    topology: dict[str, Any] = yaml.safe_load(capsys.readouterr().out)
    assert [level["nodeLabel"] for level in topology["spec"]["levels"]] == [
        CLIQUE,
        "kubernetes.io/hostname",
    ]
    queues.create("topologies", {k: v for k, v in topology.items() if k != "apiVersion"})
    _flavor(queues, "kt-gpu", "kt", topology="gputopo-test")
    _cluster_queue(queues, "tas", "kt-gpu", 64)
    _local_queue(queues, namespace, "tas")
    _create_job(
        control_plane,
        namespace,
        _job("ring", 4, 8, "kt", template_annotations={REQUIRED_TOPOLOGY: CLIQUE}),
    )
    workload = eventually(
        lambda: (
            (w := _workload_of(queues, namespace, "ring"))
            and _condition(w, "Admitted") == "True"
            and w
        ),
        90,
        "Kueue's TAS admitted the job",
    )
    assignment = workload["status"]["admission"]["podSetAssignments"][0]
    assert "topologyAssignment" in assignment, assignment
    nodes = eventually(
        lambda: _all_bound(cluster, namespace, "ring", 4),
        90,
        "gputopo bound the 4 ungated pods",
    )
    assert {node.split("-")[1][0] for node in nodes} == {"q"}, nodes
