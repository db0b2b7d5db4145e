"""NodeUnschedulable: cordoned nodes take only pods tolerating the unschedulable taint."""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model import (
    NO_SCHEDULE,
    TAINT_NODE_UNSCHEDULABLE,
    Node,
    Pod,
    Taint,
    tolerated,
)

NAME: Final = "NodeUnschedulable"
REASON: Final = "node(s) were unschedulable"

_UNSCHEDULABLE_TAINT: Final = Taint(TAINT_NODE_UNSCHEDULABLE, "", NO_SCHEDULE)


def filter_node(pod: Pod, node: Node) -> str | None:
    if node.unschedulable and not tolerated(pod.tolerations, _UNSCHEDULABLE_TAINT):
        return REASON
    return None
