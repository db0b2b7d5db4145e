"""``nvidia.com/gpu.machine``: the DMI product name (GFD's machine-type labeler)."""

from __future__ import annotations

from gputopo.agent.labels._gpus import sanitise
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Gfd


class MachineTypeLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        product = topology.node.product_name
        machine = sanitise(product) if product and sanitise(product) else "unknown"
        return {Gfd.GPU_MACHINE: machine}
