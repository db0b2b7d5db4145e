"""Rebalancing against the descheduler: the placement-quality trace, three ways of undoing
fragmentation, real control plane.

The cluster and the GPU pods of `tests/bench/test_placement_quality.py` (its `create_cluster`:
15 kwok nodes from five machine profiles, labelled by the agent's own code; its `make_trace`:
70 pods of 1/2/4/8 GPUs over 10 steps, one step standing for a minute; the MIG-slice pods are
left out: neither rebalancer moves them). Differences, each needed to give a rebalancer work
and a fair field:

* every trace pod is the one replica of its own ReplicaSet (kube-controller-manager's
  ReplicaSet controller recreates an evicted pod, which gputopo's scheduler runtime places
  again; a completion scales the ReplicaSet to 0): both rebalancers evict only pods a
  controller recreates;
* 8-GPU pods have a higher priority (PriorityClass `rebalance-bench-large`, 1000,
  ``preemptionPolicy: Never``, so nothing preempts): gputopo's planner moves only pods of
  strictly lower priority than the one waiting;
* every third pod of 1 or 2 GPUs has a PodDisruptionBudget with ``minAvailable: 1`` (its one
  replica may never be evicted); the disruption controller runs, so the Eviction API enforces
  them;
* gputopo's scheduler runs with headroom off (profile ``headroom.minGpus: 0``), the placement
  that fragments, so both rebalancers have something to undo; no load tracker.

Each arm runs the trace in a fresh namespace on the same nodes, with the same scheduler. At the
end of each step (completions, arrivals, everything settled), the arm acts once:

* ``none``: nothing (the baseline);
* ``gputopo``: `scheduler/rebalance.py`'s `Rebalancer` plans on the live objects (as
  ``kubectl gputopo why`` reads them, `simulate.cluster_from_objects`) and each move's pods are
  evicted through the Eviction API;
* ``controller``: gputopo's live rebalance controller (`scheduler/rebalance_controller.py`),
  acting (``dry_run`` off), no wait, rate limits and cool-downs off, the arm's namespace only:
  one round (`run_once`) per action; unlike the ``gputopo`` arm it nominates the waiting pod
  to the node it frees, which holds that place;
* ``descheduler``: the real descheduler (sigs.k8s.io/descheduler, built by hack/testenv) runs once
  (``--descheduling-interval 0``) with `DESCHEDULER_POLICY`: ``HighNodeUtilization`` on
  ``nvidia.com/gpu`` (nodes under `DESCHEDULER_THRESHOLD_PCT` % of their GPUs requested are
  emptied so that their pods pack elsewhere, its closest strategy to "make room for a big pod"),
  ``nodeFit`` on, the arm's namespace only (every other one excluded).

then everything settles again. Reported per arm:

* 8-GPU pod-minutes waiting: 8-GPU pods pending at the end of a step (after the action) while
  at least 8 GPUs were free in the cluster (the issue's definition), and all 8-GPU pending
  pod-minutes;
* evictions (a job's pod replaced while the job still runs), 8-GPU pods freed (pending before
  the action, bound after it), evictions per freed 8-GPU pod;
* PDB violations: evictions of a pod whose budget allowed none (must be 0).

Run: ``make bench BENCH_ARGS="-k rebalance_bench -s"``; seeds with GPUTOPO_BENCH_SEEDS (default
the first of the placement-quality seeds), arms with GPUTOPO_BENCH_ARMS (default all three).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.scheduler.rebalance import RebalancePolicy, Rebalancer, budgets_from_objects
from gputopo.scheduler.rebalance_controller import (
    CONTROLLER,
    RebalanceController,
    RebalanceMetrics,
    RebalanceSettings,
)
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError, load_kube_api
from gputopo.scheduler.runtime.runner import RuntimeConfig, SchedulerRuntime
from gputopo.scheduler.scheduling_profile import default_profile
from gputopo.scheduler.simulate import build_snapshot, cluster_from_objects
from tests.bench.test_placement_quality import (
    DEFAULT_SEEDS,
    GPU,
    STEPS,
    TracePod,
    create_cluster,
    make_trace,
)
from tests.controlplane import ControlPlane, ManagedProcess
from tests.polling import eventually

pytestmark = [pytest.mark.bench, pytest.mark.integration]

ARMS = ("none", "gputopo", "controller", "descheduler")
SCHEDULER = "gputopo-scheduler"
LARGE_CLASS = "rebalance-bench-large"
LARGE_PRIORITY = 1000
JOB_LABEL = "bench.gputopo.io/job"
CONTROLLERS = ("replicaset-controller", "disruption-controller")
BACKOFF_S = 1.0
SETTLE_TIMEOUT_S = 60.0
RETRY_GRACE_S = 2.5  # an evicted pod's replacement, and a waiting pod's retry, after backoff
DESCHEDULER_THRESHOLD_PCT = 50


def descheduler_policy(others: Sequence[str]) -> dict[str, Any]:
    """HighNodeUtilization on GPUs; the plugin takes only `exclude` namespaces, so every
    namespace but the arm's is listed there."""
    return {
        "apiVersion": "descheduler/v1alpha2",
        "kind": "DeschedulerPolicy",
        "profiles": [
            {
                "name": "gpu-packing",
                "pluginConfig": [
                    {"name": "DefaultEvictor", "args": {"nodeFit": True}},
                    {
                        "name": "HighNodeUtilization",
                        "args": {
                            "thresholds": {GPU: DESCHEDULER_THRESHOLD_PCT},
                            "evictableNamespaces": {"exclude": list(others)},
                        },
                    },
                ],
                "plugins": {"balance": {"enabled": ["HighNodeUtilization"]}},
            }
        ],
    }


