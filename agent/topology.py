"""The typed topology model: one immutable snapshot of a node's GPUs, fabric and NUMA layout.

Everything downstream (labels, taints, the topology annotation, NodeResourceTopology, metrics,
the scheduler) reads this model and nothing else, so discovery is the only place that knows
about NVML or sysfs. Values are frozen dataclasses; ``None`` always means "unknown" (the query
failed or is not supported on this GPU), never "zero" or "false".

The JSON form (``to_json``/``from_json``) carries ``schema_version``; a reader refuses a newer
major version instead of guessing.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gputopo.core.decode import DecodeError, decode

SCHEMA_VERSION = 1


class TopologyError(ValueError):
    """A topology document cannot be read (wrong schema version, wrong field type)."""


class P2PLevel(enum.StrEnum):
    """How two GPUs reach each other over PCIe: NVML's common-ancestor levels, best first."""

    INTERNAL = "internal"  # same board (multi-GPU boards)
    SINGLE = "single"  # one PCIe switch between them
    MULTIPLE = "multiple"  # several PCIe switches, no host bridge
    HOSTBRIDGE = "hostbridge"  # the same host bridge (root complex)
    NODE = "node"  # host bridges on the same NUMA node
    SYSTEM = "system"  # across the SMP interconnect between NUMA nodes


class Health(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


class Interconnect(enum.StrEnum):
    """The node's GPU interconnect summary, the best fabric any GPU pair has."""

    NVSWITCH = "nvswitch"
    NVLINK = "nvlink"
    PCIE = "pcie"
    NONE = "none"  # no GPU at all


class NvlinkRemote(enum.StrEnum):
    GPU = "gpu"
    NVSWITCH = "nvswitch"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ComputeCapability:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class PcieInfo:
    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None


@dataclass(frozen=True)
class NvlinkLink:
    link: int
    active: bool | None
    version: int | None = None
    remote: NvlinkRemote = NvlinkRemote.UNKNOWN
    remote_pci_bus_id: str | None = None
    remote_gpu: int | None = None  # index of the peer GPU when ``remote`` is GPU
    bandwidth_gbps: float | None = None  # per direction, GB/s


@dataclass(frozen=True)
class P2PLink:
    gpu: int  # index of the other GPU
    level: P2PLevel


@dataclass(frozen=True)
class ComputeInstance:
    id: int
    profile: str  # e.g. "1g.10gb" (whole GPU instance) or "1c.3g.40gb"
    slices: int | None = None
    multiprocessors: int | None = None
    uuid: str | None = None  # the MIG device UUID


@dataclass(frozen=True)
class GpuInstance:
    id: int
    profile: str  # e.g. "3g.40gb"
    profile_id: int | None = None
    placement_start: int | None = None
    placement_size: int | None = None
    slices: int | None = None
    memory_mib: int | None = None
    multiprocessors: int | None = None
    copy_engines: int | None = None
    decoders: int | None = None
    encoders: int | None = None
    jpegs: int | None = None
    ofas: int | None = None
    compute_instances: tuple[ComputeInstance, ...] = ()


@dataclass(frozen=True)
class MigInfo:
    capable: bool | None = None
    enabled: bool | None = None  # current mode
    pending: bool | None = None  # mode after the next GPU reset
    instances: tuple[GpuInstance, ...] = ()


@dataclass(frozen=True)
class FabricInfo:
    cluster_uuid: str | None
    clique_id: int | None
    state: str | None = None  # "completed", "in_progress", "not_started", "not_supported"


@dataclass(frozen=True)
class XidEvent:
    code: int
    count: int = 1


@dataclass(frozen=True)
class EccCounts:
    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None


@dataclass(frozen=True)
class MemoryRepair:
    """Retired pages (pre-Ampere) or remapped rows (Ampere and later); unknown when unsupported."""

    retired_pages_single_bit: int | None = None
    retired_pages_double_bit: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None


@dataclass(frozen=True)
class HealthSignals:
    lost: bool = False
    xid_events: tuple[XidEvent, ...] = ()  # every XID since the agent started (a counter)
    # codes among xid_events that no longer count for health: not seen within the XID window
    # and not among the XIDs that need a GPU reset (agent.nvml.XidDecay)
    stale_xids: tuple[int, ...] = ()
    ecc: EccCounts = field(default_factory=EccCounts)
    memory_repair: MemoryRepair = field(default_factory=MemoryRepair)
    throttle_reasons: tuple[str, ...] | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    nvlinks_down: int = 0


@dataclass(frozen=True)
class Gpu:
    index: int
    pci_bus_id: str  # normalised "0000:18:00.0", lower case
    uuid: str | None = None
    name: str | None = None
    memory_mib: int | None = None
    compute_capability: ComputeCapability | None = None
    architecture: str | None = None  # GFD family name: "hopper", "ampere", "ada-lovelace", ...
    pcie: PcieInfo = field(default_factory=PcieInfo)
    pci_path: tuple[str, ...] = ()  # bridges from the root port down to the GPU (sysfs)
    pcie_switch: str | None = None  # the nearest PCIe switch's upstream port, if any
    pci_class: str | None = None  # PCI class code, e.g. "0x030200" (3D controller = compute mode)
    numa_node: int | None = None  # the CPU-local node the GPU's PCIe link attaches to
    memory_numa_node: int | None = None  # the GPU memory's own (CPU-less) node on Grace systems
    cpu_affinity: tuple[int, ...] = ()
    nvlinks: tuple[NvlinkLink, ...] = ()
    p2p: tuple[P2PLink, ...] = ()
    mig: MigInfo = field(default_factory=MigInfo)
    fabric: FabricInfo | None = None
    nvlink_domain: int | None = None
    health: Health = Health.OK
    health_reasons: tuple[str, ...] = ()
    health_signals: HealthSignals = field(default_factory=HealthSignals)
    # "<NVML call>: <error>" for every NVML query that failed at this discovery (NoPermission on
    # a MIG GPU without the monitor capability, ...): shown by discover, exported as a metric.
    nvml_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PciOnlyGpu:
    """An NVIDIA GPU on the PCI bus that NVML does not describe (no driver, lost, failed init)."""

    pci_bus_id: str
    device_id: str | None = None  # PCI device id, e.g. "0x2330"
    pci_class: str | None = None
    numa_node: int | None = None
    driver: str | None = None  # bound kernel driver, None if unbound
    reason: str = ""


@dataclass(frozen=True)
class NvlinkDomain:
    """GPUs mutually reachable over NVLink (through NVSwitch or direct bridges); at least two."""

    id: int
    gpus: tuple[int, ...]
    via: Interconnect  # NVSWITCH or NVLINK


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...] = ()  # empty for CPU-less nodes (e.g. GPU memory on Grace systems)
    memory_total_bytes: int | None = None
    distances: tuple[int, ...] = ()  # distances[j] is the distance to numa_nodes[j]
    gpus: tuple[int, ...] = ()
    nics: tuple[str, ...] = ()


