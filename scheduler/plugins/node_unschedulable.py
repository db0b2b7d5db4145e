"""NodeUnschedulable: cordoned nodes take only pods tolerating the unschedulable taint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from gputopo.scheduler.model import (
    NO_SCHEDULE,
    TAINT_NODE_UNSCHEDULABLE,
    Node,
    Pod,
    Taint,
    tolerated,
)
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.verdict import CodedVerdict, unresolvable

NAME: Final = "NodeUnschedulable"
REASON: Final = "node(s) were unschedulable"

_UNSCHEDULABLE_TAINT: Final = Taint(TAINT_NODE_UNSCHEDULABLE, "", NO_SCHEDULE)
_REASONS: Final = {1: unresolvable(REASON)}


def filter_node(pod: Pod, node: Node) -> str | None:
    if node.unschedulable and not tolerated(pod.tolerations, _UNSCHEDULABLE_TAINT):
        return REASON
    return None


@dataclass(frozen=True, slots=True)
class _ShapeVerdict:
    verdict: CodedVerdict | None


def _evaluate(ctx: CycleContext) -> _ShapeVerdict:
    codes = np.zeros(ctx.snapshot.capacity, dtype=np.int8)
    for slot, node in ctx.snapshot.iter_nodes():
        if node.unschedulable and filter_node(ctx.pod, node) is not None:
            codes[slot] = 1
    return _ShapeVerdict(CodedVerdict(codes, _REASONS) if codes.any() else None)


class NodeUnschedulable:
    name: Final = NAME
    # The verdict depends only on the pod's shape and the nodes (see `FilterPlugin`).
    node_only: Final = True

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        return ctx.per_shape(NAME, _evaluate).verdict


PLUGIN: Final = NodeUnschedulable()
