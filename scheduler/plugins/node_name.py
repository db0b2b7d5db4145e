"""NodeName: a pod that names a node fits only that node."""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model import Node, Pod

NAME: Final = "NodeName"
REASON: Final = "node(s) didn't match the requested node name"


def filter_node(pod: Pod, node: Node) -> str | None:
    if pod.node_name and pod.node_name != node.name:
        return REASON
    return None
