"""``<prefix>/gpu.model``: the short GPU model people write in selectors (``H100``, ``A100``).

GFD's ``nvidia.com/gpu.product`` is the full sanitised name (``NVIDIA-H100-80GB-HBM3``), so the
``nodeSelector: {nvidia.com/gpu.product: H100}`` found in many guides matches nothing. This label
carries the model alone: the product name without the vendor and line prefixes and without the
memory size, form factor and memory type that follow the model. It describes the node's primary
model (most GPUs, ties to the lowest index), as the GFD-compatible labels do.
"""

from __future__ import annotations

import re

from gputopo.agent.labels._gpus import model_groups, sanitise
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Contract

_PREFIXES = frozenset({"NVIDIA", "GEFORCE", "TESLA", "QUADRO"})
# The first of these ends the model: "80GB", "SXM4", "PCIe", "HBM3", "HBM3e", "NVL", "MIG".
_SUFFIX = re.compile(r"^(\d+GB|SXM\d*|PCIE|HBM\d*E?|NVL\d*|MIG.*)$", re.IGNORECASE)


def short_model(name: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` -> ``A100``; ``NVIDIA GeForce RTX 4090`` -> ``RTX-4090``."""
    tokens = [token for token in re.split(r"[\s-]+", name) if token]
    while tokens and tokens[0].upper() in _PREFIXES:
        tokens.pop(0)
    model: list[str] = []
    for token in tokens:
        if _SUFFIX.match(token):
            break
        model.append(token)
    return sanitise("-".join(model))


class ModelLabeler:
    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        groups = model_groups(topology.gpus)
        if not groups or not groups[0].gpus[0].name:
            return {}
        model = short_model(groups[0].name)
        return {self.contract.gpu_model: model} if model else {}
