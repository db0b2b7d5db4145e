"""Labels as small composable labelers, merged in one place (GPU Feature Discovery's style).

Each concern is one labeler in its own module with one method, ``labels(topology)``. They are
composed by :func:`merge`; later labelers win on a key clash, so order in
:func:`default_labelers` is part of the contract. Adding a label family is adding a module and
one line here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gputopo.agent.labels.gfd_fabric import CliqueLabeler
from gputopo.agent.labels.gfd_machine import MachineTypeLabeler
from gputopo.agent.labels.gfd_mig import MigCapableLabeler, MigStrategyLabeler
from gputopo.agent.labels.gfd_mode import GpuModeLabeler
from gputopo.agent.labels.gfd_resources import FullGpuLabeler
from gputopo.agent.labels.gfd_sharing import SharingLabeler
from gputopo.agent.labels.gfd_versions import VersionLabeler
from gputopo.agent.labels.health import HealthLabeler, SlaLabeler
from gputopo.agent.labels.model import ModelLabeler
from gputopo.agent.labels.topology import TopologyLabeler
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import DEFAULT_CONTRACT, MIG_STRATEGIES, Contract


class Labeler(Protocol):
    def labels(self, topology: NodeTopology) -> dict[str, str]: ...


class Merged:
    """Several labelers as one; on a key clash the later labeler wins."""

    def __init__(self, labelers: Iterable[Labeler]) -> None:
        self.labelers = tuple(labelers)

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        result: dict[str, str] = {}
        for labeler in self.labelers:
            result.update(labeler.labels(topology))
        return result


def merge(*labelers: Labeler) -> Merged:
    return Merged(labelers)


class InvalidOption(ValueError):
    """A labeling option (e.g. the MIG strategy) is not one of the accepted values."""


@dataclass(frozen=True)
class LabelOptions:
    mig_strategy: str = "none"
    contract: Contract = field(default_factory=lambda: DEFAULT_CONTRACT)
    sla_score: int | None = None  # the published (hysteresis-filtered) score; None: no label

    def __post_init__(self) -> None:
        if self.mig_strategy not in MIG_STRATEGIES:
            raise InvalidOption(
                f"--mig-strategy {self.mig_strategy!r} is not one of {', '.join(MIG_STRATEGIES)}"
            )


def default_labelers(options: LabelOptions) -> Merged:
    """Every labeler, in the order their keys are merged."""
    gfd_labelers: tuple[Labeler, ...] = (
        MachineTypeLabeler(),
        VersionLabeler(),
        MigCapableLabeler(),
        SharingLabeler(),
        FullGpuLabeler(),
        MigStrategyLabeler(options.mig_strategy),
        GpuModeLabeler(),
        CliqueLabeler(),
    )
    return merge(
        _OnlyWithGpus(merge(*gfd_labelers)),
        TopologyLabeler(options.contract),
        ModelLabeler(options.contract),
        HealthLabeler(options.contract),
        SlaLabeler(options.contract, options.sla_score),
    )


class _OnlyWithGpus:
    """GFD labels nothing on a node where NVML lists no GPU."""

    def __init__(self, inner: Labeler) -> None:
        self.inner = inner

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        return self.inner.labels(topology) if topology.gpus else {}


def compute_labels(topology: NodeTopology, options: LabelOptions | None = None) -> dict[str, str]:
    """All labels for ``topology`` (not yet through the validation gate)."""
    return default_labelers(options or LabelOptions()).labels(topology)


__all__ = [
    "InvalidOption",
    "LabelOptions",
    "Labeler",
    "Merged",
    "compute_labels",
    "default_labelers",
    "merge",
]
