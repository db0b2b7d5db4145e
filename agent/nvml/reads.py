"""What NVML says a GPU *is*, read once per discovery: identity, memory, architecture, PCIe, NUMA
and CPU affinity, NVLinks and their peers, MIG layout, fabric clique, and the P2P level between
each pair of GPUs.

Every query may fail on some GPU (NOT_SUPPORTED on consumer cards, GPU_IS_LOST mid-call): the
field becomes ``None`` and the rest of the GPU is still read.
"""

from __future__ import annotations

import ctypes
import uuid as uuid_module
from dataclasses import dataclass, field, replace
from typing import Any

from gputopo.agent.nvml.mig import read_mig
from gputopo.agent.nvml.session import FUNCTION_NOT_FOUND, GpuQuery, text
from gputopo.agent.sysfs import normalize_bus_id
from gputopo.agent.topology import (
    ComputeCapability,
    DriverInfo,
    FabricInfo,
    HealthSignals,
    MigInfo,
    NvlinkRemote,
    NvmlStatus,
    P2PLevel,
    PcieInfo,
)

# NVML_DEVICE_ARCH_* values to GPU Feature Discovery's family names.
ARCHITECTURE_FAMILIES: dict[int, str] = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada-lovelace",
    9: "hopper",
    10: "blackwell",
    13: "rubin",  # NVML_DEVICE_ARCH_RUBIN (11, 12 are the DLA engines)
}

# NVML_TOPOLOGY_* common-ancestor levels.
P2P_LEVELS: dict[int, P2PLevel] = {
    0: P2PLevel.INTERNAL,
    10: P2PLevel.SINGLE,
    20: P2PLevel.MULTIPLE,
    30: P2PLevel.HOSTBRIDGE,
    40: P2PLevel.NODE,
    50: P2PLevel.SYSTEM,
}

# nvmlDeviceGetNvLinkVersion returns the nvmlNvlinkVersion_t enum, not the generation (an A100
# reports 5, "NVLink 3.1"): NVML_NVLINK_VERSION_1_0 = 1, 2_0 = 2, 2_2 = 3, 3_0 = 4, 3_1 = 5,
# 4_0 = 6, 5_0 = 7, 6_0 = 8. The model stores the generation.
NVLINK_VERSION_TO_GENERATION: dict[int, int] = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 5, 8: 6}

# Per-direction bandwidth of one NVLink, GB/s, by generation (NVIDIA's published numbers: P100
# NVLink1 20 GB/s; V100 NVLink2, A100 NVLink3 and H100 NVLink4 25 GB/s; Blackwell NVLink5 50).
# Not the line rate `nvidia-smi nvlink -s` prints (25.781, 26.562, 53.125): links x these x 2 is
# the datasheet's per-GPU figure users compare against (docs/discovery.md says why).
NVLINK_BANDWIDTH_GBPS: dict[int, float] = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}


# 64-bit words of the NUMA node set asked for (256 nodes).
_NODE_SET_WORDS = 4


