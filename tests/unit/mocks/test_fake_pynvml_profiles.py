"""Each built-in profile's raw facts, read through the fake NVML API the way an adapter would."""

from __future__ import annotations

import ctypes
from types import ModuleType

import pynvml
import pytest

from gputopo.mocks.fake_pynvml import make_fake_pynvml

MIB = 1024 * 1024


def opened(name: str) -> ModuleType:
    fake = make_fake_pynvml(name)
    fake.nvmlInit()
    return fake


def handles(fake: ModuleType) -> list[object]:
    return [fake.nvmlDeviceGetHandleByIndex(i) for i in range(fake.nvmlDeviceGetCount())]


def cpus_of(words: object) -> list[int]:
    return [64 * i + bit for i, word in enumerate(words) for bit in range(64) if word >> bit & 1]  # type: ignore[attr-defined]


def test_dgx_h100_gpus_memory_and_driver() -> None:
    fake = opened("dgx-h100")
    assert fake.nvmlSystemGetDriverVersion().startswith("550.")
    assert fake.nvmlSystemGetCudaDriverVersion() == 12040
    gpus = handles(fake)
    assert len(gpus) == 8
    for handle in gpus:
        assert fake.nvmlDeviceGetName(handle) == "NVIDIA H100 80GB HBM3"
        assert fake.nvmlDeviceGetMemoryInfo(handle).total == 81559 * MIB
        assert fake.nvmlDeviceGetCudaComputeCapability(handle) == (9, 0)
        assert fake.nvmlDeviceGetArchitecture(handle) == pynvml.NVML_DEVICE_ARCH_HOPPER
        assert fake.nvmlDeviceGetCurrPcieLinkGeneration(handle) == 5
        assert fake.nvmlDeviceGetMaxPcieLinkWidth(handle) == 16
        assert fake.nvmlDeviceGetMigMode(handle) == [0, 0]
    bus_ids = [fake.nvmlDeviceGetPciInfo(h).busId for h in gpus]
    assert bus_ids[0] == "00000000:1B:00.0"  # the DGX H100's (Fabric Manager user guide)
    assert [b[9:11] for b in bus_ids] == ["1B", "43", "52", "61", "9D", "C3", "D1", "DF"]


def test_dgx_h100_nvswitch_links_and_numa() -> None:
    fake = opened("dgx-h100")
    gpus = handles(fake)
    for handle in gpus:
        links = [fake.nvmlDeviceGetNvLinkState(handle, link) for link in range(18)]
        assert links == [1] * 18
        assert (
            fake.nvmlDeviceGetNvLinkRemoteDeviceType(handle, 0)
            == pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH
        )
        assert fake.nvmlDeviceGetNvLinkVersion(handle, 0) == pynvml.NVML_NVLINK_VERSION_4_0
        with pytest.raises(pynvml.NVMLError_InvalidArgument):  # past the last link, as NVML
            fake.nvmlDeviceGetNvLinkState(handle, 18)
    assert cpus_of(fake.nvmlDeviceGetCpuAffinity(gpus[0], 4)) == [*range(56), *range(112, 168)]
    assert cpus_of(fake.nvmlDeviceGetCpuAffinity(gpus[7], 4)) == [*range(56, 112), *range(168, 224)]
    level = fake.nvmlDeviceGetTopologyCommonAncestor
    assert level(gpus[0], gpus[1]) == pynvml.NVML_TOPOLOGY_NODE
    assert level(gpus[0], gpus[4]) == pynvml.NVML_TOPOLOGY_SYSTEM
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetNumaNodeId(gpus[0])  # x86: GPUs are not NUMA nodes


