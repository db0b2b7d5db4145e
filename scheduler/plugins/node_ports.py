"""NodePorts: a requested hostPort must be free for its protocol and host IP.

0.0.0.0 (or an empty hostIP) binds every address, so it conflicts with any use of the same
protocol and port; two specific IPs conflict only when equal.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.verdict import MaskVerdict, Reason
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot

NAME: Final = "NodePorts"
REASON: Final = "node(s) didn't have free ports for the requested pod ports"

_ALL_ADDRESSES: Final = "0.0.0.0"
_REASON: Final = Reason(REASON)


def conflicts(pod: Pod, snapshot: ClusterSnapshot) -> BoolArray | None:
    """Nodes where one of the pod's host ports is taken; None when the pod asks for none."""
    if not pod.host_ports:
        return None
    taken = np.zeros(snapshot.capacity, dtype=np.bool_)
    for port in pod.host_ports:
        by_slot = snapshot.host_ports.get((port.protocol, port.port))
        if not by_slot:
            continue
        for slot, ips in by_slot.items():
            if port.ip == _ALL_ADDRESSES or _ALL_ADDRESSES in ips or port.ip in ips:
                taken[slot] = True
    return taken


class NodePorts:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> MaskVerdict | None:
        taken = conflicts(ctx.pod, ctx.snapshot)
        return None if taken is None else MaskVerdict([(_REASON, taken)])


PLUGIN: Final = NodePorts()
