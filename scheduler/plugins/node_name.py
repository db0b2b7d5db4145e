"""NodeName: a pod that names a node fits only that node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from gputopo.scheduler.model import Node, Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.verdict import CodedVerdict, unresolvable

NAME: Final = "NodeName"
REASON: Final = "node(s) didn't match the requested node name"

_REASONS: Final = {1: unresolvable(REASON)}


def filter_node(pod: Pod, node: Node) -> str | None:
    if pod.node_name and pod.node_name != node.name:
        return REASON
    return None


@dataclass(frozen=True, slots=True)
class _ShapeVerdict:
    verdict: CodedVerdict


def _evaluate(ctx: CycleContext) -> _ShapeVerdict:
    codes = np.zeros(ctx.snapshot.capacity, dtype=np.int8)
    for slot, node in ctx.snapshot.iter_nodes():
        if filter_node(ctx.pod, node) is not None:
            codes[slot] = 1
    return _ShapeVerdict(CodedVerdict(codes, _REASONS))


class NodeName:
    name: Final = NAME
    # The verdict depends only on the pod's shape and the nodes (see `FilterPlugin`).
    node_only: Final = True

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        if not ctx.pod.node_name:
            return None
        return ctx.per_shape(NAME, _evaluate).verdict


PLUGIN: Final = NodeName()
