"""``nvidia.com/mps.capable``: gputopo does not set up MPS sharing: GFD's default ``false``."""

from __future__ import annotations

from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import FALSE, Gfd


class SharingLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        return {Gfd.MPS_CAPABLE: FALSE}
