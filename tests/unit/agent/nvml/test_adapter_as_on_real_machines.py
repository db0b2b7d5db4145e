"""NVML behaviour as real machines show it (issue 15), each test named for that behaviour and run
against the fake NVML made as strict as the real library for it."""

from __future__ import annotations

import ctypes
from dataclasses import replace
from pathlib import Path
from typing import Any

import pynvml
import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.health import assess
from gputopo.agent.nvml import NvmlAdapter, sample_gpus
from gputopo.agent.nvml.mig import (
    PROFILE_SUFFIXES,
    compute_instance_name,
    mig_memory_gb,
    mig_profile_name,
)
from gputopo.agent.nvml.reads import ARCHITECTURE_FAMILIES
from gputopo.agent.nvml.signals import decode_clock_event_reasons
from gputopo.agent.taints import compute_taints
from gputopo.agent.topology import Health, HealthSignals, XidEvent
from gputopo.mocks import mig as mig_tables
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import DriverSpec, MachineProfile, NvlinkSpec, load_profile
from gputopo.mocks.sysfs import build_sysfs

# -- 7. a lost GPU ---------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["GPU_IS_LOST", "UNKNOWN"])
def test_lost_gpu_fails_at_handle_and_is_tainted_by_uuid(tmp_path: Path, error: str) -> None:
    """l4-pcie: GPU 1 falls off the bus after an XID 79. NVML then fails already at
    nvmlDeviceGetHandleByIndex; the GPU sysfs still lists is lost, failed, keeps its index and
    bus id, keeps the XID its board had, and taints the node."""
    profile = load_profile("l4-pcie")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    with Discoverer(module, root, "l4") as discoverer:
        before = discoverer.discover().gpu(1)
        module.control.inject_xid(1, 79)
        module.control.set_lost(1, error=error)
        after = discoverer.discover()
        poll = discoverer.adapter.health_poll()
    lost = after.gpu(1)
    assert lost.pci_bus_id == before.pci_bus_id
    assert lost.health is Health.FAILED
    assert lost.health_signals.lost
    assert lost.health_signals.xid_events == (XidEvent(79, 1),)
    assert "GPU is lost (NVML GPU_IS_LOST)" in lost.health_reasons
    assert after.pci_only_gpus == ()
    assert poll.signals[1].lost
    assert [t.key for t in compute_taints(after, None)] == ["gputopo.io/gpu-health"]


def test_lost_gpu_present_in_sysfs_from_the_start_is_in_the_topology_dgx_h100(
    tmp_path: Path,
) -> None:
    """dgx-h100-degraded: GPU 6 is lost before the agent starts; it is still one of 8 GPUs."""
    profile = load_profile("dgx-h100-degraded")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    with Discoverer(module, root, "dgx") as discoverer:
        topology = discoverer.discover()
    assert len(topology.gpus) == 8
    assert topology.gpu(6).health is Health.FAILED
    assert topology.gpu(6).pci_bus_id == profile.nvml_gpus()[6].bus_id
    assert topology.pci_only_gpus == ()


def test_xids_follow_the_board_not_the_index_when_indices_shift_dgx_h100() -> None:
    """After a re-enumeration the board that had XID 79 at index 6 is at index 5: its XID goes
    with it, and the board now at index 6 starts clean."""
    module = make_fake_pynvml("dgx-h100")
    adapter = NvmlAdapter(module)
    adapter.open()
    first = adapter.snapshot(with_p2p=False)
    uuid_5, uuid_6 = first.gpus[5].uuid, first.gpus[6].uuid
    assert uuid_5 is not None and uuid_6 is not None
    module.control.inject_xid(6, 79)
    assert adapter.snapshot(with_p2p=False).gpus[6].signals.xid_events == (XidEvent(79, 1),)
    module.control.replace_gpu(5, uuid_6)
    module.control.replace_gpu(6, uuid_5)
    shifted = adapter.snapshot(with_p2p=False)
    assert shifted.gpus[5].signals.xid_events == (XidEvent(79, 1),)
    assert shifted.gpus[6].signals.xid_events == ()
    adapter.close()


