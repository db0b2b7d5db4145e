"""A drop-in fake of the ``pynvml`` module (nvidia-ml-py), answering from a machine profile.

Constants, ctypes structures and the ``NVMLError`` hierarchy are the real module's own objects,
so ``except pynvml.NVMLError_NotSupported`` and ``NVMLError(code)`` behave exactly as with the
real bindings. Every ``nvml*`` function keeps the real signature; those not modelled here raise
``NVMLError_FunctionNotFound`` (what pynvml raises when the driver lacks a symbol). Tests change
the machine at run time through ``module.control`` (:class:`FakeNvmlControl`).

One file because it stands in for one module: every ``nvml*`` function is a method of the one
:class:`FakeNvml` state object, as every pynvml function shares the one loaded library.
"""

from __future__ import annotations

import collections
import ctypes
import inspect
import itertools
import os
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pynvml as _real

from gputopo.core.grammar import GrammarError, normalize_bus_id, split_bus_id
from gputopo.mocks import mig as mig_tables
from gputopo.mocks.profile import load_profile
from gputopo.mocks.spec import (
    ARCHITECTURES,
    FABRIC_STATES,
    MIB,
    NVIDIA_VENDOR,
    EccSpec,
    GpuInstanceSpec,
    GpuSpec,
    InjectedError,
    MachineProfile,
    RemappedRowsSpec,
)

# Helpers of the real module that never touch the library; kept as they are.
_PURE_HELPERS = frozenset(
    {"nvmlExceptionClass", "nvmlStructToFriendlyObject", "nvmlFriendlyObjectToStruct"}
)
_NO_INSTANCE = 0xFFFFFFFF

# The driver branch that first has each C symbol the fake models and older drivers lack (NVML's
# API reference, "Change log"): on a profile whose driver.version names an older branch, calling
# it raises FUNCTION_NOT_FOUND, as pynvml's _nvmlGetFunctionPointer does on such a machine.
SYMBOL_SINCE_BRANCH: dict[str, int] = {
    "nvmlDeviceGetMemoryInfo_v2": 510,
    "nvmlDeviceGetCurrentClocksEventReasons": 535,
    "nvmlDeviceGetSupportedClocksEventReasons": 535,
    "nvmlDeviceGetGpuInstanceProfileInfoV": 470,
    "nvmlDeviceGetGpuFabricInfoV": 550,
}

# nvmlGpuFabricInfo_t / nvmlGpuFabricInfo_v2_t / _v3_t as the C library lays them out (nvml.h):
# field -> (byte offset, size); the state is an unsigned char. The fake writes these bytes into
# whatever struct the caller passed, as libnvidia-ml does, so a binding whose Python struct has
# another layout (nvidia-ml-py before 12.570: an 80-byte clusterUuid) reads what it would read
# on a real machine.
_FABRIC_LEGACY_LAYOUT = {
    "clusterUuid": (0, 16),
    "status": (16, 4),
    "cliqueId": (20, 4),
    "state": (24, 1),
}
_FABRIC_V_LAYOUT = {
    "version": (0, 4),
    "clusterUuid": (4, 16),
    "status": (20, 4),
    "cliqueId": (24, 4),
    "state": (28, 1),
    "healthMask": (32, 4),
}
_FABRIC_V_SIZES = {2: 36, 3: 40}  # sizeof(nvmlGpuFabricInfo_v2_t), _v3_t (healthSummary @36)

# The variable the NVIDIA container runtime reads to give a container the MIG *monitor*
# capability (/dev/nvidia-caps/nvidia-cap2). Without that capability NVML answers NO_PERMISSION,
# on a GPU in MIG mode, to the parent's memory info and to every GPU-instance and MIG-device
# call (NVIDIA/k8s-device-plugin#399 and #1683, NVIDIA/gpu-feature-discovery#6).
MIG_MONITOR_ENV = "NVIDIA_MIG_MONITOR_DEVICES"
MIG_MONITOR_CALLS = frozenset(
    {
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetGpuInstanceRemainingCapacity",
        "nvmlDeviceGetGpuInstances",
        "nvmlDeviceGetGpuInstanceById",
        "nvmlDeviceGetMigDeviceHandleByIndex",
    }
)


def mig_monitor_from_environment() -> bool:
    """Whether this process would hold the MIG monitor capability: the runtime grants it for
    ``NVIDIA_MIG_MONITOR_DEVICES=all`` (the value the DaemonSet's mig-monitor component sets)."""
    return os.environ.get(MIG_MONITOR_ENV, "").strip() == "all"


def driver_branch(version: str) -> int:
    """ "535.161.08" -> 535."""
    return int(version.split(".", 1)[0])


def reserved_memory_mib(total_mib: int) -> int:
    """Frame buffer the driver and firmware keep for themselves (nvidia-smi's "Reserved"): about
    0.8% of the GPU's memory here (real boards show 0.5-1.2%, e.g. ~600 MiB on an H100 80GB)."""
    return total_mib // 128


_address_blocks = itertools.count(1)


@dataclass
class _GpuState:
    spec: GpuSpec
    index: int
    lost: bool
    metrics: dict[str, list[float]]
    cursors: dict[str, int]
    ecc: EccSpec | None
    remapped_rows: RemappedRowsSpec | None
    throttle_reasons: int
    nvlink_active: dict[int, bool]
    errors: dict[str, InjectedError]
    remaining: dict[str, int] = field(default_factory=dict)
    # What nvmlDeviceGetHandleByIndex answers while the GPU is lost: GPU_IS_LOST, or UNKNOWN as
    # some drivers answer for a GPU that fell off the bus.
    lost_error: str = "GPU_IS_LOST"

    def next_reading(self, name: str) -> float:
        values = self.metrics[name]
        position = self.cursors.get(name, 0)
        self.cursors[name] = position + 1
        return values[min(position, len(values) - 1)]


@dataclass(frozen=True)
class _Entity:
    kind: str  # "gpu", "mig", "gi", "ci", "eventset"
    gpu: int = -1
    gi: int = -1
    ci: int = -1


@dataclass
class _EventSet:
    queue: collections.deque[tuple[int, int, int]] = field(
        default_factory=collections.deque
    )  # (gpu, nvmlEventType*, eventData): the XID code, 0 for ECC events as in NVML
    registered: dict[int, int] = field(default_factory=dict)  # gpu -> event mask
    freed: bool = False


def _deref(ref: Any) -> Any:
    """The ctypes object behind ``byref(x)``, ``pointer(x)`` or ``x``."""
    if hasattr(ref, "_obj"):
        return ref._obj
    if isinstance(ref, ctypes._Pointer):
        return ref.contents
    return ref


