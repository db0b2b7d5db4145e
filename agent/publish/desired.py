"""Desired state: what the agent wants on its Node, computed from one discovery (pure).

Labels and taints go through the validation gate here, so everything later (the plan, the
writer, ``gputopo-agent labels``) sees only values Kubernetes accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gputopo.agent.annotation import topology_annotation_value
from gputopo.agent.labels import LabelOptions, compute_labels
from gputopo.agent.publish.nvidia_labels import (
    DEFAULT_NVIDIA_LABEL_MODE,
    check_mode,
    is_nvidia_key,
)
from gputopo.agent.sla import SlaHysteresis, SlaState, assess
from gputopo.agent.taints import TaintOptions, compute_taints
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    DEFAULT_HEALTH_TAINT_EFFECT,
    DEFAULT_SLA_TAINT_EFFECT,
    Contract,
)
from gputopo.core.validate import Taint, ValidationGate


@dataclass(frozen=True)
class PublishOptions:
    contract: Contract = field(default_factory=lambda: DEFAULT_CONTRACT)
    mig_strategy: str = "none"
    sla_taint_effect: str = DEFAULT_SLA_TAINT_EFFECT
    health_taint_effect: str = DEFAULT_HEALTH_TAINT_EFFECT
    removal_after: int = 3  # consecutive successful discoveries a key must be absent from
    sla_rise_after_observations: int = 3
    sla_rise_after_seconds: float = 120.0
    # Who writes the GFD-compatible nvidia.com/* labels: own, defer or off (.nvidia_labels).
    nvidia_labels: str = DEFAULT_NVIDIA_LABEL_MODE

    def __post_init__(self) -> None:
        if self.removal_after < 1:
            raise ValueError(f"removal_after must be >= 1, got {self.removal_after}")
        check_mode(self.nvidia_labels)
        # Fail at start-up, with the flag named, rather than on the first publish.
        LabelOptions(mig_strategy=self.mig_strategy)
        self.taint_options()

    def taint_options(self) -> TaintOptions:
        return TaintOptions(self.sla_taint_effect, self.health_taint_effect, self.contract)


@dataclass(frozen=True)
class DesiredState:
    """What the agent wants on its Node, already through the validation gate."""

    labels: dict[str, str]
    taints: tuple[Taint, ...]
    annotations: dict[str, str]  # content annotations (topology); bookkeeping is added by plan()
    sla_state: SlaState | None
    # What the discovery behind this state could not read; non-empty: a partial discovery, whose
    # topology values must not replace the Node's last good ones (plan() keeps them).
    incomplete: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.incomplete


def is_successful_discovery(topology: NodeTopology) -> bool:
    """False when NVML is down while NVIDIA GPUs sit on the PCI bus: nothing may be concluded."""
    return topology.nvml.available or not topology.pci_only_gpus


def desired_state(
    topology: NodeTopology,
    options: PublishOptions,
    gate: ValidationGate,
    *,
    previous_sla: SlaState | None = None,
    hysteresis: SlaHysteresis | None = None,
    health_taint: bool = True,
) -> DesiredState:
    gate.repairs.clear()  # the repairs of this computation only; the counter keeps totals
    assessment = assess(topology)
    sla_state: SlaState | None = None
    if assessment is not None:
        hysteresis = hysteresis or SlaHysteresis(
            options.sla_rise_after_observations, options.sla_rise_after_seconds
        )
        sla_state = hysteresis.observe(previous_sla or SlaState(), assessment.score)
    score = sla_state.published if sla_state is not None else None
    labels = compute_labels(
        topology,
        LabelOptions(mig_strategy=options.mig_strategy, contract=options.contract, sla_score=score),
    )
    taints = compute_taints(topology, score, options.taint_options(), health_taint=health_taint)
    if options.nvidia_labels == "off":
        labels = {key: value for key, value in labels.items() if not is_nvidia_key(key)}
    return DesiredState(
        labels=gate.labels(labels),
        taints=tuple(gate.taint(t.key, t.value, t.effect) for t in taints),
        annotations={options.contract.topology_annotation: topology_annotation_value(topology)},
        sla_state=sla_state,
        incomplete=topology.incomplete,
    )
