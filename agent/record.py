"""Turn what discovery saw on a real machine into a machine profile (``gputopo-agent record``).

Replaying the written profile through the fakes reproduces the same topology model for every
fact the model carries. Facts the model does not carry (PCI device ids, retired page
addresses, a NIC's bridges) get the documented profile defaults; see docs/profiles.md.
"""

from __future__ import annotations

import datetime
import re
from importlib import metadata
from typing import Any

import yaml

from gputopo.agent.nvml.session import load_pynvml
from gputopo.agent.topology import Gpu, NodeTopology, NvlinkRemote
from gputopo.core.grammar import format_cpulist
from gputopo.mocks import mig as mig_tables
from gputopo.mocks.spec import ARCHITECTURES, MIB

# nvmlClocksEventReason* bits by the snake_case name of the constant ("sw_power_cap").
_REASON_BITS: dict[str, int] = {
    "gpu_idle": 0x001,
    "applications_clocks_setting": 0x002,
    "sw_power_cap": 0x004,
    "hw_slowdown": 0x008,
    "sync_boost": 0x010,
    "sw_thermal_slowdown": 0x020,
    "hw_thermal_slowdown": 0x040,
    "hw_power_brake_slowdown": 0x080,
    "display_clock_setting": 0x100,
}

_GENERATION_TO_VERSION = {1: "1", 2: "2", 3: "3", 4: "4", 5: "5", 6: "6"}
_FAMILY_TO_ARCH = {"ada-lovelace": "ada"}


def _error_names() -> dict[str, str]:
    """``LibraryNotFound`` / ``NVMLError_LibraryNotFound`` / ``LIBRARY_NOT_FOUND`` -> the name."""
    pynvml = load_pynvml()
    names: dict[str, str] = {}
    for constant in dir(pynvml):
        if constant.startswith("NVML_ERROR_"):
            name = constant.removeprefix("NVML_ERROR_")
            camel = "".join(part.capitalize() for part in name.split("_"))
            names[camel.lower()] = name
            names[name.lower()] = name
    return names


def _nvml_error(text: str | None) -> str:
    """The NVML error name an NvmlStatus.error text starts with ("LibraryNotFound: ...")."""
    names = _error_names()
    head = (
        re.split(r"[:\s(]", (text or "").strip(), maxsplit=1)[0].removeprefix("NVMLError_").lower()
    )
    if head in names:
        return names[head]
    lowered = (text or "").lower()
    if "library not found" in lowered or "libnvidia-ml" in lowered:
        return "LIBRARY_NOT_FOUND"
    if "driver not loaded" in lowered:
        return "DRIVER_NOT_LOADED"
    return "UNKNOWN"


def _cuda_version(text: str | None) -> int | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", text or "")
    return int(match.group(1)) * 1000 + int(match.group(2)) * 10 if match else None


def _architecture(gpu: Gpu) -> str:
    family = _FAMILY_TO_ARCH.get(gpu.architecture or "", gpu.architecture or "")
    if family in ARCHITECTURES:
        return family
    capability = gpu.compute_capability
    if capability is None:
        return "ampere"
    by_major = {6: "pascal", 8: "ampere", 9: "hopper", 10: "blackwell", 12: "blackwell"}
    if capability.major == 7:
        return "volta" if capability.minor < 5 else "turing"
    if capability.major == 8 and capability.minor == 9:
        return "ada"
    return by_major.get(capability.major, "ampere")