def test_dgx_a100_mig_layouts() -> None:
    fake = opened("dgx-a100-mig")
    gpus = handles(fake)
    assert fake.nvmlDeviceGetName(gpus[0]) == "NVIDIA A100-SXM4-80GB"
    modes = [fake.nvmlDeviceGetMigMode(h) for h in gpus]
    assert modes == [[1, 1]] * 4 + [[0, 0]] * 3 + [[0, 1]]

    def mig_names(handle: object) -> list[str]:
        names = []
        for index in range(fake.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except pynvml.NVMLError_NotFound:
                break
            assert fake.nvmlDeviceIsMigDeviceHandle(mig).value == 1
            names.append(fake.nvmlDeviceGetName(mig).rsplit(" ", 1)[1])
        return names

    assert mig_names(gpus[0]) == ["1g.10gb"] * 7
    assert mig_names(gpus[1]) == ["3g.40gb", "2g.20gb", "1g.10gb"]
    assert mig_names(gpus[2]) == ["3g.40gb", "3g.40gb"]
    assert mig_names(gpus[3]) == ["1c.3g.40gb", "2c.3g.40gb"]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(gpus[4], 0)
    cpus = cpus_of(fake.nvmlDeviceGetCpuAffinity(gpus[0], 4))
    assert cpus == [*range(48, 64), *range(176, 192)]  # NUMA 3 in NPS4


def test_dgx_a100_gpu_instance_profiles_and_placements() -> None:
    fake = opened("dgx-a100-mig")
    gpu = fake.nvmlDeviceGetHandleByIndex(1)
    info = fake.nvmlDeviceGetGpuInstanceProfileInfo(gpu, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    assert (info.id, info.sliceCount, info.multiprocessorCount, info.memorySizeMB) == (
        9,
        3,
        42,
        40192,
    )
    instances = (pynvml.c_nvmlGpuInstance_t * 2)()
    count = ctypes.c_uint()
    fake.nvmlDeviceGetGpuInstances(gpu, info.id, instances, ctypes.byref(count))
    assert count.value == 1
    gi = fake.nvmlGpuInstanceGetInfo(instances[0])
    assert (gi.profileId, gi.placement.start, gi.placement.size) == (9, 0, 4)
    cis = (pynvml.c_nvmlComputeInstance_t * 3)()
    fake.nvmlGpuInstanceGetComputeInstances(
        instances[0], pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, cis, ctypes.byref(count)
    )
    assert count.value == 1
    ci = fake.nvmlComputeInstanceGetInfo(cis[0])
    assert (ci.id, ci.placement.size) == (0, 3)
    one_g = fake.nvmlDeviceGetGpuInstanceProfileInfo(gpu, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    assert fake.nvmlDeviceGetGpuInstanceRemainingCapacity(gpu, one_g.id) == 0
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 1)
    attributes = fake.nvmlDeviceGetAttributes(mig)
    assert (
        attributes.multiprocessorCount,
        attributes.gpuInstanceSliceCount,
        attributes.memorySizeMB,
    ) == (28, 2, 19968)
    assert fake.nvmlDeviceGetMemoryInfo(mig).total == 19968 * MIB
    assert fake.nvmlDeviceGetUUID(mig).startswith("MIG-")
    parent = fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert fake.nvmlDeviceGetIndex(parent) == 1


def test_a100_pcie_nvlink_pairs() -> None:
    fake = opened("a100-pcie-nvlink-pairs")
    gpus = handles(fake)
    peers = []
    for handle in gpus:
        states = [fake.nvmlDeviceGetNvLinkState(handle, link) for link in range(3)]
        assert states == [1, 1, 1]
        assert (
            fake.nvmlDeviceGetNvLinkRemoteDeviceType(handle, 0)
            == pynvml.NVML_NVLINK_DEVICE_TYPE_GPU
        )
        peers.append(fake.nvmlDeviceGetNvLinkRemotePciInfo(handle, 0).busId)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):  # past the last link
            fake.nvmlDeviceGetNvLinkState(handle, 3)
    own = [fake.nvmlDeviceGetPciInfo(h).busId for h in gpus]
    assert peers == [own[1], own[0], own[3], own[2]]
    assert fake.nvmlDeviceGetCurrPcieLinkGeneration(gpus[0]) == 4


def test_l4_has_no_nvlink_and_no_mig() -> None:
    fake = opened("l4-pcie")
    gpus = handles(fake)
    assert len(gpus) == 4
    for handle in gpus:
        assert fake.nvmlDeviceGetName(handle) == "NVIDIA L4"
        assert fake.nvmlDeviceGetMemoryInfo(handle).total == 23034 * MIB
        assert fake.nvmlDeviceGetCudaComputeCapability(handle) == (8, 9)
        assert fake.nvmlDeviceGetArchitecture(handle) == pynvml.NVML_DEVICE_ARCH_ADA
        with pytest.raises(pynvml.NVMLError_NotSupported):
            fake.nvmlDeviceGetNvLinkState(handle, 0)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            fake.nvmlDeviceGetMigMode(handle)
    assert fake.control.profile.gpus[2].numa_node == 1


@pytest.mark.parametrize(
    ("call", "arguments"),
    [
        ("nvmlDeviceGetMigMode", ()),
        ("nvmlDeviceGetNvLinkState", (0,)),
        (
            "nvmlDeviceGetTotalEccErrors",
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
        ),
        ("nvmlDeviceGetEccMode", ()),
        ("nvmlDeviceGetRemappedRows", ()),
        ("nvmlDeviceGetRetiredPages", (0,)),
        ("nvmlDeviceGetMaxMigDeviceCount", ()),
    ],
)
def test_rtx4090_consumer_features_are_not_supported(
    call: str, arguments: tuple[object, ...]
) -> None:
    fake = opened("rtx4090-workstation")
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        getattr(fake, call)(handle, *arguments)


def test_rtx4090_fabric_not_supported_and_pcie_level() -> None:
    fake = opened("rtx4090-workstation")
    first, second = handles(fake)
    assert fake.nvmlDeviceGetName(first) == "NVIDIA GeForce RTX 4090"
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetGpuFabricInfoV(first, ctypes.byref(pynvml.c_nvmlGpuFabricInfoV_t()))
    assert (
        fake.nvmlDeviceGetTopologyCommonAncestor(first, second) == pynvml.NVML_TOPOLOGY_HOSTBRIDGE
    )


def test_gb200_fabric_clique_and_gpu_numa_nodes() -> None:
    fake = opened("gb200-nvl4")
    gpus = handles(fake)
    assert len(gpus) == 4
    for index, handle in enumerate(gpus):
        assert fake.nvmlDeviceGetName(handle) == "NVIDIA GB200"
        assert fake.nvmlDeviceGetCudaComputeCapability(handle) == (10, 0)
        info = pynvml.c_nvmlGpuFabricInfoV_t()
        fake.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(info))
        assert info.state == pynvml.NVML_GPU_FABRIC_STATE_COMPLETED
        assert info.cliqueId == 32766
        assert info.status == pynvml.NVML_SUCCESS
        assert fake.nvmlDeviceGetNumaNodeId(handle) == 2 + index
        assert fake.nvmlDeviceGetNvLinkVersion(handle, 17) == pynvml.NVML_NVLINK_VERSION_5_0
    legacy = pynvml.c_nvmlGpuFabricInfo_t()
    fake.nvmlDeviceGetGpuFabricInfo(gpus[0], ctypes.byref(legacy))
    assert legacy.cliqueId == 32766
    assert cpus_of(fake.nvmlDeviceGetCpuAffinity(gpus[3], 3)) == list(range(72, 144))


