"""Victim selection: fewest and lowest-priority victims, PDBs, preemptionPolicy, node choice."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.preemption import (
    POLICY_NEVER_MESSAGE,
    DisruptionBudget,
    Preemption,
    PreemptionOutcome,
    PreemptionPlan,
    reserve_nominated,
    selector_matches,
)
from gputopo.scheduler.scheduling_profile import default_profile
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod


def _priority(pod: dict[str, Any]) -> int:
    return int(pod["spec"].get("priority") or 0)


def _pod(name: str, gpus: int, priority: int, node: str | None = None, **labels: str) -> Any:
    pod = gpu_pod(name, gpus=gpus, node_name=node, priority=priority)
    pod["metadata"]["labels"] = dict(labels)
    return pod


def _plan(
    nodes: list[Any],
    bound: list[Any],
    preemptor: Any,
    budgets: list[DisruptionBudget] | None = None,
) -> tuple[PreemptionPlan | None, ClusterSnapshot]:
    snapshot = ClusterSnapshot()
    for node in nodes:
        snapshot.add_node(node)
    for pod in bound:
        snapshot.add_pod(pod)
    plan = Preemption(snapshot, default_profile()).plan(preemptor, bound, _priority, budgets or [])
    return plan, snapshot


def _victims(plan: PreemptionPlan | None) -> list[str]:
    assert plan is not None
    return sorted(victim.key for victim in plan.victims)


def test_only_as_many_victims_as_needed_lowest_priority_first() -> None:
    bound = [
        _pod("low-a", 2, 1, "n1"),
        _pod("low-b", 2, 5, "n1"),
        _pod("low-c", 2, 3, "n1"),
        _pod("low-d", 2, 7, "n1"),
    ]
    plan, snapshot = _plan([gpu_node("n1", gpus=8)], bound, _pod("urgent", 4, 100))
    assert plan is not None and plan.node == "n1"
    assert _victims(plan) == ["default/low-a", "default/low-c"]
    # The snapshot is left as it was: every bound pod still counts.
    assert all(snapshot.pod(f"default/{p['metadata']['name']}") for p in bound)


def test_pods_of_equal_or_higher_priority_are_never_victims() -> None:
    bound = [_pod("peer", 6, 100, "n1"), _pod("boss", 2, 1000, "n1")]
    plan, _ = _plan([gpu_node("n1", gpus=8)], bound, _pod("urgent", 4, 100))
    assert plan is None


def test_preemption_policy_never_does_not_preempt() -> None:
    preemptor = _pod("polite", 4, 100)
    preemptor["spec"]["preemptionPolicy"] = "Never"
    plan, _ = _plan([gpu_node("n1", gpus=8)], [_pod("low", 8, 1, "n1")], preemptor)
    assert plan is None


def test_a_pod_that_fits_somewhere_preempts_nothing() -> None:
    plan, _ = _plan(
        [gpu_node("n1", gpus=8), gpu_node("n2", gpus=8)],
        [_pod("low", 8, 1, "n1")],
        _pod("urgent", 4, 100),
    )
    assert plan is None


def test_untolerated_taint_nodes_are_not_candidates() -> None:
    taint = {"key": "gputopo.io/sla", "value": "900", "effect": "NoSchedule"}
    plan, _ = _plan(
        [gpu_node("tainted", gpus=8, taints=[taint])],
        [_pod("low", 8, 1, "tainted")],
        _pod("urgent", 4, 100),
    )
    assert plan is None


def test_node_with_lower_priority_victims_wins_then_fewer_victims() -> None:
    nodes = [gpu_node("n1", gpus=8), gpu_node("n2", gpus=8), gpu_node("n3", gpus=8)]
    bound = [
        _pod("mid", 8, 50, "n1"),  # one victim of priority 50
        _pod("low-1", 4, 10, "n2"),  # two victims of priority 10
        _pod("low-2", 4, 10, "n2"),
        _pod("low-3", 4, 10, "n3"),  # n3: needs both, highest 20
        _pod("low-4", 4, 20, "n3"),
    ]
    plan, _ = _plan(nodes, bound, _pod("urgent", 8, 100))
    assert plan is not None and plan.node == "n2"
    assert _victims(plan) == ["default/low-1", "default/low-2"]


def test_pdb_protected_pods_are_spared_when_another_node_needs_no_violation() -> None:
    nodes = [gpu_node("n1", gpus=8), gpu_node("n2", gpus=8)]
    bound = [_pod("guarded", 8, 1, "n1", app="db"), _pod("plain", 8, 5, "n2", app="batch")]
    budget = DisruptionBudget("default", "db", {"matchLabels": {"app": "db"}}, 0, frozenset())
    plan, _ = _plan(nodes, bound, _pod("urgent", 8, 100), [budget])
    assert plan is not None and plan.node == "n2" and plan.pdb_violations == 0


def test_pdb_is_violated_when_nothing_else_makes_room_and_the_plan_says_so() -> None:
    bound = [_pod("guarded", 8, 1, "n1", app="db")]
    budget = DisruptionBudget("default", "db", {"matchLabels": {"app": "db"}}, 0, frozenset())
    plan, _ = _plan([gpu_node("n1", gpus=8)], bound, _pod("urgent", 8, 100), [budget])
    assert plan is not None and plan.pdb_violations == 1


def test_pdb_with_disruptions_allowed_is_not_violated() -> None:
    bound = [_pod("guarded", 8, 1, "n1", app="db")]
    budget = DisruptionBudget.from_json(
        {
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 1},
        }
    )
    plan, _ = _plan([gpu_node("n1", gpus=8)], bound, _pod("urgent", 8, 100), [budget])
    assert plan is not None and plan.pdb_violations == 0


def test_selector_matches_label_selector_semantics() -> None:
    labels = {"app": "db", "tier": "x"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, labels
    )
    assert not selector_matches({"matchLabels": {"app": "web"}}, labels)


def test_room_freed_for_a_nominated_pod_is_not_given_to_another_for_one_cycle() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("n1", gpus=8))
    snapshot.add_pod(_pod("resident", 4, 1, "n1"))
    nominated = _pod("urgent", 4, 100)
    thief = parse_pod(_pod("thief", 4, 50))
    assert schedule_one(thief, snapshot, default_profile()).node == "n1"
    reserved = reserve_nominated(snapshot, [(nominated, "n1"), (_pod("resident", 4, 1), "n1")])
    assert reserved == ["default/urgent"]  # a pod the snapshot already holds is not doubled
    assert schedule_one(thief, snapshot, default_profile()).node is None
    for key in reserved:
        snapshot.forget(key)
    assert snapshot.pod("default/urgent") is None
    assert snapshot.pod("default/resident") is not None
    assert schedule_one(thief, snapshot, default_profile()).node == "n1"


# -- kube-scheduler's PostFilter message -----------------------------------------------------


def _outcome(nodes: list[Any], bound: list[Any], preemptor: Any) -> PreemptionOutcome:
    snapshot = ClusterSnapshot()
    for node in nodes:
        snapshot.add_node(node)
    for pod in bound:
        snapshot.add_pod(pod)
    return Preemption(snapshot, default_profile()).evaluate(preemptor, bound, _priority, [])


def test_no_candidate_says_why_per_node_as_kube_scheduler_and_clears_the_nomination() -> None:
    taint = {"key": "dedicated", "value": "infer", "effect": "NoSchedule"}
    nodes = [gpu_node("n1", gpus=8), gpu_node("n2", gpus=8), gpu_node("n3", gpus=8, taints=[taint])]
    bound = [_pod("peer", 8, 100, "n1"), _pod("peer-2", 4, 100, "n2"), _pod("low", 4, 1, "n2")]
    outcome = _outcome(nodes, bound, _pod("urgent", 8, 100))  # evicting "low" frees only 4
    assert outcome.plan is None and outcome.clear_nomination
    assert outcome.message == (  # "<count> <reason>" entries sorted as strings, as Go does
        "0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )
    fit = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infer}."
    assert outcome.fit_message(fit) == (
        f"{fit} preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
        "scheduling, 2 No preemption victims found for incoming pod.."  # kube's doubled period
    )


def test_preemption_policy_never_is_kube_schedulers_not_eligible_message() -> None:
    never = _pod("polite", 8, 100)
    never["spec"]["preemptionPolicy"] = "Never"
    outcome = _outcome([gpu_node("n1", gpus=8)], [_pod("low", 8, 1, "n1")], never)
    assert (outcome.plan, outcome.message, outcome.clear_nomination) == (
        None,
        POLICY_NEVER_MESSAGE,
        False,
    )
    assert outcome.fit_message("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.") == (
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
        "preemption: not eligible due to preemptionPolicy=Never.."
    )


def test_a_plan_adds_nothing_to_the_failed_scheduling_message() -> None:
    outcome = _outcome([gpu_node("n1", gpus=8)], [_pod("low", 8, 1, "n1")], _pod("urgent", 8, 100))
    assert outcome.plan is not None and outcome.message == ""
    assert outcome.fit_message("0/1 nodes are available: x.") == "0/1 nodes are available: x."