# -- 9. memory used ----------------------------------------------------------------------------


def _old_driver(profile_name: str, version: str) -> MachineProfile:
    """The profile as it would be on an older driver branch (driver.version names it)."""
    profile = load_profile(profile_name)
    major = version.split(".")[0]
    driver = DriverSpec(version=version, cuda_version=12000, nvml_version=f"12.{version}")
    assert major.isdigit()
    return replace(profile, driver=driver)


def test_memory_used_excludes_the_drivers_reserved_memory_dgx_a100() -> None:
    """An idle A100: NVML's v1 memory info counts the driver's reserved memory as used; the
    sampled GPU memory in use is v2's, which does not."""
    module = make_fake_pynvml("dgx-a100-mig")
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    assert module.nvmlDeviceGetMemoryInfo(handle).used > 0  # v1: reserved counts as used
    module.control.set_memory_used(0, 0)
    module.control.set_memory_used(1, 2048)
    load = sample_gpus(module)
    assert load[0].memory_used_bytes == 0
    assert load[1].memory_used_bytes == 2048 * 2**20
    assert load[0].memory_total_bytes == 81920 * 2**20


def test_memory_used_falls_back_to_v1_before_r510_l4() -> None:
    """A driver without nvmlDeviceGetMemoryInfo_v2 (FUNCTION_NOT_FOUND): v1's used, once asked."""
    module = make_fake_pynvml(_old_driver("l4-pcie", "470.239.06"))
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        module.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)
    module.control.set_memory_used(0, 1024)
    absent: set[str] = set()
    load = sample_gpus(module, absent=absent)
    legacy = module.nvmlDeviceGetMemoryInfo(handle)
    assert load[0].memory_used_bytes == legacy.used > 1024 * 2**20
    assert "nvmlDeviceGetMemoryInfo_v2" in absent
    calls = module.control.calls["nvmlDeviceGetMemoryInfo"]
    sample_gpus(module, absent=absent)
    gpus = module.nvmlDeviceGetCount()
    assert module.control.calls["nvmlDeviceGetMemoryInfo"] == calls + gpus  # v1 only


def test_memory_info_v2_checks_the_struct_version() -> None:
    module = make_fake_pynvml("l4-pcie")
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_ArgumentVersionMismatch):
        module.nvmlDeviceGetMemoryInfo(handle, 0x01000028)


# -- 6. older drivers ----------------------------------------------------------------------------


def test_clock_events_fall_back_to_throttle_reasons_on_a_driver_before_r535_l4() -> None:
    """R525 has no nvmlDeviceGetCurrentClocksEventReasons: pynvml answers FUNCTION_NOT_FOUND,
    and the throttle-reason API tells the same bits. Not an error of the GPU."""
    module = make_fake_pynvml(_old_driver("l4-pcie", "525.147.05"))
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        module.nvmlDeviceGetCurrentClocksEventReasons(handle)
    module.control.set_throttle_reasons(0, pynvml.nvmlClocksThrottleReasonHwThermalSlowdown)
    module.nvmlShutdown()
    adapter = NvmlAdapter(module)
    adapter.open()
    gpu = adapter.snapshot(with_p2p=False).gpus[0]
    assert gpu.signals.throttle_reasons == ("hw_thermal_slowdown",)
    assert not any("ClocksEventReasons" in error for error in gpu.errors)
    assert adapter.health_signals()[0].throttle_reasons == ("hw_thermal_slowdown",)
    adapter.close()


def test_newer_clock_event_bits_have_names() -> None:
    assert decode_clock_event_reasons(0x600) == ("board_limit", "reliability")


# -- 8. NVLink -----------------------------------------------------------------------------------


