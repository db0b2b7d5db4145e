"""MIG labels with GFD's ``--mig-strategy`` semantics.

* ``none``: no MIG labels beyond ``nvidia.com/mig.capable``.
* ``single``: ``nvidia.com/gpu.*`` describe the one MIG profile every GPU is partitioned into
  (product ``<model>-MIG-<profile>``, count = number of MIG devices, memory, multiprocessors,
  slices, engines). A layout single cannot describe — a MIG-enabled GPU with no MIG devices,
  MIG-enabled next to MIG-disabled GPUs, or more than one profile — yields
  ``<model>-MIG-INVALID`` with count, replicas and memory ``0``.
* ``mixed``: ``nvidia.com/mig-<profile>.*`` per profile (``+`` in a profile becomes ``.``);
  MIG-enabled GPUs without MIG devices are ignored.

Both also set ``nvidia.com/mig.strategy``.
"""

from __future__ import annotations

import logging

from gputopo.agent.labels._gpus import MigDevice, mig_devices, model_of, product_name
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import FALSE, NVIDIA_PREFIX, TRUE, Gfd

log = logging.getLogger(__name__)


class MigCapableLabeler:
    """``nvidia.com/mig.capable``: true when any GPU on the node is MIG capable."""

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        capable = any(gpu.mig.capable for gpu in topology.gpus)
        return {Gfd.MIG_CAPABLE: TRUE if capable else FALSE}


def _resource_labels(resource: str, devices: list[MigDevice]) -> dict[str, str]:
    first = devices[0]
    labels = {
        f"{resource}.product": product_name(model_of(first.parent), "MIG", first.profile),
        f"{resource}.count": str(len(devices)),
        f"{resource}.replicas": "1",
        f"{resource}.sharing-strategy": "none",
    }
    for suffix, value in first.attributes().items():
        labels[f"{resource}.{suffix}"] = str(value)
    return labels


class MigStrategyLabeler:
    def __init__(self, strategy: str) -> None:
        self.strategy = strategy

    def labels(self, topology: NodeTopology) -> dict[str, str]:
        if self.strategy == "none":
            return {}
        labels = {Gfd.MIG_STRATEGY: self.strategy}
        if self.strategy == "single":
            labels.update(self._single(topology))
        else:
            labels.update(self._mixed(topology))
        return labels

    def _single(self, topology: NodeTopology) -> dict[str, str]:
        gpus = sorted(topology.gpus, key=lambda g: g.index)
        enabled = [gpu for gpu in gpus if gpu.mig.enabled]
        if not enabled:
            return {}  # equivalent to the none strategy
        if any(not mig_devices(gpu) for gpu in enabled):
            return self._invalid(model_of(enabled[0]), "a MIG-enabled GPU has no MIG devices")
        if len(enabled) != len(gpus):
            return self._invalid(model_of(enabled[0]), "GPUs with MIG enabled and disabled")
        devices = [device for gpu in enabled for device in mig_devices(gpu)]
        profiles = sorted({device.profile for device in devices})
        if len(profiles) != 1:
            return self._invalid(
                model_of(enabled[0]), f"more than one MIG profile ({', '.join(profiles)})"
            )
        return _resource_labels(f"{NVIDIA_PREFIX}/gpu", devices)

    @staticmethod
    def _invalid(model: str, reason: str) -> dict[str, str]:
        log.warning("mig-strategy=single cannot describe this node: %s", reason)
        return {
            Gfd.GPU_PRODUCT: product_name(model, "MIG", "INVALID"),
            Gfd.GPU_COUNT: "0",
            Gfd.GPU_REPLICAS: "0",
            Gfd.GPU_MEMORY: "0",
        }

    @staticmethod
    def _mixed(topology: NodeTopology) -> dict[str, str]:
        by_profile: dict[str, list[MigDevice]] = {}
        for gpu in sorted(topology.gpus, key=lambda g: g.index):
            for device in mig_devices(gpu):
                by_profile.setdefault(device.profile, []).append(device)
        labels: dict[str, str] = {}
        for profile in sorted(by_profile):
            labels.update(_resource_labels(Gfd.mig_resource(profile), by_profile[profile]))
        return labels
