"""Score plugins: kube-scheduler's arithmetic and normalisation, weights, tie-breaking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.plugins.normalize import default_normalize
from gputopo.scheduler.scheduling_profile import default_profile, load_profile
from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule

ZONE = "topology.kubernetes.io/zone"


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_default_normalize_scales_by_maximum() -> None:
    raw = np.array([0, 1, 2], dtype=np.int64)
    assert default_normalize(raw, reverse=False).tolist() == [0, 50, 100]
    assert default_normalize(raw, reverse=True).tolist() == [100, 50, 0]
    zeros = np.zeros(3, dtype=np.int64)
    assert default_normalize(zeros, reverse=False).tolist() == [0, 0, 0]
    assert default_normalize(zeros, reverse=True).tolist() == [100, 100, 100]


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


def test_prefer_no_schedule_taints_score_reversed() -> None:
    def tainted(name: str, count: int) -> dict[str, Any]:
        taints = [
            {"key": f"t{i}", "value": "x", "effect": "PreferNoSchedule"} for i in range(count)
        ]
        return node(name, taints=taints)

    snapshot = cluster([tainted("none", 0), tainted("one", 1), tainted("two", 2)])
    result = schedule(pod("p"), snapshot)
    scores = _scores(result)
    assert [scores[n]["TaintToleration"] for n in ("none", "one", "two")] == [100, 50, 0]
    assert result.node == "none"
    tolerant = pod("q", tolerations=[{"operator": "Exists", "effect": "PreferNoSchedule"}])
    assert {s["TaintToleration"] for s in _scores(schedule(tolerant, snapshot)).values()} == {100}


def test_preferred_node_affinity_weights() -> None:
    snapshot = cluster(
        [node("h100", labels={"gpu": "h100"}), node("a100", labels={"gpu": "a100"}), node("cpu")]
    )
    preferred = [
        {
            "weight": 80,
            "preference": {
                "matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]
            },
        },
        {"weight": 20, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
    ]
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    result = schedule(pod("p", affinity=affinity), snapshot)
    scores = _scores(result)
    assert [scores[n]["NodeAffinity"] for n in ("h100", "a100", "cpu")] == [100, 20, 0]
    assert result.node == "h100"


def test_schedule_anyway_spread_prefers_the_emptier_zone() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod(f"w{i}", labels={"app": "web"}, node_name="a1") for i in range(2)],
    )
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    result = schedule(pod("w2", labels={"app": "web"}, topologySpreadConstraints=spread), snapshot)
    scores = _scores(result)
    # raw: a = round(2 * ln(4)) = 3, b = 0 -> normalised 100 * (3 + 0 - s) / 3
    assert scores["a1"]["PodTopologySpread"] == 0
    assert scores["b1"]["PodTopologySpread"] == 100
    assert result.node == "b1"


def test_preferred_pod_affinity_and_anti_affinity() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("db", labels={"app": "db"}, node_name="a1")],
    )
    term = {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}
    near = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term}
            ]
        }
    }
    far = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term}
            ]
        }
    }
    near_result = schedule(pod("web", affinity=near), snapshot)
    assert _scores(near_result)["a1"]["InterPodAffinity"] == 100
    assert _scores(near_result)["b1"]["InterPodAffinity"] == 0
    assert schedule(pod("web", affinity=far), snapshot).node == "b1"


def test_existing_pods_preferred_terms_attract_the_incoming_pod() -> None:
    likes_web = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": ZONE,
                    },
                }
            ]
        }
    }
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("cache", node_name="b1", affinity=likes_web)],
    )
    result = schedule(pod("web", labels={"app": "web"}), snapshot)
    assert _scores(result)["b1"]["InterPodAffinity"] == 100


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


# ------------------------------------------------------------------ profile files


def test_shipped_profile_has_kube_scheduler_default_weights() -> None:
    profile = default_profile()
    kube_plugins = {
        k: v for k, v in profile.weights.items() if k not in ("GpuTopology", "LoadAware")
    }
    assert kube_plugins == {
        "TaintToleration": 3,
        "NodeAffinity": 2,
        "PodTopologySpread": 2,
        "InterPodAffinity": 2,
        "NodeResourcesFit": 1,
        "NodeResourcesBalancedAllocation": 1,
    }
    assert profile.fit_strategy == "LeastAllocated"
    assert profile.fit_resources == (("cpu", 1), ("memory", 1))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("scores: {Magic: 1}\n", "scores.Magic: unknown field"),
        ("scores: {NodeAffinity: 101}\n", "scores.NodeAffinity: expected an integer in 0..100"),
        ("scores: {NodeAffinity: one}\n", "scores.NodeAffinity: expected an integer"),
        ("nodeResourcesFit: {strategy: Random}\n", "nodeResourcesFit.strategy: expected one of"),
        ("nodeResourcesFit: {resources: []}\n", "nodeResourcesFit.resources: expected a non-empty"),
        (
            "nodeResourcesFit: {resources: [{name: gpu, weight: 0}]}\n",
            "nodeResourcesFit.resources[0].weight",
        ),
        ("interPodAffinity: {hardPodAffinityWeight: -1}\n", "hardPodAffinityWeight"),
        ("kind: Deployment\n", "kind: expected SchedulerProfile"),
        ("weights: {}\n", "weights: unknown field"),
        ("- a\n", "expected a mapping"),
        ("scores: [\n", "not valid YAML"),
    ],
)
def test_profile_validation_names_file_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(SchedulerInputError) as error:
        load_profile(path)
    message = str(error.value)
    assert message.startswith(f"profile {path}: ")
    assert problem in message
    assert "\n" not in message


def test_partial_profile_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("scores: {NodeAffinity: 5}\n")
    profile = load_profile(path)
    assert profile.weight("NodeAffinity") == 5
    assert profile.weight("TaintToleration") == 3


def test_zero_weight_switches_a_score_off(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("scores: {TaintToleration: 0}\n")
    result = schedule(pod("p"), cluster([node("a")]), load_profile(path))
    assert "TaintToleration" not in result.diagnosis()["a"].plugin_scores
