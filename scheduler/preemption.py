"""Priority preemption: make room for a pod that fits nowhere by evicting lower-priority pods.

kube-scheduler's DefaultPreemption, on one node at a time:

1. A pod with `preemptionPolicy: Never` never preempts; nor does one whose nominated node still
   has lower-priority pods terminating (the room it asked for is on its way).
2. Candidate nodes are those the pod failed for a reason eviction can cure (resources, ports,
   anti-affinity, spread skew) — not taints, node affinity, nodeName or cordon: the filters
   report those as kube-scheduler's UnschedulableAndUnresolvable (`NodeDiagnosis.unresolvable`).
3. On each candidate: remove every pod of lower priority; if the preemptor still does not fit,
   the node is out. Otherwise give pods back, highest priority first — those whose eviction would
   violate a PodDisruptionBudget first of all — keeping each one that still leaves room. What is
   left are the victims.
4. Among candidates pick the fewest PDB violations, then the lowest highest-victim priority, then
   the smallest sum of victim priorities, then the fewest victims, then the node name.

When no node qualifies, the outcome carries kube-scheduler's PostFilter message, which the
runtime appends to the FailedScheduling message exactly as kube-scheduler's FitError does:
"0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available:
1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.."
(the doubled period is kube-scheduler's too), and says to clear the pod's nominatedNodeName.

The plan is computed on the live snapshot (victims are taken out and put back under the cache
lock); carrying it out — nominating, deleting victims with their own grace period — is the
runtime's job (`scheduler/runtime/runner.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import ScheduleResult, fit_error_message, schedule_one
from gputopo.scheduler.model import Pod, parse_pod
from gputopo.scheduler.plugins import PLUGINS
from gputopo.scheduler.plugins.context import Plugin
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import ClusterSnapshot

JsonDict = dict[str, Any]

# kube-scheduler's DefaultPreemption wording (pkg/scheduler/framework/preemption, v1.37).
NO_VICTIMS_REASON: Final = "No preemption victims found for incoming pod"
NOT_HELPFUL_REASON: Final = "Preemption is not helpful for scheduling"
POLICY_NEVER_MESSAGE: Final = "not eligible due to preemptionPolicy=Never."
TERMINATING_MESSAGE: Final = "not eligible due to a terminating pod on the nominated node."


@dataclass(frozen=True)
class DisruptionBudget:
    """A PodDisruptionBudget as preemption reads it: whom it covers, how many may go."""

    namespace: str
    name: str
    selector: Mapping[str, Any] | None  # a LabelSelector; None selects nothing
    disruptions_allowed: int
    disrupted_pods: frozenset[str]

    @classmethod
    def from_json(cls, pdb: JsonDict) -> DisruptionBudget:
        meta = pdb.get("metadata", {})
        status = pdb.get("status") or {}
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            selector=(pdb.get("spec") or {}).get("selector"),
            disruptions_allowed=int(status.get("disruptionsAllowed") or 0),
            disrupted_pods=frozenset((status.get("disruptedPods") or {}).keys()),
        )

    def covers(self, pod: JsonDict) -> bool:
        meta = pod.get("metadata", {})
        if str(meta.get("namespace") or "default") != self.namespace or self.selector is None:
            return False
        return selector_matches(self.selector, meta.get("labels") or {})


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True)
class Victim:
    pod: JsonDict
    priority: int
    violates_pdb: bool

    @property
    def key(self) -> str:
        meta = self.pod.get("metadata", {})
        return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


@dataclass(frozen=True)
class PreemptionPlan:
    node: str
    victims: tuple[Victim, ...]

    @property
    def pdb_violations(self) -> int:
        return sum(1 for victim in self.victims if victim.violates_pdb)

    def rank(self) -> tuple[int, int, int, int, str]:
        priorities = [victim.priority for victim in self.victims]
        return (
            self.pdb_violations,
            max(priorities, default=-(2**31)),
            sum(priorities),
            len(priorities),
            self.node,
        )


@dataclass(frozen=True)
class PreemptionOutcome:
    """What a preemption attempt decided: a plan, or kube-scheduler's reason there is none."""

    plan: PreemptionPlan | None
    message: str = ""  # PostFilter's message; "" when a plan was found
    clear_nomination: bool = False  # no candidate at all: the nominated node is stale

    def fit_message(self, fit_message: str) -> str:
        """The FailedScheduling message: kube's FitError with its PostFilter part."""
        if not self.message:
            return fit_message
        return f"{fit_message} preemption: {self.message}."


def may_preempt(pod: JsonDict) -> bool:
    return (pod.get("spec") or {}).get("preemptionPolicy") != "Never"


def _key(pod: JsonDict) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _violating(pods: Sequence[JsonDict], budgets: Sequence[DisruptionBudget]) -> set[str]:
    """Keys of pods whose eviction would exceed a budget (kube's filterPodsWithPDBViolation)."""
    allowed = [budget.disruptions_allowed for budget in budgets]
    violating: set[str] = set()
    for pod in pods:
        name = str(pod.get("metadata", {}).get("name"))
        for index, budget in enumerate(budgets):
            if budget.covers(pod) and name not in budget.disrupted_pods:
                allowed[index] -= 1
                if allowed[index] < 0:
                    violating.add(_key(pod))
    return violating


