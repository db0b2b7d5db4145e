"""Human-readable rendering of a ``NodeTopology`` (``gputopo-agent discover --output text``).

The matrix at the end reads like ``nvidia-smi topo -m``: ``NV<n>`` for NVLink (n links, or the
links each GPU has into the NVSwitch fabric), then the PCIe levels PIX (one PCIe switch), PXB
(several switches), PHB (same host bridge), NODE (same NUMA node), SYS (across NUMA nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

from gputopo.agent.sysfs import pcie_relation
from gputopo.agent.topology import (
    Gpu,
    Health,
    MigInfo,
    NodeTopology,
    NvlinkRemote,
    P2PLevel,
    RdmaNic,
    count_nvml_errors,
)
from gputopo.core.grammar import format_cpulist

_P2P_CODES = {
    P2PLevel.INTERNAL: "PIX",
    P2PLevel.SINGLE: "PIX",
    P2PLevel.MULTIPLE: "PXB",
    P2PLevel.HOSTBRIDGE: "PHB",
    P2PLevel.NODE: "NODE",
    P2PLevel.SYSTEM: "SYS",
}

UNKNOWN = "?"
NVLINK_UNKNOWN = "NV?"


def render_text(topology: NodeTopology) -> str:
    sections = [
        _header(topology),
        _gpu_table(topology),
        _pci_only(topology),
        _nvml_errors(topology),
        _mig(topology),
        _domains(topology),
        _numa(topology),
        _nics(topology),
        _matrix(topology),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _value(value: object) -> str:
    return UNKNOWN if value is None else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in rows:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _header(topology: NodeTopology) -> str:
    node = topology.node
    product = node.product_name or "unknown product"
    if node.vendor:
        product = f"{product} ({node.vendor})"
    driver = topology.driver
    lines = [
        f"Host:         {node.hostname}",
        f"Product:      {product}",
    ]
    if topology.nvml.available:
        lines.append(
            f"Driver:       {_value(driver.driver_version)}"
            f"   CUDA {_value(driver.cuda_driver_version)}"
            f"   NVML {_value(driver.nvml_version)}"
        )
    else:
        lines.append(f"NVML:         unavailable ({topology.nvml.error})")
    counts = (
        f"{len(topology.gpus)} GPU(s), {len(topology.nvlink_domains)} NVLink domain(s), "
        f"{len(topology.numa_nodes)} NUMA node(s), {len(topology.rdma_nics)} RDMA NIC(s)"
    )
    lines.append(f"Interconnect: {topology.interconnect.value}   ({counts})")
    return "\n".join(lines)


def _memory(mib: int | None) -> str:
    if mib is None:
        return UNKNOWN
    return f"{mib / 1024:.0f} GiB"


def _pcie(gpu: Gpu) -> str:
    pcie = gpu.pcie
    if pcie.gen_current is None and pcie.width_current is None:
        return UNKNOWN
    text = f"Gen{_value(pcie.gen_current)} x{_value(pcie.width_current)}"
    if (pcie.gen_max and pcie.gen_current and pcie.gen_current < pcie.gen_max) or (
        pcie.width_max and pcie.width_current and pcie.width_current < pcie.width_max
    ):
        text += f" (max Gen{_value(pcie.gen_max)} x{_value(pcie.width_max)})"
    return text


def _mig_cell(mig: MigInfo) -> str:
    if mig.enabled is None:
        return "-" if mig.capable is False else UNKNOWN
    text = f"on ({len(mig.instances)} GI)" if mig.enabled else "off"
    if mig.pending is not None and mig.pending != mig.enabled:
        text += " -> " + ("on" if mig.pending else "off") + " at reset"
    return text


def _gpu_table(topology: NodeTopology) -> str:
    if not topology.gpus:
        return "GPUs: none described by NVML"
    rows = []
    for gpu in topology.gpus:
        rows.append(
            [
                str(gpu.index),
                gpu.name or UNKNOWN,
                _memory(gpu.memory_mib),
                gpu.pci_bus_id,
                _value(gpu.numa_node),
                "-" if gpu.nvlink_domain is None else str(gpu.nvlink_domain),
                _pcie(gpu),
                _mig_cell(gpu.mig),
                gpu.health.value,
            ]
        )
    headers = ["IDX", "NAME", "MEMORY", "BUS ID", "NUMA", "NVLINK", "PCIE", "MIG", "HEALTH"]
    lines = ["GPUs", _table(headers, rows)]
    for gpu in topology.gpus:
        if gpu.health is not Health.OK:
            lines.append(f"  GPU {gpu.index} {gpu.health.value}: " + "; ".join(gpu.health_reasons))
    return "\n".join(lines)


def _pci_only(topology: NodeTopology) -> str:
    if not topology.pci_only_gpus:
        return ""
    rows = [
        [
            gpu.pci_bus_id,
            _value(gpu.device_id),
            _value(gpu.numa_node),
            gpu.driver or "none",
            gpu.reason,
        ]
        for gpu in topology.pci_only_gpus
    ]
    return "GPUs on the PCI bus without NVML\n" + _table(
        ["BUS ID", "DEVICE", "NUMA", "DRIVER", "REASON"], rows
    )


def _nvml_errors(topology: NodeTopology) -> str:
    """The NVML queries that failed per GPU, each call once with how often: what an operator
    needs to see why a fact is unknown (NoPermission on MIG GPUs: docs/deployment.md)."""
    rows = []
    for gpu in topology.gpus:
        for call, count in count_nvml_errors(gpu.nvml_errors).items():
            rows.append([str(gpu.index), call, str(count)])
    if not rows:
        return ""
    return "NVML errors (facts these calls give are unknown)\n" + _table(
        ["GPU", "CALL: ERROR", "TIMES"], rows
    )


def _mig(topology: NodeTopology) -> str:
    rows = []
    for gpu in topology.gpus:
        for instance in gpu.mig.instances:
            placement = UNKNOWN
            if instance.placement_start is not None:
                placement = f"{instance.placement_start}+{_value(instance.placement_size)}"
            compute = ", ".join(f"{ci.id}:{ci.profile}" for ci in instance.compute_instances)
            rows.append(
                [
                    str(gpu.index),
                    str(instance.id),
                    instance.profile,
                    placement,
                    _value(instance.memory_mib),
                    _value(instance.multiprocessors),
                    compute or "-",
                ]
            )
    if not rows:
        return ""
    headers = ["GPU", "GI", "PROFILE", "PLACEMENT", "MEM MiB", "SMS", "COMPUTE INSTANCES"]
    return "MIG instances\n" + _table(headers, rows)


def _domains(topology: NodeTopology) -> str:
    if not topology.nvlink_domains:
        return "NVLink domains: none"
    rows = []
    for domain in topology.nvlink_domains:
        first = topology.gpu(domain.gpus[0])
        active = [link for link in first.nvlinks if link.active]
        bandwidth = sum(link.bandwidth_gbps or 0.0 for link in active)
        per_gpu = f"{len(active)} links, {bandwidth:.0f} GB/s/dir" if bandwidth else UNKNOWN
        rows.append([str(domain.id), domain.via.value, format_cpulist(domain.gpus), per_gpu])
    return "NVLink domains\n" + _table(["ID", "VIA", "GPUS", "NVLINK PER GPU"], rows)


def _numa(topology: NodeTopology) -> str:
    if not topology.numa_nodes:
        return "NUMA nodes: unknown"
    rows = []
    for node in topology.numa_nodes:
        memory = UNKNOWN
        if node.memory_total_bytes is not None:
            memory = f"{node.memory_total_bytes / 2**30:.0f} GiB"
        rows.append(
            [
                str(node.id),
                format_cpulist(node.cpus) or "none",
                memory,
                format_cpulist(node.gpus) or "-",
                ",".join(node.nics) or "-",
                " ".join(str(d) for d in node.distances) or UNKNOWN,
            ]
        )
    return "NUMA nodes\n" + _table(["ID", "CPUS", "MEMORY", "GPUS", "NICS", "DISTANCES"], rows)


def _nics(topology: NodeTopology) -> str:
    if not topology.rdma_nics:
        return "RDMA NICs: none"
    rows = [
        [
            nic.name,
            nic.pci_bus_id,
            _value(nic.numa_node),
            ",".join(nic.netdevs) or "-",
            nic.pcie_switch or "-",
            format_cpulist(nic.local_gpus) or "-",
        ]
        for nic in topology.rdma_nics
    ]
    return "RDMA NICs\n" + _table(
        ["NAME", "BUS ID", "NUMA", "NETDEVS", "PCIE SWITCH", "LOCAL GPUS"], rows
    )


def gpu_pair_code(topology: NodeTopology, a: Gpu, b: Gpu) -> str:
    """The ``nvidia-smi topo -m`` cell for two GPUs."""
    if a.index == b.index:
        return "X"
    direct = sum(1 for link in a.nvlinks if link.active and link.remote_gpu == b.index)
    if direct:
        return f"NV{direct}"
    if a.nvlink_domain is not None and a.nvlink_domain == b.nvlink_domain:
        to_switch_a = sum(
            1 for link in a.nvlinks if link.active and link.remote is NvlinkRemote.NVSWITCH
        )
        to_switch_b = sum(
            1 for link in b.nvlinks if link.active and link.remote is NvlinkRemote.NVSWITCH
        )
        if to_switch_a and to_switch_b:
            return f"NV{min(to_switch_a, to_switch_b)}"
        if not a.nvlinks or not b.nvlinks:
            return NVLINK_UNKNOWN  # one domain, but its links are not known (an annotation)
    level = next((p2p.level for p2p in a.p2p if p2p.gpu == b.index), None)
    if level is not None:
        return _P2P_CODES[level]
    if a.p2p or b.p2p or a.health_signals.lost or b.health_signals.lost:
        return UNKNOWN  # NVML answered for others, not this pair: its links may be NVLink too
    # No P2P levels were recorded at all (a topology read from the annotation, which keeps
    # NVLink domains instead): the PCI paths and NUMA nodes decide, as for the GPU-NIC cells.
    return _pcie_code(
        a.pci_path, a.pcie_switch, a.numa_node, b.pci_path, b.pcie_switch, b.numa_node
    )


def gpu_nic_code(gpu: Gpu, nic: RdmaNic) -> str:
    """As ``nvidia-smi topo -m``: PIX (one switch between them) or PXB (several, e.g. the two
    bridge levels of a DGX's Broadcom switch) from the PCI paths, PHB through the host bridge,
    else NODE/SYS by NUMA node. Without both paths (a topology read from the annotation, which
    keeps no NIC path) a NIC that lists the GPU as local meets it below a switch: PIX when it is
    the nearest switch of both, else PXB."""
    code = _pcie_code(
        gpu.pci_path, gpu.pcie_switch, gpu.numa_node, nic.pci_path, nic.pcie_switch, nic.numa_node
    )
    if code in ("NODE", "SYS", UNKNOWN) and gpu.index in nic.local_gpus:
        return "PXB"
    return code


def _pcie_code(
    path: tuple[str, ...],
    switch: str | None,
    numa: int | None,
    other_path: tuple[str, ...],
    other_switch: str | None,
    other_numa: int | None,
) -> str:
    relation = pcie_relation(path, other_path)
    if relation is not None:
        return relation
    if not (path and other_path) and switch is not None and switch == other_switch:
        return "PIX"  # a topology recorded before NIC paths were kept
    if numa is None or other_numa is None:
        return UNKNOWN
    return "NODE" if numa == other_numa else "SYS"


def _matrix(topology: NodeTopology) -> str:
    if not topology.gpus:
        return ""
    gpus = topology.gpus
    nics = topology.rdma_nics
    headers = [""] + [f"GPU{g.index}" for g in gpus] + [f"NIC{i}" for i in range(len(nics))]
    headers += ["CPU Affinity", "NUMA Affinity"]
    rows = []
    for gpu in gpus:
        row = [f"GPU{gpu.index}"]
        row += [gpu_pair_code(topology, gpu, other) for other in gpus]
        row += [gpu_nic_code(gpu, nic) for nic in nics]
        row += [format_cpulist(gpu.cpu_affinity) or UNKNOWN, _value(gpu.numa_node)]
        rows.append(row)
    for number, nic in enumerate(nics):
        row = [f"NIC{number}"]
        row += [gpu_nic_code(gpu, nic) for gpu in gpus]
        row += ["X" if other is nic else _nic_pair(nic, other) for other in nics]
        row += ["", ""]
        rows.append(row)
    legend = [
        "  Legend: X = self, NV# = NVLink (# links), PIX = same PCIe switch,",
        "          PXB = several PCIe switches, PHB = same host bridge,",
        "          NODE = same NUMA node, SYS = across NUMA nodes, ? = unknown",
    ]
    if any(NVLINK_UNKNOWN in row for row in rows):
        legend.append("          NV? = one NVLink domain, links not known")
    if nics:
        legend.append("  NICs: " + ", ".join(f"NIC{i}={nic.name}" for i, nic in enumerate(nics)))
    return "Topology matrix\n" + _table(headers, rows) + "\n\n" + "\n".join(legend)


def _nic_pair(a: RdmaNic, b: RdmaNic) -> str:
    return _pcie_code(
        a.pci_path, a.pcie_switch, a.numa_node, b.pci_path, b.pcie_switch, b.numa_node
    )