def test_nvlink_count_comes_from_field_values_and_no_link_past_it_is_asked_dgx_h100() -> None:
    module = make_fake_pynvml("dgx-h100")
    adapter = NvmlAdapter(module)
    adapter.open()
    gpus = adapter.snapshot(with_p2p=False).gpus
    assert all(len(gpu.nvlinks) == 18 for gpu in gpus)
    assert module.control.calls["nvmlDeviceGetNvLinkState"] == 8 * 18  # none past the last
    assert module.control.calls["nvmlDeviceGetFieldValues"] == 8
    assert not any(gpu.errors for gpu in gpus)
    adapter.close()


def test_past_the_last_link_invalid_argument_ends_the_walk_silently_dgx_h100() -> None:
    """Without the link-count field NVML is walked link by link: INVALID_ARGUMENT after the
    last one ends it and is no error."""
    module = make_fake_pynvml("dgx-h100")
    module.control.inject_error("nvmlDeviceGetFieldValues", "NOT_SUPPORTED")
    adapter = NvmlAdapter(module)
    adapter.open()
    gpus = adapter.snapshot(with_p2p=False).gpus
    assert all(len(gpu.nvlinks) == 18 for gpu in gpus)
    assert not any(gpu.errors for gpu in gpus)
    assert all(not signals.nvlinks_down for signals in adapter.health_signals().values())
    adapter.close()


def _a100_pcie_pair_missing_a_bridge() -> MachineProfile:
    """a100-pcie-nvlink-pairs as the real cards are: 12 link indices each, and of the three
    bridges of the pair (0, 1) one not fitted, so links 8-11 were never up."""
    profile = load_profile("a100-pcie-nvlink-pairs")
    gpus = list(profile.gpus)
    for index, peer in ((0, 1), (1, 0)):
        links = tuple(
            NvlinkSpec(
                link=n,
                version=pynvml.NVML_NVLINK_VERSION_3_1,
                remote_type="gpu",
                remote_bus_id=gpus[peer].bus_id,
                active=n < 8,
            )
            for n in range(12)
        )
        gpus[index] = replace(gpus[index], nvlinks=links)
    return replace(profile, gpus=tuple(gpus))


def test_a100_pcie_pair_with_a_missing_bridge_is_not_degraded_forever() -> None:
    """Link indices that were never up are not down; a link that was up and went down is."""
    module = make_fake_pynvml(_a100_pcie_pair_missing_a_bridge())
    adapter = NvmlAdapter(module)
    adapter.open()
    gpu = adapter.snapshot(with_p2p=False).gpus[0]
    assert [link.active for link in gpu.nvlinks] == [True] * 8 + [False] * 4
    assert gpu.signals.nvlinks_down == 0
    assert assess(gpu.signals)[0] is Health.OK
    assert adapter.health_signals()[0].nvlinks_down == 0
    module.control.set_nvlink_active(0, 2, False)
    assert adapter.health_signals()[0].nvlinks_down == 1
    down = adapter.snapshot(with_p2p=False).gpus[0].signals
    assert down.nvlinks_down == 1
    assert assess(down) == (Health.DEGRADED, ("NVLinks down: 1",))
    adapter.close()


# -- 4. NUMA when sysfs says -1 --------------------------------------------------------------------


def _sysfs_numa_unknown(profile: MachineProfile, root: Path, *, all_cpus: bool) -> None:
    """What many single-socket machines and VMs show: the GPUs' sysfs ``numa_node`` is -1 (and,
    with ``all_cpus``, their ``local_cpulist`` every CPU)."""
    every = ",".join(
        ",".join(str(cpu) for cpu in node.cpus) for node in profile.numa_nodes if node.cpus
    )
    for gpu in profile.nvml_gpus():
        device = root / "bus/pci/devices" / gpu.bus_id
        (device / "numa_node").write_text("-1\n")
        if all_cpus:
            (device / "local_cpulist").write_text(every + "\n")


