"""Node sampling: kube-scheduler's percentageOfNodesToScore, round robin and early stop, in the
framework's placement cycles (``schedule_one(..., sample=True)``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import numpy as np
import pytest

from gputopo.scheduler.framework import (
    NodeSampler,
    num_feasible_nodes_to_find,
    requests_gpus,
    sample_feasible,
    schedule_one,
    walked_slots,
)
from gputopo.scheduler.model import parse_node, parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile
from gputopo.scheduler.simulate import ClusterInput, simulate
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.sched_builders import cluster, node, pod

GPU: Final = "nvidia.com/gpu"
CLOSED: Final = [{"key": "closed", "value": "yes", "effect": "NoSchedule"}]


def _nodes(count: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [node(f"n{i:04d}", **kwargs) for i in range(count)]


def _gpu_nodes(count: int) -> list[dict[str, Any]]:
    return _nodes(count, allocatable={"cpu": "64", "memory": "256Gi", "pods": "110", GPU: "8"})


def _profile(**changes: int) -> SchedulerProfile:
    return replace(default_profile(), **changes)


def _walked(snapshot: ClusterSnapshot, pod_dict: dict[str, Any], **kwargs: Any) -> list[str]:
    """The nodes one placement cycle walked (its diagnosis), in name order."""
    result = schedule_one(parse_pod(pod_dict), snapshot, sample=True, **kwargs)
    return sorted(result.diagnosis())


@pytest.mark.parametrize(
    ("nodes", "to_find"),
    [
        (1, 1),
        (99, 99),  # under 100 nodes: all of them
        (100, 100),  # 50 % of 100 is 50, raised to the floor of 100
        (150, 100),  # 49 % -> 73 -> 100
        (1000, 420),  # 50 - 1000/125 = 42 %
        (1250, 500),  # 40 %
        (5000, 500),  # 10 %
        (6000, 300),  # 50 - 48 = 2 %, raised to 5 %
        (20000, 1000),  # 5 %
    ],
)
def test_adaptive_percentage_is_kube_schedulers(nodes: int, to_find: int) -> None:
    assert num_feasible_nodes_to_find(0, nodes) == to_find


@pytest.mark.parametrize(
    ("percentage", "nodes", "to_find"),
    [(100, 5000, 5000), (30, 1000, 300), (1, 1000, 100), (1, 99, 99), (50, 99, 99)],
)
def test_configured_percentage_keeps_the_floor_of_100_nodes(
    percentage: int, nodes: int, to_find: int
) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == to_find


def test_sample_takes_the_feasible_slots_met_from_the_start() -> None:
    feasible = np.array([0, 2, 3, 6, 8, 9], dtype=np.int64)

    found, last = sample_feasible(feasible, 3, 1)

    assert found.tolist() == [2, 3, 6]
    assert last == 6


def test_sample_wraps_around_past_the_last_slot() -> None:
    feasible = np.array([0, 2, 3, 6, 8, 9], dtype=np.int64)

    found, last = sample_feasible(feasible, 3, 8)

    assert found.tolist() == [0, 8, 9]  # ascending; the walk went 8, 9, then 0
    assert last == 0


def test_sample_starting_past_every_feasible_slot_wraps_to_the_first() -> None:
    feasible = np.array([1, 4], dtype=np.int64)

    found, last = sample_feasible(feasible, 1, 7)

    assert (found.tolist(), last) == ([1], 1)


def test_walked_slots_wrap_like_the_walk() -> None:
    slots = np.array([0, 1, 2, 5, 7, 9], dtype=np.int64)

    assert walked_slots(slots, 2, 7).tolist() == [2, 5, 7]
    assert walked_slots(slots, 7, 1).tolist() == [0, 1, 7, 9]


def test_cpu_pod_scores_the_adaptive_share_and_the_next_cycle_starts_after_it() -> None:
    snapshot = cluster(_nodes(200))  # 200 nodes: 50 - 1 = 49 % -> 98 -> the floor, 100

    first = _walked(snapshot, pod("a", requests={"cpu": "1"}))
    second = _walked(snapshot, pod("b", requests={"cpu": "1"}))
    third = _walked(snapshot, pod("c", requests={"cpu": "1"}))

    assert first == [f"n{i:04d}" for i in range(100)]
    assert second == [f"n{i:04d}" for i in range(100, 200)]
    assert third == first  # round robin wraps
    assert NodeSampler.of(snapshot).next_slot == 100


def test_filtering_stops_once_enough_nodes_are_feasible() -> None:
    # 300 nodes, every other one closed by a taint: 48 % of 300 = 144 feasible to find.
    nodes = [node(f"n{i:04d}", taints=CLOSED if i % 2 else None) for i in range(300)]
    snapshot = cluster(nodes)

    result = schedule_one(parse_pod(pod("a")), snapshot, sample=True)

    diagnosis = result.diagnosis()
    assert result.feasible_nodes == 144
    assert sum(1 for d in diagnosis.values() if d.feasible) == 144
    assert sorted(diagnosis) == [f"n{i:04d}" for i in range(287)]  # walked up to the 144th
    assert NodeSampler.of(snapshot).next_slot == 287


def test_sampling_can_miss_the_best_node_and_full_scoring_finds_it() -> None:
    big = node("n0199", allocatable={"cpu": "64", "memory": "256Gi", "pods": "110"})
    nodes = [*_nodes(199), big]

    sampled = schedule_one(parse_pod(pod("a")), cluster(nodes), sample=True)
    full = schedule_one(parse_pod(pod("a")), cluster(nodes))
    everything = schedule_one(
        parse_pod(pod("a")),
        cluster(nodes),
        _profile(percentage_of_nodes_to_score=100),
        sample=True,
    )

    assert full.node == everything.node == "n0199"  # LeastAllocated: the big node
    assert sampled.node is not None and sampled.node < "n0100"


def test_small_cluster_is_scored_whole_whatever_the_percentage() -> None:
    snapshot = cluster(_nodes(99))

    result = schedule_one(
        parse_pod(pod("a")), snapshot, _profile(percentage_of_nodes_to_score=1), sample=True
    )

    assert result.feasible_nodes == 99
    assert snapshot.attached(NodeSampler) is None  # nothing to rotate


def test_gpu_pods_score_every_feasible_node_by_default() -> None:
    snapshot = cluster(_gpu_nodes(300))
    gpu_pod = pod("g", requests={GPU: "1"}, limits={GPU: "1"})

    result = schedule_one(parse_pod(gpu_pod), snapshot, sample=True)
    cpu = schedule_one(parse_pod(pod("c", requests={"cpu": "1"})), snapshot, sample=True)

    assert result.feasible_nodes == 300
    assert cpu.feasible_nodes == 144  # 48 % of 300


def test_gpu_percentage_samples_gpu_pods_when_configured() -> None:
    snapshot = cluster(_gpu_nodes(300))
    gpu_pod = pod("g", requests={GPU: "1"}, limits={GPU: "1"})

    result = schedule_one(
        parse_pod(gpu_pod), snapshot, _profile(gpu_percentage_of_nodes_to_score=0), sample=True
    )

    assert result.feasible_nodes == 144


def test_pods_with_dra_claims_count_as_gpu_pods() -> None:
    claimed = pod("d")
    claimed["spec"]["resourceClaims"] = [{"name": "gpus", "resourceClaimName": "four-gpus"}]
    assert requests_gpus(parse_pod(claimed))
    assert not requests_gpus(parse_pod(pod("c", requests={"cpu": "1"})))


def test_cycles_without_sampling_score_and_diagnose_every_node() -> None:
    snapshot = cluster(_nodes(300))

    result = schedule_one(parse_pod(pod("a")), snapshot)

    assert result.feasible_nodes == 300
    assert len(result.diagnosis()) == 300
    assert snapshot.attached(NodeSampler) is None


def test_unschedulable_pod_still_counts_every_node() -> None:
    snapshot = cluster(_nodes(300))

    result = schedule_one(parse_pod(pod("a", requests={"cpu": "100"})), snapshot, sample=True)

    assert result.node is None
    assert result.message == "0/300 nodes are available: 300 Insufficient cpu."


def test_simulate_with_sampling_is_deterministic() -> None:
    def run() -> list[str | None]:
        nodes = [parse_node(item) for item in _nodes(250, zone=None)]
        pending = [parse_pod(pod(f"p{i}", requests={"cpu": "500m"})) for i in range(400)]
        _, results = simulate(ClusterInput(nodes=nodes, pending_pods=pending), explain=False)
        return [result.node for result in results]

    first = run()
    assert first == run()
    assert len(set(first)) == 250  # round robin reaches every node


def test_mig_slice_pods_count_as_gpu_pods() -> None:
    mig = "nvidia.com/mig-1g.10gb"
    nodes = _nodes(300, allocatable={"cpu": "64", "memory": "256Gi", "pods": "110", mig: "7"})
    snapshot = cluster(nodes)

    result = schedule_one(
        parse_pod(pod("m", requests={mig: "1"}, limits={mig: "1"})), snapshot, sample=True
    )

    assert result.feasible_nodes == 300
