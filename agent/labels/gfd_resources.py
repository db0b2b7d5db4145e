"""Full-GPU resource labels: ``nvidia.com/gpu.{product,count,replicas,sharing-strategy,memory,
family,compute.major,compute.minor}`` (GFD's resource labeler).

Heterogeneous nodes: GFD labels one model per key and, iterating a Go map, whichever comes
last wins. gputopo labels the *primary* model — the one with the most GPUs, ties to the lowest
GPU index — with that model's count, and publishes ``gputopo.io/gpu.heterogeneous=true`` and
``gputopo.io/gpu.models`` (see ``agent.labels.topology``) so selectors can avoid such nodes.
"""

from __future__ import annotations

from gputopo.agent.labels._gpus import arch_family, model_groups, product_name
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Gfd


class FullGpuLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        groups = model_groups(topology.gpus)
        if not groups:
            return {}
        primary = groups[0]
        first = primary.gpus[0]
        # GFD labels MIG-enabled GPUs "without sharing" (replicas 0) unless a full GPU of the same
        # model exists, whose labels override them.
        any_full = any(not gpu.mig.enabled for gpu in primary.gpus)
        labels = {
            Gfd.GPU_PRODUCT: product_name(primary.name),
            Gfd.GPU_COUNT: str(len(primary.gpus)),
            Gfd.GPU_REPLICAS: "1" if any_full else "0",
            Gfd.GPU_SHARING_STRATEGY: "none",
        }
        if first.memory_mib:
            labels[Gfd.GPU_MEMORY] = str(first.memory_mib)
        cc = first.compute_capability
        if cc is not None and cc.major != 0:
            labels[Gfd.GPU_FAMILY] = arch_family(cc.major, cc.minor)
            labels[Gfd.GPU_COMPUTE_MAJOR] = str(cc.major)
            labels[Gfd.GPU_COMPUTE_MINOR] = str(cc.minor)
        return labels
