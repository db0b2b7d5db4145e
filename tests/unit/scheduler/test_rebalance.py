"""Rebalance planning: the fewest evictions that make room, proven, PDB-safe, opt-outs kept."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.gang import POD_GROUP_LABEL
from gputopo.scheduler.model import Pod, parse_pod
from gputopo.scheduler.preemption import DisruptionBudget
from gputopo.scheduler.rebalance import (
    RebalancePolicy,
    Rebalancer,
    budgets_from_objects,
)
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod


def _pod(
    name: str,
    gpus: int,
    node: str | None = None,
    priority: int = 0,
    owned: bool = True,
    namespace: str = "default",
    **annotations: str,
) -> dict[str, Any]:
    pod = gpu_pod(name, gpus, node_name=node, namespace=namespace)
    pod["spec"]["priority"] = priority
    meta = pod["metadata"]
    meta["labels"] = {"app": name.rstrip("0123456789-")}
    meta["annotations"] = {k.replace("__", "/"): v for k, v in annotations.items()}
    if owned:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "rs",
                "uid": "u",
                "controller": True,
            }
        ]
    return pod


def _fragmented(*extra: dict[str, Any]) -> tuple[ClusterSnapshot, Pod]:
    """node-a: a 4-GPU high-priority pod and two 1-GPU low ones (2 free); node-b: two 1-GPU
    low ones (6 free). An 8-GPU pod fits nowhere though 8 GPUs are free."""
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("node-a"))
    snapshot.add_node(gpu_node("node-b"))
    for pod in (
        _pod("big", 4, "node-a", priority=1000),
        _pod("small-1", 1, "node-a"),
        _pod("small-2", 1, "node-a"),
        _pod("small-3", 1, "node-b"),
        _pod("small-4", 1, "node-b"),
        *extra,
    ):
        snapshot.add_pod(pod)
    return snapshot, parse_pod(_pod("trainer", 8, priority=500))


def test_the_fewest_evictions_free_a_node_and_every_evicted_pod_has_a_place() -> None:
    snapshot, waiting = _fragmented()
    plan = Rebalancer(snapshot).plan([waiting])
    assert [m.to_json() for m in plan.moves] == [
        {
            "evict": ["default/small-3", "default/small-4"],
            "frees": "node-b",
            "for": "default/trainer",
            "then": {"default/small-3": "node-a", "default/small-4": "node-a"},
        }
    ]
    assert plan.unresolved == []


def test_the_snapshot_after_planning_is_the_cluster_after_the_moves() -> None:
    snapshot, waiting = _fragmented()
    Rebalancer(snapshot).plan([waiting])
    on_b = sorted(e.pod.key for e in snapshot.pods.values() if e.pod.node_name == "node-b")
    assert on_b == ["default/trainer"]


def test_no_move_when_the_cluster_lacks_the_gpus() -> None:
    snapshot, _ = _fragmented()
    plan = Rebalancer(snapshot).plan([parse_pod(_pod("huge", 16, priority=500))])
    assert plan.moves == []
    assert plan.unresolved[0].pod == "default/huge"
    assert plan.unresolved[0].reason.startswith("8 GPUs free in the cluster, 16 requested")


def test_equal_or_higher_priority_pods_are_never_evicted() -> None:
    snapshot, _ = _fragmented()
    waiting = parse_pod(_pod("trainer", 8, priority=0))  # same as the small pods
    plan = Rebalancer(snapshot).plan([waiting])
    assert plan.moves == []
    assert "no node has pods that may be moved" in plan.unresolved[0].reason


@pytest.mark.parametrize(
    "opt_out",
    [
        {"cluster-autoscaler.kubernetes.io__safe-to-evict": "false"},
        {"descheduler.alpha.kubernetes.io__prevent-eviction": "true"},
        {"gputopo.io__rebalance": "never"},
    ],
)
def test_an_opted_out_pod_stays_and_the_plan_frees_the_other_node(opt_out: dict[str, str]) -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("node-a"))
    snapshot.add_node(gpu_node("node-b"))
    snapshot.add_pod(_pod("small-1", 1, "node-a", **opt_out))
    snapshot.add_pod(_pod("small-2", 1, "node-b"))
    plan = Rebalancer(snapshot).plan([parse_pod(_pod("trainer", 8, priority=500))])
    assert [(m.frees, m.evict) for m in plan.moves] == [("node-b", ("default/small-2",))]
    assert plan.moves[0].then == {"default/small-2": "node-a"}


def test_a_pod_without_a_controller_is_never_evicted() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("node-a"))
    snapshot.add_node(gpu_node("node-b"))
    snapshot.add_pod(_pod("bare-1", 1, "node-a", owned=False))
    snapshot.add_pod(_pod("bare-2", 1, "node-b", owned=False))
    plan = Rebalancer(snapshot).plan([parse_pod(_pod("trainer", 8, priority=500))])
    assert plan.moves == []


def test_gang_members_are_never_moved() -> None:
    member = _pod("worker-0", 1, "node-b")
    member["metadata"]["labels"][POD_GROUP_LABEL] = "job"
    snapshot, waiting = _fragmented()
    snapshot.remove_pod("default/small-3")
    snapshot.add_pod(member)
    plan = Rebalancer(snapshot).plan([waiting])
    assert all("default/worker-0" not in m.evict for m in plan.moves)


def test_a_pod_disruption_budget_is_never_exceeded() -> None:
    snapshot, waiting = _fragmented()
    budget = DisruptionBudget("default", "small", {"matchLabels": {"app": "small"}}, 1, frozenset())
    plan = Rebalancer(snapshot, [budget]).plan([waiting])
    # Freeing node-b needs two "small" pods out; the budget allows one: no move at all.
    assert plan.moves == []
    assert "PodDisruptionBudget" in plan.unresolved[0].reason


def test_the_budget_is_spent_across_moves() -> None:
    snapshot = ClusterSnapshot()
    for name in ("node-a", "node-b", "node-c"):
        snapshot.add_node(gpu_node(name, gpus=4))
    snapshot.add_pod(_pod("small-1", 1, "node-a"))
    snapshot.add_pod(_pod("small-2", 1, "node-b"))
    budget = DisruptionBudget("default", "small", {"matchLabels": {"app": "small"}}, 1, frozenset())
    waiting = [parse_pod(_pod(f"trainer-{i}", 4, priority=500)) for i in range(3)]
    plan = Rebalancer(snapshot, [budget]).plan(waiting)
    # trainer-0 takes node-c as is; trainer-1 gets a move (one eviction, the budget's one);
    # trainer-2 would need a second eviction: refused.
    assert len(plan.moves) == 1
    assert [u.pod for u in plan.unresolved] == ["default/trainer-2"]


def test_namespaces_and_priority_classes_limit_what_moves() -> None:
    snapshot, waiting = _fragmented()
    policy = RebalancePolicy(namespaces=frozenset({"batch"}))
    assert Rebalancer(snapshot, policy=policy).plan([waiting]).moves == []
    snapshot, waiting = _fragmented()
    policy = RebalancePolicy(priority_classes=frozenset({"preemptible"}))
    assert Rebalancer(snapshot, policy=policy).plan([waiting]).moves == []


def test_a_move_whose_evicted_pod_has_no_other_place_is_not_proposed() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("node-a", gpus=8))
    snapshot.add_node(gpu_node("node-b", gpus=2))
    snapshot.add_pod(_pod("mid", 4, "node-a"))  # 4 free on a, 2 on b: 6 free
    plan = Rebalancer(snapshot).plan([parse_pod(_pod("trainer", 6, priority=500))])
    # Evicting "mid" frees node-a for the trainer, but "mid" (4 GPUs) fits nowhere else.
    assert plan.moves == []
    assert "leaving an evicted pod without a place" in plan.unresolved[0].reason


def test_pods_below_min_gpus_and_pods_that_fit_trigger_nothing() -> None:
    snapshot, _ = _fragmented()
    plan = Rebalancer(snapshot).plan(
        [parse_pod(_pod("one", 1, priority=500)), parse_pod(_pod("two", 2, priority=500))]
    )
    assert plan.moves == [] and plan.unresolved == []


def test_budgets_without_status_are_computed_from_their_spec() -> None:
    bound = [parse_pod(_pod(f"small-{i}", 1, "node-a")) for i in range(4)]
    selector = {"matchLabels": {"app": "small"}}
    objects = [
        {
            "metadata": {"name": "min", "namespace": "default"},
            "spec": {"selector": selector, "minAvailable": 3},
        },
        {
            "metadata": {"name": "pct", "namespace": "default"},
            "spec": {"selector": selector, "maxUnavailable": "50%"},
        },
        {
            "metadata": {"name": "st", "namespace": "default"},
            "spec": {"selector": selector, "minAvailable": 0},
            "status": {"disruptionsAllowed": 0},
        },
    ]
    allowed = [b.disruptions_allowed for b in budgets_from_objects(objects, bound)]
    assert allowed == [1, 2, 0]