class Preemption:
    """Plans preemption on a snapshot the caller holds still (under its cache lock)."""

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        profile: SchedulerProfile,
        plugins: tuple[Plugin, ...] = PLUGINS,
    ) -> None:
        self.snapshot = snapshot
        self.profile = profile
        self.plugins = plugins

    def _fits(self, pod: Pod, node: str) -> bool:
        verdict = self._cycle(pod).diagnosis().get(node)
        return verdict is not None and verdict.feasible

    def plan(
        self,
        preemptor: JsonDict,
        bound_pods: Sequence[JsonDict],
        priority_of: Callable[[JsonDict], int],
        budgets: Sequence[DisruptionBudget] = (),
    ) -> PreemptionPlan | None:
        """The best node and its victims, or None when no eviction would make room."""
        return self.evaluate(preemptor, bound_pods, priority_of, budgets).plan

    def evaluate(
        self,
        preemptor: JsonDict,
        bound_pods: Sequence[JsonDict],
        priority_of: Callable[[JsonDict], int],
        budgets: Sequence[DisruptionBudget] = (),
    ) -> PreemptionOutcome:
        """The best plan, or kube-scheduler's per-node reasons why there is none."""
        if not may_preempt(preemptor):
            return PreemptionOutcome(None, POLICY_NEVER_MESSAGE)
        try:
            pod = parse_pod(preemptor)
        except SchedulerInputError:
            return PreemptionOutcome(None)
        priority = priority_of(preemptor)
        result = self._cycle(pod)
        if result.node is not None:
            return PreemptionOutcome(None)
        on_node: dict[str, list[JsonDict]] = {}
        for bound in bound_pods:
            node = str((bound.get("spec") or {}).get("nodeName") or "")
            if node and priority_of(bound) < priority:
                on_node.setdefault(node, []).append(bound)
        plans: list[PreemptionPlan] = []
        why_not: dict[str, int] = {}
        diagnosis = result.diagnosis()
        for node, verdict in diagnosis.items():
            if verdict.feasible:
                continue
            if verdict.unresolvable:
                why_not[NOT_HELPFUL_REASON] = why_not.get(NOT_HELPFUL_REASON, 0) + 1
                continue
            lower = on_node.get(node)
            plan = self._plan_on_node(pod, node, lower, priority_of, budgets) if lower else None
            if plan is None:
                why_not[NO_VICTIMS_REASON] = why_not.get(NO_VICTIMS_REASON, 0) + 1
            else:
                plans.append(plan)
        if plans:
            return PreemptionOutcome(min(plans, key=PreemptionPlan.rank))
        return PreemptionOutcome(
            None, fit_error_message(len(diagnosis), why_not), clear_nomination=True
        )

    def _cycle(self, pod: Pod) -> ScheduleResult:
        return schedule_one(pod, self.snapshot, self.profile, self.plugins)

    def _plan_on_node(
        self,
        pod: Pod,
        node: str,
        lower: list[JsonDict],
        priority_of: Callable[[JsonDict], int],
        budgets: Sequence[DisruptionBudget],
    ) -> PreemptionPlan | None:
        removed: dict[str, Pod] = {}
        for candidate in lower:
            key = _key(candidate)
            existing = self.snapshot.pod(key)
            if existing is not None and not self.snapshot.is_assumed(key):
                removed[key] = existing
                self.snapshot.remove_pod(key)
        try:
            if not self._fits(pod, node):
                return None
            violating = _violating(lower, budgets)
            # Reprieve: PDB-protected pods first, then by priority, highest first.
            order = sorted(
                (c for c in lower if _key(c) in removed),
                key=lambda c: (_key(c) not in violating, -priority_of(c), _key(c)),
            )
            victims: list[Victim] = []
            for candidate in order:
                key = _key(candidate)
                self.snapshot.add_pod(removed[key])
                if self._fits(pod, node):
                    del removed[key]  # reprieved: stays, and stays counted
                else:
                    self.snapshot.remove_pod(key)
                    victims.append(Victim(candidate, priority_of(candidate), key in violating))
            return PreemptionPlan(node, tuple(victims))
        finally:
            for parsed in removed.values():
                self.snapshot.add_pod(parsed)


def reserve_nominated(
    snapshot: ClusterSnapshot, nominated: Sequence[tuple[JsonDict, str]]
) -> list[str]:
    """Count pods nominated by an earlier preemption on their nominated nodes, for one cycle.

    kube-scheduler's filters treat nominated pods of equal or higher priority as already there,
    so the room a preemption freed is not taken by someone else while the preemptor waits for
    it. Pods the snapshot already holds (bound, or assumed by a binding in flight) and unknown
    nodes are skipped. Returns the keys to ``snapshot.forget`` after the cycle.
    """
    reserved: list[str] = []
    for pod_json, node in nominated:
        try:
            pod = parse_pod(pod_json)
        except SchedulerInputError:
            continue
        if snapshot.pod(pod.key) is not None or snapshot.slot_of(node) is None:
            continue
        snapshot.assume(pod, node)
        reserved.append(pod.key)
    return reserved
