"""Rebalancing: the smallest disruption that makes room for a multi-GPU pod that waits.

A pod asking for several GPUs can wait although enough GPUs are free in the cluster: they are
scattered, one or two per node or NVLink domain. This module plans moves that undo that, on a
snapshot and with the scheduler's own filters and scores (`schedule_one`), and proves each
move before proposing it. It never evicts anything itself: the offline `rebalance` command
prints the plan, the controller (dry-run first) acts on it through the Eviction API.

For each waiting pod (pending, asking for at least `min_gpus` GPUs, placed nowhere), in order:

1. Only when the cluster has the GPUs: if the free GPUs in all do not cover the request, moving
   pods cannot help (`unresolved`, with the count).
2. On each node, the candidates are the pods there that may be moved: strictly lower priority
   than the waiting pod, in a namespace and priority class the policy allows, not opted out
   (`cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`,
   `descheduler.alpha.kubernetes.io/prevent-eviction: "true"`, `gputopo.io/rebalance: never`),
   not a gang member (half a gang evicted is a broken job; a whole gang moved is a new gang
   placement this planner does not prove), and owned by a controller (an ownerReference with
   `controller: true`: something recreates it).
3. All candidates out, does the waiting pod fit on that node? If not, the node cannot help.
   Otherwise candidates are given back, highest priority first, while the pod still fits: what
   stays out are the evictions (kube-scheduler's reprieve, as in preemption).
4. No PodDisruptionBudget may be exceeded — not "fewest violations", none.
5. Proof: the waiting pod placed there, every evicted pod must fit on another node (placed one
   after another, largest first, none back on the freed node). A move that leaves any evicted
   pod without a place is not proposed.
6. Among the proven moves: fewest evictions, then the lowest highest priority evicted, then the
   smallest sum, then the node name. The chosen move is applied to the snapshot, so the next
   waiting pod plans on the cluster as it will be.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.gang import group_key_of_model
from gputopo.scheduler.model import Pod
from gputopo.scheduler.preemption import DisruptionBudget, selector_matches
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile
from gputopo.scheduler.snapshot import ClusterSnapshot

GPU: Final = "nvidia.com/gpu"
# Annotations that keep a pod where it is, as the cluster autoscaler and the descheduler read
# them, and gputopo's own.
OPT_OUT_ANNOTATIONS: Final = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "descheduler.alpha.kubernetes.io/prevent-eviction": "true",
    "gputopo.io/rebalance": "never",
}


@dataclass(frozen=True)
class RebalancePolicy:
    """What may be moved, and for whom."""

    min_gpus: int = 2  # waiting pods asking for fewer GPUs never trigger a move
    namespaces: frozenset[str] | None = None  # namespaces pods may be evicted from; None: all
    priority_classes: frozenset[str] | None = None  # classes that may be evicted; None: all
    max_evictions: int = 8  # per move


@dataclass(frozen=True)
class Move:
    """Evict `evict` from `frees` so that `for_pod` fits there; `then` says where each goes."""

    for_pod: str
    frees: str
    evict: tuple[str, ...]
    then: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "evict": list(self.evict),
            "frees": self.frees,
            "for": self.for_pod,
            "then": dict(self.then),
        }


@dataclass(frozen=True)
class Unresolved:
    pod: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"pod": self.pod, "reason": self.reason}


@dataclass
class RebalancePlan:
    moves: list[Move] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "moves": [move.to_json() for move in self.moves],
            "unresolved": [item.to_json() for item in self.unresolved],
        }


def gpus_of(pod: Pod) -> int:
    return pod.requests.get(GPU, 0)


def budgets_from_objects(
    objects: Iterable[Mapping[str, Any]], bound: Sequence[Pod]
) -> list[DisruptionBudget]:
    """PodDisruptionBudgets as the API server would count them: `status.disruptionsAllowed`
    when the object carries a status, else computed from its spec over the bound pods it
    selects (all counted healthy; percentages rounded up, as the disruption controller does)."""
    budgets: list[DisruptionBudget] = []
    for obj in objects:
        budget = DisruptionBudget.from_json(dict(obj))
        status = obj.get("status") or {}
        if "disruptionsAllowed" not in status:
            budget = _with_computed_allowance(budget, obj.get("spec") or {}, bound)
        budgets.append(budget)
    return budgets


def _with_computed_allowance(
    budget: DisruptionBudget, spec: Mapping[str, Any], bound: Sequence[Pod]
) -> DisruptionBudget:
    selected = [pod for pod in bound if _covers(budget, pod)]
    healthy = len(selected)
    if spec.get("minAvailable") is not None:
        allowed = healthy - _count(spec["minAvailable"], healthy)
    elif spec.get("maxUnavailable") is not None:
        allowed = _count(spec["maxUnavailable"], healthy)
    else:
        allowed = healthy  # a budget with neither field allows everything (none required)
    return DisruptionBudget(
        budget.namespace,
        budget.name,
        budget.selector,
        max(allowed, 0),
        budget.disrupted_pods,
    )


def _covers(budget: DisruptionBudget, pod: Pod) -> bool:
    """Whether ``budget`` selects ``pod`` (the parsed-pod twin of `DisruptionBudget.covers`)."""
    return (
        pod.namespace == budget.namespace
        and budget.selector is not None
        and selector_matches(budget.selector, pod.labels)
    )


def _taken(budget: DisruptionBudget, victims: Iterable[Pod]) -> int:
    """Disruptions evicting ``victims`` spends of ``budget`` (pods it already counts as
    disrupted spend nothing more)."""
    return sum(1 for v in victims if _covers(budget, v) and v.name not in budget.disrupted_pods)


def _count(value: object, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(str(value))


class Rebalancer:
    """Plans moves on a snapshot it owns (it assumes and removes pods while planning)."""

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        budgets: Sequence[DisruptionBudget] = (),
        policy: RebalancePolicy | None = None,
        profile: SchedulerProfile | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.budgets = list(budgets)
        self.policy = policy or RebalancePolicy()
        self.profile = profile or default_profile()
        self._spent: dict[int, int] = {}  # budget index -> evictions planned so far

    # -- the plan ---------------------------------------------------------------------------

    def plan(self, waiting: Sequence[Pod]) -> RebalancePlan:
        plan = RebalancePlan()
        for pod in waiting:
            gpus = gpus_of(pod)
            if gpus < self.policy.min_gpus:
                continue
            if schedule_one(pod, self.snapshot, self.profile).node is not None:
                # It fits as things are (or as earlier moves left them): place it, no move.
                self._place(pod)
                continue
            free = self._free_gpus()
            if free < gpus:
                plan.unresolved.append(
                    Unresolved(
                        pod.key,
                        f"{free} GPUs free in the cluster, {gpus} requested: moving pods "
                        "cannot make room",
                    )
                )
                continue
            move, reason = self._best_move(pod)
            if move is None:
                plan.unresolved.append(Unresolved(pod.key, reason))
                continue
            self._apply(pod, move)
            plan.moves.append(move)
        return plan

    # -- one waiting pod --------------------------------------------------------------------

    def _best_move(self, pod: Pod) -> tuple[Move | None, str]:
        priority = pod.priority or 0
        movable = self._movable(priority)
        moves: list[tuple[tuple[int, int, int, str], Move]] = []
        tried = 0
        for _, node in self.snapshot.iter_nodes():
            on_node = [p for p in self._pods_on(node.name) if p.key in movable]
            if not on_node:
                continue
            tried += 1
            victims = self._victims(pod, node.name, on_node)
            if victims is None or len(victims) > self.policy.max_evictions:
                continue
            if self._violates_budget(victims):
                continue
            then = self._prove(pod, node.name, victims)
            if then is None:
                continue
            priorities = [v.priority or 0 for v in victims]
            rank = (len(victims), max(priorities), sum(priorities), node.name)
            moves.append(
                (rank, Move(pod.key, node.name, tuple(sorted(v.key for v in victims)), then))
            )
        if moves:
            return min(moves, key=lambda item: item[0])[1], ""
        if not tried:
            return None, (
                "no node has pods that may be moved for it (lower priority, allowed namespace "
                "and class, not opted out, owned by a controller, whole gangs)"
            )
        return None, (
            f"no move on the {tried} node(s) with movable pods makes room without exceeding a "
            "PodDisruptionBudget or leaving an evicted pod without a place"
        )

    def _movable(self, priority: int) -> dict[str, Pod]:
        """Bound pods the policy lets move for a pod of ``priority``."""
        return {
            entry.pod.key: entry.pod
            for entry in self.snapshot.pods.values()
            if entry.slot >= 0 and self._may_move(entry.pod, priority)
        }

    def _may_move(self, pod: Pod, priority: int) -> bool:
        policy = self.policy
        if (pod.priority or 0) >= priority:
            return False
        if policy.namespaces is not None and pod.namespace not in policy.namespaces:
            return False
        if policy.priority_classes is not None and (
            pod.priority_class_name not in policy.priority_classes
        ):
            return False
        if any(pod.annotations.get(k) == v for k, v in OPT_OUT_ANNOTATIONS.items()):
            return False
        # A gang member never moves: half a gang evicted is a broken job, and a whole gang
        # moved is a new gang placement, which this planner does not prove.
        return pod.has_controller and group_key_of_model(pod) is None

    def _victims(self, pod: Pod, node: str, on_node: list[Pod]) -> list[Pod] | None:
        """The fewest of ``on_node`` whose eviction lets ``pod`` fit there; None if even all
        of them out would not."""
        removed: dict[str, Pod] = {}
        for candidate in on_node:
            removed[candidate.key] = candidate
            self.snapshot.remove_pod(candidate.key)
        try:
            if not self._fits(pod, node):
                return None
            order = sorted(on_node, key=lambda p: (-(p.priority or 0), p.key))
            for candidate in order:
                self.snapshot.add_pod(candidate)
                if self._fits(pod, node):
                    del removed[candidate.key]  # reprieved
                else:
                    self.snapshot.remove_pod(candidate.key)
            victims = sorted(removed.values(), key=lambda p: p.key)
        finally:
            for candidate in removed.values():
                self.snapshot.add_pod(candidate)
        return victims

    def _violates_budget(self, victims: Sequence[Pod]) -> bool:
        for index, budget in enumerate(self.budgets):
            taken = _taken(budget, victims)
            if taken and self._spent.get(index, 0) + taken > budget.disruptions_allowed:
                return True
        return False

    def _prove(self, pod: Pod, node: str, victims: Sequence[Pod]) -> dict[str, str] | None:
        """Where each victim goes once ``pod`` holds ``node``; None if one has no place.
        The snapshot is left as it was."""
        for victim in victims:
            self.snapshot.remove_pod(victim.key)
        placed: list[str] = []
        nodes = frozenset(each.name for _, each in self.snapshot.iter_nodes())
        try:
            self.snapshot.assume(pod, node)
            placed.append(pod.key)
            then: dict[str, str] = {}
            for victim in sorted(victims, key=lambda p: (-gpus_of(p), p.key)):
                elsewhere = _not_on(victim, node, nodes)
                result = schedule_one(elsewhere, self.snapshot, self.profile)
                if result.node is None:
                    return None
                self.snapshot.assume(elsewhere, result.node)
                placed.append(elsewhere.key)
                then[victim.key] = result.node
            return dict(sorted(then.items()))
        finally:
            for key in placed:
                self.snapshot.remove_pod(key)
            for victim in victims:
                self.snapshot.add_pod(victim)

    # -- bookkeeping ------------------------------------------------------------------------

    def _apply(self, pod: Pod, move: Move) -> None:
        """The cluster as it will be after the move: evicted pods where the proof put them."""
        victims = [entry.pod for key in move.evict if (entry := self.snapshot.pods.get(key))]
        for index, budget in enumerate(self.budgets):
            self._spent[index] = self._spent.get(index, 0) + _taken(budget, victims)
        for victim in victims:
            self.snapshot.remove_pod(victim.key)
        self.snapshot.add_pod(pod.bound_to(move.frees))
        for victim in victims:
            self.snapshot.add_pod(victim.bound_to(move.then[victim.key]))

    def _place(self, pod: Pod) -> None:
        result = schedule_one(pod, self.snapshot, self.profile)
        if result.node is not None:
            self.snapshot.add_pod(pod.bound_to(result.node))

    def _fits(self, pod: Pod, node: str) -> bool:
        verdict = schedule_one(pod, self.snapshot, self.profile).diagnosis().get(node)
        return verdict is not None and verdict.feasible

    def _pods_on(self, node: str) -> list[Pod]:
        pods = self.snapshot.pods.values()
        return [entry.pod for entry in pods if entry.pod.node_name == node and entry.slot >= 0]

    def _free_gpus(self) -> int:
        allocatable, requested = self.snapshot.resource_arrays(GPU)
        return sum(
            max(int(allocatable[slot]) - int(requested[slot]), 0)
            for slot, _ in self.snapshot.iter_nodes()
        )


def _not_on(pod: Pod, node: str, nodes: frozenset[str]) -> Pod:
    """A pending copy of ``pod`` that may go to any of ``nodes`` but ``node`` (its own node
    affinity still applies: this only narrows the nodes it may consider)."""
    copy = pod.bound_to("")
    allowed = nodes - {node}
    names = pod.required_node_names
    copy.required_node_names = allowed if names is None else frozenset(names & allowed)
    copy.static_key = f"{pod.static_key}|not:{node}"
    return copy