def family_from_compute_capability(capability: ComputeCapability) -> str | None:
    """GFD's rule: the architecture family follows from the CUDA compute capability."""
    major, minor = capability.major, capability.minor
    families = {3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper", 10: "blackwell"}
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    if major == 12:
        return "blackwell"
    return families.get(major)


def cpus_from_affinity(words: Any) -> tuple[int, ...]:
    """nvmlDeviceGetCpuAffinity's 64-bit words to a CPU list (bit b of word w is CPU 64*w+b)."""
    cpus = []
    for word_index, word in enumerate(words):
        value = int(word)
        bit = 0
        while value:
            if value & 1:
                cpus.append(word_index * 64 + bit)
            value >>= 1
            bit += 1
    return tuple(cpus)


@dataclass(frozen=True)
class NvmlLink:
    """One NVLink as NVML reports it; the peer GPU index is resolved by discovery."""

    link: int
    active: bool | None
    version: int | None = None  # NVLink generation (decoded from NVML's version enum)
    remote: NvlinkRemote = NvlinkRemote.UNKNOWN
    remote_type_known: bool = False  # False when NVML could not say GPU or NVSwitch
    remote_pci_bus_id: str | None = None
    bandwidth_gbps: float | None = None


@dataclass(frozen=True)
class NvmlGpu:
    """Everything NVML said about one GPU; ``None`` is unknown."""

    index: int
    pci_bus_id: str | None = None
    uuid: str | None = None
    name: str | None = None
    memory_mib: int | None = None
    compute_capability: ComputeCapability | None = None
    architecture: str | None = None
    pcie: PcieInfo = field(default_factory=PcieInfo)
    numa_node: int | None = None
    cpu_affinity: tuple[int, ...] = ()
    memory_affinity: tuple[int, ...] = ()  # NUMA nodes of nvmlDeviceGetMemoryAffinity (NODE scope)
    nvlinks: tuple[NvmlLink, ...] = ()
    p2p: dict[int, P2PLevel] = field(default_factory=dict)
    mig: MigInfo = field(default_factory=MigInfo)
    fabric: FabricInfo | None = None
    signals: HealthSignals = field(default_factory=HealthSignals)
    errors: tuple[str, ...] = ()  # "<query>: <error>" for every failed query, for diagnostics


@dataclass(frozen=True)
class NvmlSnapshot:
    status: NvmlStatus
    driver: DriverInfo = field(default_factory=DriverInfo)
    gpus: tuple[NvmlGpu, ...] = ()
    handle_errors: tuple[tuple[int, str], ...] = ()  # (index, error) where no handle was had


def read_driver_info(module: Any) -> DriverInfo:
    """Driver, CUDA driver and NVML versions; each unknown if its query fails."""
    query = GpuQuery(module, None)
    driver = query.call("nvmlSystemGetDriverVersion")
    cuda = query.call("nvmlSystemGetCudaDriverVersion_v2")
    if cuda is None:
        cuda = query.call("nvmlSystemGetCudaDriverVersion")
    nvml_version = query.call("nvmlSystemGetNVMLVersion")
    cuda_text = None
    if cuda is not None:
        cuda_int = int(cuda)
        cuda_text = f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}"
    return DriverInfo(
        driver_version=text(driver) if driver is not None else None,
        cuda_driver_version=cuda_text,
        nvml_version=text(nvml_version) if nvml_version is not None else None,
    )


def read_gpu(
    query: GpuQuery, index: int, cpu_set_words: int, link_counts: dict[int, int]
) -> NvmlGpu:
    """The static facts of the GPU behind ``query``; its health signals and the query's errors
    are the caller's to add, after further queries on the same GPU. ``link_counts`` (GPU index
    -> NVLinks) learns this GPU's link count unless the GPU was lost while its links were read."""
    pci = query.device("nvmlDeviceGetPciInfo")
    bus_id = None
    if pci is not None:
        raw = getattr(pci, "busId", None) or getattr(pci, "busIdLegacy", None)
        if raw:
            bus_id = normalize_bus_id(text(raw))
    uuid = query.device("nvmlDeviceGetUUID")
    name = query.device("nvmlDeviceGetName")
    memory = query.device("nvmlDeviceGetMemoryInfo")
    memory_bytes = int(memory.total) if memory is not None else None
    capability = None
    cc = query.device("nvmlDeviceGetCudaComputeCapability")
    if cc is not None:
        capability = ComputeCapability(int(cc[0]), int(cc[1]))
    architecture = None
    if capability is not None:
        architecture = family_from_compute_capability(capability)
    if architecture is None:
        arch = query.device("nvmlDeviceGetArchitecture")
        if arch is not None:
            architecture = ARCHITECTURE_FAMILIES.get(int(arch))
    pcie = PcieInfo(
        gen_current=_positive(query.device("nvmlDeviceGetCurrPcieLinkGeneration")),
        gen_max=_positive(query.device("nvmlDeviceGetMaxPcieLinkGeneration")),
        width_current=_positive(query.device("nvmlDeviceGetCurrPcieLinkWidth")),
        width_max=_positive(query.device("nvmlDeviceGetMaxPcieLinkWidth")),
    )
    numa = query.device("nvmlDeviceGetNumaNodeId")
    affinity = query.device("nvmlDeviceGetCpuAffinity", cpu_set_words)
    memory_affinity = query.device(
        "nvmlDeviceGetMemoryAffinity",
        _NODE_SET_WORDS,
        int(getattr(query.module, "NVML_AFFINITY_SCOPE_NODE", 0)),
    )
    nvlinks = read_nvlinks(query)
    if not query.lost:
        link_counts[index] = len(nvlinks)
    mig = read_mig(query, memory_bytes)
    fabric = read_fabric(query)
    return NvmlGpu(
        index=index,
        pci_bus_id=bus_id,
        uuid=text(uuid) if uuid is not None else None,
        name=text(name) if name is not None else None,
        memory_mib=memory_bytes // (1024 * 1024) if memory_bytes is not None else None,
        compute_capability=capability,
        architecture=architecture,
        pcie=pcie,
        numa_node=int(numa) if numa is not None and int(numa) >= 0 else None,
        cpu_affinity=cpus_from_affinity(affinity) if affinity is not None else (),
        memory_affinity=cpus_from_affinity(memory_affinity) if memory_affinity is not None else (),
        nvlinks=nvlinks,
        mig=mig,
        fabric=fabric,
    )


