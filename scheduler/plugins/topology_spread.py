"""PodTopologySpread: DoNotSchedule constraints filter, ScheduleAnyway constraints score.

Counting follows kube-scheduler: only pods in the incoming pod's namespace that match the
constraint's selector (with matchLabelKeys merged) and are not terminating; only on nodes that
carry every constraint's topology key and pass the node inclusion policies
(nodeAffinityPolicy Honor by default, nodeTaintsPolicy Ignore by default). A node lacking a
topology key fails with the "(missing required label)" reason. `minDomains` makes the global
minimum 0 while fewer domains than that are eligible.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.model import LABEL_HOSTNAME, Pod, SpreadConstraint
from gputopo.scheduler.plugins import node_affinity, taint_toleration
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason, unresolvable
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray, SelectorCount

NAME: Final = "PodTopologySpread"
REASON_CONSTRAINTS: Final = "node(s) didn't match pod topology spread constraints"
REASON_MISSING_LABEL: Final = REASON_CONSTRAINTS + " (missing required label)"

# reason codes in the per-node array filter_nodes returns
CONSTRAINTS_NOT_MATCH: Final = 1
MISSING_LABEL: Final = 2
REASONS: Final = {CONSTRAINTS_NOT_MATCH: REASON_CONSTRAINTS, MISSING_LABEL: REASON_MISSING_LABEL}
# A node without the topology key never gets it by eviction: kube-scheduler's
# UnschedulableAndUnresolvable; a skew can be cured by evicting pods.
_VERDICT_REASONS: Final = {
    CONSTRAINTS_NOT_MATCH: Reason(REASON_CONSTRAINTS),
    MISSING_LABEL: unresolvable(REASON_MISSING_LABEL),
}

_MAX_INT32: Final = 2**31 - 1


def _matching(pod: Pod, snapshot: ClusterSnapshot, constraint: SpreadConstraint) -> SelectorCount:
    return snapshot.selector_count(pod.namespace, constraint.selector, live_only=True)


class _Nodes:
    """For one pod shape and one constraint: the nodes counted for it (the node inclusion
    policies, read from NodeAffinity's and TaintToleration's per-shape node state, and every
    topology key of the pod's constraints of the same kind) and which of the key's domains
    hold one. Kept with the pod shape (`CycleContext.per_shape`) until a node changes."""

    __slots__ = ("eligible", "eligible_domains", "index", "labelled", "present")

    def __init__(
        self, ctx: CycleContext, constraint: SpreadConstraint, keys: tuple[str, ...]
    ) -> None:
        snapshot = ctx.snapshot
        has_all = snapshot.alive.copy()
        for key in keys:
            has_all &= snapshot.topology(key).domain >= 0
        eligible = has_all
        if constraint.honor_node_affinity:
            eligible = eligible & node_affinity.state(ctx).required_match
        if constraint.honor_node_taints:
            eligible = eligible & taint_toleration.state(ctx).hard_tolerated
        self.index = snapshot.topology(constraint.topology_key)
        self.eligible: BoolArray = eligible
        # Every key of the pod's constraints of this kind, on every live node.
        self.labelled: BoolArray = has_all
        self.present: BoolArray = np.zeros(len(self.index.values), dtype=np.bool_)
        self.present[self.index.domain[eligible]] = True
        self.eligible_domains = int(self.present.sum())


def _nodes(ctx: CycleContext, constraint: SpreadConstraint, keys: tuple[str, ...]) -> _Nodes:
    policies = (constraint.honor_node_affinity, constraint.honor_node_taints)
    key = f"{NAME}:{constraint.topology_key}:{policies}:{keys}"
    return ctx.per_shape(key, lambda c: _Nodes(c, constraint, keys))


def filter_nodes(ctx: CycleContext) -> npt.NDArray[np.int8] | None:
    """Per-slot reason codes (0 = passes); None when the pod has no DoNotSchedule constraint."""
    pod, snapshot = ctx.pod, ctx.snapshot
    constraints = [c for c in pod.spread_constraints if c.do_not_schedule]
    if not constraints:
        return None
    keys = tuple(sorted({c.topology_key for c in constraints}))
    reasons = np.zeros(snapshot.capacity, dtype=np.int8)
    for constraint in constraints:
        nodes = _nodes(ctx, constraint, keys)
        index = nodes.index
        sums = snapshot.domain_sums(
            constraint.topology_key, _matching(pod, snapshot, constraint), nodes.eligible
        )
        domains = nodes.eligible_domains
        minimum = int(sums[:-1][nodes.present].min()) if domains else _MAX_INT32
        if domains < constraint.min_domains:
            minimum = 0
        self_match = 1 if constraint.selector.matches(pod.labels) else 0
        labelled = index.domain >= 0
        # sums[-1] is 0: unlabelled nodes never fail the skew (they fail the missing label).
        skew_fails = sums[index.domain] + self_match - minimum > constraint.max_skew
        skew_fails &= labelled
        undecided = reasons == 0
        np.putmask(reasons, undecided & ~labelled, MISSING_LABEL)
        np.putmask(reasons, undecided & skew_fails, CONSTRAINTS_NOT_MATCH)
    reasons *= snapshot.alive  # free slots pass (this and putmask: a third of a mask write)
    return reasons


def score(ctx: CycleContext, feasible: IntArray) -> IntArray | None:
    """Normalised scores for the feasible slots; None when there is no ScheduleAnyway constraint."""
    pod, snapshot = ctx.pod, ctx.snapshot
    constraints = [c for c in pod.spread_constraints if not c.do_not_schedule]
    if not constraints:
        return None
    keys = tuple(sorted({c.topology_key for c in constraints}))
    scored: BoolArray | None = None
    every = False  # every feasible node has every key (the usual case): no masking
    raw = np.zeros(len(feasible))
    for constraint in constraints:
        nodes = _nodes(ctx, constraint, keys)
        if scored is None:
            scored = nodes.labelled[feasible]
            every = len(feasible) > 0 and bool(scored.all())
            scored_slots = feasible if every else feasible[scored]
        index = nodes.index
        domain_of_feasible = index.domain[feasible]
        matching = _matching(pod, snapshot, constraint)
        if constraint.topology_key == LABEL_HOSTNAME:
            size = len(scored_slots)
            counts = matching.counts[feasible]
        else:
            present = np.zeros(len(index.values), dtype=np.bool_)
            present[index.domain[scored_slots]] = True
            size = int(np.count_nonzero(present))
            sums = snapshot.domain_sums(constraint.topology_key, matching, nodes.eligible)
            counts = sums[domain_of_feasible]  # 0 for unlabelled nodes (sums[-1])
        weight = math.log(size + 2)
        if every:
            contribution = counts * weight
            contribution += float(constraint.max_skew - 1)
            raw += contribution
        else:
            raw = raw + np.where(
                domain_of_feasible >= 0, counts * weight + float(constraint.max_skew - 1), 0.0
            )
    assert scored is not None
    raw += 0.5
    rounded = np.floor(raw).astype(np.int64)  # Go's math.Round for non-negative values
    if every:
        return _normalised(rounded)
    out = np.zeros(len(feasible), dtype=np.int64)
    if np.count_nonzero(scored):
        out[scored] = _normalised(rounded[scored])
    return out


def _normalised(rounded: IntArray) -> IntArray:
    """kube-scheduler's spread normalisation, in place: fewer matching pods score higher,
    ``100 x (max + min - value) / max`` (every score 100 when the maximum is 0)."""
    lowest, highest = int(rounded.min()), max(int(rounded.max()), 0)
    if highest == 0:
        return np.full(len(rounded), MAX_NODE_SCORE, dtype=np.int64)
    rounded *= -1
    rounded += highest + lowest
    rounded *= MAX_NODE_SCORE
    rounded //= highest
    return rounded


class PodTopologySpread:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        codes = filter_nodes(ctx)
        return None if codes is None else CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        return score(ctx, feasible)


PLUGIN: Final = PodTopologySpread()