def test_gpu_numa_falls_back_to_the_only_node_when_sysfs_says_minus_one_rtx4090(
    tmp_path: Path,
) -> None:
    """Single socket, sysfs -1, and nvmlDeviceGetNumaNodeId NOT_SUPPORTED (x86): the GPUs are
    on the only node, and that node counts them."""
    profile = load_profile("rtx4090-workstation")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    _sysfs_numa_unknown(profile, root, all_cpus=True)
    module.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        module.nvmlDeviceGetNumaNodeId(module.nvmlDeviceGetHandleByIndex(0))
    module.nvmlShutdown()
    with Discoverer(module, root, "ws") as discoverer:
        topology = discoverer.discover()
    assert topology.gpus
    assert {gpu.numa_node for gpu in topology.gpus} == {0}
    (node,) = topology.numa_nodes
    assert node.gpus == tuple(gpu.index for gpu in topology.gpus)


def test_gpu_numa_falls_back_to_its_cpu_affinity_node_when_sysfs_says_minus_one_l4(
    tmp_path: Path,
) -> None:
    """Two sockets, sysfs -1: each GPU's CPU affinity lies within one node, which is its node;
    every GPU is in the per-node counts."""
    profile = load_profile("l4-pcie")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    _sysfs_numa_unknown(profile, root, all_cpus=False)
    with Discoverer(module, root, "l4") as discoverer:
        topology = discoverer.discover()
    assert [gpu.numa_node for gpu in topology.gpus] == [g.numa_node for g in profile.nvml_gpus()]
    assert sum(len(node.gpus) for node in topology.numa_nodes) == len(topology.gpus)


def test_gpu_numa_falls_back_to_memory_affinity_then_a_node_never_none_l4(
    tmp_path: Path,
) -> None:
    """Two sockets, sysfs -1 and a CPU affinity of every CPU: NVML's memory affinity names the
    node; without it the GPU still lands on a node rather than in none."""
    profile = load_profile("l4-pcie")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    _sysfs_numa_unknown(profile, root, all_cpus=True)
    module.control.inject_error("nvmlDeviceGetCpuAffinity", "NOT_SUPPORTED")
    with Discoverer(module, root, "l4") as discoverer:
        by_memory = discoverer.discover()
        module.control.inject_error("nvmlDeviceGetMemoryAffinity", "NOT_SUPPORTED")
        guessed = discoverer.discover()
    assert [gpu.numa_node for gpu in by_memory.gpus] == [g.numa_node for g in profile.nvml_gpus()]
    assert all(gpu.numa_node is not None for gpu in guessed.gpus)
    assert sum(len(node.gpus) for node in guessed.numa_nodes) == len(guessed.gpus)


# -- 2. MIG profile names ------------------------------------------------------------------------


def test_mig_memory_rounds_half_up_as_nvidia_names_h200_and_b200() -> None:
    """The fallback rule: an H200's 3g slice is half of 141 GB, 70.5 -> "71gb" (not 70, as
    round-half-to-even gives); a B200's 1g slice is an eighth of 180 GB, 22.5 -> "23gb"."""
    h200 = 143771 * 2**20
    assert mig_memory_gb(h200, 70016) == 71
    assert mig_profile_name(3, mig_memory_gb(h200, 70016)) == "3g.71gb"
    assert mig_profile_name(4, mig_memory_gb(h200, 70016)) == "4g.71gb"
    b200 = 183359 * 2**20
    assert mig_memory_gb(b200, 22784) == 23


@pytest.mark.parametrize(
    ("profile_index", "name"),
    [
        # NVML_GPU_INSTANCE_PROFILE_* (literal: older bindings lack the newer names)
        (0x7, "1g.10gb+me"),  # 1_SLICE_REV1
        (0xA, "1g.10gb+gfx"),  # 1_SLICE_GFX
        (0xD, "1g.10gb-me"),  # 1_SLICE_NO_ME
        (0xF, "1g.10gb+me.all"),  # 1_SLICE_ALL_ME
        (0x0, "1g.10gb"),  # 1_SLICE
    ],
)
def test_every_mig_attribute_suffix_nvml_defines_is_known(profile_index: int, name: str) -> None:
    suffix = PROFILE_SUFFIXES.get(profile_index, "")
    assert mig_profile_name(1, 10, suffix=suffix) == name
    assert compute_instance_name(name, 3, 1) == f"1c.{name}"


