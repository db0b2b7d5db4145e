"""The rebalance controller against a real kube-apiserver (kwok nodes).

The controller acts as daemonset/components/rebalance's ServiceAccount with that RBAC applied
verbatim (so the tests also prove the component grants enough), gputopo-scheduler's runtime
places the pods, and kube-controller-manager's replicaset controller recreates an evicted pod,
which then lands elsewhere. No disruption controller runs: a PodDisruptionBudget's status is
what the API server was given (0 allowed when new), and the Eviction API judges by it.

The cluster, every test: four GPUs a node. rb-a holds an unowned 3-GPU pod (never moved), the
other nodes one 1-GPU pod of a ReplicaSet each (bound by the test, so where they start is
fixed). A 4-GPU pod of higher priority (preemptionPolicy Never: the scheduler's own preemption
stays out of it) fits nowhere though the cluster has the GPUs: the controller must free a node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import dynamic

from gputopo.scheduler.gang import POD_GROUP_LABEL
from gputopo.scheduler.rebalance_controller import (
    CONTROLLER,
    DISRUPTION_BUDGET,
    RebalanceController,
    RebalanceMetrics,
    RebalanceService,
    RebalanceSettings,
)
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.leader import LeaseConfig
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import ControlPlane
from tests.integration.scheduler_env import (
    REPO,
    SCHEDULER_NAMESPACE,
    Cluster,
    gpu_node,
    gpu_pod,
    pod_scheduled_condition,
    running_runtime,
    scheduler_rbac,
)
from tests.integration.test_deploy_manifests import _apply, _namespaced
from tests.packaging.kustomize import overlay, render
from tests.polling import eventually

pytestmark = pytest.mark.integration

COMPONENT = REPO / "daemonset" / "components" / "rebalance"
SERVICE_ACCOUNT = "gputopo-rebalance"
LEASE = "gputopo-rebalance"
LOW, HIGH = "gputopo-rebalance-low", "gputopo-rebalance-high"
PRIORITY_CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"


@pytest.fixture(scope="module")
def priority_classes(control_plane: ControlPlane) -> Iterator[None]:
    api = Cluster(control_plane).api
    for name, value, policy in ((LOW, 10, "PreemptLowerPriority"), (HIGH, 1000, "Never")):
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "preemptionPolicy": policy,
        }
        with contextlib.suppress(KubeApiError):
            api.request("POST", PRIORITY_CLASSES, body=body)
    yield
    for name in (LOW, HIGH):
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", f"{PRIORITY_CLASSES}/{name}")


@pytest.fixture
def replicasets(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    """The replicaset controller; the test's ReplicaSets are deleted before its namespace, so
    no pod is recreated into a namespace being deleted (no namespace controller runs here, and
    such a pod would be left pending for the next test's scheduler)."""
    control_plane.start_controller_manager(("replicaset",))
    yield
    api = Cluster(control_plane).api
    path = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
    for item in api.request("GET", path).get("items") or []:
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", f"{path}/{item['metadata']['name']}")


@pytest.fixture
def rebalance_api(control_plane: ControlPlane) -> Iterator[KubeApi]:
    """The controller's own identity, with the component's RBAC."""
    with scheduler_rbac(control_plane, COMPONENT):
        yield KubeApi(
            control_plane.client_for_service_account(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT)
        )


@contextlib.contextmanager
def _scheduling(control_plane: ControlPlane) -> Iterator[SchedulerRuntime]:
    """gputopo-scheduler's runtime, started once the test has placed the cluster's pods."""
    with running_runtime(control_plane) as started:
        yield started


# -- the cluster --------------------------------------------------------------------------------


def _replica_set(
    name: str, replicas: int, gpus: int = 1, labels: dict[str, str] | None = None, **spec: Any
) -> JsonDict:
    template = gpu_pod(name, gpus, priority_class=LOW)
    template["spec"].update(spec)
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": selector},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, **(labels or {})}},
                "spec": template["spec"],
            },
        },
    }


def _pods_of(cluster: Cluster, namespace: str, app: str) -> list[JsonDict]:
    return [
        pod
        for pod in cluster.pods(namespace)
        if pod["metadata"].get("labels", {}).get("app") == app
        and not pod["metadata"].get("deletionTimestamp")
    ]


def _place_replicas(cluster: Cluster, namespace: str, rs: JsonDict, nodes: list[str]) -> None:
    """Create the ReplicaSet (the runtime not running yet) and bind its pods to ``nodes``."""
    cluster.api.request("POST", f"/apis/apps/v1/namespaces/{namespace}/replicasets", body=rs)
    app = rs["metadata"]["name"]
    pods = eventually(
        lambda: (found := _pods_of(cluster, namespace, app)) and len(found) == len(nodes) and found,
        30,
        f"{app}'s pods created",
    )
    for pod, node in zip(sorted(pods, key=lambda p: p["metadata"]["name"]), nodes, strict=True):
        cluster.bind(namespace, pod["metadata"]["name"], node)


