"""Read the PCI tree, NUMA layout, RDMA NICs and DMI identity from a sysfs tree.

The root is configurable because the DaemonSet mounts the host's ``/sys`` at ``/host/sys`` and the
tests point it at a fake tree. Nothing here raises for a missing or unreadable file: the value
becomes ``None`` (unknown) or empty and the rest of the machine is still described.

PCIe switch heuristic (see docs/discovery.md): a device's PCI path is the chain of bridges from
the root port down to it, taken from the resolved ``/sys/bus/pci/devices/<bdf>`` symlink. A PCIe
switch is an upstream port with downstream ports below it, so a device that has at least two
bridges above it besides the root port sits behind a switch, and that switch's upstream port is
the bridge two hops above the device (``path[-2]``). Devices directly under a root port (or a
single bridge) have no switch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from gputopo.core import grammar

NVIDIA_VENDOR_ID = "0x10de"
# PCI class codes of NVIDIA GPUs: VGA controller (0x0300xx) and 3D controller (0x0302xx).
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")
PCI_BRIDGE_CLASS_PREFIX = "0x0604"
# Relations (pcie_relation) under which a NIC serves a GPU with GPUDirect RDMA (NCCL's default).
LOCAL_PCIE_RELATIONS = frozenset({"PIX", "PXB"})

join = os.path.join

_BDF = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")

# PCIe transfer rate per lane (GT/s) to generation.
_GT_PER_S_TO_GEN: dict[float, int] = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6, 128.0: 7}


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs describes it."""

    pci_bus_id: str
    vendor: str | None = None
    device_id: str | None = None
    pci_class: str | None = None
    numa_node: int | None = None
    local_cpus: tuple[int, ...] = ()
    driver: str | None = None
    link_gen_current: int | None = None
    link_gen_max: int | None = None
    link_width_current: int | None = None
    link_width_max: int | None = None
    pci_path: tuple[str, ...] = ()  # bridges from the root port down, excluding the device
    pcie_switch: str | None = None


@dataclass(frozen=True)
class SysNumaNode:
    id: int
    cpus: tuple[int, ...] = ()
    memory_total_bytes: int | None = None
    distances: tuple[int, ...] = ()


@dataclass(frozen=True)
class SysRdmaNic:
    name: str
    pci_bus_id: str
    numa_node: int | None = None
    netdevs: tuple[str, ...] = ()
    pci_path: tuple[str, ...] = ()
    pcie_switch: str | None = None


def normalize_bus_id(bus_id: str) -> str:
    """NVML says "00000000:18:00.0", sysfs "0000:18:00.0": both become "0000:18:00.0".

    The grammar is :func:`gputopo.core.grammar.normalize_bus_id`; the agent tolerates text it
    cannot parse (kept, lower-cased) because a device with an odd id is still worth describing.
    """
    try:
        return grammar.normalize_bus_id(bus_id)
    except grammar.GrammarError:
        return bus_id.strip().lower()


def salvage_cpulist(text: str) -> tuple[int, ...]:
    """A cpulist read from sysfs, keeping the well-formed pieces ("0-1,x,3" gives 0, 1, 3).

    The grammar is :func:`gputopo.core.grammar.parse_cpulist`; sysfs never raises (see the module
    docstring), so a malformed piece is skipped and the CPUs the rest names are kept.
    """
    try:
        return grammar.parse_cpulist(text)
    except grammar.GrammarError:
        cpus: set[int] = set()
        for piece in text.split(","):
            try:
                cpus.update(grammar.parse_cpulist(piece))
            except grammar.GrammarError:
                continue
        return tuple(sorted(cpus))


def parse_link_speed(text: str) -> int | None:
    """ "32.0 GT/s PCIe" (or "8 GT/s", "2.5 GT/s") to the PCIe generation; unknown gives None."""
    match = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*GT/s", text)
    if match is None:
        return None
    return _GT_PER_S_TO_GEN.get(float(match.group(1)))


