"""Scoring through the framework: kube-scheduler's arithmetic for the resource scores together,
the weighted total, tie-breaking (each score plugin is tested in plugins/)."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.scheduling_profile import default_profile
from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_least_allocated_and_balanced_allocation_values() -> None:
    snapshot = cluster([node("a", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"})])
    scores = _scores(schedule(pod("p", requests={"cpu": "2", "memory": "8Gi"}), snapshot))["a"]
    assert scores["NodeResourcesFit"] == 75
    assert scores["NodeResourcesBalancedAllocation"] == 100
    uneven = _scores(schedule(pod("p", requests={"cpu": "4", "memory": "8Gi"}), snapshot))["a"]
    # fractions 0.5 and 0.25: std 0.125, score int((1 - 0.125) * 100)
    assert uneven["NodeResourcesBalancedAllocation"] == 87
    assert uneven["NodeResourcesFit"] == (50 + 75) // 2


def test_best_effort_pod_uses_non_zero_defaults_and_skips_balanced() -> None:
    snapshot = cluster([node("a", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"})])
    scores = _scores(schedule(pod("p"), snapshot))["a"]
    # 100m of 8 cores -> 98; 200Mi of 32Gi -> 99; average 98
    assert scores["NodeResourcesFit"] == 98
    assert "NodeResourcesBalancedAllocation" not in scores


def test_a_node_without_memory_scores_on_cpu_alone_and_the_others_unchanged() -> None:
    with_memory = node("a", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"})
    cpu_only = node("b", allocatable={"cpu": "8", "pods": "110"})
    alone = cluster([with_memory])
    mixed = cluster([with_memory, cpu_only])
    assert alone.everywhere("memory") and not mixed.everywhere("memory")
    assert mixed.everywhere("cpu") and not mixed.everywhere("nvidia.com/gpu")
    wants_cpu = pod("p", requests={"cpu": "2"})
    scores = _scores(schedule(wants_cpu, mixed))
    # b: cpu only ((8 - 2) / 8 -> 75), no deviation with one resource -> 100
    assert scores["b"]["NodeResourcesFit"] == 75
    assert scores["b"]["NodeResourcesBalancedAllocation"] == 100
    # a: cpu 75 and memory 99 (the 200Mi non-zero default), averaged; fractions 0.25 and 0
    assert scores["a"] == _scores(schedule(wants_cpu, alone))["a"]
    assert scores["a"]["NodeResourcesFit"] == (75 + 99) // 2
    assert scores["a"]["NodeResourcesBalancedAllocation"] == 87
    # b gains memory: every node has it again, and b now scores on both
    mixed.add_node(node("b", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"}))
    assert mixed.everywhere("memory")
    assert _scores(schedule(wants_cpu, mixed))["b"] == scores["a"]


def test_total_is_the_weighted_sum() -> None:
    snapshot = cluster([node("a")])
    result = schedule(pod("p", requests={"cpu": "1", "memory": "1Gi"}), snapshot)
    diagnosis = result.diagnosis()["a"]
    profile = default_profile()
    assert diagnosis.score == sum(
        score * profile.weight(plugin) for plugin, score in diagnosis.plugin_scores.items()
    )


def test_ties_are_broken_deterministically_but_not_always_the_same_node() -> None:
    snapshot = cluster([node(f"n{i}") for i in range(4)])
    first = [schedule(pod(f"p{i}"), snapshot).node for i in range(40)]
    again = [schedule(pod(f"p{i}"), snapshot).node for i in range(40)]
    assert first == again
    assert len(set(first)) > 1
