"""TaintToleration: NoSchedule/NoExecute taints must be tolerated; PreferNoSchedule scores.

Toleration matching is `v1.Toleration.ToleratesTaint`, including KEP-5471's `Gt`/`Lt`
operators (always enabled in gputopo). Both depend only on the pod's tolerations and the node's
taints, so the per-node verdicts are computed once per pod shape (`CycleContext.per_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from gputopo.scheduler.model import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    Node,
    Pod,
    Taint,
    tolerated,
)
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.normalize import MAX_NODE_SCORE, default_normalize
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason, unresolvable
from gputopo.scheduler.snapshot import BoolArray, IntArray

NAME: Final = "TaintToleration"


def reason_for(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def untolerated_taint(pod: Pod, node: Node) -> Taint | None:
    """The first NoSchedule/NoExecute taint (in node order) the pod does not tolerate."""
    for taint in node.taints:
        if taint.effect in (NO_SCHEDULE, NO_EXECUTE) and not tolerated(pod.tolerations, taint):
            return taint
    return None


def filter_node(pod: Pod, node: Node) -> str | None:
    taint = untolerated_taint(pod, node)
    return None if taint is None else reason_for(taint)


def intolerable_prefer_no_schedule(pod: Pod, node: Node) -> int:
    """Raw score: PreferNoSchedule taints not tolerated (lower is better, normalised reversed)."""
    tolerations = [t for t in pod.tolerations if t.effect in ("", PREFER_NO_SCHEDULE)]
    count = 0
    for taint in node.taints:
        if taint.effect == PREFER_NO_SCHEDULE and not tolerated(tolerations, taint):
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class TaintState:
    """Per node slot, for one pod shape: the filter's verdict (None: every node passes),
    whether every hard taint is tolerated, and the intolerable PreferNoSchedule taints."""

    verdict: CodedVerdict | None
    hard_tolerated: BoolArray
    prefer_no_schedule: IntArray
    # Whether any node has a PreferNoSchedule taint the shape does not tolerate (else every
    # node scores the maximum: the reversed normalisation of zeros).
    any_prefer_no_schedule: bool


def _evaluate(ctx: CycleContext) -> TaintState:
    pod, capacity = ctx.pod, ctx.snapshot.capacity
    codes = np.zeros(capacity, dtype=np.int64)
    hard_ok = np.zeros(capacity, dtype=np.bool_)
    prefer_no_schedule = np.zeros(capacity, dtype=np.int64)
    reasons: dict[int, Reason] = {}
    code_of: dict[str, int] = {}
    for slot, node in ctx.snapshot.iter_nodes():
        if not node.taints:
            hard_ok[slot] = True
            continue
        taint = untolerated_taint(pod, node)
        hard_ok[slot] = taint is None
        prefer_no_schedule[slot] = intolerable_prefer_no_schedule(pod, node)
        if taint is not None:
            reason = reason_for(taint)
            code = code_of.get(reason)
            if code is None:
                code = code_of[reason] = len(code_of) + 1
                reasons[code] = unresolvable(reason)
            codes[slot] = code
    verdict = CodedVerdict(codes, reasons) if reasons else None
    return TaintState(verdict, hard_ok, prefer_no_schedule, bool(prefer_no_schedule.any()))


def state(ctx: CycleContext) -> TaintState:
    """This pod shape's per-node taint verdicts (PodTopologySpread's taint policy reads them)."""
    return ctx.per_shape(NAME, _evaluate)


class TaintToleration:
    name: Final = NAME
    # The verdict depends only on the pod's shape and the nodes (see `FilterPlugin`).
    node_only: Final = True

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        return state(ctx).verdict

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray:
        taints = state(ctx)
        if not taints.any_prefer_no_schedule:
            return np.full(len(feasible), MAX_NODE_SCORE, dtype=np.int64)
        return default_normalize(taints.prefer_no_schedule[feasible], reverse=True)


PLUGIN: Final = TaintToleration()
