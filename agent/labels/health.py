"""``<prefix>/gpu.health``, ``<prefix>/gpu.healthy`` and ``<prefix>/sla``.

Node health is the worst GPU's: a GPU that is lost, or seen on PCI but not by NVML, counts as
failed. The SLA label carries the hysteresis-filtered score (``agent.sla``), not a raw sample.
"""

from __future__ import annotations

from gputopo.agent.topology import Health, NodeTopology
from gputopo.core.contract import Contract

_ORDER = {Health.OK: 0, Health.DEGRADED: 1, Health.FAILED: 2}


def gpu_health(topology: NodeTopology) -> tuple[Health, int]:
    """(worst health on the node, number of GPUs whose health is ok)."""
    worst = Health.OK
    healthy = 0
    for gpu in topology.gpus:
        health = Health.FAILED if gpu.health_signals.lost else gpu.health
        if _ORDER[health] > _ORDER[worst]:
            worst = health
        if health is Health.OK:
            healthy += 1
    if topology.pci_only_gpus:
        worst = Health.FAILED
    return worst, healthy


class HealthLabeler:
    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        if not (topology.gpus or topology.pci_only_gpus):
            return {}
        worst, healthy = gpu_health(topology)
        return {self.contract.gpu_health: worst.value, self.contract.gpu_healthy: str(healthy)}


class SlaLabeler:
    def __init__(self, contract: Contract, score: int | None) -> None:
        self.contract = contract
        self.score = score

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        if self.score is None or not (topology.gpus or topology.pci_only_gpus):
            return {}
        return {self.contract.sla: str(self.score)}
