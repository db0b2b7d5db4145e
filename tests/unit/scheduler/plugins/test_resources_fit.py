"""NodeResourcesFit against kube-scheduler's semantics, reason strings and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gputopo.scheduler.scheduling_profile import load_profile
from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule


def _gpu_node(name: str, gpus: str = "8", cpu: str = "32", pods: str = "110") -> dict[str, Any]:
    return node(
        name,
        allocatable={
            "cpu": cpu,
            "memory": "64Gi",
            "ephemeral-storage": "100Gi",
            "pods": pods,
            "nvidia.com/gpu": gpus,
        },
    )


def test_request_that_exactly_fits_is_feasible() -> None:
    snapshot = cluster([_gpu_node("a")], [pod("old", node_name="a", requests={"cpu": "31500m"})])
    assert schedule(pod("p", requests={"cpu": "500m"}), snapshot).node == "a"
    assert schedule(pod("p", requests={"cpu": "501m"}), snapshot).message == (
        "0/1 nodes are available: 1 Insufficient cpu."
    )


def test_every_insufficient_resource_is_counted() -> None:
    snapshot = cluster([_gpu_node("a"), _gpu_node("b", gpus="1")])
    result = schedule(
        pod("p", requests={"cpu": "64", "memory": "100Gi", "nvidia.com/gpu": "2"}), snapshot
    )
    assert result.message == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "2 Insufficient cpu, 2 Insufficient memory."
    )
    assert reasons(result)["b"] == (
        "Insufficient cpu",
        "Insufficient memory",
        "Insufficient nvidia.com/gpu",
    )


def test_extended_resource_missing_on_node_is_insufficient() -> None:
    snapshot = cluster([_gpu_node("a")])
    result = schedule(pod("p", limits={"nvidia.com/mig-1g.10gb": "1"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient nvidia.com/mig-1g.10gb."


def test_too_many_pods() -> None:
    snapshot = cluster([_gpu_node("a", pods="1")], [pod("old", node_name="a")])
    assert schedule(pod("p"), snapshot).message == "0/1 nodes are available: 1 Too many pods."


def test_node_without_pods_allocatable_fits_no_pod() -> None:
    snapshot = cluster([node("a", allocatable={"cpu": "8", "memory": "8Gi"})])
    assert schedule(pod("p"), snapshot).message == "0/1 nodes are available: 1 Too many pods."


def test_limits_only_container_requests_its_limits() -> None:
    snapshot = cluster([_gpu_node("a", gpus="1")])
    snapshot.add_pod(pod("old", node_name="a", limits={"nvidia.com/gpu": "1"}))
    result = schedule(pod("p", limits={"nvidia.com/gpu": "1"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def test_terminal_pods_are_not_load() -> None:
    snapshot = cluster([_gpu_node("a", gpus="1")])
    done = pod("done", node_name="a", limits={"nvidia.com/gpu": "1"})
    done["status"] = {"phase": "Succeeded"}
    snapshot.add_pod(done)
    assert schedule(pod("p", limits={"nvidia.com/gpu": "1"}), snapshot).node == "a"


def test_pod_overhead_is_added() -> None:
    snapshot = cluster([_gpu_node("a", cpu="1")])
    result = schedule(pod("p", requests={"cpu": "900m"}, overhead={"cpu": "200m"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_allocatable_falls_back_to_capacity() -> None:
    item = node("a")
    item["status"] = {"capacity": {"cpu": "1", "memory": "1Gi", "pods": "10"}}
    snapshot = cluster([item])
    assert schedule(pod("p", requests={"cpu": "1"}), snapshot).node == "a"
    assert schedule(pod("q", requests={"cpu": "2"}), snapshot).node is None


def test_ephemeral_storage_is_checked() -> None:
    snapshot = cluster([_gpu_node("a")])
    result = schedule(pod("p", requests={"ephemeral-storage": "200Gi"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient ephemeral-storage."


def test_least_allocated_prefers_the_emptier_node() -> None:
    snapshot = cluster(
        [node("busy"), node("idle")],
        [pod("old", node_name="busy", requests={"cpu": "6", "memory": "24Gi"})],
    )
    assert schedule(pod("p", requests={"cpu": "1", "memory": "1Gi"}), snapshot).node == "idle"


def test_most_allocated_profile_bin_packs(tmp_path: Path) -> None:
    path = tmp_path / "pack.yaml"
    path.write_text(
        "nodeResourcesFit:\n"
        "  strategy: MostAllocated\n"
        "  resources: [{name: nvidia.com/gpu, weight: 1}]\n"
        "scores: {NodeResourcesBalancedAllocation: 0}\n"
    )
    profile = load_profile(path)
    gpus = {"cpu": "32", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"}
    snapshot = cluster(
        [node("empty", allocatable=gpus), node("half", allocatable=gpus)],
        [pod("old", node_name="half", limits={"nvidia.com/gpu": "4"})],
    )
    request = pod("p", limits={"nvidia.com/gpu": "2"})
    assert schedule(request, snapshot, profile).node == "half"
    assert schedule(request, snapshot).node == "empty"  # default LeastAllocated spreads