class SysfsReader:
    """Reads one sysfs tree. Cheap to construct; every method re-reads the files."""

    def __init__(self, root: str | os.PathLike[str] = "/sys") -> None:
        self.root = os.fspath(root)
        self._real_root = os.path.realpath(self.root)

    # -- low-level helpers ------------------------------------------------------------------

    def _read(self, path: str) -> str | None:
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except (OSError, ValueError):
            return None
        try:
            data = os.read(descriptor, 1 << 16)  # sysfs attributes are at most a page
        except OSError:
            return None
        finally:
            os.close(descriptor)
        return data.decode("utf-8", errors="replace").strip()

    def _read_int(self, path: str) -> int | None:
        text = self._read(path)
        if text is None:
            return None
        try:
            return int(text, 0) if text.lower().startswith("0x") else int(text)
        except ValueError:
            return None

    def _follow(self, link: str) -> str | None:
        """Follow one sysfs symlink. Kernel sysfs links are relative and point into the real
        ``devices/`` tree, so they are resolved against the link's own directory wherever the
        tree is mounted; an absolute "/sys/..." target (a hand-built tree) is re-rooted under
        the configured root. A plain directory is returned as it is; a missing path is None."""
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError:
            return link if os.path.exists(link) else None
        if os.path.isabs(target):
            if target.startswith("/sys/") and self.root != "/sys":
                target = join(self.root, os.path.relpath(target, "/sys"))
            resolved = target
        else:
            resolved = os.path.normpath(join(os.path.dirname(link), target))
        if not os.path.exists(resolved):
            # The link's directory was itself reached through a symlink: let the OS resolve it.
            real = os.path.realpath(link)
            return real if os.path.exists(real) else None
        return resolved

    def is_valid_root(self) -> bool:
        """Whether this looks like a sysfs tree at all (the CLI refuses a wrong --sysfs-root)."""
        return os.path.isdir(self.root) and (
            os.path.isdir(join(self.root, "bus", "pci"))
            or os.path.isdir(join(self.root, "devices"))
        )

    # -- PCI ----------------------------------------------------------------------------------

    def pci_bus_ids(self) -> list[str]:
        try:
            names = os.listdir(join(self.root, "bus", "pci", "devices"))
        except OSError:
            return []
        return sorted(normalize_bus_id(name) for name in names if _BDF.match(name))

    def _device_dir(self, bus_id: str) -> str:
        return join(self.root, "bus", "pci", "devices", bus_id)

    def _pci_path(self, bus_id: str, device_dir: str) -> tuple[str, ...]:
        chain = [normalize_bus_id(part) for part in device_dir.split(os.sep) if _BDF.match(part)]
        if chain and chain[-1] == bus_id:
            chain.pop()
        bridges = []
        parent_dirs = _ancestors(device_dir)
        for candidate in chain:
            pci_class = self._read(join(parent_dirs[candidate], "class"))
            if pci_class is not None and not pci_class.lower().startswith(PCI_BRIDGE_CLASS_PREFIX):
                continue  # a non-bridge parent (rare): not part of the bridge chain
            bridges.append(candidate)
        return tuple(bridges)

    def pci_device(self, bus_id: str) -> PciDevice | None:
        bus_id = normalize_bus_id(bus_id)
        directory = self._follow(self._device_dir(bus_id))
        if directory is None:
            return None
        numa = self._read_int(join(directory, "numa_node"))
        cpulist = self._read(join(directory, "local_cpulist"))
        driver_link = self._follow(join(directory, "driver"))
        driver = os.path.basename(driver_link) if driver_link is not None else None
        speed = self._read(join(directory, "current_link_speed"))
        max_speed = self._read(join(directory, "max_link_speed"))
        path = self._pci_path(bus_id, directory)
        vendor = self._read(join(directory, "vendor"))
        device_id = self._read(join(directory, "device"))
        pci_class = self._read(join(directory, "class"))
        return PciDevice(
            pci_bus_id=bus_id,
            vendor=vendor.lower() if vendor else None,
            device_id=device_id.lower() if device_id else None,
            pci_class=pci_class.lower() if pci_class else None,
            numa_node=numa if numa is not None and numa >= 0 else None,
            local_cpus=salvage_cpulist(cpulist) if cpulist else (),
            driver=driver,
            link_gen_current=parse_link_speed(speed) if speed else None,
            link_gen_max=parse_link_speed(max_speed) if max_speed else None,
            link_width_current=_positive(self._read_int(join(directory, "current_link_width"))),
            link_width_max=_positive(self._read_int(join(directory, "max_link_width"))),
            pci_path=path,
            pcie_switch=nearest_pcie_switch(path),
        )

    def nvidia_gpus(self) -> list[PciDevice]:
        """NVIDIA display/3D controllers on the PCI bus, whether or not a driver is bound."""
        gpus = []
        for bus_id in self.pci_bus_ids():
            directory = self._follow(self._device_dir(bus_id))
            if directory is None:
                continue
            vendor = (self._read(join(directory, "vendor")) or "").lower()
            pci_class = (self._read(join(directory, "class")) or "").lower()
            if vendor != NVIDIA_VENDOR_ID or not pci_class.startswith(GPU_CLASS_PREFIXES):
                continue
            device = self.pci_device(bus_id)
            if device is not None:
                gpus.append(device)
        return gpus

    # -- NUMA ---------------------------------------------------------------------------------

    def numa_nodes(self) -> list[SysNumaNode]:
        base = join(self.root, "devices", "system", "node")
        online = self._read(join(base, "online"))
        if online:
            ids = list(salvage_cpulist(online))
        else:
            try:
                names = os.listdir(base)
            except OSError:
                return []
            ids = sorted(int(n[4:]) for n in names if n.startswith("node") and n[4:].isdigit())
        nodes = []
        for node_id in ids:
            directory = join(base, f"node{node_id}")
            cpulist = self._read(join(directory, "cpulist"))
            distance_text = self._read(join(directory, "distance")) or ""
            distances: tuple[int, ...] = ()
            try:
                distances = tuple(int(d) for d in distance_text.split())
            except ValueError:
                distances = ()
            nodes.append(
                SysNumaNode(
                    id=node_id,
                    cpus=salvage_cpulist(cpulist) if cpulist else (),
                    memory_total_bytes=self._meminfo_total(join(directory, "meminfo")),
                    distances=distances if len(distances) == len(ids) else (),
                )
            )
        return nodes

    def _meminfo_total(self, path: str) -> int | None:
        text = self._read(path)
        if not text:
            return None
        match = re.search(r"MemTotal:\s*([0-9]+)\s*kB", text)
        return int(match.group(1)) * 1024 if match else None

    # -- RDMA ---------------------------------------------------------------------------------

    def rdma_nics(self) -> list[SysRdmaNic]:
        base = join(self.root, "class", "infiniband")
        try:
            names = sorted(os.listdir(base), key=_natural)
        except OSError:
            return []
        nics = []
        for name in names:
            ib_dir = self._follow(join(base, name))
            device_dir = self._follow(join(ib_dir, "device")) if ib_dir is not None else None
            if device_dir is None or not _BDF.match(os.path.basename(device_dir)):
                continue
            bus_id = normalize_bus_id(os.path.basename(device_dir))
            try:
                netdevs = tuple(sorted(os.listdir(join(device_dir, "net"))))
            except OSError:
                netdevs = ()
            numa = self._read_int(join(device_dir, "numa_node"))
            path = self._pci_path(bus_id, device_dir)
            nics.append(
                SysRdmaNic(
                    name=name,
                    pci_bus_id=bus_id,
                    numa_node=numa if numa is not None and numa >= 0 else None,
                    netdevs=netdevs,
                    pci_path=path,
                    pcie_switch=nearest_pcie_switch(path),
                )
            )
        return nics

    # -- DMI ----------------------------------------------------------------------------------

    def dmi(self) -> tuple[str | None, str | None]:
        """(product_name, sys_vendor) from /sys/class/dmi/id; None where unreadable or blank."""
        base = join(self.root, "class", "dmi", "id")
        product = self._read(join(base, "product_name")) or None
        vendor = self._read(join(base, "sys_vendor")) or None
        return product, vendor


