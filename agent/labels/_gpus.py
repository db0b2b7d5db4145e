"""Shared helpers for labelers: GFD's product-name sanitising and the node's primary model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gputopo.agent.topology import Gpu, GpuInstance

_PRODUCT_INVALID = re.compile(r"[^A-Za-z0-9-_. ]")

UNKNOWN_MODEL = "unknown"


def sanitise(text: str) -> str:
    """GFD's sanitise: drop chars outside ``[A-Za-z0-9-_. ]``, whitespace runs become ``-``."""
    return "-".join(_PRODUCT_INVALID.sub("", text).split())


def product_name(*parts: str) -> str:
    """GFD's product label: sanitised non-empty parts joined by ``-``."""
    return "-".join(sanitise(p) for p in parts if p)


def model_of(gpu: Gpu) -> str:
    return gpu.name or UNKNOWN_MODEL


@dataclass(frozen=True)
class ModelGroup:
    name: str
    gpus: tuple[Gpu, ...]


def model_groups(gpus: Sequence[Gpu]) -> list[ModelGroup]:
    """GPUs grouped by model, primary first: most GPUs, ties to the lowest GPU index.

    GFD itself iterates a Go map here, so on a mixed node the model it labels is whichever the
    map yields last; gputopo picks deterministically and flags the node as heterogeneous.
    GPUs whose name is unknown are left out (GFD cannot label them either).
    """
    named = [gpu for gpu in gpus if gpu.name]
    grouped: dict[str, list[Gpu]] = {}
    # A GPU whose name could not be read (lost mid-query) is not a different model; it only
    # stands for the node's model when no GPU's name is known.
    for gpu in sorted(named or gpus, key=lambda g: g.index):
        grouped.setdefault(model_of(gpu), []).append(gpu)
    groups = [ModelGroup(name, tuple(members)) for name, members in grouped.items()]
    groups.sort(key=lambda g: (-len(g.gpus), g.gpus[0].index))
    return groups


def arch_family(major: int, minor: int) -> str:
    """GFD's ``getArchFamily`` (compute capability to ``gpu.family``)."""
    if major == 1:
        return "tesla"
    if major == 2:
        return "fermi"
    if major == 3:
        return "kepler"
    if major == 5:
        return "maxwell"
    if major == 6:
        return "pascal"
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    if major == 9:
        return "hopper"
    if major in (10, 12):
        return "blackwell"
    return "undefined"


@dataclass(frozen=True)
class MigDevice:
    """One MIG device as GFD sees it: a compute instance inside a GPU instance."""

    parent: Gpu
    gpu_instance: GpuInstance
    profile: str
    slices_ci: int | None
    multiprocessors: int | None

    def attributes(self) -> dict[str, int]:
        """GFD's MIG attribute labels (suffix -> value); unknown attributes are left out."""
        gi = self.gpu_instance
        values: dict[str, int | None] = {
            "memory": gi.memory_mib,
            "multiprocessors": self.multiprocessors,
            "slices.gi": gi.slices,
            "slices.ci": self.slices_ci,
            "engines.copy": gi.copy_engines,
            "engines.decoder": gi.decoders,
            "engines.encoder": gi.encoders,
            "engines.jpeg": gi.jpegs,
            "engines.ofa": gi.ofas,
        }
        return {k: v for k, v in values.items() if v is not None}


def mig_devices(gpu: Gpu) -> list[MigDevice]:
    devices: list[MigDevice] = []
    if not gpu.mig.enabled:
        return devices
    for gi in sorted(gpu.mig.instances, key=lambda g: g.id):
        for ci in sorted(gi.compute_instances, key=lambda c: c.id):
            devices.append(
                MigDevice(
                    parent=gpu,
                    gpu_instance=gi,
                    profile=ci.profile,
                    slices_ci=ci.slices,
                    multiprocessors=ci.multiprocessors
                    if ci.multiprocessors is not None
                    else gi.multiprocessors,
                )
            )
    return devices
