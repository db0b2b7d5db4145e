"""NodeAffinity: nodeSelector and required node affinity filter; preferred terms score.

Both depend only on the pod's selector and affinity and on node labels, so the per-node results
are computed once per pod shape (`CycleContext.per_shape`). PreFilter: `matchFields:
metadata.name In [...]` (how DaemonSet pods are pinned) narrows the nodes considered, exactly as
kube-scheduler does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from gputopo.scheduler.model import Node, Pod
from gputopo.scheduler.plugins.context import CycleContext, PreFilterResult
from gputopo.scheduler.plugins.normalize import default_normalize
from gputopo.scheduler.plugins.verdict import CodedVerdict, unresolvable
from gputopo.scheduler.snapshot import BoolArray, IntArray

NAME: Final = "NodeAffinity"
REASON: Final = "node(s) didn't match Pod's node affinity/selector"
# The reason kube-scheduler's framework gives the nodes a PreFilter left out.
REASON_NOT_PINNED: Final = f"node(s) didn't satisfy plugin(s) [{NAME}]"
REASON_CONFLICT: Final = "pod affinity terms conflict"

_REASONS: Final = {1: unresolvable(REASON)}


def required_matches(pod: Pod, node: Node) -> bool:
    """nodeSelector (all pairs) AND required affinity (terms ORed, expressions ANDed)."""
    labels = node.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = pod.required_node_affinity
    if terms is None:
        return True
    return any(term.matches(labels, node.name) for term in terms)


def filter_node(pod: Pod, node: Node) -> str | None:
    return None if required_matches(pod, node) else REASON


def preferred_score(pod: Pod, node: Node) -> int:
    """Raw score: the sum of weights of matching preferred terms."""
    total = 0
    for weight, term in pod.preferred_node_affinity:
        if term.matches(node.labels, node.name):
            total += weight
    return total


@dataclass(frozen=True, slots=True)
class AffinityState:
    """Per node slot, for one pod shape: the filter's verdict (None: every node matches),
    whether the node matches the required terms, and the preferred terms' summed weights."""

    verdict: CodedVerdict | None
    required_match: BoolArray
    preferred: IntArray


def _evaluate(ctx: CycleContext) -> AffinityState:
    pod, capacity = ctx.pod, ctx.snapshot.capacity
    required_match = np.zeros(capacity, dtype=np.bool_)
    preferred = np.zeros(capacity, dtype=np.int64)
    codes = np.zeros(capacity, dtype=np.int8)
    has_preferred = bool(pod.preferred_node_affinity)
    for slot, node in ctx.snapshot.iter_nodes():
        matches = required_matches(pod, node)
        required_match[slot] = matches
        if not matches:
            codes[slot] = 1
        if has_preferred:
            preferred[slot] = preferred_score(pod, node)
    verdict = CodedVerdict(codes, _REASONS) if codes.any() else None
    return AffinityState(verdict, required_match, preferred)


def state(ctx: CycleContext) -> AffinityState:
    """This pod shape's per-node affinity results (PodTopologySpread and Headroom read them)."""
    return ctx.per_shape(NAME, _evaluate)


class NodeAffinity:
    name: Final = NAME
    # The verdict depends only on the pod's shape and the nodes (see `FilterPlugin`).
    node_only: Final = True

    def pre_filter(self, ctx: CycleContext) -> PreFilterResult | None:
        names = ctx.pod.required_node_names
        if names is None:
            return None
        if not names:
            return PreFilterResult(refusal=REASON_CONFLICT)
        return PreFilterResult(node_names=frozenset(names))

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        return state(ctx).verdict

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        if not ctx.pod.preferred_node_affinity:
            return None
        return default_normalize(state(ctx).preferred[feasible], reverse=False)


PLUGIN: Final = NodeAffinity()