# nvmlFieldValue_t.valueType (NVML_VALUE_TYPE_*) -> the c_nvmlValue_t member holding the value.
_FIELD_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def field_value(query: GpuQuery, field_id: int) -> int | None:
    """One NVML field value of this GPU (``nvmlDeviceGetFieldValues``): None when the call or
    the field itself (its own ``nvmlReturn``) fails."""
    values = query.device("nvmlDeviceGetFieldValues", [field_id])
    if values is None or len(values) < 1 or int(values[0].nvmlReturn) != 0:
        return None
    value = values[0]
    value_type = int(value.valueType)
    if not 0 <= value_type < len(_FIELD_VALUE_MEMBERS):
        return None
    return int(getattr(value.value, _FIELD_VALUE_MEMBERS[value_type]))


def nvlink_count(query: GpuQuery) -> int | None:
    """How many NVLinks the GPU has, from the field NVML_FI_DEV_NVLINK_LINK_COUNT, as
    nvidia-smi and DCGM take it; None where the driver cannot say."""
    field_id = int(getattr(query.module, "NVML_FI_DEV_NVLINK_LINK_COUNT", 91))
    return field_value(query, field_id)


def read_nvlinks(query: GpuQuery) -> tuple[NvmlLink, ...]:
    """Each NVLink's state, generation and, when up, what is at its other end. The links are
    the field value's count; where that is unknown, link numbers are walked until NVML answers
    INVALID_ARGUMENT (past the last link) or NOT_SUPPORTED (no NVLink)."""
    count = nvlink_count(query)
    if query.lost:
        return ()
    max_links = int(getattr(query.module, "NVML_NVLINK_MAX_LINKS", 18))
    links = []
    for link in range(min(count, max_links) if count is not None else max_links):
        state = query.probe("nvmlDeviceGetNvLinkState", link)
        if state is None:
            break
        active = bool(int(state))
        version = query.device("nvmlDeviceGetNvLinkVersion", link)
        generation = NVLINK_VERSION_TO_GENERATION.get(int(version)) if version is not None else None
        remote = NvlinkRemote.UNKNOWN
        remote_known = False
        remote_bus_id = None
        if active:
            remote_type = query.device("nvmlDeviceGetNvLinkRemoteDeviceType", link)
            if remote_type is not None:
                remote_known = True
                remote = {0: NvlinkRemote.GPU, 2: NvlinkRemote.NVSWITCH}.get(
                    int(remote_type), NvlinkRemote.UNKNOWN
                )
            remote_pci = query.device("nvmlDeviceGetNvLinkRemotePciInfo", link)
            if remote_pci is not None:
                raw = getattr(remote_pci, "busId", None) or getattr(remote_pci, "busIdLegacy", None)
                if raw:
                    remote_bus_id = normalize_bus_id(text(raw))
        links.append(
            NvmlLink(
                link=link,
                active=active,
                version=generation,
                remote=remote,
                remote_type_known=remote_known,
                remote_pci_bus_id=remote_bus_id,
                bandwidth_gbps=NVLINK_BANDWIDTH_GBPS.get(generation)
                if generation is not None
                else None,
            )
        )
    return tuple(links)


