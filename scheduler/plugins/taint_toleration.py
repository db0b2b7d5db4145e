"""TaintToleration: NoSchedule/NoExecute taints must be tolerated; PreferNoSchedule scores.

Toleration matching is `v1.Toleration.ToleratesTaint`, including KEP-5471's `Gt`/`Lt`
operators (always enabled in gputopo).
"""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    Node,
    Pod,
    Taint,
    tolerated,
)

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
