"""Join DRA devices to the agent's topology annotation, and rank device sets by alignment.

NVIDIA's DRA driver publishes no NVLink and no NUMA attribute (its issues #214 and #174). The
agent's ``gputopo.io/topology`` annotation has both per GPU, with the GPU's UUID and PCI bus id;
a full-GPU device joins by its ``uuid`` attribute, else by ``resource.kubernetes.io/pciBusID``,
and a MIG device by ``parentUUID``. The ranking is the device plugin path's
(:func:`gputopo.scheduler.gpu_alloc.preferred_allocation`): one NVLink domain and one NUMA node,
else one domain, else one NUMA node, else the fewest groups; best fit within a level, so large
domains stay whole for large requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    Contract,
    ContractError,
    parse_topology_annotation,
)
from gputopo.core.grammar import GrammarError, normalize_bus_id
from gputopo.scheduler.dra.model import Device
from gputopo.scheduler.gpu_alloc import (
    LEVEL_ALIGNED,
    LEVEL_NUMA,
    LEVEL_NVLINK,
    LEVEL_SPREAD,
    GpuSlot,
    NodeGpuLayout,
    preferred_allocation,
)
from gputopo.scheduler.model import Node

PCI_BUS_ID: str = "resource.kubernetes.io/pciBusID"


@dataclass(frozen=True, slots=True)
class DevicePlace:
    """Where a device sits: its GPU (the parent GPU for a MIG device)."""

    gpu: GpuSlot
    whole: bool  # a full GPU, not a partition of one


class NodeTopology:
    """One node's GPUs from its annotation, keyed by UUID and by PCI bus id."""

    def __init__(self, slots: Iterable[tuple[GpuSlot, str | None, str | None]]) -> None:
        self.by_uuid: dict[str, GpuSlot] = {}
        self.by_bus: dict[str, GpuSlot] = {}
        for slot, uuid, bus in slots:
            if uuid:
                self.by_uuid[uuid] = slot
            if bus:
                self.by_bus[bus] = slot

    def place(self, device: Device) -> DevicePlace | None:
        uuid = device.attributes.get(f"{device.driver}/uuid")
        parent = device.attributes.get(f"{device.driver}/parentUUID")
        if parent is not None and isinstance(parent.value, str):
            slot = self.by_uuid.get(parent.value)
            return DevicePlace(slot, False) if slot is not None else None
        if uuid is not None and isinstance(uuid.value, str) and uuid.value in self.by_uuid:
            return DevicePlace(self.by_uuid[uuid.value], True)
        bus = device.attributes.get(PCI_BUS_ID)
        if bus is not None and isinstance(bus.value, str):
            try:
                slot = self.by_bus.get(normalize_bus_id(bus.value))
            except GrammarError:
                return None
            return DevicePlace(slot, True) if slot is not None else None
        return None


def node_topology(node: Node, contract: Contract = DEFAULT_CONTRACT) -> NodeTopology | None:
    text = node.annotations.get(contract.topology_annotation)
    if not text:
        return None
    try:
        annotation = parse_topology_annotation(text)
    except ContractError:
        return None
    slots = []
    for gpu in annotation.gpus:
        try:
            bus = normalize_bus_id(gpu.pci_bus_id)
        except GrammarError:
            bus = None
        slot = GpuSlot(gpu.index, gpu.numa_node, gpu.nvlink_domain, gpu.health != "failed")
        slots.append((slot, gpu.uuid, bus))
    return NodeTopology(slots)


def level_of(gpus: Sequence[GpuSlot]) -> int:
    """How aligned a set of GPUs is (LEVEL_* of gputopo.scheduler.gpu_alloc)."""
    domains = {NodeGpuLayout.domain_key(g) for g in gpus}
    numas = {g.numa_node for g in gpus}
    if len(domains) <= 1 and len(numas) <= 1:
        return LEVEL_ALIGNED
    if len(domains) <= 1:
        return LEVEL_NVLINK
    if len(numas) <= 1:
        return LEVEL_NUMA
    return LEVEL_SPREAD


def preference_order(
    candidates: Sequence[Device],
    count: int,
    places: dict[Device, DevicePlace | None],
    busy_gpus: frozenset[int],
) -> list[Device]:
    """The candidates, the preferred ``count`` of them first, then the rest by closeness.

    Whole GPUs: the device plugin's preferred set over the candidates' GPUs leads; the others
    follow in the order of their group (same aligned group first) then index. MIG devices: on
    GPUs that are already partly used first (keeps whole GPUs whole), then on the GPU with the
    fewest candidates (best fit). Devices the annotation does not know keep the slice order,
    after those it knows.
    """
    known = [d for d in candidates if places.get(d) is not None]
    unknown = [d for d in candidates if places.get(d) is None]
    whole = [d for d in known if _place(places, d).whole]
    parts = [d for d in known if not _place(places, d).whole]
    ordered: list[Device] = []
    if whole:
        by_index: dict[int, list[Device]] = {}
        for device in whole:
            by_index.setdefault(_place(places, device).gpu.index, []).append(device)
        slots = [_place(places, devices[0]).gpu for devices in by_index.values()]
        choice = preferred_allocation(slots, min(count, len(slots)))
        chosen = choice.gpus if choice is not None else ()
        lead = {i: rank for rank, i in enumerate(chosen)}
        anchor = next((s for s in slots if s.index in lead), None)

        def rank(device: Device) -> tuple[int, int, int]:
            slot = _place(places, device).gpu
            if slot.index in lead:
                return (0, lead[slot.index], 0)
            near = anchor is not None and NodeGpuLayout.domain_key(slot) == (
                NodeGpuLayout.domain_key(anchor)
            )
            return (1 if near else 2, slot.index, 0)

        ordered.extend(sorted(whole, key=rank))
    if parts:
        per_gpu: dict[int, int] = {}
        for device in parts:
            index = _place(places, device).gpu.index
            per_gpu[index] = per_gpu.get(index, 0) + 1
        position = {id(d): i for i, d in enumerate(parts)}

        def mig_rank(device: Device) -> tuple[int, int, int, int]:
            index = _place(places, device).gpu.index
            return (0 if index in busy_gpus else 1, per_gpu[index], index, position[id(device)])

        ordered.extend(sorted(parts, key=mig_rank))
    return ordered + unknown


def _place(places: dict[Device, DevicePlace | None], device: Device) -> DevicePlace:
    place = places[device]
    assert place is not None
    return place