@dataclass
class ArmResult:
    arm: str
    seed: int
    waiting_8gpu_with_room: int = 0
    waiting_8gpu: int = 0
    evictions: int = 0
    freed_8gpu: int = 0
    pdb_violations: int = 0
    refused_by_pdb: int = 0
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        per = f"{self.evictions / self.freed_8gpu:.1f}" if self.freed_8gpu else "n/a"
        return (
            f"| {self.arm} | {self.seed} | {self.waiting_8gpu_with_room} | {self.waiting_8gpu} "
            f"| {self.evictions} | {self.freed_8gpu} | {per} | {self.pdb_violations} "
            f"| {self.refused_by_pdb} |"
        )


def protected(pod: TracePod, index: int) -> bool:
    return pod.gpus in (1, 2) and index % 3 == 0


def replica_set(pod: TracePod) -> JsonDict:
    labels = {JOB_LABEL: pod.name}
    spec: JsonDict = {
        "schedulerName": SCHEDULER,
        "terminationGracePeriodSeconds": 0,
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {
                    "requests": {GPU: str(pod.gpus), "cpu": "100m"},
                    "limits": {GPU: str(pod.gpus)},
                },
            }
        ],
    }
    if pod.gpus == 8:
        spec["priorityClassName"] = LARGE_CLASS
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": pod.name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def budget(pod: TracePod) -> JsonDict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": pod.name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {JOB_LABEL: pod.name}}},
    }


class Trace:
    """One arm's run of the trace in its namespace."""

    def __init__(self, api: KubeApi, namespace: str, nodes: Sequence[str]) -> None:
        self.api = api
        self.ns = namespace
        self.nodes = list(nodes)

    def pods(self) -> list[JsonDict]:
        items = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/pods").get("items")
        return [p for p in items or [] if not p["metadata"].get("deletionTimestamp")]

    def create(self, pod: TracePod, index: int) -> None:
        self.api.request(
            "POST", f"/apis/apps/v1/namespaces/{self.ns}/replicasets", body=replica_set(pod)
        )
        if protected(pod, index):
            self.api.request(
                "POST",
                f"/apis/policy/v1/namespaces/{self.ns}/poddisruptionbudgets",
                body=budget(pod),
            )

    def complete(self, pod: TracePod) -> None:
        path = f"/apis/apps/v1/namespaces/{self.ns}/replicasets/{pod.name}/scale"
        scale = self.api.request("GET", path)
        scale["spec"]["replicas"] = 0
        self.api.request("PUT", path, body=scale)

    def settle(self, active: set[str]) -> None:
        """Every active job has one live pod, bound or marked unschedulable, none of another."""

        def settled() -> bool:
            by_job: dict[str, list[JsonDict]] = {}
            for pod in self.pods():
                by_job.setdefault(pod["metadata"]["labels"].get(JOB_LABEL, ""), []).append(pod)
            if set(by_job) != active or any(len(v) != 1 for v in by_job.values()):
                return False
            return all(_placed_or_refused(v[0]) for v in by_job.values())

        eventually(settled, timeout_s=SETTLE_TIMEOUT_S, what=f"{self.ns} settled", interval_s=0.2)

    def uids(self) -> dict[str, str]:
        return {p["metadata"]["labels"][JOB_LABEL]: p["metadata"]["uid"] for p in self.pods()}

    def pending_large(self) -> set[str]:
        return {
            p["metadata"]["labels"][JOB_LABEL]
            for p in self.pods()
            if not p["spec"].get("nodeName") and _gpus(p) == 8
        }

    def free_gpus(self) -> int:
        nodes = self.api.request("GET", "/api/v1/nodes").get("items") or []
        total = sum(
            int((n.get("status", {}).get("allocatable") or {}).get(GPU, 0))
            for n in nodes
            if n["metadata"]["name"] in self.nodes
        )
        used = sum(_gpus(p) for p in self.pods() if p["spec"].get("nodeName"))
        return total - used

    def live_objects(self) -> Iterator[tuple[str, JsonDict]]:
        for node in self.api.request("GET", "/api/v1/nodes").get("items") or []:
            if node["metadata"]["name"] in self.nodes:
                yield "node", {"apiVersion": "v1", "kind": "Node", **node}
        for pod in self.pods():
            yield "pod", {"apiVersion": "v1", "kind": "Pod", **pod}
        path = f"/apis/policy/v1/namespaces/{self.ns}/poddisruptionbudgets"
        for pdb in self.api.request("GET", path).get("items") or []:
            yield "pdb", {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", **pdb}

    def evict(self, key: str) -> bool:
        namespace, name = key.split("/", 1)
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            self.api.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body=body
            )
        except KubeApiError as error:
            if error.status == 429:  # a PodDisruptionBudget said no
                return False
            raise
        return True


