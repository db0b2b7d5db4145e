"""Tiny hand-built fixtures for the discovery unit tests: a real-layout sysfs tree and a minimal
NVML stand-in that raises the real pynvml error classes. The full machine profiles come from
``mocks/``; these pin parsing details the profiles do not vary.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def symlink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


@dataclass
class PciFunction:
    bdf: str
    parents: tuple[str, ...] = ()  # bridges from the root port down
    vendor: str = "0x10de"
    device: str = "0x2330"
    pci_class: str = "0x030200"
    numa_node: int = 0
    local_cpulist: str = "0-3"
    driver: str | None = "nvidia"
    link_speed: str = "32.0 GT/s PCIe"
    link_width: int = 16
    extra: dict[str, str] = field(default_factory=dict)


def build_tree(
    root: Path,
    functions: list[PciFunction],
    *,
    numa: dict[int, tuple[str, str, int]] | None = None,  # id -> (cpulist, distance, kB)
    infiniband: dict[str, tuple[str, tuple[str, ...]]] | None = None,  # name -> (bdf, netdevs)
    dmi: tuple[str, str] | None = None,
) -> Path:
    """Lay out sysfs the way Linux does: real directories under devices/, symlinks elsewhere."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    bridges: set[str] = set()
    for function in functions:
        bridges.update(function.parents)
    made: set[str] = set()

    def directory_of(bdf: str, parents: tuple[str, ...]) -> Path:
        domain_bus = bdf[: bdf.rindex(":")] if not parents else parents[0][: parents[0].rindex(":")]
        path = root / "devices" / f"pci{domain_bus}"
        for parent in parents:
            path = path / parent
        return path / bdf

    for function in functions:
        for depth, bridge in enumerate(function.parents):
            if bridge in made:
                continue
            made.add(bridge)
            path = directory_of(bridge, function.parents[:depth])
            write(path / "vendor", "0x1000")
            write(path / "device", "0xc010")
            write(path / "class", "0x060400")
            symlink(root / "bus" / "pci" / "devices" / bridge, path)
        path = directory_of(function.bdf, function.parents)
        write(path / "vendor", function.vendor)
        write(path / "device", function.device)
        write(path / "class", function.pci_class)
        write(path / "numa_node", str(function.numa_node))
        write(path / "local_cpulist", function.local_cpulist)
        write(path / "current_link_speed", function.link_speed)
        write(path / "max_link_speed", function.link_speed)
        write(path / "current_link_width", str(function.link_width))
        write(path / "max_link_width", str(function.link_width))
        for name, text in function.extra.items():
            write(path / name, text)
        if function.driver:
            driver_dir = root / "bus" / "pci" / "drivers" / function.driver
            driver_dir.mkdir(parents=True, exist_ok=True)
            symlink(path / "driver", driver_dir)
        symlink(root / "bus" / "pci" / "devices" / function.bdf, path)
    for node_id, (cpulist, distance, kilobytes) in (numa or {}).items():
        node = root / "devices" / "system" / "node" / f"node{node_id}"
        write(node / "cpulist", cpulist)
        write(node / "distance", distance)
        write(node / "meminfo", f"Node {node_id} MemTotal:       {kilobytes} kB")
    if numa:
        ids = sorted(numa)
        write(root / "devices" / "system" / "node" / "online", ",".join(str(i) for i in ids))
    for name, (bdf, netdevs) in (infiniband or {}).items():
        device = (root / "bus" / "pci" / "devices" / bdf).resolve()
        ib_dir = device / "infiniband" / name
        ib_dir.mkdir(parents=True, exist_ok=True)
        symlink(ib_dir / "device", device)
        symlink(root / "class" / "infiniband" / name, ib_dir)
        for netdev in netdevs:
            (device / "net" / netdev).mkdir(parents=True, exist_ok=True)
    if dmi:
        write(root / "class" / "dmi" / "id" / "product_name", dmi[0])
        write(root / "class" / "dmi" / "id" / "sys_vendor", dmi[1])
    return root


class Struct:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


@dataclass
class TinyGpu:
    bus_id: str  # NVML style, "00000000:18:00.0"
    name: str = "NVIDIA H100 80GB HBM3"
    memory_bytes: int = 80 * 1024**3
    cc: tuple[int, int] = (9, 0)
    numa: int = 0
    # link -> (active, version, remote type or None when unsupported, remote bus id)
    links: dict[int, tuple[int, int, int | None, str]] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False