def _fragmented(
    cluster: Cluster, namespace: str, fillers: int = 2, labels: dict[str, str] | None = None
) -> list[str]:
    """rb-a: a 3-GPU unowned pod; rb-b, rb-c, ...: one 1-GPU filler each. The filler nodes."""
    nodes = [f"rb-{letter}" for letter in "abcdef"[: fillers + 1]]
    for node in nodes:
        cluster.create_node(gpu_node(node, 4))
    anchor = gpu_pod("anchor", 3, priority_class=LOW)
    anchor["spec"]["nodeName"] = "rb-a"
    cluster.create_pod(namespace, anchor)
    _place_replicas(cluster, namespace, _replica_set("filler", fillers, labels=labels), nodes[1:])
    return nodes[1:]


def _wait_unschedulable(cluster: Cluster, namespace: str, name: str) -> None:
    def unschedulable() -> bool:
        condition = pod_scheduled_condition(cluster.pod(namespace, name))
        return condition is not None and condition.get("reason") == "Unschedulable"

    eventually(unschedulable, 30, f"{name} marked Unschedulable by the scheduler")


def _trainer(cluster: Cluster, namespace: str, name: str = "trainer") -> None:
    cluster.create_pod(namespace, gpu_pod(name, 4, priority_class=HIGH))
    _wait_unschedulable(cluster, namespace, name)