def pcie_relation(path_a: tuple[str, ...], path_b: tuple[str, ...]) -> str | None:
    """How two endpoints meet in the PCI tree, in ``nvidia-smi topo -m`` terms, from their PCI
    paths (bridges from the root port down): ``"PIX"`` when the lowest common ancestor is the
    nearest switch of both (one switch between them), ``"PXB"`` when it is a switch higher up
    (several switches, not through the host bridge), ``"PHB"`` when they meet only at the host
    bridge (root ports on one root bus), None otherwise or when a path is unknown.

    Broadcom's PEX switches on DGX A100/H100 (1000:c010, 1000:c030) show up as two bridge levels,
    so a GPU and its own NIC are PXB, not PIX; NCCL uses GPUDirect RDMA for either (its default
    NCCL_NET_GDR_LEVEL is PXB), so both count as local."""
    if not path_a or not path_b:
        return None
    if path_a == path_b:  # functions of one device (a dual-port NIC): nvidia-smi says PIX
        return "PIX"
    common = 0
    for bridge_a, bridge_b in zip(path_a, path_b, strict=False):
        if bridge_a != bridge_b:
            break
        common += 1
    if common >= 2:  # a switch's upstream port below one root port is shared
        return "PIX" if common == len(path_a) - 1 == len(path_b) - 1 else "PXB"
    if common == 0 and _root_bus(path_a[0]) == _root_bus(path_b[0]):
        return "PHB"
    return None


def _natural(name: str) -> tuple[str | int, ...]:
    """ "mlx5_10" after "mlx5_9", as nvidia-smi and ibdev2netdev list RDMA devices."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _root_bus(root_port: str) -> str:
    """ "0000:15:01.0" -> "0000:15": root ports on one root bus share a host bridge."""
    return root_port.rsplit(":", 1)[0]


def nearest_pcie_switch(pci_path: tuple[str, ...]) -> str | None:
    """The upstream port of the switch nearest the device (see the module docstring)."""
    if len(pci_path) >= 3:
        return pci_path[-2]
    return None


def _ancestors(device_dir: str) -> dict[str, str]:
    """Bus id -> its real directory, for each PCI function on a resolved device path."""
    result = {}
    for index, part in enumerate(parts := device_dir.split(os.sep)):
        if _BDF.match(part):
            result[normalize_bus_id(part)] = os.sep.join(parts[: index + 1])
    return result


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None