def test_mig_profile_name_is_the_drivers_own_from_the_v2_profile_info_dgx_a100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the rule would compute, the driver's v2 name is the name (here a table whose
    1g row the driver calls "1g.12gb")."""
    profile = load_profile("dgx-a100-mig")
    table = mig_tables.A100_80GB
    renamed = tuple(
        replace(row, name="1g.12gb") if row.name == "1g.10gb" else row for row in table.profiles
    )
    monkeypatch.setitem(mig_tables.TABLES, table.name, replace(table, profiles=renamed))
    gpus = [
        replace(
            gpu,
            mig=replace(
                gpu.mig,
                instances=tuple(
                    replace(gi, profile="1g.12gb") if gi.profile == "1g.10gb" else gi
                    for gi in gpu.mig.instances
                ),
            ),
        )
        for gpu in profile.gpus
    ]
    module = make_fake_pynvml(replace(profile, gpus=tuple(gpus)))
    adapter = NvmlAdapter(module)
    adapter.open()
    names = {
        gi.profile for gpu in adapter.snapshot(with_p2p=False).gpus for gi in gpu.mig.instances
    }
    adapter.close()
    assert "1g.12gb" in names
    assert "1g.10gb" not in names


def test_mig_profile_names_are_computed_where_the_driver_has_no_v2_profile_info_r460() -> None:
    """Before R470 there is no nvmlDeviceGetGpuInstanceProfileInfoV (FUNCTION_NOT_FOUND): the
    v1 info has no name, and the rule names the profiles as the driver would."""
    current = NvmlAdapter(make_fake_pynvml("dgx-a100-mig"))
    current.open()
    expected = [
        [gi.profile for gi in gpu.mig.instances] for gpu in current.snapshot(with_p2p=False).gpus
    ]
    current.close()
    module = make_fake_pynvml(_old_driver("dgx-a100-mig", "460.106.00"))
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        module.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0)
    assert not hasattr(module.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0, 1), "name")
    module.nvmlShutdown()
    old = NvmlAdapter(module)
    old.open()
    computed = [
        [gi.profile for gi in gpu.mig.instances] for gpu in old.snapshot(with_p2p=False).gpus
    ]
    old.close()
    assert computed == expected
    assert any(names for names in computed)


# -- 5. fabric (GB200 / GH200 NVL) -----------------------------------------------------------------


def _gb200_fabric(**changes: object) -> MachineProfile:
    profile = load_profile("gb200-nvl4")
    gpus = tuple(
        replace(gpu, fabric=replace(gpu.fabric, **changes)) if gpu.fabric else gpu
        for gpu in profile.gpus
    )
    return replace(profile, gpus=gpus)


def _fabric_of(module: Any) -> Any:
    adapter = NvmlAdapter(module)
    adapter.open()
    gpu = adapter.snapshot(with_p2p=False).gpus[0]
    adapter.close()
    return gpu.fabric


def test_fabric_clique_only_when_registration_completed_with_success_gb200() -> None:
    module = make_fake_pynvml("gb200-nvl4")
    fabric = _fabric_of(module)
    assert fabric is not None
    assert (fabric.state, fabric.clique_id) == ("completed", 32766)
    assert fabric.cluster_uuid == "5d3f0a3e-8f3c-4a7e-9f51-2b6c1d9e0a11"
    assert module.control.calls["nvmlDeviceGetGpuFabricInfoV"] >= 1  # the versioned API
    assert module.control.calls["nvmlDeviceGetGpuFabricInfo"] == 0


@pytest.mark.parametrize(
    "changes",
    [{"status": "UNKNOWN"}, {"cluster_uuid": "00000000-0000-0000-0000-000000000000"}],
)
def test_fabric_registration_that_failed_gives_no_clique_and_degrades_gb200(
    changes: dict[str, str],
) -> None:
    """State COMPLETED is not enough: the status must be SUCCESS and the cluster UUID set."""
    fabric = _fabric_of(make_fake_pynvml(_gb200_fabric(**changes)))
    assert fabric is not None
    assert (fabric.state, fabric.clique_id) == ("failed", None)
    assert assess(HealthSignals(), fabric=fabric) == (
        Health.DEGRADED,
        ("NVLink fabric registration failed",),
    )


class _FabricLegacy(ctypes.Structure):
    """c_nvmlGpuFabricInfo_t with NVML's layout (as nvidia-ml-py 13 declares it)."""

    _fields_ = [
        ("clusterUuid", ctypes.c_uint8 * 16),
        ("status", ctypes.c_int),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint),
    ]


