"""Machine profiles as values: the raw facts of one GPU machine (format: docs/profiles.md).

The fake ``pynvml`` and the fake sysfs tree are both built from one :class:`MachineProfile`, so
the two always agree. These are plain frozen values; :mod:`gputopo.mocks.profile` reads them from
YAML and validates them once (types, references, MIG placements, NVLink symmetry). The limits
both sides share live here too: how many devices a profile may declare (:data:`LIMITS`) and which
names may become sysfs path components (:func:`unsafe_name_reason`).
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gputopo.core.decode import wire
from gputopo.core.grammar import split_bus_id
from gputopo.mocks import mig as mig_tables

MIB = 1024 * 1024

ARCHITECTURES = {
    "kepler": 2,
    "maxwell": 3,
    "pascal": 4,
    "volta": 5,
    "turing": 6,
    "ampere": 7,
    "ada": 8,
    "hopper": 9,
    "blackwell": 10,
}

FABRIC_STATES = {"not_supported": 0, "not_started": 1, "in_progress": 2, "completed": 3}

NVIDIA_VENDOR = 0x10DE
MELLANOX_VENDOR = 0x15B3

INT64_MAX: Final = 2**63 - 1
MAX_NVLINKS: Final = 36  # NVML_NVLINK_MAX_LINKS

# How many of each a profile may declare (docs/operations.md, "Limits"). Real NVML machines
# have at most a few dozen GPUs per node (DGX-2 and HGX-2: 16) and about as many NICs and
# NVSwitches, and at most a few dozen NUMA nodes (8 sockets with sub-NUMA clustering, CXL
# memory); the caps leave room for that while bounding the fake NVML, the fake sysfs tree and
# the parser's cross-checks, which look at every pair of devices.
LIMITS: Final[Mapping[str, int]] = types.MappingProxyType(
    {
        "gpus": 64,
        "nics": 64,
        "nvswitches": 64,
        "pci.switches": 128,
        "numa": 64,
        "netdevs": 16,
    }
)

# A name the fake sysfs tree uses as one path component (an RDMA device, a netdev, a driver):
# letters, digits and ``_.:@+-``, not starting with a dot or dash, at most 64 characters
# (IB_DEVICE_NAME_MAX; netdevs stop at 15), so it can never be ``..``, hold a ``/`` or a NUL,
# or name anything outside the directory it is joined to.
_PATH_COMPONENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,63}")


def unsafe_name_reason(name: object) -> str | None:
    """Why ``name`` is not a safe sysfs path component, or None when it is one."""
    if not isinstance(name, str) or not name:
        return f"expected a non-empty name, got {name!r}"
    if _PATH_COMPONENT.fullmatch(name) is None:
        shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
        return (
            f"{shown} is not a safe name (letters, digits and _.:@+- only, not starting "
            "with . or -, at most 64 characters)"
        )
    return None


@dataclass(frozen=True)
class InjectedError:
    """An NVML error a call raises: always (``times`` None) or for the next ``times`` calls."""

    error: str  # NVML error name without prefix, e.g. "NOT_SUPPORTED"
    times: int | None = None


@dataclass(frozen=True)
class NodeSpec:
    hostname: str
    product_name: str | None = None
    vendor: str | None = None


@dataclass(frozen=True)
class DriverSpec:
    version: str = "550.54.15"
    cuda_version: int = 12040
    nvml_version: str = "12.550.54.15"


@dataclass(frozen=True)
class NvmlSpec:
    load_error: str | None = None
    init_error: str | None = None
    errors: Mapping[str, InjectedError] = field(default_factory=dict)


@dataclass(frozen=True)
class NumaNodeSpec:
    id: int
    cpus: tuple[int, ...]
    memory_mib: int
    distances: tuple[int, ...]

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


@dataclass(frozen=True)
class PcieSwitchSpec:
    name: str
    upstream_bus_id: str  # the switch's upstream port
    parent: str  # a root-port bus id or another switch's name
    device_id: int = 0xC010
    ports: Mapping[str, str] = field(default_factory=dict)  # child bus id -> downstream port


@dataclass(frozen=True)
class PcieLinkSpec:
    gen: int
    gen_max: int
    width: int
    width_max: int


@dataclass(frozen=True)
class NvlinkSpec:
    link: int
    version: int  # NVML nvmlNvlinkVersion_t value
    remote_type: str  # "gpu" or "nvswitch"
    remote_bus_id: str
    active: bool = True


@dataclass(frozen=True)
class ComputeInstanceSpec:
    id: int
    slices: int
    placement_start: int


@dataclass(frozen=True)
class GpuInstanceSpec:
    id: int
    profile: str
    placement_start: int
    compute_instances: tuple[ComputeInstanceSpec, ...]


@dataclass(frozen=True)
class MigSpec:
    capable: bool = False
    enabled: bool = False
    pending: bool = False
    table: str | None = None
    instances: tuple[GpuInstanceSpec, ...] = ()

    def mig_table(self) -> mig_tables.MigTable | None:
        return mig_tables.TABLES.get(self.table) if self.table else None


@dataclass(frozen=True)
class FabricSpec:
    cluster_uuid: str
    clique_id: int
    state: str = "completed"
    status: str = "SUCCESS"  # or an NVML error name


# Counters and page addresses are never negative; the profile parser decodes these sections
# straight from their dataclasses (gputopo.core.decode), so the bound lives with the field.
_COUNT = wire(minimum=0)


@dataclass(frozen=True)
class EccSpec:
    volatile_corrected: int = field(default=0, metadata=_COUNT)
    volatile_uncorrected: int = field(default=0, metadata=_COUNT)
    aggregate_corrected: int = field(default=0, metadata=_COUNT)
    aggregate_uncorrected: int = field(default=0, metadata=_COUNT)


@dataclass(frozen=True)
class RetiredPagesSpec:
    single_bit: tuple[int, ...] = field(default=(), metadata=_COUNT)
    double_bit: tuple[int, ...] = field(default=(), metadata=_COUNT)
    pending: bool = False


@dataclass(frozen=True)
class RemappedRowsSpec:
    correctable: int = field(default=0, metadata=_COUNT)
    uncorrectable: int = field(default=0, metadata=_COUNT)
    pending: bool = False
    failure: bool = False


@dataclass(frozen=True)
class HealthSpec:
    ecc: EccSpec | None = field(default_factory=EccSpec)
    retired_pages: RetiredPagesSpec | None = None
    remapped_rows: RemappedRowsSpec | None = None
    throttle_reasons: int = 0
    xid_events: tuple[int, ...] = ()


@dataclass(frozen=True)
class MetricsSpec:
    """Readings; a sequence advances one step per call and then repeats its last value."""

    utilization_gpu: tuple[int, ...] = (0,)
    utilization_memory: tuple[int, ...] = (0,)
    memory_used_mib: tuple[int, ...] = (0,)
    temperature_c: tuple[int, ...] = (35,)
    power_w: tuple[float, ...] = (70.0,)
    power_limit_w: float = 300.0


@dataclass(frozen=True)
class GpuSpec:
    bus_id: str  # normalised "0000:18:00.0"
    name: str
    uuid: str
    serial: str
    memory_mib: int
    compute_capability: tuple[int, int]
    architecture: str
    pci_device_id: int
    pci_subsystem_id: int
    pcie: PcieLinkSpec
    numa_node: int
    memory_numa_node: int | None = None
    parent: str | None = None
    nvlinks: tuple[NvlinkSpec, ...] | None = None  # None: no NVLink hardware
    mig: MigSpec = field(default_factory=MigSpec)
    fabric: FabricSpec | None = None
    health: HealthSpec = field(default_factory=HealthSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    errors: Mapping[str, InjectedError] = field(default_factory=dict)
    lost: bool = False
    hidden_from_nvml: bool = False
    sysfs_driver: str | None = "nvidia"
    vga: bool = False  # PCI class 0x030000 instead of 0x030200


@dataclass(frozen=True)
class NicSpec:
    name: str  # ibdev, e.g. "mlx5_0"
    bus_id: str
    netdevs: tuple[str, ...]
    link_layer: str  # "infiniband" or "ethernet"
    numa_node: int
    parent: str | None = None
    pci_device_id: int = 0x1021
    pcie: PcieLinkSpec = PcieLinkSpec(5, 5, 16, 16)
    sysfs_driver: str = "mlx5_core"


@dataclass(frozen=True)
class NvswitchSpec:
    bus_id: str
    numa_node: int
    parent: str | None = None
    pci_device_id: int = 0x22A3
    in_sysfs: bool = True


@dataclass(frozen=True)
class MachineProfile:
    name: str
    source: str
    node: NodeSpec
    description: str = ""
    driver: DriverSpec = field(default_factory=DriverSpec)
    nvml: NvmlSpec = field(default_factory=NvmlSpec)
    numa_nodes: tuple[NumaNodeSpec, ...] = ()
    switches: tuple[PcieSwitchSpec, ...] = ()
    gpus: tuple[GpuSpec, ...] = ()  # sorted by bus id
    nics: tuple[NicSpec, ...] = ()
    nvswitches: tuple[NvswitchSpec, ...] = ()
    # The kernel knows no NUMA node for PCI devices (single-socket machines without an ACPI
    # SRAT, many VMs): every PCI device's sysfs numa_node says -1 (issue 15 #4).
    pci_numa_unknown: bool = False

    def nvml_gpus(self) -> tuple[GpuSpec, ...]:
        """GPUs NVML enumerates, in NVML index order (ascending PCI bus id)."""
        return tuple(gpu for gpu in self.gpus if not gpu.hidden_from_nvml)

    def gpu_by_bus_id(self, bus_id: str) -> GpuSpec | None:
        for gpu in self.gpus:
            if gpu.bus_id == bus_id:
                return gpu
        return None

    def numa_node(self, node_id: int) -> NumaNodeSpec | None:
        for node in self.numa_nodes:
            if node.id == node_id:
                return node
        return None

    def switch(self, name: str) -> PcieSwitchSpec | None:
        for switch in self.switches:
            if switch.name == name:
                return switch
        return None

    def endpoints(self) -> tuple[tuple[str, str | None], ...]:
        """(bus id, parent) of every PCI endpoint: GPUs, NICs and NVSwitches in sysfs."""
        found: list[tuple[str, str | None]] = [(g.bus_id, g.parent) for g in self.gpus]
        found += [(n.bus_id, n.parent) for n in self.nics]
        found += [(s.bus_id, s.parent) for s in self.nvswitches if s.in_sysfs]
        return tuple(sorted(found))

    def pci_path(self, bus_id: str) -> tuple[str, ...]:
        """Bus ids from the root port down to and including the device (sysfs nesting)."""
        parent = dict(self.endpoints()).get(bus_id)
        if bus_id not in dict(self.endpoints()):
            raise KeyError(bus_id)
        if parent is None:
            return (generated_root_port(bus_id), bus_id)
        return (*self._bridge_path(bus_id, parent), bus_id)

    def _bridge_path(self, child: str, parent: str) -> tuple[str, ...]:
        switch = self.switch(parent)
        if switch is None:  # a root port
            return (parent,)
        downstream = self.downstream_port(switch, child)
        return (
            *self._bridge_path(switch.upstream_bus_id, switch.parent),
            switch.upstream_bus_id,
            downstream,
        )

    def switch_children(self, switch: PcieSwitchSpec) -> tuple[str, ...]:
        children = [bus for bus, parent in self.endpoints() if parent == switch.name]
        children += [s.upstream_bus_id for s in self.switches if s.parent == switch.name]
        return tuple(sorted(children))

    def downstream_port(self, switch: PcieSwitchSpec, child: str) -> str:
        """The switch's downstream port above ``child``: bus upstream+1, device = child's rank."""
        if child in switch.ports:
            return switch.ports[child]
        domain, bus, _ = split_bus_id(switch.upstream_bus_id)
        taken = {p for c, p in switch.ports.items() if c in self.switch_children(switch)}
        free = (f"{domain:04x}:{bus + 1:02x}:{n:02x}.0" for n in range(256))
        generated = [port for port in free if port not in taken]
        implicit = [c for c in self.switch_children(switch) if c not in switch.ports]
        return generated[implicit.index(child)]

    def switch_chain(self, bus_id: str) -> tuple[str, ...]:
        """Names of the PCIe switches above a device, nearest first."""
        parent = dict(self.endpoints())[bus_id]
        chain: list[str] = []
        while parent is not None:
            switch = self.switch(parent)
            if switch is None:
                break
            chain.append(switch.name)
            parent = switch.parent
        return tuple(chain)

    def host_bridge(self, bus_id: str) -> str:
        """``pci0000:15``: the root complex above a device."""
        domain, bus, _ = split_bus_id(self.pci_path(bus_id)[0])
        return f"pci{domain:04x}:{bus:02x}"


def generated_root_port(bus_id: str) -> str:
    """Root port above a device that names no parent: device 01.0 on the bus below it."""
    domain, bus, _ = split_bus_id(bus_id)
    return f"{domain:04x}:{max(bus - 1, 0):02x}:01.0"