class FakeNvml:
    """The state behind one fake module; its ``nvml*`` methods become the module's functions."""

    def __init__(self, profile: MachineProfile) -> None:
        self.profile = profile
        self.lock = threading.Condition()
        self.init_count = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.node_errors: dict[str, InjectedError] = dict(profile.nvml.errors)
        self.node_remaining: dict[str, int] = {}
        # The PCI tree of a profile never changes, so each pair's level is computed once.
        self.common_ancestors: dict[tuple[str, str], int] = {}
        self.gpus = [
            _GpuState(
                spec=gpu,
                index=index,
                lost=gpu.lost,
                metrics={
                    "utilization_gpu": list(map(float, gpu.metrics.utilization_gpu)),
                    "utilization_memory": list(map(float, gpu.metrics.utilization_memory)),
                    "memory_used_mib": list(map(float, gpu.metrics.memory_used_mib)),
                    "temperature_c": list(map(float, gpu.metrics.temperature_c)),
                    "power_w": list(gpu.metrics.power_w),
                },
                cursors={},
                ecc=gpu.health.ecc,
                remapped_rows=gpu.health.remapped_rows,
                throttle_reasons=gpu.health.throttle_reasons,
                nvlink_active={link.link: link.active for link in gpu.nvlinks or ()},
                errors=dict(gpu.errors),
            )
            for index, gpu in enumerate(profile.nvml_gpus())
        ]
        self.event_sets: dict[int, _EventSet] = {}
        # False between FakeNvmlControl.unload_driver and load_driver: the kernel module is out
        # (a containerised driver being upgraded), so nvmlInit answers DRIVER_NOT_LOADED.
        self.driver_loaded = True
        # The driver version of the libnvidia-ml this process loaded: the NVIDIA container
        # toolkit bind-mounts the driver's user-space libraries into a container when it starts,
        # so after the kernel driver is replaced by another version, nvmlInit in a container
        # started before answers LIB_RM_VERSION_MISMATCH until the container is recreated
        # (FakeNvmlControl.mount_library).
        self.library_version = profile.driver.version
        # Read at nvmlInit, as a container holds the capability from its start; None until then
        # unless a test set it through the control.
        self.mig_monitor: bool | None = None
        self.mig_monitor_forced = False
        self._base = 0x7F00_0000_0000 + next(_address_blocks) * 0x100_0000
        self._entities: dict[int, _Entity] = {}
        self._addresses: dict[_Entity, int] = {}

    # ------------------------------------------------------------------ plumbing
    def _raise(self, name: str) -> NoReturn:
        raise _real.NVMLError(getattr(_real, f"NVML_ERROR_{name}"))

    def _address(self, entity: _Entity) -> int:
        if entity not in self._addresses:
            address = self._base + 0x10 * (len(self._addresses) + 1)
            self._addresses[entity] = address
            self._entities[address] = entity
        return self._addresses[entity]

    def _handle(self, entity: _Entity, pointer_type: Any) -> Any:
        return ctypes.cast(ctypes.c_void_p(self._address(entity)), pointer_type)

    def _device_handle(self, gpu: int) -> Any:
        return self._handle(_Entity("gpu", gpu), _real.c_nvmlDevice_t)

    def _entity(self, handle: Any, kinds: tuple[str, ...]) -> _Entity:
        try:
            address = ctypes.cast(handle, ctypes.c_void_p).value
        except (ctypes.ArgumentError, TypeError):
            address = None
        entity = self._entities.get(address or -1)
        if entity is None or entity.kind not in kinds:
            self._raise("INVALID_ARGUMENT")
        return entity

    def _check_injected(
        self, name: str, errors: dict[str, InjectedError], remaining: dict[str, int]
    ) -> None:
        injected = errors.get(name)
        if injected is None:
            return
        if injected.times is None:
            self._raise(injected.error)
        left = remaining.setdefault(name, injected.times)
        if left > 0:
            remaining[name] = left - 1
            self._raise(injected.error)

    def _enter(self, name: str, symbol: str | None = None) -> None:
        """``symbol``: the C function the binding resolves, where it is not ``name`` (pynvml's
        nvmlDeviceGetMemoryInfo(handle, version) calls nvmlDeviceGetMemoryInfo_v2)."""
        self.calls[name] += 1
        if self.init_count == 0:
            self._raise("UNINITIALIZED")
        since = SYMBOL_SINCE_BRANCH.get(symbol or name)
        if since is not None and driver_branch(self.profile.driver.version) < since:
            self._raise("FUNCTION_NOT_FOUND")
        self._check_injected(name, self.node_errors, self.node_remaining)

    def _gpu_call(self, name: str, gpu: int) -> _GpuState:
        state = self.gpus[gpu]
        if state.lost:
            self._raise("GPU_IS_LOST")
        self._check_injected(name, state.errors, state.remaining)
        return state

    def _check_mig_monitor(self, name: str, state: _GpuState) -> None:
        """NO_PERMISSION for a monitored call on a GPU in MIG mode without the capability."""
        if state.spec.mig.enabled and not self.mig_monitor and name in MIG_MONITOR_CALLS:
            self._raise("NO_PERMISSION")

    def _device(
        self, name: str, handle: Any, *, mig_ok: bool = False, symbol: str | None = None
    ) -> tuple[_GpuState, _Entity]:
        self._enter(name, symbol)
        entity = self._entity(handle, ("gpu", "mig"))
        state = self._gpu_call(name, entity.gpu)
        if entity.kind == "mig" and not mig_ok:
            self._raise("NOT_SUPPORTED")
        if entity.kind == "gpu":
            self._check_mig_monitor(name, state)
        return state, entity

    def _gpu(self, name: str, handle: Any) -> _GpuState:
        return self._device(name, handle)[0]

    # ------------------------------------------------------------------ init / system
    def nvmlInitWithFlags(self, flags: int) -> None:
        self.calls["nvmlInitWithFlags"] += 1
        if not self.driver_loaded:
            self._raise("DRIVER_NOT_LOADED")
        if self.library_version != self.profile.driver.version:
            self._raise("LIB_RM_VERSION_MISMATCH")
        if self.profile.nvml.load_error:
            self._raise(self.profile.nvml.load_error)
        if self.profile.nvml.init_error:
            self._raise(self.profile.nvml.init_error)
        self._check_injected("nvmlInitWithFlags", self.node_errors, self.node_remaining)
        if not self.mig_monitor_forced:
            self.mig_monitor = mig_monitor_from_environment()
        self.init_count += 1

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.init_count -= 1

    def nvmlErrorString(self, result: int) -> str:
        return str(_real.NVMLError._errcode_to_string.get(result, "Unknown Error"))

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.profile.driver.version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return self.profile.driver.nvml_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.profile.driver.cuda_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self.profile.driver.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not isinstance(index, int) or not 0 <= index < len(self.gpus):
            self._raise("INVALID_ARGUMENT")
        if self.gpus[index].lost:
            # Real NVML: a GPU that fell off the bus fails already here, not at later queries.
            self._raise(self.gpus[index].lost_error)
        return self._device_handle(index)

    def _find(self, name: str, predicate: Callable[[GpuSpec], bool]) -> Any:
        self._enter(name)
        for state in self.gpus:
            if predicate(state.spec):
                if state.lost:
                    self._raise(state.lost_error)
                return self._device_handle(state.index)
        self._raise("NOT_FOUND")

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        return self._find("nvmlDeviceGetHandleByUUID", lambda g: g.uuid == text)

    def nvmlDeviceGetHandleBySerial(self, serial: str | bytes) -> Any:
        text = serial.decode() if isinstance(serial, bytes) else serial
        return self._find("nvmlDeviceGetHandleBySerial", lambda g: g.serial == text)

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: str | bytes) -> Any:
        text = pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId
        try:
            wanted = normalize_bus_id(text)
        except GrammarError:
            self._enter("nvmlDeviceGetHandleByPciBusId")
            self._raise("INVALID_ARGUMENT")
        return self._find("nvmlDeviceGetHandleByPciBusId", lambda g: g.bus_id == wanted)

    # ------------------------------------------------------------------ identity
    def nvmlDeviceGetName(self, handle: Any) -> str:
        state, entity = self._device("nvmlDeviceGetName", handle, mig_ok=True)
        if entity.kind == "mig":
            return f"{state.spec.name} MIG {self._ci_name(state, entity.gi, entity.ci)}"
        return state.spec.name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        state, entity = self._device("nvmlDeviceGetUUID", handle, mig_ok=True)
        if entity.kind == "mig":
            return self._mig_uuid(state, entity.gi, entity.ci)
        return state.spec.uuid

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetSerial", handle).spec.serial

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetIndex", handle).index

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetMinorNumber", handle).index

    def _pci_info(self, bus_id: str, device_id: int, subsystem_id: int) -> Any:
        domain, bus, device = split_bus_id(bus_id)
        info = _real.nvmlPciInfo_t()
        info.busIdLegacy = f"{domain:04X}:{bus:02X}:{device:02X}.0".encode()
        info.busId = f"{domain:08X}:{bus:02X}:{device:02X}.0".encode()
        info.domain, info.bus, info.device = domain, bus, device
        info.pciDeviceId = (device_id << 16) | NVIDIA_VENDOR
        info.pciSubSystemId = subsystem_id
        return info

    def nvmlDeviceGetPciInfo_v3(self, handle: Any) -> Any:
        spec = self._gpu("nvmlDeviceGetPciInfo_v3", handle).spec
        return self._pci_info(spec.bus_id, spec.pci_device_id, spec.pci_subsystem_id)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        spec = self._gpu("nvmlDeviceGetPciInfo", handle).spec
        return self._pci_info(spec.bus_id, spec.pci_device_id, spec.pci_subsystem_id)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        """As NVML: v1 (no ``version``) counts the driver's reserved memory as used (used =
        total - free); v2 (``version=nvmlMemory_v2``, the C symbol nvmlDeviceGetMemoryInfo_v2,
        R510 on) reports it apart (used = total - reserved - free) and checks the struct
        version (ARGUMENT_VERSION_MISMATCH)."""
        symbol = "nvmlDeviceGetMemoryInfo_v2" if version else None
        state, entity = self._device("nvmlDeviceGetMemoryInfo", handle, mig_ok=True, symbol=symbol)
        if version and version != _real.nvmlMemory_v2:
            self._raise("ARGUMENT_VERSION_MISMATCH")
        if entity.kind == "mig":
            total = self._gi_profile(state, entity.gi).memory_mib * MIB
            reserved = used = 0
        else:
            total = state.spec.memory_mib * MIB
            reserved = reserved_memory_mib(state.spec.memory_mib) * MIB
            used = min(int(state.next_reading("memory_used_mib")) * MIB, total - reserved)
        free = total - reserved - used
        if not version:
            memory: Any = _real.c_nvmlMemory_t()
            memory.total, memory.used, memory.free = total, reserved + used, free
            return memory
        memory = _real.c_nvmlMemory_v2_t()
        memory.version = version
        memory.total, memory.reserved, memory.used, memory.free = total, reserved, used, free
        return memory

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._gpu("nvmlDeviceGetCudaComputeCapability", handle).spec.compute_capability

    def nvmlDeviceGetArchitecture(self, device: Any) -> int:
        return ARCHITECTURES[self._gpu("nvmlDeviceGetArchitecture", device).spec.architecture]

    # ------------------------------------------------------------------ PCIe, NUMA, topology
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrPcieLinkGeneration", handle).spec.pcie.gen

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetMaxPcieLinkGeneration", handle).spec.pcie.gen_max

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetGpuMaxPcieLinkGeneration", handle).spec.pcie.gen_max

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrPcieLinkWidth", handle).spec.pcie.width

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetMaxPcieLinkWidth", handle).spec.pcie.width_max

    def _bitmask(self, ids: tuple[int, ...], words: int) -> Any:
        array = (ctypes.c_ulonglong * words)()
        for item in ids:
            if item // 64 < words:
                array[item // 64] |= 1 << (item % 64)
        return array

    def nvmlDeviceGetCpuAffinity(self, handle: Any, cpuSetSize: int) -> Any:
        state = self._gpu("nvmlDeviceGetCpuAffinity", handle)
        node = self.profile.numa_node(state.spec.numa_node)
        return self._bitmask(node.cpus if node else (), cpuSetSize)

    def nvmlDeviceGetCpuAffinityWithinScope(self, handle: Any, cpuSetSize: int, scope: int) -> Any:
        state = self._gpu("nvmlDeviceGetCpuAffinityWithinScope", handle)
        node = self.profile.numa_node(state.spec.numa_node)
        if scope == _real.NVML_AFFINITY_SCOPE_SOCKET:
            self._raise("NOT_SUPPORTED")
        return self._bitmask(node.cpus if node else (), cpuSetSize)

    def nvmlDeviceGetMemoryAffinity(self, handle: Any, nodeSetSize: int, scope: int) -> Any:
        state = self._gpu("nvmlDeviceGetMemoryAffinity", handle)
        return self._bitmask((state.spec.numa_node,), nodeSetSize)

    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int:
        state = self._gpu("nvmlDeviceGetNumaNodeId", handle)
        if state.spec.memory_numa_node is None:
            self._raise("NOT_SUPPORTED")
        return int(state.spec.memory_numa_node)

    def _common_ancestor(self, first: GpuSpec, second: GpuSpec) -> int:
        key = (first.bus_id, second.bus_id)
        level = self.common_ancestors.get(key)
        if level is None:
            level = self.common_ancestors[key] = self._compute_common_ancestor(first, second)
        return level

    def _compute_common_ancestor(self, first: GpuSpec, second: GpuSpec) -> int:
        if first.bus_id == second.bus_id:
            return int(_real.NVML_TOPOLOGY_INTERNAL)
        chain_a = self.profile.switch_chain(first.bus_id)
        chain_b = self.profile.switch_chain(second.bus_id)
        shared = [name for name in chain_a if name in chain_b]
        if shared:
            top = shared[0]  # nearest common switch
            switches = chain_a.index(top) + chain_b.index(top) + 1
            return int(
                _real.NVML_TOPOLOGY_SINGLE if switches == 1 else _real.NVML_TOPOLOGY_MULTIPLE
            )
        if self.profile.host_bridge(first.bus_id) == self.profile.host_bridge(second.bus_id):
            return int(_real.NVML_TOPOLOGY_HOSTBRIDGE)
        if first.numa_node == second.numa_node:
            return int(_real.NVML_TOPOLOGY_NODE)
        return int(_real.NVML_TOPOLOGY_SYSTEM)

    def nvmlDeviceGetTopologyCommonAncestor(self, device1: Any, device2: Any) -> int:
        first = self._gpu("nvmlDeviceGetTopologyCommonAncestor", device1)
        second = self._gpu_call(
            "nvmlDeviceGetTopologyCommonAncestor", self._entity(device2, ("gpu",)).gpu
        )
        return self._common_ancestor(first.spec, second.spec)

    def nvmlDeviceGetTopologyNearestGpus(self, device: Any, level: int) -> list[Any]:
        state = self._gpu("nvmlDeviceGetTopologyNearestGpus", device)
        return [
            self._device_handle(other.index)
            for other in self.gpus
            if other.index != state.index and self._common_ancestor(state.spec, other.spec) <= level
        ]

    def _nvlinked(self, first: _GpuState, second: _GpuState) -> bool:
        def active(state: _GpuState) -> list[Any]:
            links = state.spec.nvlinks or ()
            return [link for link in links if state.nvlink_active.get(link.link, link.active)]

        mine, theirs = active(first), active(second)
        if any(link.remote_bus_id == second.spec.bus_id for link in mine):
            return True
        switches = {link.remote_bus_id for link in mine if link.remote_type == "nvswitch"}
        return any(link.remote_bus_id in switches for link in theirs)

    def nvmlDeviceGetP2PStatus(self, device1: Any, device2: Any, p2pIndex: int) -> int:
        first = self._gpu("nvmlDeviceGetP2PStatus", device1)
        second = self._gpu_call("nvmlDeviceGetP2PStatus", self._entity(device2, ("gpu",)).gpu)
        if not isinstance(p2pIndex, int):
            # pynvml defines NVML_P2P_CAPS_INDEX_READ as the tuple (0,); ctypes rejects it.
            raise ctypes.ArgumentError(
                f"argument 3: TypeError: Don't know how to convert {p2pIndex!r}"
            )
        if not 0 <= p2pIndex < _real.NVML_P2P_CAPS_INDEX_UNKNOWN:
            self._raise("INVALID_ARGUMENT")
        if self._nvlinked(first, second):
            return int(_real.NVML_P2P_STATUS_OK)
        if p2pIndex == _real.NVML_P2P_CAPS_INDEX_NVLINK:
            return int(_real.NVML_P2P_STATUS_NOT_SUPPORTED)
        if "GeForce" in first.spec.name or "GeForce" in second.spec.name:
            return int(_real.NVML_P2P_STATUS_GPU_NOT_SUPPORTED)
        if p2pIndex == _real.NVML_P2P_CAPS_INDEX_ATOMICS:
            return int(_real.NVML_P2P_STATUS_NOT_SUPPORTED)
        if self._common_ancestor(first.spec, second.spec) >= _real.NVML_TOPOLOGY_SYSTEM:
            return int(_real.NVML_P2P_STATUS_CHIPSET_NOT_SUPPORTED)
        return int(_real.NVML_P2P_STATUS_OK)

    def nvmlDeviceOnSameBoard(self, handle1: Any, handle2: Any) -> bool:
        self._gpu("nvmlDeviceOnSameBoard", handle1)
        self._entity(handle2, ("gpu",))
        return False

    # ------------------------------------------------------------------ NVLink
    def _link(self, name: str, device: Any, link: int) -> tuple[_GpuState, Any]:
        state = self._gpu(name, device)
        if state.spec.nvlinks is None:
            self._raise("NOT_SUPPORTED")
        links = state.spec.nvlinks or ()
        if not isinstance(link, int) or not 0 <= link < len(links):
            # Real NVML: a link number past the GPU's last link is INVALID_ARGUMENT.
            self._raise("INVALID_ARGUMENT")
        return state, links[link]

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[Any]) -> Any:
        """As pynvml: an array of ``c_nvmlFieldValue_t``, each with its own ``nvmlReturn``.
        Modelled: NVML_FI_DEV_NVLINK_LINK_COUNT (NOT_SUPPORTED on a GPU without NVLink); any
        other field answers NOT_SUPPORTED in its slot."""
        state = self._gpu("nvmlDeviceGetFieldValues", handle)
        values = (_real.c_nvmlFieldValue_t * len(fieldIds))()
        for position, field_id in enumerate(fieldIds):
            value = values[position]
            try:
                value.fieldId, value.scopeId = field_id
            except TypeError:
                value.fieldId = field_id
            value.timestamp = int(time.time() * 1e6)
            if value.fieldId == _real.NVML_FI_DEV_NVLINK_LINK_COUNT and state.spec.nvlinks:
                value.valueType = _real.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = len(state.spec.nvlinks)
                value.nvmlReturn = _real.NVML_SUCCESS
            else:
                value.nvmlReturn = _real.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int:
        state, spec = self._link("nvmlDeviceGetNvLinkState", device, link)
        return 1 if state.nvlink_active.get(spec.link, spec.active) else 0

    def nvmlDeviceGetNvLinkVersion(self, device: Any, link: int) -> int:
        return int(self._link("nvmlDeviceGetNvLinkVersion", device, link)[1].version)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: Any, link: int) -> Any:
        spec = self._link("nvmlDeviceGetNvLinkRemotePciInfo", device, link)[1]
        if spec.remote_type == "gpu":
            peer = self.profile.gpu_by_bus_id(spec.remote_bus_id)
            device_id = peer.pci_device_id if peer else 0
            subsystem = peer.pci_subsystem_id if peer else 0
        else:
            device_id = next(
                (
                    s.pci_device_id
                    for s in self.profile.nvswitches
                    if s.bus_id == spec.remote_bus_id
                ),
                0,
            )
            subsystem = 0
        return self._pci_info(spec.remote_bus_id, device_id, subsystem)

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: Any, link: int) -> int:
        spec = self._link("nvmlDeviceGetNvLinkRemoteDeviceType", handle, link)[1]
        if spec.remote_type == "gpu":
            return int(_real.NVML_NVLINK_DEVICE_TYPE_GPU)
        return int(_real.NVML_NVLINK_DEVICE_TYPE_SWITCH)

    def nvmlDeviceGetNvLinkCapability(self, device: Any, link: int, capability: int) -> int:
        """As ``nvidia-smi nvlink -c`` shows real NVML answering on V100, A100 and H100/H800 (x86
        hosts): P2P, system memory access and both atomics 1; SLI 1 from Ampere on, 0 on Volta;
        and NVML_NVLINK_CAP_VALID ("Link is supported") 0 on every link, so a caller must not
        take it as the link's presence. Every link index answers, up or not; a capability past
        NVML_NVLINK_CAP_COUNT is INVALID_ARGUMENT, as is a link past the last."""
        state = self._link("nvmlDeviceGetNvLinkCapability", device, link)[0]
        if not isinstance(capability, int) or not 0 <= capability < _real.NVML_NVLINK_CAP_COUNT:
            self._raise("INVALID_ARGUMENT")
        if capability == _real.NVML_NVLINK_CAP_VALID:
            return 0
        if capability == _real.NVML_NVLINK_CAP_SLI_BRIDGE:
            return 0 if state.spec.architecture == "volta" else 1
        return 1

    # ------------------------------------------------------------------ MIG
    def _mig(
        self, name: str, device: Any, *, enabled: bool, symbol: str | None = None
    ) -> _GpuState:
        state = self._device(name, device, symbol=symbol)[0]
        mig = state.spec.mig
        if not mig.capable or (enabled and not mig.enabled):
            self._raise("NOT_SUPPORTED")
        return state

    def _table(self, state: _GpuState) -> mig_tables.MigTable:
        table = state.spec.mig.mig_table()
        assert table is not None  # capable GPUs always have a table (profile validation)
        return table

    def _gi(self, state: _GpuState, gi_id: int) -> GpuInstanceSpec:
        for gi in state.spec.mig.instances:
            if gi.id == gi_id:
                return gi
        raise AssertionError(gi_id)

    def _gi_profile(self, state: _GpuState, gi_id: int) -> mig_tables.GpuInstanceProfile:
        profile = self._table(state).by_name(self._gi(state, gi_id).profile)
        assert profile is not None
        return profile

    def _ci_name(self, state: _GpuState, gi_id: int, ci_id: int) -> str:
        gi_profile = self._gi_profile(state, gi_id)
        ci = next(c for c in self._gi(state, gi_id).compute_instances if c.id == ci_id)
        return mig_tables.compute_instance_name(gi_profile, ci.slices)

    def _mig_uuid(self, state: _GpuState, gi_id: int, ci_id: int) -> str:
        return "MIG-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{state.spec.uuid}/{gi_id}/{ci_id}"))

    def _mig_devices(self, state: _GpuState) -> list[tuple[int, int]]:
        return sorted(
            (gi.id, ci.id) for gi in state.spec.mig.instances for ci in gi.compute_instances
        )

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        mig = self._mig("nvmlDeviceGetMigMode", device, enabled=False).spec.mig
        return [int(mig.enabled), int(mig.pending)]

    def _fill_gi_profile_info(self, info: Any, profile: mig_tables.GpuInstanceProfile) -> Any:
        info.id = profile.id
        info.isP2pSupported = 0
        info.sliceCount = profile.slices
        info.instanceCount = profile.instance_count
        info.multiprocessorCount = profile.multiprocessors
        info.copyEngineCount = profile.copy_engines
        info.decoderCount = profile.decoders
        info.encoderCount = profile.encoders
        info.jpegCount = profile.jpegs
        info.ofaCount = profile.ofas
        info.memorySizeMB = profile.memory_mib
        if hasattr(info, "name"):
            info.name = f"MIG {profile.name}".encode()
        return info

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, device: Any, profile: int, version: int = 2
    ) -> Any:
        """As pynvml: version 2 (the default) is the C symbol ...ProfileInfoV, whose struct has
        the driver's profile name; version 1 has none."""
        symbol = "nvmlDeviceGetGpuInstanceProfileInfoV" if version == 2 else None
        state = self._mig(
            "nvmlDeviceGetGpuInstanceProfileInfo", device, enabled=False, symbol=symbol
        )
        if version not in (1, 2):
            self._raise("FUNCTION_NOT_FOUND")
        if not 0 <= profile < _real.NVML_GPU_INSTANCE_PROFILE_COUNT:
            self._raise("INVALID_ARGUMENT")
        row = self._table(state).by_nvml_profile(profile)
        if row is None:
            self._raise("NOT_SUPPORTED")
        info = (
            _real.c_nvmlGpuInstanceProfileInfo_v2_t()
            if version == 2
            else _real.c_nvmlGpuInstanceProfileInfo_t()
        )
        return self._fill_gi_profile_info(info, row)

    def nvmlDeviceGetGpuInstanceProfileInfoById(self, device: Any, profileId: int) -> Any:
        state = self._mig("nvmlDeviceGetGpuInstanceProfileInfoById", device, enabled=False)
        row = self._table(state).by_id(profileId)
        if row is None:
            self._raise("NOT_SUPPORTED")
        return self._fill_gi_profile_info(_real.c_nvmlGpuInstanceProfileInfo_v2_t(), row)

    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, device: Any, profileId: int) -> int:
        state = self._mig("nvmlDeviceGetGpuInstanceRemainingCapacity", device, enabled=True)
        row = self._table(state).by_id(profileId)
        if row is None:
            self._raise("INVALID_ARGUMENT")
        used: set[int] = set()
        for gi in state.spec.mig.instances:
            gi_row = self._table(state).by_name(gi.profile)
            assert gi_row is not None
            used |= set(range(gi.placement_start, gi.placement_start + gi_row.placement_size))
        free = [s for s in row.placement_starts if not used & set(range(s, s + row.placement_size))]
        taken: set[int] = set()
        count = 0
        for start in free:  # greedy: placements of one profile never overlap each other by start
            span = set(range(start, start + row.placement_size))
            if not span & taken:
                taken |= span
                count += 1
        return count

    def _gi_handle(self, gpu: int, gi_id: int) -> Any:
        return self._handle(_Entity("gi", gpu, gi_id), _real.c_nvmlGpuInstance_t)

    def nvmlDeviceGetGpuInstances(
        self, device: Any, profileId: int, gpuInstancesRef: Any, countRef: Any
    ) -> int:
        state = self._mig("nvmlDeviceGetGpuInstances", device, enabled=True)
        row = self._table(state).by_id(profileId)
        if row is None:
            self._raise("INVALID_ARGUMENT")
        matching = [gi for gi in state.spec.mig.instances if gi.profile == row.name]
        array = _deref(gpuInstancesRef)
        count = _deref(countRef)
        if array is not None and len(array) < len(matching):
            self._raise("INSUFFICIENT_SIZE")
        for position, gi in enumerate(matching):
            array[position] = self._gi_handle(state.index, gi.id)
        count.value = len(matching)
        return int(_real.NVML_SUCCESS)

    def nvmlDeviceGetGpuInstanceById(self, device: Any, gpuInstanceId: int) -> Any:
        state = self._mig("nvmlDeviceGetGpuInstanceById", device, enabled=True)
        if all(gi.id != gpuInstanceId for gi in state.spec.mig.instances):
            self._raise("NOT_FOUND")
        return self._gi_handle(state.index, gpuInstanceId)

    def _gi_entity(self, name: str, handle: Any) -> tuple[_GpuState, _Entity]:
        self._enter(name)
        entity = self._entity(handle, ("gi",))
        state = self._gpu_call(name, entity.gpu)
        if not self.mig_monitor:  # a handle held from before the capability went away
            self._raise("NO_PERMISSION")
        return state, entity

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:
        state, entity = self._gi_entity("nvmlGpuInstanceGetInfo", gpuInstance)
        gi = self._gi(state, entity.gi)
        row = self._gi_profile(state, entity.gi)
        info = _real.c_nvmlGpuInstanceInfo_t()
        info.device = self._device_handle(state.index)
        info.id = gi.id
        info.profileId = row.id
        info.placement.start = gi.placement_start
        info.placement.size = row.placement_size
        return info

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, device: Any, profile: int, engProfile: int, version: int = 2
    ) -> Any:
        state, entity = self._gi_entity("nvmlGpuInstanceGetComputeInstanceProfileInfo", device)
        gi_row = self._gi_profile(state, entity.gi)
        sizes = {
            mig_tables.CI_PROFILE_FOR_SLICES[s]: s
            for s in mig_tables.compute_instance_sizes(gi_row.slices)
        }
        if version not in (1, 2):
            self._raise("FUNCTION_NOT_FOUND")
        if profile not in sizes:
            self._raise("NOT_SUPPORTED")
        slices = sizes[profile]
        info: Any = (
            _real.c_nvmlComputeInstanceProfileInfo_v2_t()
            if version == 2
            else _real.c_nvmlComputeInstanceProfileInfo_t()
        )
        info.id = profile
        info.sliceCount = slices
        info.instanceCount = gi_row.slices // slices
        info.multiprocessorCount = mig_tables.compute_instance_multiprocessors(gi_row, slices)
        info.sharedCopyEngineCount = gi_row.copy_engines
        info.sharedDecoderCount = gi_row.decoders
        info.sharedEncoderCount = gi_row.encoders
        info.sharedJpegCount = gi_row.jpegs
        info.sharedOfaCount = gi_row.ofas
        if version == 2:
            info.name = f"MIG {mig_tables.compute_instance_name(gi_row, slices)}".encode()
        return info

    def _ci_handle(self, gpu: int, gi_id: int, ci_id: int) -> Any:
        return self._handle(_Entity("ci", gpu, gi_id, ci_id), _real.c_nvmlComputeInstance_t)

    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: int, computeInstancesRef: Any, countRef: Any
    ) -> int:
        state, entity = self._gi_entity("nvmlGpuInstanceGetComputeInstances", gpuInstance)
        matching = [
            ci
            for ci in self._gi(state, entity.gi).compute_instances
            if mig_tables.CI_PROFILE_FOR_SLICES[ci.slices] == profileId
        ]
        array = _deref(computeInstancesRef)
        if array is not None and len(array) < len(matching):
            self._raise("INSUFFICIENT_SIZE")
        for position, ci in enumerate(matching):
            array[position] = self._ci_handle(state.index, entity.gi, ci.id)
        _deref(countRef).value = len(matching)
        return int(_real.NVML_SUCCESS)

    def nvmlGpuInstanceGetComputeInstanceById(
        self, gpuInstance: Any, computeInstanceId: int
    ) -> Any:
        state, entity = self._gi_entity("nvmlGpuInstanceGetComputeInstanceById", gpuInstance)
        if all(ci.id != computeInstanceId for ci in self._gi(state, entity.gi).compute_instances):
            self._raise("NOT_FOUND")
        return self._ci_handle(state.index, entity.gi, computeInstanceId)

    def _ci_info(self, name: str, computeInstance: Any) -> Any:
        self._enter(name)
        entity = self._entity(computeInstance, ("ci",))
        state = self._gpu_call(name, entity.gpu)
        ci = next(c for c in self._gi(state, entity.gi).compute_instances if c.id == entity.ci)
        info = _real.c_nvmlComputeInstanceInfo_t()
        info.device = self._device_handle(state.index)
        info.gpuInstance = self._gi_handle(state.index, entity.gi)
        info.id = ci.id
        info.profileId = mig_tables.CI_PROFILE_FOR_SLICES[ci.slices]
        info.placement.start = ci.placement_start
        info.placement.size = ci.slices
        return info

    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:
        return self._ci_info("nvmlComputeInstanceGetInfo", computeInstance)

    def nvmlComputeInstanceGetInfo_v2(self, computeInstance: Any) -> Any:
        return self._ci_info("nvmlComputeInstanceGetInfo_v2", computeInstance)

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> Any:
        entity = self._device("nvmlDeviceIsMigDeviceHandle", device, mig_ok=True)[1]
        return ctypes.c_uint(1 if entity.kind == "mig" else 0)

    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int:
        entity = self._device("nvmlDeviceGetGpuInstanceId", device, mig_ok=True)[1]
        if entity.kind != "mig":
            self._raise("INVALID_ARGUMENT")
        return entity.gi

    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int:
        entity = self._device("nvmlDeviceGetComputeInstanceId", device, mig_ok=True)[1]
        if entity.kind != "mig":
            self._raise("INVALID_ARGUMENT")
        return entity.ci

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        state = self._mig("nvmlDeviceGetMaxMigDeviceCount", device, enabled=False)
        return self._table(state).max_gpu_instances

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> Any:
        state = self._mig("nvmlDeviceGetMigDeviceHandleByIndex", device, enabled=True)
        devices = self._mig_devices(state)
        if not 0 <= index < self._table(state).max_gpu_instances:
            self._raise("INVALID_ARGUMENT")
        if index >= len(devices):
            self._raise("NOT_FOUND")
        gi_id, ci_id = devices[index]
        return self._handle(_Entity("mig", state.index, gi_id, ci_id), _real.c_nvmlDevice_t)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> Any:
        state, entity = self._device(
            "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice, mig_ok=True
        )
        if entity.kind != "mig":
            self._raise("INVALID_ARGUMENT")
        return self._device_handle(state.index)

    def nvmlDeviceGetAttributes_v2(self, device: Any) -> Any:
        state, entity = self._device("nvmlDeviceGetAttributes_v2", device, mig_ok=True)
        if entity.kind != "mig":
            self._raise("NOT_SUPPORTED")
        return self._attributes(state, entity)

    def nvmlDeviceGetAttributes(self, device: Any) -> Any:
        state, entity = self._device("nvmlDeviceGetAttributes", device, mig_ok=True)
        if entity.kind != "mig":
            self._raise("NOT_SUPPORTED")
        return self._attributes(state, entity)

    def _attributes(self, state: _GpuState, entity: _Entity) -> Any:
        gi_row = self._gi_profile(state, entity.gi)
        ci = next(c for c in self._gi(state, entity.gi).compute_instances if c.id == entity.ci)
        attributes = _real.c_nvmlDeviceAttributes()
        attributes.multiprocessorCount = mig_tables.compute_instance_multiprocessors(
            gi_row, ci.slices
        )
        attributes.sharedCopyEngineCount = gi_row.copy_engines
        attributes.sharedDecoderCount = gi_row.decoders
        attributes.sharedEncoderCount = gi_row.encoders
        attributes.sharedJpegCount = gi_row.jpegs
        attributes.sharedOfaCount = gi_row.ofas
        attributes.gpuInstanceSliceCount = gi_row.slices
        attributes.computeInstanceSliceCount = ci.slices
        attributes.memorySizeMB = gi_row.memory_mib
        return attributes

    # ------------------------------------------------------------------ fabric
    def _fabric(
        self, name: str, device: Any, gpuFabricInfo: Any, layout: dict[str, tuple[int, int]]
    ) -> int:
        state = self._gpu(name, device)
        fabric = state.spec.fabric
        info = _deref(gpuFabricInfo)
        size = ctypes.sizeof(info)
        if "version" in layout:
            version = int.from_bytes(ctypes.string_at(ctypes.addressof(info), 4), "little")
            needed = _FABRIC_V_SIZES.get(version >> 24)
            if needed is None or version & 0xFFFFFF != needed:
                self._raise("ARGUMENT_VERSION_MISMATCH")
        else:
            needed = 28
        if size < needed:
            raise AssertionError(f"{name}: a {size}-byte struct; NVML writes {needed} bytes")
        if fabric is None:
            self._raise("NOT_SUPPORTED")
        status = 0 if fabric.status == "SUCCESS" else getattr(_real, f"NVML_ERROR_{fabric.status}")
        values = {
            "clusterUuid": uuid.UUID(fabric.cluster_uuid).bytes,
            "status": int(status).to_bytes(4, "little", signed=True),
            "cliqueId": int(fabric.clique_id).to_bytes(4, "little"),
            "state": FABRIC_STATES[fabric.state].to_bytes(1, "little"),
            "healthMask": bytes(4),
        }
        base = ctypes.addressof(info)
        for field_name, (offset, length) in layout.items():
            if field_name in values:
                ctypes.memmove(base + offset, values[field_name], length)
        return int(_real.NVML_SUCCESS)

    def nvmlDeviceGetGpuFabricInfo(self, device: Any, gpuFabricInfo: Any) -> int:
        return self._fabric(
            "nvmlDeviceGetGpuFabricInfo", device, gpuFabricInfo, _FABRIC_LEGACY_LAYOUT
        )

    def nvmlDeviceGetGpuFabricInfoV(self, device: Any, gpuFabricInfo: Any) -> int:
        """Checks the struct's version (v2 or v3), as NVML does."""
        return self._fabric("nvmlDeviceGetGpuFabricInfoV", device, gpuFabricInfo, _FABRIC_V_LAYOUT)

    # ------------------------------------------------------------------ health
    def nvmlDeviceGetEccMode(self, handle: Any) -> list[int]:
        if self._gpu("nvmlDeviceGetEccMode", handle).ecc is None:
            self._raise("NOT_SUPPORTED")
        return [1, 1]

    def nvmlDeviceGetCurrentEccMode(self, handle: Any) -> int:
        return self.nvmlDeviceGetEccMode(handle)[0]

    def nvmlDeviceGetPendingEccMode(self, handle: Any) -> int:
        return self.nvmlDeviceGetEccMode(handle)[1]

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        ecc = self._gpu("nvmlDeviceGetTotalEccErrors", handle).ecc
        if ecc is None:
            self._raise("NOT_SUPPORTED")
        if errorType not in (0, 1) or counterType not in (0, 1):
            self._raise("INVALID_ARGUMENT")
        kind = "corrected" if errorType == _real.NVML_MEMORY_ERROR_TYPE_CORRECTED else "uncorrected"
        scope = "volatile" if counterType == _real.NVML_VOLATILE_ECC else "aggregate"
        return int(getattr(ecc, f"{scope}_{kind}"))

    def _retired(self, name: str, device: Any, sourceFilter: int) -> tuple[int, ...]:
        pages = self._gpu(name, device).spec.health.retired_pages
        if pages is None:
            self._raise("NOT_SUPPORTED")
        if sourceFilter == _real.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS:
            return pages.single_bit
        if sourceFilter == _real.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR:
            return pages.double_bit
        self._raise("INVALID_ARGUMENT")

    def nvmlDeviceGetRetiredPages(self, device: Any, sourceFilter: int) -> list[int]:
        return list(self._retired("nvmlDeviceGetRetiredPages", device, sourceFilter))

    def nvmlDeviceGetRetiredPages_v2(self, device: Any, sourceFilter: int) -> list[dict[str, int]]:
        pages = self._retired("nvmlDeviceGetRetiredPages_v2", device, sourceFilter)
        return [{"address": address, "timestamp": 0} for address in pages]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        pages = self._gpu(
            "nvmlDeviceGetRetiredPagesPendingStatus", device
        ).spec.health.retired_pages
        if pages is None:
            self._raise("NOT_SUPPORTED")
        return int(pages.pending)

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        rows = self._gpu("nvmlDeviceGetRemappedRows", device).remapped_rows
        if rows is None:
            self._raise("NOT_SUPPORTED")
        return (rows.correctable, rows.uncorrectable, int(rows.pending), int(rows.failure))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_reasons

    def nvmlDeviceGetSupportedClocksThrottleReasons(self, handle: Any) -> int:
        self._gpu("nvmlDeviceGetSupportedClocksThrottleReasons", handle)
        return int(_real.nvmlClocksThrottleReasonAll)

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: Any) -> int:
        self._gpu("nvmlDeviceGetSupportedClocksEventReasons", handle)
        return int(_real.nvmlClocksEventReasonAll)

    # ------------------------------------------------------------------ metrics
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        state = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != _real.NVML_TEMPERATURE_GPU:
            self._raise("INVALID_ARGUMENT")
        return int(state.next_reading("temperature_c"))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._gpu("nvmlDeviceGetPowerUsage", handle).next_reading("power_w") * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return round(
            self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).spec.metrics.power_limit_w * 1000
        )

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return round(
            self._gpu("nvmlDeviceGetPowerManagementLimit", handle).spec.metrics.power_limit_w * 1000
        )

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        """NOT_SUPPORTED on a MIG-enabled GPU, as real NVML answers there (utilisation is per
        MIG device, through DCGM, not the parent's)."""
        state = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        if state.spec.mig.enabled:
            self._raise("NOT_SUPPORTED")
        utilization = _real.c_nvmlUtilization_t()
        utilization.gpu = int(state.next_reading("utilization_gpu"))
        utilization.memory = int(state.next_reading("utilization_memory"))
        return utilization

    # ------------------------------------------------------------------ events
    def nvmlEventSetCreate(self) -> Any:
        self._enter("nvmlEventSetCreate")
        event_set = _EventSet()
        entity = _Entity("eventset", gi=len(self.event_sets))
        handle = self._handle(entity, _real.c_nvmlEventSet_t)
        self.event_sets[self._address(entity)] = event_set
        return handle

    def _event_set(self, handle: Any) -> _EventSet:
        entity = self._entity(handle, ("eventset",))
        event_set = self.event_sets[self._address(entity)]
        if event_set.freed:
            self._raise("INVALID_ARGUMENT")
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._supported_events(self._gpu("nvmlDeviceGetSupportedEventTypes", handle))

    def _supported_events(self, state: _GpuState) -> int:
        supported = (
            _real.nvmlEventTypeXidCriticalError
            | _real.nvmlEventTypePState
            | _real.nvmlEventTypeClock
        )
        if state.ecc is not None:
            supported |= _real.nvmlEventTypeSingleBitEccError | _real.nvmlEventTypeDoubleBitEccError
        return int(supported)

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        state = self._gpu("nvmlDeviceRegisterEvents", handle)
        event_set = self._event_set(eventSet)
        if eventTypes & ~self._supported_events(state):
            self._raise("NOT_SUPPORTED")  # NVML refuses the whole call for one unsupported type
        with self.lock:
            event_set.registered[state.index] = (
                event_set.registered.get(state.index, 0) | eventTypes
            )
            if eventTypes & _real.nvmlEventTypeXidCriticalError:
                xid_type = _real.nvmlEventTypeXidCriticalError
                event_set.queue.extend(
                    (state.index, xid_type, xid) for xid in state.spec.health.xid_events
                )
                self.lock.notify_all()

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        self._enter("nvmlEventSetWait_v2")
        event_set = self._event_set(eventSet)
        deadline = time.monotonic() + max(timeoutms, 0) / 1000
        with self.lock:
            while not event_set.queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._raise("TIMEOUT")
                self.lock.wait(left)
            gpu, event_type, event_data = event_set.queue.popleft()
        data = _real.c_nvmlEventData_t()
        data.device = self._device_handle(gpu)
        data.eventType = event_type
        data.eventData = event_data
        data.gpuInstanceId = _NO_INSTANCE
        data.computeInstanceId = _NO_INSTANCE
        return data

    def nvmlEventSetWait(self, eventSet: Any, timeoutms: int) -> Any:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self._enter("nvmlEventSetFree")
        self._event_set(eventSet).freed = True

    # ------------------------------------------------------------------ runtime changes
    def deliver_xid(self, gpu: int, xid: int) -> None:
        self.deliver_event(gpu, _real.nvmlEventTypeXidCriticalError, xid)

    def deliver_event(self, gpu: int, event_type: int, event_data: int = 0) -> None:
        """Queue one event on every live event set that registered ``gpu`` for its type."""
        with self.lock:
            for event_set in self.event_sets.values():
                if not event_set.freed and event_set.registered.get(gpu, 0) & event_type:
                    event_set.queue.append((gpu, event_type, event_data))
            self.lock.notify_all()


