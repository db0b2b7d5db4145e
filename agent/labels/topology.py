"""``<prefix>/*`` topology labels GFD does not have: fabric, NUMA, PCIe, RDMA, model mix.

Every number is a plain integer so nodeAffinity ``Gt``/``Lt`` work with the stock scheduler.
A node without GPUs gets only ``gpu.present=false``.
"""

from __future__ import annotations

from collections import Counter

from gputopo.agent.labels._gpus import model_groups
from gputopo.agent.topology import Interconnect, NodeTopology
from gputopo.core.contract import FALSE, TRUE, Contract


class TopologyLabeler:
    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        c = self.contract
        present = bool(topology.gpus or topology.pci_only_gpus)
        labels = {c.gpu_present: TRUE if present else FALSE}
        if not topology.gpus:
            return labels
        if topology.interconnect is not Interconnect.NONE:
            labels[c.gpu_interconnect] = topology.interconnect.value
        sizes = [len(domain.gpus) for domain in topology.nvlink_domains]
        labels[c.gpu_nvlink_domain_size] = str(max(sizes, default=1))
        labels[c.gpu_nvlink_domains] = str(len(sizes))
        if topology.numa_nodes:
            labels[c.numa_nodes] = str(len(topology.numa_nodes))
        numa_max = self._numa_max(topology)
        if numa_max is not None:
            labels[c.gpu_numa_max] = str(numa_max)
            labels[c.gpu_aligned_max] = str(self._aligned_max(topology))
        generations = [g.pcie.gen_max for g in topology.gpus if g.pcie.gen_max is not None]
        if generations:
            labels[c.gpu_pcie_gen] = str(min(generations))
        rdma = any(nic.local_gpus for nic in topology.rdma_nics)
        labels[c.gpu_rdma] = TRUE if rdma else FALSE
        models = len(model_groups(topology.gpus))
        labels[c.gpu_models] = str(models)
        labels[c.gpu_heterogeneous] = TRUE if models > 1 else FALSE
        return labels

    @staticmethod
    def _numa_key(topology: NodeTopology, numa_node: int | None) -> int | None:
        """A GPU with unknown NUMA node is on "the" node only when the machine has at most one."""
        if numa_node is None and len(topology.numa_nodes) > 1:
            return None
        return numa_node if numa_node is not None else -1

    def _numa_max(self, topology: NodeTopology) -> int | None:
        counts = Counter(
            key
            for gpu in topology.gpus
            if (key := self._numa_key(topology, gpu.numa_node)) is not None
        )
        return max(counts.values()) if counts else None

    def _aligned_max(self, topology: NodeTopology) -> int:
        """Most GPUs sharing one NVLink domain *and* one NUMA node (1 without NVLink)."""
        counts: Counter[tuple[int, int]] = Counter()
        for gpu in topology.gpus:
            numa = self._numa_key(topology, gpu.numa_node)
            if numa is None or gpu.nvlink_domain is None:
                continue
            counts[(gpu.nvlink_domain, numa)] += 1
        return max(counts.values(), default=1)