def _gpus(pod: JsonDict) -> int:
    total = 0
    for container in pod["spec"].get("containers") or []:
        total += int(((container.get("resources") or {}).get("requests") or {}).get(GPU, 0))
    return total


def _placed_or_refused(pod: JsonDict) -> bool:
    if pod["spec"].get("nodeName"):
        return True
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in pod.get("status", {}).get("conditions") or []
    )


def gputopo_rebalance(trace: Trace, result: ArmResult) -> None:
    cluster = cluster_from_objects(trace.live_objects(), skip_invalid=True)
    budgets = budgets_from_objects(cluster.disruption_budgets, cluster.bound_pods)
    rebalancer = Rebalancer(build_snapshot(cluster), budgets)
    plan = rebalancer.plan(cluster.pending_pods)
    for move in plan.moves:
        for key in move.evict:
            if not trace.evict(key):
                result.refused_by_pdb += 1
    result.notes += [f"move {m.to_json()}" for m in plan.moves]


def run_descheduler(plane: ControlPlane, binary: Path, trace: Trace, result: ArmResult) -> None:
    with tempfile.TemporaryDirectory() as directory:
        policy = Path(directory) / "policy.yaml"
        namespaces = trace.api.request("GET", "/api/v1/namespaces").get("items") or []
        others = [n["metadata"]["name"] for n in namespaces if n["metadata"]["name"] != trace.ns]
        policy.write_text(yaml.safe_dump(descheduler_policy(others)))
        completed = subprocess.run(
            [
                str(binary),
                f"--kubeconfig={plane.admin_kubeconfig}",
                f"--policy-config-file={policy}",
                "--descheduling-interval=0",
                "--secure-port=0",  # no HTTPS (metrics) server: one run, nothing to scrape
                "--v=2",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if completed.returncode != 0:
        raise AssertionError(
            f"descheduler exited {completed.returncode}: {completed.stderr[-3000:]}"
        )
    result.notes += [
        line for line in completed.stderr.splitlines() if "Evicted" in line or "evict" in line
    ][:20]


def run_arm(
    plane: ControlPlane, arm: str, seed: int, nodes: Sequence[str], descheduler: Path | None
) -> ArmResult:
    namespace = plane.create_namespace(f"rb-{arm}-{seed}")
    api = load_kube_api(str(plane.admin_kubeconfig))
    trace = Trace(api, namespace, nodes)
    result = ArmResult(arm, seed)
    pods = [p for p in make_trace(seed) if not p.mig]
    index_of = {p.name: i for i, p in enumerate(pods)}
    protected_jobs = {p.name for p in pods if protected(p, index_of[p.name])}
    profile = dataclasses.replace(default_profile(), headroom_min_gpus=0)
    runtime = SchedulerRuntime(
        api,
        CoreFramework(profile),
        RuntimeConfig(
            scheduler_name=SCHEDULER,
            metrics_address=None,
            initial_backoff_s=BACKOFF_S,
            max_backoff_s=BACKOFF_S,
        ),
    )
    runtime.start()
    recorder = EventRecorder(api, CONTROLLER, "bench")
    controller = RebalanceController(
        api,
        RebalanceSettings(
            policy=RebalancePolicy(namespaces=frozenset({namespace})),
            dry_run=False,
            wait_s=0,
            evictions_per_minute=10_000,
            node_cooldown_s=0,
            cooldown_s=0,
        ),
        recorder,
        RebalanceMetrics(),
    )
    active: set[str] = set()
    try:
        for step in range(STEPS + 6):
            for pod in pods:
                if pod.name in active and pod.arrives + pod.lifetime <= step:
                    trace.complete(pod)
                    active.discard(pod.name)
            for pod in pods:
                if pod.arrives == step:
                    trace.create(pod, index_of[pod.name])
                    active.add(pod.name)
            time.sleep(RETRY_GRACE_S)
            trace.settle(active)
            before = trace.uids()
            waiting_before = trace.pending_large()
            if waiting_before and arm == "gputopo":
                gputopo_rebalance(trace, result)
            elif waiting_before and arm == "controller":
                report = controller.run_once()
                result.notes += [f"move {m.to_json()}" for m in report.done]
                result.refused_by_pdb += len(report.refused)
            elif waiting_before and arm == "descheduler":
                assert descheduler is not None
                run_descheduler(plane, descheduler, trace, result)
            if arm != "none" and waiting_before:
                time.sleep(RETRY_GRACE_S)
                trace.settle(active)
            after = trace.uids()
            evicted = {job for job, uid in before.items() if job in after and after[job] != uid}
            result.evictions += len(evicted)
            result.pdb_violations += len(evicted & protected_jobs)
            waiting_after = trace.pending_large()
            result.freed_8gpu += len(waiting_before - waiting_after)
            result.waiting_8gpu += len(waiting_after)
            if waiting_after and trace.free_gpus() >= 8:
                result.waiting_8gpu_with_room += len(waiting_after)
        return result
    finally:
        runtime.stop()
        recorder.close()
        for path in (
            f"/apis/apps/v1/namespaces/{namespace}/replicasets",
            f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        ):
            with contextlib.suppress(KubeApiError):
                api.request("DELETE", path)
        plane.delete_namespace(namespace)


def _seeds() -> tuple[int, ...]:
    text = os.environ.get("GPUTOPO_BENCH_SEEDS", "").strip()
    return tuple(int(s) for s in text.split(",") if s.strip()) if text else DEFAULT_SEEDS[:1]


def test_rebalance_against_the_descheduler(
    control_plane: ControlPlane, kube_admin: Any, kwok: ManagedProcess
) -> None:
    from kubernetes import client

    arms = tuple(os.environ.get("GPUTOPO_BENCH_ARMS", ",".join(ARMS)).split(","))
    descheduler = control_plane.tools.require("descheduler") if "descheduler" in arms else None
    core = client.CoreV1Api(kube_admin)
    scheduling = client.SchedulingV1Api(kube_admin)
    with contextlib.suppress(client.ApiException):
        scheduling.create_priority_class(
            client.V1PriorityClass(
                metadata=client.V1ObjectMeta(name=LARGE_CLASS),
                value=LARGE_PRIORITY,
                preemption_policy="Never",
            )
        )
    control_plane.start_controller_manager(CONTROLLERS)
    nodes = create_cluster(core)
    results: list[ArmResult] = []
    try:
        for seed in _seeds():
            for arm in arms:
                results.append(run_arm(control_plane, arm, seed, list(nodes), descheduler))
    finally:
        for name in nodes:
            core.delete_node(name)
        scheduling.delete_priority_class(LARGE_CLASS)
        if control_plane.controller_manager is not None:
            control_plane.controller_manager.stop()
    print(
        "\n| arm | seed | 8-GPU pod-min waiting with >= 8 GPUs free | 8-GPU pod-min pending "
        "| evictions | 8-GPU pods freed | evictions per freed | PDB violations "
        "| evictions refused by a PDB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    print("\n".join(r.row() for r in results))
    for r in results:
        print(f"\n{r.arm} seed {r.seed}:\n  " + "\n  ".join(r.notes or ["(no action)"]))
    assert all(r.pdb_violations == 0 for r in results)