def test_fabric_falls_back_to_the_unversioned_call_before_r550_gb200(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = make_fake_pynvml(_old_driver("gb200-nvl4", "535.183.06"))
    monkeypatch.setattr(module, "c_nvmlGpuFabricInfo_t", _FabricLegacy, raising=False)
    fabric = _fabric_of(module)
    assert fabric is not None and fabric.clique_id == 32766
    assert module.control.calls["nvmlDeviceGetGpuFabricInfo"] >= 1


def test_versioned_fabric_call_checks_the_struct_version_gb200() -> None:
    module = make_fake_pynvml("gb200-nvl4")
    module.nvmlInit()
    handle = module.nvmlDeviceGetHandleByIndex(0)
    info = pynvml.c_nvmlGpuFabricInfoV_t()
    info.version = 0x01000024
    with pytest.raises(pynvml.NVMLError_ArgumentVersionMismatch):
        module.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(info))


class _FabricV_12_570(ctypes.Structure):
    """c_nvmlGpuFabricInfoV_t as nvidia-ml-py 12.570.86 (the floor) declares it."""

    _fields_ = [
        ("version", ctypes.c_uint),
        ("clusterUuid", ctypes.c_char * 16),
        ("status", ctypes.c_int),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint),
        ("healthMask", ctypes.c_uint32),
    ]


class _FabricV_12_550(ctypes.Structure):
    """c_nvmlGpuFabricInfoV_t as nvidia-ml-py 12.550-12.560 declare it: an 80-byte
    clusterUuid, so every later field is read from the wrong bytes."""

    _fields_ = [
        ("version", ctypes.c_uint),
        ("clusterUuid", ctypes.c_char * 80),
        ("status", ctypes.c_int),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint),
        ("healthMask", ctypes.c_uint32),
    ]


def test_fabric_reads_right_with_the_floor_bindings_struct_and_refuses_older_layouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nvidia-ml-py floor (12.570.86) is the first whose versioned struct has NVML's
    layout (and a cliqueId); with an older binding's struct the agent reports no fabric
    rather than a clique read from the wrong bytes."""
    floor = make_fake_pynvml("gb200-nvl4")
    monkeypatch.setattr(floor, "c_nvmlGpuFabricInfoV_t", _FabricV_12_570, raising=False)
    fabric = _fabric_of(floor)
    assert fabric is not None
    assert (fabric.state, fabric.clique_id) == ("completed", 32766)
    assert fabric.cluster_uuid == "5d3f0a3e-8f3c-4a7e-9f51-2b6c1d9e0a11"
    older = make_fake_pynvml("gb200-nvl4")
    monkeypatch.setattr(older, "c_nvmlGpuFabricInfoV_t", _FabricV_12_550, raising=False)
    monkeypatch.setattr(older, "c_nvmlGpuFabricInfo_t", _FabricV_12_550, raising=False)
    assert _fabric_of(older) is None


def test_rubin_architecture_id_has_its_family_name() -> None:
    # 13 is NVML's id (nvml.h); bindings older than Rubin lack the constant, the id is the same.
    assert getattr(pynvml, "NVML_DEVICE_ARCH_RUBIN", 13) == 13
    assert ARCHITECTURE_FAMILIES[13] == "rubin"