def test_dgx_h100_degraded_lost_gpu_raises_gpu_is_lost() -> None:
    fake = opened("dgx-h100-degraded")
    assert fake.nvmlDeviceGetCount() == 8
    with pytest.raises(pynvml.NVMLError_GpuIsLost):  # real NVML: lost already at the handle
        fake.nvmlDeviceGetHandleByIndex(6)
    fake.control.set_lost(6, lost=False)
    lost = fake.nvmlDeviceGetHandleByIndex(6)
    fake.control.set_lost(6)
    for call in (fake.nvmlDeviceGetName, fake.nvmlDeviceGetUUID, fake.nvmlDeviceGetMemoryInfo):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call(lost)
    assert fake.nvmlDeviceGetName(fake.nvmlDeviceGetHandleByIndex(5)) == "NVIDIA H100 80GB HBM3"


def test_dgx_h100_degraded_ecc_and_xid() -> None:
    fake = opened("dgx-h100-degraded")
    ecc_gpu = fake.nvmlDeviceGetHandleByIndex(1)
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert fake.nvmlDeviceGetTotalEccErrors(ecc_gpu, uncorrected, pynvml.NVML_VOLATILE_ECC) == 1
    assert fake.nvmlDeviceGetTotalEccErrors(ecc_gpu, uncorrected, pynvml.NVML_AGGREGATE_ECC) == 1
    assert fake.nvmlDeviceGetRemappedRows(ecc_gpu) == (0, 1, 1, 0)
    events = fake.nvmlEventSetCreate()
    for index in (0, 4):
        fake.nvmlDeviceRegisterEvents(
            fake.nvmlDeviceGetHandleByIndex(index), pynvml.nvmlEventTypeXidCriticalError, events
        )
    data = fake.nvmlEventSetWait_v2(events, 0)
    assert (data.eventType, data.eventData) == (pynvml.nvmlEventTypeXidCriticalError, 79)
    assert fake.nvmlDeviceGetIndex(data.device) == 4
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait_v2(events, 0)


