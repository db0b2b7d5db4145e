"""``nvidia.com/gpu.mode`` from the PCI class code, as GFD: 0x030000 graphics, 0x030200 compute.

GFD reads the first GPU's class (its loop stops at the first GPU that differs); so do we.
"""

from __future__ import annotations

from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Gfd

_MODES = {"0x030000": "graphics", "0x030200": "compute"}


class GpuModeLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        if not topology.gpus:
            return {}
        first = min(topology.gpus, key=lambda g: g.index)
        pci_class = (first.pci_class or "").lower()
        return {Gfd.GPU_MODE: _MODES.get(pci_class, "unknown")}