def _filler_nodes(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {
        pod["metadata"]["uid"]: str(pod["spec"].get("nodeName") or "")
        for pod in _pods_of(cluster, namespace, "filler")
    }


def _reasons(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    return [str(event.get("reason")) for event in cluster.events(namespace, pod)]


@contextlib.contextmanager
def _controller(api: KubeApi, **settings: Any) -> Iterator[RebalanceController]:
    recorder = EventRecorder(api, CONTROLLER, "test")
    try:
        yield RebalanceController(
            api, RebalanceSettings(wait_s=0, **settings), recorder, RebalanceMetrics()
        )
    finally:
        recorder.close()  # every Event written before the test reads them


def _evictions(controller: RebalanceController) -> float:
    return controller.metrics.registry.get_sample_value("gputopo_rebalance_evictions_total") or 0


# -- the rules ------------------------------------------------------------------------------------


def test_dry_run_writes_events_only(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    _fragmented(cluster, namespace)
    before = _filler_nodes(cluster, namespace)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        with _controller(rebalance_api) as controller:
            report = controller.run_once()
            controller.run_once()
        assert [move.frees for move in report.plan.moves] == ["rb-b"]
        planned = [
            event
            for event in cluster.events(namespace, "trainer")
            if event.get("reason") == "RebalancePlanned"
        ]
        assert len(planned) == 1
        assert "rb-b" in planned[0]["note"] and f"{namespace}/filler-" in planned[0]["note"]
        assert planned[0]["reportingController"] == CONTROLLER
        assert _evictions(controller) == 0
        assert _filler_nodes(cluster, namespace) == before  # the same pods, where they were
        trainer = cluster.pod(namespace, "trainer")
        assert not trainer["spec"].get("nodeName")
        assert not trainer["status"].get("nominatedNodeName")


def test_acting_frees_the_node_and_the_waiting_pod_binds_there(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    _fragmented(cluster, namespace)
    before = _filler_nodes(cluster, namespace)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        with _controller(rebalance_api, dry_run=False) as controller:
            report = controller.run_once()
        (move,) = report.done
        assert move.frees == "rb-b" and len(move.evict) == 1
        eventually(lambda: cluster.node_of(namespace, "trainer") == "rb-b", 60, "trainer on rb-b")

        def recreated_elsewhere() -> dict[str, str] | None:
            now = _filler_nodes(cluster, namespace)
            placed = len(now) == 2 and all(now.values())
            return now if placed and set(now) != set(before) else None

        after = eventually(recreated_elsewhere, 60, "the evicted filler recreated and placed")
        assert "rb-b" not in after.values()
        assert list(after.values()).count("rb-c") >= 1
        evicted = move.evict[0].split("/")[1]
        assert _reasons(cluster, namespace, evicted) == ["RebalanceEvicted"]
        assert "RebalanceMoved" in _reasons(cluster, namespace, "trainer")
        assert _evictions(controller) == 1


def test_a_disruption_budget_is_never_violated(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    _fragmented(cluster, namespace)
    before = _filler_nodes(cluster, namespace)
    path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "filler"},
        "spec": {"selector": {"matchLabels": {"app": "filler"}}, "maxUnavailable": 1},
    }
    created = cluster.api.request("POST", path, body=budget)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        # As the API server has it with no disruption controller: 0 allowed. No move is planned.
        with _controller(rebalance_api, dry_run=False) as controller:
            report = controller.run_once()
        assert report.plan.moves == [] and report.done == []
        assert [item.pod for item in report.plan.unresolved] == [f"{namespace}/trainer"]
        # A status the disruption controller has not confirmed yet (observedGeneration behind):
        # the planner believes one is allowed, the Eviction API refuses with 429 — and that holds.
        created["status"] = {
            "disruptionsAllowed": 1,
            "currentHealthy": 2,
            "desiredHealthy": 1,
            "expectedPods": 2,
            "observedGeneration": 0,
        }
        cluster.api.request("PUT", f"{path}/filler/status", body=created)
        with _controller(rebalance_api, dry_run=False) as controller:
            report = controller.run_once()
        assert [move.frees for move in report.plan.moves] == ["rb-b"]
        assert [reason for _, reason in report.refused] == [DISRUPTION_BUDGET]
        assert report.done == [] and _evictions(controller) == 0
        assert _filler_nodes(cluster, namespace) == before
        trainer = cluster.pod(namespace, "trainer")
        assert not trainer["spec"].get("nodeName")
        assert not trainer["status"].get("nominatedNodeName")  # cleared with the refusal
        refused = [
            event
            for event in cluster.events(namespace, "trainer")
            if event.get("reason") == "RebalanceRefused"
        ]
        assert len(refused) == 1 and DISRUPTION_BUDGET in refused[0]["note"]


def test_the_rate_limit_holds_the_second_move(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    _fragmented(cluster, namespace, fillers=3)
    with _scheduling(control_plane):
        _trainer(cluster, namespace, "trainer-1")
        _trainer(cluster, namespace, "trainer-2")
        # One move per hour: the first goes, the second is deferred, round after round.
        with _controller(rebalance_api, dry_run=False, cooldown_s=3600) as controller:
            first = controller.run_once()
            eventually(
                lambda: cluster.node_of(namespace, "trainer-1"),
                60,
                "trainer-1 placed after its move",
            )
            second = controller.run_once()
        assert [move.for_pod for move in first.done] == [f"{namespace}/trainer-1"]
        assert [(m.for_pod, why) for m, why in second.deferred] == [
            (f"{namespace}/trainer-2", "cooldown")
        ]
        assert second.done == [] and _evictions(controller) == 1
        trainer = cluster.pod(namespace, "trainer-2")
        assert not trainer["spec"].get("nodeName")
        assert not trainer["status"].get("nominatedNodeName")
        assert _reasons(cluster, namespace, "trainer-2").count("RebalanceDeferred") == 1


def test_no_move_when_the_simulator_says_it_would_not_help(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    """rb-a: an unowned 2-GPU pod; rb-b: a 2-GPU filler that may run on rb-b only. Four GPUs
    are free for the 4-GPU trainer, but freeing rb-b would leave the filler nowhere to go."""
    for node in ("rb-a", "rb-b"):
        cluster.create_node(gpu_node(node, 4))
    anchor = gpu_pod("anchor", 2, priority_class=LOW)
    anchor["spec"]["nodeName"] = "rb-a"
    cluster.create_pod(namespace, anchor)
    pinned = _replica_set("filler", 1, gpus=2, nodeSelector={"kubernetes.io/hostname": "rb-b"})
    _place_replicas(cluster, namespace, pinned, ["rb-b"])
    before = _filler_nodes(cluster, namespace)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        with _controller(rebalance_api, dry_run=False) as controller:
            report = controller.run_once()
        assert report.plan.moves == []
        (unresolved,) = report.plan.unresolved
        assert "without a place" in unresolved.reason
        assert _evictions(controller) == 0 and _filler_nodes(cluster, namespace) == before
        assert not [r for r in _reasons(cluster, namespace, "trainer") if r.startswith("Rebalance")]


def test_a_gang_is_never_split(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    """The acting test's cluster, but the fillers are the members of one gang: evicting one
    would break the job, so no move is made (and the whole gang is not moved either)."""
    _fragmented(cluster, namespace, labels={POD_GROUP_LABEL: "fillers"})
    before = _filler_nodes(cluster, namespace)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        with _controller(rebalance_api, dry_run=False) as controller:
            report = controller.run_once()
        assert report.plan.moves == [] and report.done == []
        assert [item.pod for item in report.plan.unresolved] == [f"{namespace}/trainer"]
        assert _evictions(controller) == 0 and _filler_nodes(cluster, namespace) == before


def test_the_command_runs_the_controller_until_sigterm(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
    tmp_path: Path,
) -> None:
    """`gputopo-scheduler rebalance` as the Deployment runs it (environment twins, the
    component's identity), dry run as shipped: the Event comes, SIGTERM ends it with 0."""
    _fragmented(cluster, namespace)
    token = control_plane.service_account_token(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT)
    kubeconfig = control_plane.kubeconfig_for_token(token, "rebalance-command")
    environment = {
        **os.environ,
        "GPUTOPO_KUBECONFIG": str(kubeconfig),
        "GPUTOPO_WAIT": "0s",
        "GPUTOPO_INTERVAL": "300ms",
        "GPUTOPO_LEADER_ELECT": "false",
        "GPUTOPO_METRICS_ADDRESS": "",
    }
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        log = (tmp_path / "rebalance.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "gputopo.scheduler.cli", "rebalance"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            eventually(
                lambda: "RebalancePlanned" in _reasons(cluster, namespace, "trainer"),
                60,
                "the command's RebalancePlanned event",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            log.close()
        assert code == 0, (tmp_path / "rebalance.log").read_text()[-2000:]
        assert not cluster.pod(namespace, "trainer")["spec"].get("nodeName")


def test_two_controllers_one_leader_one_move(
    cluster: Cluster,
    namespace: str,
    replicasets: None,
    rebalance_api: KubeApi,
    control_plane: ControlPlane,
    priority_classes: None,
) -> None:
    _fragmented(cluster, namespace)
    with _scheduling(control_plane):
        _trainer(cluster, namespace)
        settings = RebalanceSettings(dry_run=False, wait_s=0, interval_s=0.3)
        services = [
            RebalanceService(
                KubeApi(
                    control_plane.client_for_service_account(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT)
                ),
                settings,
                lease=LeaseConfig(
                    SCHEDULER_NAMESPACE,
                    LEASE,
                    identity,
                    lease_duration_s=4.0,
                    renew_deadline_s=3.0,
                    retry_period_s=0.5,
                ),
            )
            for identity in ("rebalance-one", "rebalance-two")
        ]
        try:
            for service in services:
                service.start()
            eventually(
                lambda: cluster.node_of(namespace, "trainer") == "rb-b", 60, "trainer on rb-b"
            )
            leaders = [service for service in services if service.is_leader()]
            assert len(leaders) == 1
            holder = rebalance_api.request(
                "GET",
                f"/apis/coordination.k8s.io/v1/namespaces/{SCHEDULER_NAMESPACE}/leases/{LEASE}",
            )["spec"]["holderIdentity"]
            assert leaders[0].elector is not None
            assert holder == leaders[0].elector.config.identity
            standby = next(service for service in services if service is not leaders[0])
            assert standby.metrics.registry.get_sample_value("gputopo_rebalance_rounds_total") == 0
            moves = [
                service.metrics.registry.get_sample_value(
                    "gputopo_rebalance_moves_total", {"mode": "acting"}
                )
                for service in services
            ]
            assert sorted(moves) == [0.0, 1.0]
        finally:
            for service in services:
                service.stop()
            with contextlib.suppress(KubeApiError):
                cluster.api.request(
                    "DELETE",
                    f"/apis/coordination.k8s.io/v1/namespaces/{SCHEDULER_NAMESPACE}/leases/{LEASE}",
                )
        moved = [
            event
            for event in cluster.events(namespace, "trainer")
            if event.get("reason") == "RebalanceMoved"
        ]
        assert [event["reportingInstance"] for event in moved] == [holder]


def test_the_component_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The rendered component in a fresh namespace: namespaced objects applied and read back,
    cluster-scoped ones with server-side dry run (stored nowhere another test would see)."""
    objects = render(overlay(tmp_path / "overlay", components=("rebalance",), namespace=namespace))
    api = dynamic.DynamicClient(control_plane.admin)
    ours = [o for o in objects if o["metadata"]["name"].startswith("gputopo-rebalance")]
    assert sorted(o["kind"] for o in ours) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for body in ours:
        if _namespaced(api, body):
            _apply(api, body, dry_run=False)
        else:
            body["metadata"].pop("namespace", None)
            _apply(api, body, dry_run=True)
    deployment = Cluster(control_plane).api.request(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/gputopo-rebalance"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["GPUTOPO_DRY_RUN"] == "true"
