"""Write a fake sysfs tree for a machine profile, laid out as the Linux kernel lays out ``/sys``.

``root`` plays the part of ``/sys``: PCI functions nest under ``devices/pciDDDD:BB/`` from the
root port down through switch ports, ``bus/pci/devices/<bdf>`` are relative symlinks into that
tree, ``driver`` links point at ``bus/pci/drivers/<name>``, NUMA nodes live under
``devices/system/node``, RDMA devices under ``class/infiniband`` and DMI identity under
``class/dmi/id``. GPUs NVML does not see (hidden or lost) are on the bus like any other.

Nothing is written outside ``root``: every name from the profile that becomes a path component
(RDMA device, netdev and driver names) must be one safe component
(:func:`gputopo.mocks.spec.unsafe_name_reason`), and every file, directory and link is checked to
resolve inside ``root`` before it is made, so a symlink already in the tree cannot redirect a
write elsewhere. Either refusal is a :class:`SysfsBuildError` naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from gputopo.core.grammar import format_cpulist
from gputopo.mocks.spec import (
    MELLANOX_VENDOR,
    NVIDIA_VENDOR,
    MachineProfile,
    PcieLinkSpec,
    unsafe_name_reason,
)

_LINK_SPEEDS = {
    1: "2.5 GT/s PCIe",
    2: "5.0 GT/s PCIe",
    3: "8.0 GT/s PCIe",
    4: "16.0 GT/s PCIe",
    5: "32.0 GT/s PCIe",
    6: "64.0 GT/s PCIe",
}

CLASS_3D = "0x030200"
CLASS_VGA = "0x030000"
CLASS_INFINIBAND = "0x020700"
CLASS_ETHERNET = "0x020000"
CLASS_BRIDGE = "0x060400"
CLASS_NVSWITCH = "0x068000"


class SysfsBuildError(ValueError):
    """The profile names something that would leave the tree; one line naming it."""


def link_speed(gen: int) -> str:
    return _LINK_SPEEDS.get(gen, f"{gen}.0 GT/s PCIe")


def cpumask(cpus: tuple[int, ...], nr_cpus: int) -> str:
    """Kernel cpumask format: 32-bit hex words, most significant first, comma separated."""
    words = max((nr_cpus + 31) // 32, 1)
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    return ",".join(f"{(value >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range(words)))


class _Writer:
    def __init__(self, profile: MachineProfile, root: Path) -> None:
        self.profile = profile
        self.root = root
        self.real_root = os.path.realpath(root)
        self.nr_cpus = max((cpu + 1 for node in profile.numa_nodes for cpu in node.cpus), default=1)
        self.device_dirs: dict[str, Path] = {}

    def inside(self, path: Path) -> Path:
        """``path`` if it resolves inside the tree (symlinks followed), else SysfsBuildError."""
        real = os.path.realpath(path)
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            raise SysfsBuildError(
                f"sysfs tree {self.root}: {path} would be written outside it (at {real})"
            )
        return path

    def mkdir(self, directory: Path) -> None:
        self.inside(directory).mkdir(parents=True, exist_ok=True)

    def write(self, path: Path, text: str) -> None:
        self.mkdir(path.parent)
        self.inside(path).write_text(text + "\n", encoding="utf-8")

    def link(self, link: Path, target: Path | str) -> None:
        """A relative symlink, as the kernel makes them (a str target is used verbatim)."""
        self.mkdir(link.parent)
        self.inside(link.parent)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target if isinstance(target, str) else os.path.relpath(target, link.parent))

    def numa_cpus(self, node_id: int) -> tuple[int, ...]:
        node = self.profile.numa_node(node_id)
        return node.cpus if node is not None else ()

    def pci_function(
        self,
        directory: Path,
        *,
        vendor: int,
        device: int,
        pci_class: str,
        numa_node: int,
        link: PcieLinkSpec,
        driver: str | None,
        subsystem: int = 0,
    ) -> None:
        self.mkdir(directory)
        cpus = self.numa_cpus(numa_node)
        self.write(directory / "vendor", f"0x{vendor:04x}")
        self.write(directory / "device", f"0x{device:04x}")
        self.write(directory / "subsystem_vendor", f"0x{subsystem & 0xFFFF:04x}")
        self.write(directory / "subsystem_device", f"0x{(subsystem >> 16) & 0xFFFF:04x}")
        self.write(directory / "class", pci_class)
        known = not self.profile.pci_numa_unknown
        self.write(directory / "numa_node", str(numa_node) if known else "-1")
        self.write(directory / "local_cpulist", format_cpulist(cpus))
        self.write(directory / "local_cpus", cpumask(cpus, self.nr_cpus))
        self.write(directory / "current_link_speed", link_speed(link.gen))
        self.write(directory / "max_link_speed", link_speed(link.gen_max))
        self.write(directory / "current_link_width", str(link.width))
        self.write(directory / "max_link_width", str(link.width_max))
        bus_id = directory.name
        self.link(self.root / "bus" / "pci" / "devices" / bus_id, directory)
        if driver is not None:
            driver_dir = self.root / "bus" / "pci" / "drivers" / driver
            self.mkdir(driver_dir)
            self.link(directory / "driver", driver_dir)
            self.link(driver_dir / bus_id, directory)

    def endpoint_dir(self, bus_id: str, numa_node: int, link: PcieLinkSpec) -> Path:
        """Create the bridges above a device (once each) and return the device's directory."""
        path = self.profile.pci_path(bus_id)
        directory = self.root / "devices" / self.profile.host_bridge(bus_id)
        for bridge in path[:-1]:
            directory = directory / bridge
            if bridge not in self.device_dirs:
                self.device_dirs[bridge] = directory
                self.pci_function(
                    directory,
                    vendor=0x1000 if bridge != path[0] else 0x8086,
                    device=0xC010 if bridge != path[0] else 0x352A,
                    pci_class=CLASS_BRIDGE,
                    numa_node=numa_node,
                    link=link,
                    driver="pcieport",
                )
        directory = directory / bus_id
        self.device_dirs[bus_id] = directory
        return directory

    def pci(self) -> None:
        for gpu in self.profile.gpus:
            directory = self.endpoint_dir(gpu.bus_id, gpu.numa_node, gpu.pcie)
            self.pci_function(
                directory,
                vendor=NVIDIA_VENDOR,
                device=gpu.pci_device_id,
                pci_class=CLASS_VGA if gpu.vga else CLASS_3D,
                numa_node=gpu.numa_node,
                link=gpu.pcie,
                driver=gpu.sysfs_driver,
                subsystem=gpu.pci_subsystem_id,
            )
        for switch in self.profile.nvswitches:
            if not switch.in_sysfs:
                continue
            link = PcieLinkSpec(4, 4, 2, 2)
            directory = self.endpoint_dir(switch.bus_id, switch.numa_node, link)
            self.pci_function(
                directory,
                vendor=NVIDIA_VENDOR,
                device=switch.pci_device_id,
                pci_class=CLASS_NVSWITCH,
                numa_node=switch.numa_node,
                link=link,
                driver="nvidia-nvswitch",
            )
        for nic in self.profile.nics:
            directory = self.endpoint_dir(nic.bus_id, nic.numa_node, nic.pcie)
            infiniband = nic.link_layer == "infiniband"
            self.pci_function(
                directory,
                vendor=MELLANOX_VENDOR,
                device=nic.pci_device_id,
                pci_class=CLASS_INFINIBAND if infiniband else CLASS_ETHERNET,
                numa_node=nic.numa_node,
                link=nic.pcie,
                driver=nic.sysfs_driver,
            )
            ib_dir = directory / "infiniband" / nic.name
            self.write(
                ib_dir / "ports" / "1" / "link_layer", "InfiniBand" if infiniband else "Ethernet"
            )
            self.write(ib_dir / "node_type", "1: CA")
            self.link(ib_dir / "device", f"../../../{nic.bus_id}")
            self.link(self.root / "class" / "infiniband" / nic.name, ib_dir)
            for netdev in nic.netdevs:
                net_dir = directory / "net" / netdev
                self.write(net_dir / "type", "32" if infiniband else "1")
                self.link(net_dir / "device", f"../../../{nic.bus_id}")
                self.link(self.root / "class" / "net" / netdev, net_dir)

    def numa(self) -> None:
        base = self.root / "devices" / "system" / "node"
        ids = format_cpulist([node.id for node in self.profile.numa_nodes])
        self.write(base / "online", ids)
        self.write(base / "possible", ids)
        self.write(
            base / "has_cpu", format_cpulist([n.id for n in self.profile.numa_nodes if n.cpus])
        )
        self.write(base / "has_memory", ids)
        for node in self.profile.numa_nodes:
            directory = base / f"node{node.id}"
            self.write(directory / "cpulist", format_cpulist(node.cpus))
            self.write(directory / "cpumap", cpumask(node.cpus, self.nr_cpus))
            self.write(directory / "distance", " ".join(str(d) for d in node.distances))
            total_kb = node.memory_bytes // 1024
            free_kb = total_kb * 9 // 10
            self.write(
                directory / "meminfo",
                f"Node {node.id} MemTotal:       {total_kb} kB\n"
                f"Node {node.id} MemFree:        {free_kb} kB\n"
                f"Node {node.id} MemUsed:        {total_kb - free_kb} kB",
            )
        cpus = format_cpulist([cpu for node in self.profile.numa_nodes for cpu in node.cpus])
        self.write(self.root / "devices" / "system" / "cpu" / "online", cpus)
        self.write(self.root / "devices" / "system" / "cpu" / "possible", cpus)

    def dmi(self) -> None:
        directory = self.root / "devices" / "virtual" / "dmi" / "id"
        self.write(directory / "product_name", self.profile.node.product_name or "")
        self.write(directory / "sys_vendor", self.profile.node.vendor or "")
        self.link(self.root / "class" / "dmi" / "id", directory)


