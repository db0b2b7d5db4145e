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
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray, TopologyIndex

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


def _matching_per_node(
    pod: Pod, snapshot: ClusterSnapshot, constraint: SpreadConstraint
) -> IntArray:
    return snapshot.count_matching(pod.namespace, constraint.selector, live_only=True)


def _eligible(
    ctx: CycleContext, constraint: SpreadConstraint, has_all_keys: BoolArray
) -> BoolArray:
    """Nodes counted for the constraint: the node inclusion policies, read from NodeAffinity's
    and TaintToleration's per-shape node state."""
    eligible = ctx.snapshot.alive & has_all_keys
    if constraint.honor_node_affinity:
        eligible = eligible & node_affinity.state(ctx).required_match
    if constraint.honor_node_taints:
        eligible = eligible & taint_toleration.state(ctx).hard_tolerated
    return eligible


def _has_all_keys(snapshot: ClusterSnapshot, indexes: list[TopologyIndex]) -> BoolArray:
    has_all = snapshot.alive.copy()
    for index in indexes:
        has_all &= index.domain >= 0
    return has_all


def filter_nodes(ctx: CycleContext) -> npt.NDArray[np.int8] | None:
    """Per-slot reason codes (0 = passes); None when the pod has no DoNotSchedule constraint."""
    pod, snapshot = ctx.pod, ctx.snapshot
    constraints = [c for c in pod.spread_constraints if c.do_not_schedule]
    if not constraints:
        return None
    indexes = [snapshot.topology(c.topology_key) for c in constraints]
    has_all = _has_all_keys(snapshot, indexes)
    reasons = np.zeros(snapshot.capacity, dtype=np.int8)
    for constraint, index in zip(constraints, indexes, strict=True):
        eligible = _eligible(ctx, constraint, has_all)
        per_node = np.where(eligible, _matching_per_node(pod, snapshot, constraint), 0)
        per_domain = index.aggregate(per_node)
        present = np.zeros(len(index.values), dtype=np.bool_)
        present[index.domain[eligible]] = True
        domains = int(present.sum())
        minimum = int(per_domain[present].min()) if domains else _MAX_INT32
        if domains < constraint.min_domains:
            minimum = 0
        self_match = 1 if constraint.selector.matches(pod.labels) else 0
        labelled = index.domain >= 0
        skew_fails = labelled & (
            index.spread(per_domain) + self_match - minimum > constraint.max_skew
        )
        undecided = reasons == 0
        reasons[undecided & ~labelled] = MISSING_LABEL
        reasons[undecided & skew_fails] = CONSTRAINTS_NOT_MATCH
    reasons[~snapshot.alive] = 0
    return reasons


def score(ctx: CycleContext, feasible: IntArray) -> IntArray | None:
    """Normalised scores for the feasible slots; None when there is no ScheduleAnyway constraint."""
    pod, snapshot = ctx.pod, ctx.snapshot
    constraints = [c for c in pod.spread_constraints if not c.do_not_schedule]
    if not constraints:
        return None
    indexes = [snapshot.topology(c.topology_key) for c in constraints]
    has_all = _has_all_keys(snapshot, indexes)
    scored = has_all[feasible]
    scored_slots = feasible[scored]
    raw = np.zeros(len(feasible))
    for constraint, index in zip(constraints, indexes, strict=True):
        matching = _matching_per_node(pod, snapshot, constraint)
        domain_of_feasible = index.domain[feasible]
        if constraint.topology_key == LABEL_HOSTNAME:
            size = len(scored_slots)
            counts = matching[feasible]
        else:
            size = len(np.unique(index.domain[scored_slots]))
            eligible = _eligible(ctx, constraint, has_all)
            per_domain = index.aggregate(np.where(eligible, matching, 0))
            counts = np.where(
                domain_of_feasible >= 0,
                per_domain[np.maximum(domain_of_feasible, 0)] if len(per_domain) else 0,
                0,
            )
        weight = math.log(size + 2)
        raw = raw + np.where(
            domain_of_feasible >= 0, counts * weight + float(constraint.max_skew - 1), 0.0
        )
    rounded = np.floor(raw + 0.5).astype(np.int64)  # Go's math.Round for non-negative values
    out = np.zeros(len(feasible), dtype=np.int64)
    if not scored.any():
        return out
    valid = rounded[scored]
    lowest, highest = int(valid.min()), max(int(valid.max()), 0)
    if highest == 0:
        out[scored] = MAX_NODE_SCORE
    else:
        out[scored] = MAX_NODE_SCORE * (highest + lowest - valid) // highest
    return out


class PodTopologySpread:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        codes = filter_nodes(ctx)
        return None if codes is None else CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        return score(ctx, feasible)


PLUGIN: Final = PodTopologySpread()