class DriverInUse(RuntimeError):
    """``rmmod nvidia`` refused: a process still holds NVML initialised (the module is in use)."""


class FakeNvmlControl:
    """Changes a running fake machine; GPU ``index`` is the NVML index."""

    def __init__(self, nvml: FakeNvml) -> None:
        self._nvml = nvml

    @property
    def profile(self) -> MachineProfile:
        return self._nvml.profile

    @property
    def calls(self) -> collections.Counter[str]:
        """How often each nvml* function was called (including failed calls)."""
        return self._nvml.calls

    @property
    def initialized(self) -> bool:
        return self._nvml.init_count > 0

    @property
    def driver_loaded(self) -> bool:
        return self._nvml.driver_loaded

    def unload_driver(self) -> None:
        """Unload the kernel driver, as the GPU Operator's driver container does before it
        installs a new one. Refused with :class:`DriverInUse` while any NVML session is open
        (an initialised NVML holds ``/dev/nvidiactl``, so ``rmmod`` answers "in use"); once
        out, ``nvmlInit`` answers DRIVER_NOT_LOADED until :meth:`load_driver`."""
        sessions = self._nvml.init_count
        if sessions > 0:
            raise DriverInUse(
                f"{self.profile.name}: cannot unload the driver: module nvidia is in use "
                f"({sessions} NVML session(s) initialised)"
            )
        self._nvml.driver_loaded = False

    def load_driver(self, version: str | None = None, *, cuda_version: int | None = None) -> None:
        """Load the driver again, optionally another ``version`` (an upgrade); the volatile ECC
        counters start again from zero, as they count since the driver loaded. The same version:
        the next ``nvmlInit`` succeeds. Another one: ``nvmlInit`` answers
        LIB_RM_VERSION_MISMATCH ("Driver/library version mismatch") until :meth:`mount_library`
        — the library this process loaded is still the old driver's."""
        import dataclasses

        driver = self.profile.driver
        if version is not None:
            driver_branch(version)  # "565.57.01"; a malformed version fails here, not later
            driver = dataclasses.replace(driver, version=version, nvml_version=f"12.{version}")
        if cuda_version is not None:
            driver = dataclasses.replace(driver, cuda_version=cuda_version)
        self._nvml.profile = dataclasses.replace(self.profile, driver=driver)
        for state in self._nvml.gpus:  # volatile ECC counts are "since the driver loaded"
            if state.ecc is not None:
                state.ecc = dataclasses.replace(
                    state.ecc, volatile_corrected=0, volatile_uncorrected=0
                )
        self._nvml.driver_loaded = True

    def mount_library(self) -> None:
        """The container was recreated: the toolkit mounted the loaded driver's libraries, so
        NVML's library and kernel driver match again."""
        self._nvml.library_version = self.profile.driver.version

    def _gpu(self, index: int) -> _GpuState:
        if not 0 <= index < len(self._nvml.gpus):
            raise IndexError(f"{self.profile.name}: no NVML GPU with index {index}")
        return self._nvml.gpus[index]

    def inject_xid(self, index: int, xid: int) -> None:
        """Deliver an XID now to every event set that registered this GPU for XID events."""
        self._gpu(index)
        self._nvml.deliver_xid(index, xid)

    def inject_ecc_error(self, index: int, *, uncorrectable: bool = True, count: int = 1) -> None:
        """ECC errors as the hardware reports them: the volatile and aggregate counters go up
        by ``count`` and each error is one event (nvmlEventTypeDoubleBitEccError when
        ``uncorrectable``, else nvmlEventTypeSingleBitEccError; event data 0) for every event
        set that registered this GPU for that type."""
        import dataclasses

        state = self._gpu(index)
        if state.ecc is None:
            raise ValueError(f"{self.profile.name}: GPU {index} has no ECC (ecc: null in profile)")
        if count < 1:
            raise ValueError(f"inject_ecc_error: count must be >= 1, got {count}")
        kind = "uncorrected" if uncorrectable else "corrected"
        state.ecc = dataclasses.replace(
            state.ecc,
            **{
                f"volatile_{kind}": getattr(state.ecc, f"volatile_{kind}") + count,
                f"aggregate_{kind}": getattr(state.ecc, f"aggregate_{kind}") + count,
            },
        )
        event_type = (
            _real.nvmlEventTypeDoubleBitEccError
            if uncorrectable
            else _real.nvmlEventTypeSingleBitEccError
        )
        for _ in range(count):
            self._nvml.deliver_event(index, event_type)

    def replace_gpu(self, index: int, uuid: str) -> None:
        """The GPU at NVML ``index`` is now another board with ``uuid`` (a swap or
        re-enumeration); everything else about it stays as the profile says."""
        import dataclasses

        state = self._gpu(index)
        state.spec = dataclasses.replace(state.spec, uuid=uuid)

    def set_lost(self, index: int, lost: bool = True, *, error: str = "GPU_IS_LOST") -> None:
        """The GPU falls off the bus (or comes back): handles already held answer
        GPU_IS_LOST to every query, and a new handle fails with ``error`` (GPU_IS_LOST or
        UNKNOWN, as real drivers answer at nvmlDeviceGetHandleByIndex)."""
        if error not in ("GPU_IS_LOST", "UNKNOWN"):
            raise ValueError(f"set_lost: error must be GPU_IS_LOST or UNKNOWN, got {error!r}")
        state = self._gpu(index)
        state.lost = lost
        state.lost_error = error

    def set_mig_monitor(self, access: bool | None) -> None:
        """Hold the MIG monitor capability (True) or not (False) from now on, whatever the
        environment says; ``None`` reads ``NVIDIA_MIG_MONITOR_DEVICES`` again now."""
        self._nvml.mig_monitor_forced = access is not None
        self._nvml.mig_monitor = mig_monitor_from_environment() if access is None else access

    @property
    def mig_monitor(self) -> bool:
        """Whether NVML answers the MIG monitor calls (read at nvmlInit, or set here)."""
        return bool(self._nvml.mig_monitor)

    def _set_series(self, index: int, name: str, value: float) -> None:
        state = self._gpu(index)
        state.metrics[name] = [float(value)]
        state.cursors[name] = 0

    def set_utilization(
        self, index: int, *, gpu: int | None = None, memory: int | None = None
    ) -> None:
        if gpu is not None:
            self._set_series(index, "utilization_gpu", gpu)
        if memory is not None:
            self._set_series(index, "utilization_memory", memory)

    def set_memory_used(self, index: int, mib: int) -> None:
        self._set_series(index, "memory_used_mib", mib)

    def set_temperature(self, index: int, celsius: int) -> None:
        self._set_series(index, "temperature_c", celsius)

    def set_power(self, index: int, watts: float) -> None:
        self._set_series(index, "power_w", watts)

    def set_throttle_reasons(self, index: int, mask: int) -> None:
        self._gpu(index).throttle_reasons = mask

    def set_ecc(self, index: int, **counts: int) -> None:
        """E.g. ``set_ecc(2, volatile_uncorrected=1, aggregate_uncorrected=1)``."""
        import dataclasses

        state = self._gpu(index)
        state.ecc = dataclasses.replace(state.ecc or EccSpec(), **counts)

    def set_remapped_rows(
        self,
        index: int,
        *,
        correctable: int = 0,
        uncorrectable: int = 0,
        pending: bool = False,
        failure: bool = False,
    ) -> None:
        self._gpu(index).remapped_rows = RemappedRowsSpec(
            correctable, uncorrectable, pending, failure
        )

    def set_nvlink_active(self, index: int, link: int, active: bool) -> None:
        self._gpu(index).nvlink_active[link] = active

    def inject_error(
        self, function: str, error: str, *, index: int | None = None, times: int | None = None
    ) -> None:
        """Make ``function`` raise ``error`` (e.g. "GPU_IS_LOST"), on one GPU or node-wide."""
        if not hasattr(_real, function) or not hasattr(_real, f"NVML_ERROR_{error}"):
            raise ValueError(f"unknown NVML function {function!r} or error {error!r}")
        if index is None:
            self._nvml.node_errors[function] = InjectedError(error, times)
            self._nvml.node_remaining.pop(function, None)
        else:
            state = self._gpu(index)
            state.errors[function] = InjectedError(error, times)
            state.remaining.pop(function, None)

    def clear_errors(self) -> None:
        self._nvml.node_errors.clear()
        for state in self._nvml.gpus:
            state.errors.clear()