def build_sysfs(profile: MachineProfile, root: Path) -> Path:
    """Write the profile's sysfs tree with ``root`` standing for ``/sys``; returns ``root``.

    ``root`` may exist (e.g. a pytest ``tmp_path``); files of an earlier build are overwritten.
    A name that is not a safe path component, or a path that would resolve outside ``root``,
    raises :class:`SysfsBuildError` (names are checked before anything is written).
    """
    _check_names(profile)
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(profile, root)
    writer.pci()
    writer.numa()
    writer.dmi()
    return root


def _check_names(profile: MachineProfile) -> None:
    """Every profile name joined into a path is one safe component (a profile parsed by
    :mod:`gputopo.mocks.profile` already is; a hand-built :class:`MachineProfile` may not be)."""
    names = [(f"GPU {gpu.bus_id} sysfs_driver", gpu.sysfs_driver) for gpu in profile.gpus]
    for nic in profile.nics:
        names += [(f"NIC {nic.bus_id} name", nic.name)]
        names += [(f"NIC {nic.bus_id} sysfs_driver", nic.sysfs_driver)]
        names += [(f"NIC {nic.bus_id} netdev", netdev) for netdev in nic.netdevs]
    for what, name in names:
        if name is None and what.startswith("GPU"):
            continue
        reason = unsafe_name_reason(name)
        if reason is not None:
            raise SysfsBuildError(f"profile {profile.source}: {what}: {reason}")