class _Recorder:
    def __init__(self, topology: NodeTopology) -> None:
        self.topology = topology
        self.switches: dict[str, dict[str, Any]] = {}  # upstream bus id -> switch document
        self.nvswitches: dict[str, dict[str, Any]] = {}
        self.default_numa = topology.numa_nodes[0].id if topology.numa_nodes else 0

    def switch_name(self, upstream: str) -> str:
        return f"sw-{upstream.replace(':', '-').replace('.', '-')}"

    def parent(self, bridges: tuple[str, ...], device: str) -> str | None:
        """Declare the switches of a recorded PCI path; returns the device's parent."""
        if not bridges:
            return None
        parent = bridges[0]  # the root port
        below = bridges[1:]
        pairs = [(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        children = [up for up, _ in pairs[1:]] + [device] if pairs else []
        for (upstream, downstream), child in zip(pairs, children, strict=True):
            switch = self.switches.setdefault(
                upstream,
                {"name": self.switch_name(upstream), "upstream": upstream, "parent": parent},
            )
            switch.setdefault("ports", {})[child] = downstream
            parent = switch["name"]
        return parent

    def nvlink(self, gpu: Gpu) -> dict[str, Any] | None:
        if not gpu.nvlinks:
            return None
        versions = [link.version for link in gpu.nvlinks if link.version is not None]
        generation = max(set(versions), key=versions.count) if versions else 4
        links: list[dict[str, Any]] = []
        down: list[int] = []
        for link in sorted(gpu.nvlinks, key=lambda item: item.link):
            peer = link.remote_pci_bus_id
            if peer is None:
                peer = "0000:ff:1f.7"  # an NVSwitch NVML could not name; recorded as one
            if link.remote is not NvlinkRemote.GPU and peer not in self.nvswitches:
                self.nvswitches[peer] = {
                    "bus_id": peer,
                    "numa_node": self.default_numa,
                    "in_sysfs": False,
                }
            active = link.active is not False
            if not active:
                down.append(link.link)
            if links and links[-1]["peer"] == peer:
                links[-1]["count"] += 1
            else:
                links.append({"peer": peer, "count": 1})
        document: dict[str, Any] = {
            "version": _GENERATION_TO_VERSION.get(generation, "4"),
            "links": links,
        }
        if down:
            document["down"] = down
        return document

    def mig(self, gpu: Gpu) -> dict[str, Any] | None:
        mig = gpu.mig
        if not mig.capable or gpu.name not in mig_tables.TABLE_FOR_GPU_NAME:
            return None
        document: dict[str, Any] = {
            "capable": True,
            "mode": "enabled" if mig.enabled else "disabled",
            "pending": "enabled"
            if (mig.pending if mig.pending is not None else mig.enabled)
            else "disabled",
        }
        if mig.enabled and mig.instances:
            instances = []
            for instance in mig.instances:
                entry: dict[str, Any] = {"profile": instance.profile, "id": instance.id}
                if instance.placement_start is not None:
                    entry["placement"] = instance.placement_start
                if instance.compute_instances:
                    entry["compute_instances"] = [ci.profile for ci in instance.compute_instances]
                instances.append(entry)
            document["instances"] = instances
        return document

    def health(self, gpu: Gpu) -> dict[str, Any]:
        signals = gpu.health_signals
        document: dict[str, Any] = {}
        ecc = signals.ecc
        counts = {
            "volatile_corrected": ecc.volatile_corrected,
            "volatile_uncorrected": ecc.volatile_uncorrected,
            "aggregate_corrected": ecc.aggregate_corrected,
            "aggregate_uncorrected": ecc.aggregate_uncorrected,
        }
        if all(value is None for value in counts.values()):
            document["ecc"] = False
        else:
            document["ecc"] = {key: value or 0 for key, value in counts.items()}
        repair = signals.memory_repair
        if repair.remapped_rows_correctable is None and repair.remapped_rows_uncorrectable is None:
            document["remapped_rows"] = False
        else:
            document["remapped_rows"] = {
                "correctable": repair.remapped_rows_correctable or 0,
                "uncorrectable": repair.remapped_rows_uncorrectable or 0,
                "pending": bool(repair.remapped_rows_pending),
                "failure": bool(repair.remapped_rows_failure),
            }
        if repair.retired_pages_single_bit is None and repair.retired_pages_double_bit is None:
            document["retired_pages"] = False
        else:  # the model keeps counts only; addresses are placeholders 4 KiB apart
            single = repair.retired_pages_single_bit or 0
            double = repair.retired_pages_double_bit or 0
            document["retired_pages"] = {
                "single_bit": [0x1000 * (i + 1) for i in range(single)],
                "double_bit": [0x1000 * (single + i + 1) for i in range(double)],
                "pending": bool(repair.retired_pages_pending),
            }
        mask = 0
        for reason in signals.throttle_reasons or ():
            mask |= _REASON_BITS.get(reason, 0)
        document["throttle_reasons"] = mask
        xids = [event.code for event in signals.xid_events for _ in range(event.count)]
        if xids:
            document["xid_events"] = xids
        return document

    def gpu(self, gpu: Gpu) -> dict[str, Any]:
        capability = gpu.compute_capability
        pcie = gpu.pcie
        document: dict[str, Any] = {
            "bus_id": gpu.pci_bus_id,
            "name": gpu.name or "NVIDIA GPU",
            "memory_mib": gpu.memory_mib or 1,
            "compute_capability": f"{capability.major}.{capability.minor}" if capability else "0.0",
            "architecture": _architecture(gpu),
            "pci_device_id": 0,  # the topology model does not carry the PCI device id
            "pcie": {
                "gen": pcie.gen_current or 1,
                "gen_max": pcie.gen_max or pcie.gen_current or 1,
                "width": pcie.width_current or 1,
                "width_max": pcie.width_max or pcie.width_current or 1,
            },
            "numa_node": gpu.numa_node if gpu.numa_node is not None else self.default_numa,
        }
        if gpu.memory_numa_node is not None:
            # A coherent platform (Grace): the GPU's memory is a CPU-less NUMA node of its own.
            document["memory_numa_node"] = gpu.memory_numa_node
        if gpu.pci_class == "0x030000":
            document["vga"] = True
        if gpu.uuid:
            document["uuid"] = gpu.uuid
        parent = self.parent(gpu.pci_path, gpu.pci_bus_id)
        if parent is not None:
            document["parent"] = parent
        if (nvlink := self.nvlink(gpu)) is not None:
            document["nvlink"] = nvlink
        if (mig := self.mig(gpu)) is not None:
            document["mig"] = mig
        if gpu.fabric is not None and gpu.fabric.cluster_uuid:
            document["fabric"] = {
                "cluster_uuid": gpu.fabric.cluster_uuid,
                "clique_id": gpu.fabric.clique_id or 0,
                "state": gpu.fabric.state or "completed",
            }
        document["health"] = self.health(gpu)
        signals = gpu.health_signals
        metrics: dict[str, Any] = {}
        if signals.temperature_c is not None:
            metrics["temperature_c"] = signals.temperature_c
        if signals.power_w is not None:
            metrics["power_w"] = signals.power_w
        if signals.power_limit_w is not None:
            metrics["power_limit_w"] = signals.power_limit_w
        if metrics:
            document["metrics"] = metrics
        if signals.lost:
            document["lost"] = True
        return document

    def document(self) -> dict[str, Any]:
        topology = self.topology
        numa = [
            {
                "id": node.id,
                "cpus": format_cpulist(node.cpus),
                "memory_mib": (node.memory_total_bytes or 65536 * MIB) // MIB,
                **({"distances": list(node.distances)} if node.distances else {}),
            }
            for node in topology.numa_nodes
        ]
        if not numa:
            numa = [{"id": 0, "cpus": "0-7", "memory_mib": 65536}]
        document: dict[str, Any] = {"schema": 1, "node": {"hostname": topology.node.hostname}}
        if topology.node.product_name:
            document["node"]["product_name"] = topology.node.product_name
        if topology.node.vendor:
            document["node"]["vendor"] = topology.node.vendor
        driver: dict[str, Any] = {}
        if topology.driver.driver_version:
            driver["version"] = topology.driver.driver_version
        if (cuda := _cuda_version(topology.driver.cuda_driver_version)) is not None:
            driver["cuda_version"] = cuda
        if topology.driver.nvml_version:
            driver["nvml_version"] = topology.driver.nvml_version
        if driver:
            document["driver"] = driver
        if not topology.nvml.available:
            error = _nvml_error(topology.nvml.error)
            key = "load_error" if error == "LIBRARY_NOT_FOUND" else "init_error"
            document["nvml"] = {key: error}
        document["numa"] = numa
        gpus = [self.gpu(gpu) for gpu in topology.gpus if topology.nvml.available]
        for hidden in topology.pci_only_gpus:
            entry: dict[str, Any] = {
                "bus_id": hidden.pci_bus_id,
                "name": "NVIDIA GPU",  # not visible to NVML: only its PCI facts are observable
                "memory_mib": 1,
                "compute_capability": "0.0",
                "architecture": "ampere",
                "pci_device_id": int(hidden.device_id, 16) if hidden.device_id else 0,
                "numa_node": hidden.numa_node
                if hidden.numa_node is not None
                else self.default_numa,
                "hidden_from_nvml": True,
                "sysfs_driver": hidden.driver,
            }
            if hidden.pci_class == "0x030000":
                entry["vga"] = True
            gpus.append(entry)
        nics = []
        switch_by_upstream = {upstream: s["name"] for upstream, s in self.switches.items()}
        for nic in topology.rdma_nics:
            entry = {
                "name": nic.name,
                "bus_id": nic.pci_bus_id,
                "numa_node": nic.numa_node if nic.numa_node is not None else self.default_numa,
                "netdevs": list(nic.netdevs),
            }
            # The NIC's whole path, so a two-level switch is recorded as it is (PXB stays PXB).
            parent = self.parent(nic.pci_path, nic.pci_bus_id)
            if parent is not None:
                entry["parent"] = parent
            elif nic.pcie_switch in switch_by_upstream:
                entry["parent"] = switch_by_upstream[nic.pcie_switch]
            nics.append(entry)
        if self.switches:
            document["pci"] = {"switches": list(self.switches.values())}
        if self.nvswitches:
            document["nvswitches"] = list(self.nvswitches.values())
        if gpus:
            document["gpus"] = gpus
        if nics:
            document["nics"] = nics
        return document


def profile_from_topology(topology: NodeTopology) -> dict[str, Any]:
    """A profile document (the mapping ``load_profile`` reads) describing ``topology``."""
    return _Recorder(topology).document()


def _version() -> str:
    try:
        return metadata.version("gputopo")
    except metadata.PackageNotFoundError:
        return "unknown"


def dump_profile(document: dict[str, Any], *, now: datetime.datetime | None = None) -> str:
    """YAML text of a profile document, headed by a ``# recorded by gputopo`` comment."""
    moment = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = f"# recorded by gputopo {_version()} on {moment}\n"
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