def _not_modelled(name: str, nvml: FakeNvml, signature: inspect.Signature) -> Callable[..., Any]:
    def function(*args: Any, **kwargs: Any) -> Any:
        signature.bind(*args, **kwargs)
        nvml.calls[name] += 1
        if nvml.init_count == 0:
            nvml._raise("UNINITIALIZED")
        nvml._raise("FUNCTION_NOT_FOUND")

    function.__name__ = function.__qualname__ = name
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__doc__ = (
        f"Not modelled by the fake: raises NVMLError_FunctionNotFound once initialised ({name})."
    )
    return function


def modelled_functions() -> tuple[str, ...]:
    """Names of the nvml* functions the fake answers from the profile."""
    return tuple(sorted(n for n in dir(FakeNvml) if n.startswith("nvml")))


def make_fake_pynvml(profile: MachineProfile | str) -> types.ModuleType:
    """A module object that looks like the real ``pynvml`` and answers from ``profile``."""
    machine = load_profile(profile) if isinstance(profile, str) else profile
    nvml = FakeNvml(machine)
    module = types.ModuleType(
        "pynvml", f"Fake pynvml for machine profile {machine.name!r} (gputopo mocks)."
    )
    for name, value in vars(_real).items():
        if name.startswith("__") and name not in ("__version__",):
            continue
        if name.startswith("nvml") and inspect.isfunction(value) and name not in _PURE_HELPERS:
            implementation = getattr(nvml, name, None) or getattr(nvml, value.__name__, None)
            if implementation is None:
                implementation = _not_modelled(name, nvml, inspect.signature(value))
            setattr(module, name, implementation)
        else:
            setattr(module, name, value)
    module.control = FakeNvmlControl(nvml)  # type: ignore[attr-defined]
    module.__file__ = __file__
    return module


@contextmanager
def installed(profile: MachineProfile | str) -> Iterator[types.ModuleType]:
    """Install a fake as ``sys.modules['pynvml']`` for the duration; restores the previous one."""
    module = make_fake_pynvml(profile)
    previous = sys.modules.get("pynvml")
    sys.modules["pynvml"] = module
    try:
        yield module
    finally:
        if previous is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = previous
