"""``nvidia.com/gpu.clique``: ``<clusterUUID>.<cliqueId>`` for fabric-attached GPUs (GB200 NVL).

As GFD: only GPUs whose fabric registration completed count, and when they disagree on the
cluster UUID or clique id the label is left out rather than guessed.
"""

from __future__ import annotations

from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Gfd


class CliqueLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        clusters: set[str] = set()
        cliques: set[int] = set()
        for gpu in topology.gpus:
            fabric = gpu.fabric
            if fabric is None or fabric.cluster_uuid is None or fabric.clique_id is None:
                continue
            if fabric.state not in (None, "completed"):
                continue
            clusters.add(fabric.cluster_uuid)
            cliques.add(fabric.clique_id)
        if len(clusters) != 1 or len(cliques) != 1:
            return {}
        return {Gfd.GPU_CLIQUE: f"{clusters.pop()}.{cliques.pop()}"}
