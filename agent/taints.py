"""Taints: the SLA taint every GPU node carries and the health taint for failed GPUs.

* ``<prefix>/sla=<0..1000>``, effect ``PreferNoSchedule`` by default. With KEP-5471 a pod
  tolerates it with ``operator: Gt, value: "950"`` when the node's score is above 950.
* ``<prefix>/gpu-health=failed``, effect ``NoSchedule`` by default (``NoExecute`` to evict),
  present while any GPU has failed, is lost or is on PCI but not in NVML — unless each such GPU
  is marked by its own DeviceTaintRule on a DRA node (agent.device_taints), which keeps pods
  off that GPU only.

The agent's own DaemonSet tolerates both, so it keeps running on the nodes it taints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gputopo.agent.labels.health import gpu_health
from gputopo.agent.topology import Health, NodeTopology
from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    DEFAULT_HEALTH_TAINT_EFFECT,
    DEFAULT_SLA_TAINT_EFFECT,
    TAINT_EFFECTS,
    Contract,
)
from gputopo.core.validate import Taint


class InvalidTaintEffect(ValueError):
    pass


@dataclass(frozen=True)
class TaintOptions:
    sla_effect: str = DEFAULT_SLA_TAINT_EFFECT
    health_effect: str = DEFAULT_HEALTH_TAINT_EFFECT
    contract: Contract = field(default_factory=lambda: DEFAULT_CONTRACT)

    def __post_init__(self) -> None:
        for flag, effect in (
            ("--sla-taint-effect", self.sla_effect),
            ("--health-taint-effect", self.health_effect),
        ):
            if effect not in TAINT_EFFECTS:
                raise InvalidTaintEffect(
                    f"{flag} {effect!r} is not one of {', '.join(TAINT_EFFECTS)}"
                )


def compute_taints(
    topology: NodeTopology,
    sla_score: int | None,
    options: TaintOptions | None = None,
    *,
    health_taint: bool = True,
) -> list[Taint]:
    options = options or TaintOptions()
    c = options.contract
    taints: list[Taint] = []
    if sla_score is not None and (topology.gpus or topology.pci_only_gpus):
        taints.append(Taint(c.sla_taint, str(sla_score), options.sla_effect))
    if health_taint and (topology.gpus or topology.pci_only_gpus):
        worst, _ = gpu_health(topology)
        if worst is Health.FAILED:
            taints.append(Taint(c.health_taint, Health.FAILED.value, options.health_effect))
    return taints