def tiny_nvml(
    gpus: list[TinyGpu], *, init_error: int | None = None, xids: list[tuple[int, int]] = ()
) -> types.SimpleNamespace:
    """A module-like object with the real pynvml's constants and errors, driven by ``gpus``."""
    module = types.SimpleNamespace()
    for name in dir(pynvml):
        if name.startswith(("NVML_", "NVMLError", "nvmlEventType", "nvmlClocks")):
            setattr(module, name, getattr(pynvml, name))
    pending_xids = list(xids)
    handles = [Struct(gpu=gpu, index=i) for i, gpu in enumerate(gpus)]

    def guarded(name: str, function: Any) -> Any:
        def call(handle: Any, *args: Any) -> Any:
            gpu: TinyGpu = handle.gpu
            if gpu.lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if name in gpu.fail:
                raise pynvml.NVMLError(gpu.fail[name])
            return function(gpu, *args)

        return call

    def not_supported(*_: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def init() -> None:
        if init_error is not None:
            raise pynvml.NVMLError(init_error)

    def link(gpu: TinyGpu, number: int) -> tuple[int, int, int | None, str]:
        if number not in gpu.links:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.links[number]

    def remote_type(gpu: TinyGpu, number: int) -> int:
        value = link(gpu, number)[2]
        if value is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def event_wait(event_set: Any, timeout: int) -> Any:
        if not pending_xids:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        index, code = pending_xids.pop(0)
        return Struct(device=handles[index], eventType=0x8, eventData=code)

    def handle_by_index(index: int) -> Any:
        if gpus[index].lost:  # real NVML: a lost GPU fails already at its handle
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handles[index]

    def common_ancestor(gpu: TinyGpu, other: Any) -> int:
        return 10 if gpu.numa == other.gpu.numa else 50

    functions: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12040,
        "nvmlSystemGetNVMLVersion": lambda: "12.550.54.15",
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlEventSetCreate": lambda: Struct(),
        "nvmlEventSetWait": event_wait,
        "nvmlEventSetFree": lambda s: None,
        "nvmlDeviceRegisterEvents": lambda h, t, s: None,
        "nvmlDeviceGetIndex": lambda h: h.index,
    }
    device_functions: dict[str, Any] = {
        "nvmlDeviceGetPciInfo": lambda g: Struct(busId=g.bus_id.encode()),
        "nvmlDeviceGetUUID": lambda g: f"GPU-{g.bus_id[9:11]}",
        "nvmlDeviceGetName": lambda g: g.name,
        "nvmlDeviceGetMemoryInfo": lambda g: Struct(total=g.memory_bytes),
        "nvmlDeviceGetCudaComputeCapability": lambda g: g.cc,
        "nvmlDeviceGetNumaNodeId": lambda g: g.numa,
        "nvmlDeviceGetCpuAffinity": lambda g, n: [0xF] + [0] * (n - 1),
        "nvmlDeviceGetNvLinkState": lambda g, n: link(g, n)[0],
        "nvmlDeviceGetNvLinkVersion": lambda g, n: link(g, n)[1],
        "nvmlDeviceGetNvLinkRemoteDeviceType": remote_type,
        "nvmlDeviceGetNvLinkRemotePciInfo": lambda g, n: Struct(busId=link(g, n)[3].encode()),
        "nvmlDeviceGetTopologyCommonAncestor": common_ancestor,
        "nvmlDeviceGetMigMode": lambda g: not_supported(),
        "nvmlDeviceGetTotalEccErrors": lambda g, e, c: 0,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda g: 0x1,
        "nvmlDeviceGetTemperature": lambda g, s: 40,
        "nvmlDeviceGetPowerUsage": lambda g: 70500,
        "nvmlDeviceGetEnforcedPowerLimit": lambda g: 700000,
        "nvmlDeviceGetRemappedRows": lambda g: (0, 0, 0, 0),
    }
    for name, function in functions.items():
        setattr(module, name, function)
    for name, function in device_functions.items():
        setattr(module, name, guarded(name, function))
    return module