# nvmlGpuFabricState_t values.
_FABRIC_STATES = {1: "not_started", 2: "in_progress", 3: "completed"}
_FABRIC_UUID_LEN = 16  # NVML_GPU_FABRIC_UUID_LEN


def _fabric_struct(structure: Any) -> bool:
    """Whether a binding's fabric struct has NVML's layout: nvidia-ml-py before 12.570 declared
    ``clusterUuid`` as 80 bytes, so every field after it was read from the wrong place."""
    field_info = getattr(structure, "clusterUuid", None)
    return field_info is not None and int(getattr(field_info, "size", 0)) == _FABRIC_UUID_LEN


def read_fabric(query: GpuQuery) -> FabricInfo | None:
    """The multi-node NVLink fabric (cluster UUID, clique) the GPU has joined, if any.

    The versioned call (``nvmlDeviceGetGpuFabricInfoV``, v2 struct, R550 on) first; the
    deprecated unversioned one where the driver lacks it. Registration is done only when the
    state is COMPLETED *and* its status SUCCESS *and* the cluster UUID is not all zeros: a
    completed registration that failed is ``state="failed"`` and gives no clique.
    """
    if query.lost:
        return None
    module = query.module
    info: Any = None
    versioned = getattr(module, "c_nvmlGpuFabricInfoV_t", None)
    version = getattr(module, "nvmlGpuFabricInfo_v2", None)
    if versioned is not None and version is not None and _fabric_struct(versioned):
        info = versioned()
        info.version = version
        # The real binding hands the argument straight to C, so it takes a pointer.
        query.device("nvmlDeviceGetGpuFabricInfoV", ctypes.byref(info))
        if query.last_code == FUNCTION_NOT_FOUND:
            info = None
        elif query.last_code is not None:
            return None
    if info is None:
        legacy = getattr(module, "c_nvmlGpuFabricInfo_t", None)
        if legacy is None or not _fabric_struct(legacy) or query.lost:
            return None
        info = legacy()
        query.device("nvmlDeviceGetGpuFabricInfo", ctypes.byref(info))
        if query.last_code is not None:
            return None
    state = _FABRIC_STATES.get(int(info.state) & 0xFF)  # a C unsigned char
    if state is None:
        return None  # NVML_GPU_FABRIC_STATE_NOT_SUPPORTED: no multi-node fabric
    offset = type(info).clusterUuid.offset
    raw_uuid = ctypes.string_at(ctypes.addressof(info) + offset, _FABRIC_UUID_LEN)
    cluster_uuid = str(uuid_module.UUID(bytes=raw_uuid)) if any(raw_uuid) else None
    if state != "completed":
        return FabricInfo(cluster_uuid=cluster_uuid, clique_id=None, state=state)
    if int(info.status) != 0 or cluster_uuid is None:
        return FabricInfo(cluster_uuid=cluster_uuid, clique_id=None, state="failed")
    return FabricInfo(cluster_uuid=cluster_uuid, clique_id=int(info.cliqueId), state=state)


def with_p2p_levels(
    module: Any, gpus: list[NvmlGpu], handles: list[tuple[int, Any]]
) -> list[NvmlGpu]:
    """``gpus`` with the P2P level to every other GPU, asked once per pair; lost GPUs are
    skipped."""
    levels: dict[int, dict[int, P2PLevel]] = {index: {} for index, _ in handles}
    lost = {gpu.index for gpu in gpus if gpu.signals.lost}
    for position, (index_a, handle_a) in enumerate(handles):
        if index_a in lost:
            continue
        for index_b, handle_b in handles[position + 1 :]:
            if index_b in lost:
                continue
            query = GpuQuery(module, handle_a)
            level = query.device("nvmlDeviceGetTopologyCommonAncestor", handle_b)
            if level is None or int(level) not in P2P_LEVELS:
                continue
            levels[index_a][index_b] = P2P_LEVELS[int(level)]
            levels[index_b][index_a] = P2P_LEVELS[int(level)]
    return [replace(gpu, p2p=dict(sorted(levels.get(gpu.index, {}).items()))) for gpu in gpus]


def _positive(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    return number if number > 0 else None