def test_cpu_only_cannot_load_nvml() -> None:
    fake = make_fake_pynvml("cpu-only")
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        fake.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    assert len(fake.control.profile.numa_nodes) == 2


def test_p2p_status_follows_nvlink_and_pcie() -> None:
    ok = pynvml.NVML_P2P_STATUS_OK
    pairs = opened("a100-pcie-nvlink-pairs")
    a, b, c, _ = handles(pairs)
    assert pairs.nvmlDeviceGetP2PStatus(a, b, pynvml.NVML_P2P_CAPS_INDEX_NVLINK) == ok
    assert (
        pairs.nvmlDeviceGetP2PStatus(a, c, pynvml.NVML_P2P_CAPS_INDEX_NVLINK)
        == pynvml.NVML_P2P_STATUS_NOT_SUPPORTED
    )
    assert (
        pairs.nvmlDeviceGetP2PStatus(a, c, pynvml.NVML_P2P_CAPS_INDEX_PCI)
        == pynvml.NVML_P2P_STATUS_CHIPSET_NOT_SUPPORTED
    )
    dgx = opened("dgx-h100")
    first, *_, last = handles(dgx)
    assert dgx.nvmlDeviceGetP2PStatus(first, last, pynvml.NVML_P2P_CAPS_INDEX_NVLINK) == ok
    workstation = opened("rtx4090-workstation")
    x, y = handles(workstation)
    assert (
        workstation.nvmlDeviceGetP2PStatus(x, y, pynvml.NVML_P2P_CAPS_INDEX_WRITE)
        == pynvml.NVML_P2P_STATUS_GPU_NOT_SUPPORTED
    )


def test_p2p_read_index_is_the_real_pynvml_tuple_and_fails_like_ctypes() -> None:
    fake = opened("l4-pcie")
    a, b, *_ = handles(fake)
    assert pynvml.NVML_P2P_CAPS_INDEX_READ == (0,)
    with pytest.raises(ctypes.ArgumentError):
        fake.nvmlDeviceGetP2PStatus(a, b, pynvml.NVML_P2P_CAPS_INDEX_READ)
    assert fake.nvmlDeviceGetP2PStatus(a, b, 0) == pynvml.NVML_P2P_STATUS_OK