@dataclass(frozen=True)
class RdmaNic:
    name: str  # e.g. "mlx5_0"
    pci_bus_id: str
    numa_node: int | None = None
    netdevs: tuple[str, ...] = ()
    pcie_switch: str | None = None
    # GPUs whose lowest common PCIe ancestor with the NIC is a switch (PIX or PXB): the GPUs
    # GPUDirect RDMA serves through this NIC, as NCCL's default rule has it.
    local_gpus: tuple[int, ...] = ()
    pci_path: tuple[str, ...] = ()  # bridges from the root port down to the NIC (sysfs)


@dataclass(frozen=True)
class NodeInfo:
    hostname: str
    product_name: str | None = None  # DMI product name, e.g. "DGXH100"
    vendor: str | None = None  # DMI system vendor


@dataclass(frozen=True)
class DriverInfo:
    driver_version: str | None = None  # e.g. "550.54.15"
    cuda_driver_version: str | None = None  # e.g. "12.4"
    nvml_version: str | None = None


@dataclass(frozen=True)
class NvmlStatus:
    available: bool
    error: str | None = None  # why NVML could not load or initialise


@dataclass(frozen=True)
class NodeTopology:
    node: NodeInfo
    nvml: NvmlStatus
    driver: DriverInfo = field(default_factory=DriverInfo)
    gpus: tuple[Gpu, ...] = ()
    pci_only_gpus: tuple[PciOnlyGpu, ...] = ()
    nvlink_domains: tuple[NvlinkDomain, ...] = ()
    numa_nodes: tuple[NumaNode, ...] = ()
    rdma_nics: tuple[RdmaNic, ...] = ()
    interconnect: Interconnect = Interconnect.NONE
    schema_version: int = SCHEMA_VERSION
    # What this discovery could not read (an NVML error on one GPU, unreadable sysfs); empty
    # when it fully succeeded. The publisher keeps the last good topology values meanwhile.
    incomplete: tuple[str, ...] = ()

    def gpu(self, index: int) -> Gpu:
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise KeyError(f"no GPU with index {index}")

    def to_dict(self) -> dict[str, Any]:
        result = _encode(self)
        assert isinstance(result, dict)
        return result

    def to_json(self, *, indent: int | None = None) -> str:
        separators = (",", ":") if indent is None else None
        return json.dumps(self.to_dict(), indent=indent, separators=separators, sort_keys=False)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> NodeTopology:
        version = document.get("schema_version")
        if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
            raise TopologyError(
                f"topology schema_version {version!r} is not supported "
                f"(this build reads 1..{SCHEMA_VERSION})"
            )
        try:
            return decode(cls, document, "topology")
        except DecodeError as error:
            raise TopologyError(str(error)) from None

    @classmethod
    def from_json(cls, text: str) -> NodeTopology:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise TopologyError(f"topology is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise TopologyError("topology JSON must be an object")
        return cls.from_dict(document)


def count_nvml_errors(errors: Iterable[str]) -> dict[str, int]:
    """ "<call>: <error>" -> how often it failed, in first-seen order (a MIG GPU without the
    monitor capability fails the same call once per MIG device index)."""
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    return counts


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    return value
