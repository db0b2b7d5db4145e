"""Discovery: NVML and sysfs merged into one ``NodeTopology`` snapshot.

``Discoverer`` keeps the NVML session (and its XID event registration) open across cycles: the
run loop calls :meth:`Discoverer.discover` every minute and a health poller may call
:meth:`Discoverer.drain_xid_events` or the adapter's ``health_signals()`` every second.
:func:`discover` is the one-shot form.

What comes from where, and how unknowns are handled, is in docs/discovery.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import replace
from types import ModuleType
from typing import Any

from gputopo.agent.health import DEFAULT_POLICY, HealthPolicy, assess
from gputopo.agent.nvml import NvmlAdapter, NvmlGpu, NvmlSnapshot
from gputopo.agent.sysfs import (
    LOCAL_PCIE_RELATIONS,
    PciDevice,
    SysfsReader,
    SysNumaNode,
    SysRdmaNic,
    pcie_relation,
)
from gputopo.agent.topology import (
    Gpu,
    Interconnect,
    NodeInfo,
    NodeTopology,
    NumaNode,
    NvlinkDomain,
    NvlinkLink,
    NvlinkRemote,
    NvmlStatus,
    P2PLink,
    PcieInfo,
    PciOnlyGpu,
    RdmaNic,
    XidEvent,
)

UNKNOWN_BUS_ID = "unknown"


class Discoverer:
    """One node's discovery, reusable across cycles: ``open()``, ``discover()``..., ``close()``."""

    def __init__(
        self,
        nvml_module: ModuleType | Any | None = None,
        sysfs_root: str | os.PathLike[str] = "/sys",
        hostname: str | None = None,
        *,
        health_policy: HealthPolicy = DEFAULT_POLICY,
    ) -> None:
        self.adapter = NvmlAdapter(nvml_module)
        self.sysfs = SysfsReader(sysfs_root)
        self.hostname = hostname or socket.gethostname()
        self.health_policy = health_policy

    def open(self) -> NvmlStatus:
        return self.adapter.open()

    def close(self) -> None:
        self.adapter.close()

    def __enter__(self) -> Discoverer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain_xid_events(self) -> dict[int, tuple[XidEvent, ...]]:
        """Pending XID events drained into the per-GPU counts (see NvmlAdapter)."""
        return self.adapter.drain_xid_events()

    def discover(self) -> NodeTopology:
        """One snapshot of the node. Never raises for hardware or sysfs trouble."""
        sys_numa = self.sysfs.numa_nodes()
        sys_gpus = self.sysfs.nvidia_gpus()
        sys_nics = self.sysfs.rdma_nics()
        product, vendor = self.sysfs.dmi()
        max_cpu = max((cpu for node in sys_numa for cpu in node.cpus), default=0)
        snapshot = self.adapter.snapshot(cpu_set_words=max(16, (max_cpu + 64) // 64))
        topology = assemble(
            snapshot,
            sys_gpus=sys_gpus,
            sys_numa=sys_numa,
            sys_nics=sys_nics,
            node=NodeInfo(hostname=self.hostname, product_name=product, vendor=vendor),
            health_policy=self.health_policy,
        )
        return replace(topology, incomplete=read_gaps(snapshot, sys_gpus, sys_numa, self.sysfs))


def discover(
    nvml_module: ModuleType | Any | None = None,
    sysfs_root: str | os.PathLike[str] = "/sys",
    hostname: str | None = None,
) -> NodeTopology:
    """Open NVML, describe the node once, close NVML."""
    with Discoverer(nvml_module, sysfs_root, hostname) as discoverer:
        return discoverer.discover()


def assemble(
    snapshot: NvmlSnapshot,
    *,
    sys_gpus: list[PciDevice],
    sys_numa: list[SysNumaNode],
    sys_nics: list[SysRdmaNic],
    node: NodeInfo,
    health_policy: HealthPolicy = DEFAULT_POLICY,
) -> NodeTopology:
    """Merge an NVML snapshot with sysfs facts into the model (pure; tested directly)."""
    sys_by_bus = {device.pci_bus_id: device for device in sys_gpus}
    bus_ids = _resolve_bus_ids(snapshot.gpus, sys_gpus)
    index_by_bus = {bus: index for index, bus in bus_ids.items() if bus != UNKNOWN_BUS_ID}

    gpus = [
        _build_gpu(nvml_gpu, bus_ids[nvml_gpu.index], sys_by_bus, index_by_bus, sys_numa)
        for nvml_gpu in snapshot.gpus
    ]
    gpus = _expect_nvlinks(gpus)
    domains = nvlink_domains(gpus)
    domain_of = {index: domain.id for domain in domains for index in domain.gpus}
    gpus = [_finish_gpu(gpu, domain_of.get(gpu.index), health_policy) for gpu in gpus]

    numa_nodes = _numa_nodes(sys_numa, gpus, sys_nics)
    rdma_nics = _rdma_nics(sys_nics, gpus)
    pci_only = _pci_only_gpus(snapshot, sys_gpus, set(index_by_bus))

    if any(domain.via is Interconnect.NVSWITCH for domain in domains):
        interconnect = Interconnect.NVSWITCH
    elif domains:
        interconnect = Interconnect.NVLINK
    elif gpus:
        interconnect = Interconnect.PCIE
    else:
        interconnect = Interconnect.NONE

    return NodeTopology(
        node=node,
        nvml=snapshot.status,
        driver=snapshot.driver,
        gpus=tuple(gpus),
        pci_only_gpus=tuple(pci_only),
        nvlink_domains=tuple(domains),
        numa_nodes=tuple(numa_nodes),
        rdma_nics=tuple(rdma_nics),
        interconnect=interconnect,
    )


def _resolve_bus_ids(nvml_gpus: Iterable[NvmlGpu], sys_gpus: list[PciDevice]) -> dict[int, str]:
    """Bus id per NVML index. Where NVML could not say (a lost GPU), fall back to sysfs.

    NVML enumerates GPUs in PCI bus order, so the NVIDIA-driver-bound sysfs GPUs that no NVML
    GPU claimed are handed, in bus order, to the NVML indices without a bus id, in index order.
    """
    nvml_gpus = list(nvml_gpus)
    result = {gpu.index: gpu.pci_bus_id for gpu in nvml_gpus if gpu.pci_bus_id}
    claimed = set(result.values())
    unclaimed = [
        device.pci_bus_id
        for device in sys_gpus
        if device.pci_bus_id not in claimed and device.driver in (None, "nvidia")
    ]
    missing = sorted(gpu.index for gpu in nvml_gpus if not gpu.pci_bus_id)
    for index in missing:
        result[index] = unclaimed.pop(0) if unclaimed else UNKNOWN_BUS_ID
    return result


def _build_gpu(
    nvml_gpu: NvmlGpu,
    bus_id: str,
    sys_by_bus: dict[str, PciDevice],
    index_by_bus: dict[str, int],
    sys_numa: list[SysNumaNode],
) -> Gpu:
    device = sys_by_bus.get(bus_id)
    cpu_less_numa = frozenset(node.id for node in sys_numa if not node.cpus)
    pcie = nvml_gpu.pcie
    # The PCI attach point is the CPU-local node scheduling cares about; NVML's NUMA id is the
    # GPU memory's own node on Grace systems (CPU-less), kept separately as memory_numa_node.
    numa = None
    cpus = nvml_gpu.cpu_affinity
    if device is not None:
        pcie = PcieInfo(
            gen_current=pcie.gen_current or device.link_gen_current,
            gen_max=pcie.gen_max or device.link_gen_max,
            width_current=pcie.width_current or device.link_width_current,
            width_max=pcie.width_max or device.link_width_max,
        )
        numa = device.numa_node
        cpus = cpus or device.local_cpus
    if numa is None and nvml_gpu.numa_node is not None and nvml_gpu.numa_node not in cpu_less_numa:
        numa = nvml_gpu.numa_node
    if numa is None:
        numa = _numa_fallback(cpus, nvml_gpu.memory_affinity, sys_numa)
    links = []
    for link in nvml_gpu.nvlinks:
        remote = link.remote
        remote_gpu = None
        peer = index_by_bus.get(link.remote_pci_bus_id) if link.remote_pci_bus_id else None
        if link.active and not link.remote_type_known and link.remote_pci_bus_id:
            # RemoteDeviceType unsupported: a peer that is not one of our GPUs is an NVSwitch.
            remote = NvlinkRemote.GPU if peer is not None else NvlinkRemote.NVSWITCH
        if remote is NvlinkRemote.GPU:
            remote_gpu = peer
        links.append(
            NvlinkLink(
                link=link.link,
                active=link.active,
                version=link.version,
                remote=remote,
                remote_pci_bus_id=link.remote_pci_bus_id,
                remote_gpu=remote_gpu,
                bandwidth_gbps=link.bandwidth_gbps,
            )
        )
    return Gpu(
        index=nvml_gpu.index,
        pci_bus_id=bus_id,
        uuid=nvml_gpu.uuid,
        name=nvml_gpu.name,
        memory_mib=nvml_gpu.memory_mib,
        compute_capability=nvml_gpu.compute_capability,
        architecture=nvml_gpu.architecture,
        pcie=pcie,
        pci_path=device.pci_path if device is not None else (),
        pcie_switch=device.pcie_switch if device is not None else None,
        pci_class=device.pci_class if device is not None else None,
        numa_node=numa,
        memory_numa_node=nvml_gpu.numa_node if nvml_gpu.numa_node != numa else None,
        cpu_affinity=cpus,
        nvlinks=tuple(links),
        p2p=tuple(P2PLink(gpu=other, level=level) for other, level in nvml_gpu.p2p.items()),
        mig=nvml_gpu.mig,
        fabric=nvml_gpu.fabric,
        health_signals=nvml_gpu.signals,
        nvml_errors=nvml_gpu.errors,
    )


def _numa_fallback(
    cpus: tuple[int, ...], memory_affinity: tuple[int, ...], sys_numa: list[SysNumaNode]
) -> int | None:
    """The NUMA node of a GPU whose sysfs ``numa_node`` is -1 (single-socket machines, many VMs)
    and for which NVML's nvmlDeviceGetNumaNodeId has no answer (NOT_SUPPORTED on x86): the node
    holding all its CPU affinity, else the one node of its memory affinity, else the only node
    with CPUs, else the lowest node sharing CPUs with it (or with CPUs at all), so the GPU is
    never left out of the per-node GPU counts. None only when sysfs lists no NUMA node."""
    with_cpus = [node for node in sys_numa if node.cpus]
    if not with_cpus:
        return None
    wanted = set(cpus)
    holding = [node.id for node in with_cpus if wanted and wanted <= set(node.cpus)]
    if len(holding) == 1:
        return holding[0]
    known = {node.id for node in with_cpus}
    memory = [node for node in memory_affinity if node in known]
    if len(memory) == 1:
        return memory[0]
    sharing = [node.id for node in with_cpus if wanted & set(node.cpus)]
    return min(sharing) if sharing else min(known)


def _expect_nvlinks(gpus: list[Gpu]) -> list[Gpu]:
    """On an NVSwitch node every GPU should reach the switches: all links down counts as down."""
    switched = any(
        link.active and link.remote is NvlinkRemote.NVSWITCH for gpu in gpus for link in gpu.nvlinks
    )
    if not switched:
        return gpus
    result = []
    for gpu in gpus:
        if gpu.nvlinks and not any(link.active for link in gpu.nvlinks):
            down = sum(1 for link in gpu.nvlinks if link.active is False)
            gpu = replace(gpu, health_signals=replace(gpu.health_signals, nvlinks_down=down))
        result.append(gpu)
    return result


def _finish_gpu(gpu: Gpu, domain: int | None, policy: HealthPolicy) -> Gpu:
    health, reasons = assess(gpu.health_signals, fabric=gpu.fabric, policy=policy)
    return replace(gpu, nvlink_domain=domain, health=health, health_reasons=reasons)


def nvlink_domains(gpus: list[Gpu]) -> list[NvlinkDomain]:
    """Connected components of two or more GPUs over active NVLinks.

    GPUs whose active links reach NVSwitches form one domain per fabric partition (the fabric's
    cluster UUID and clique id when NVML reports them, else the node); direct GPU-GPU links
    are joined with union-find.
    """
    parent = {gpu.index: gpu.index for gpu in gpus}

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def union(a: int, b: int) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    switch_groups: dict[tuple[str | None, int | None], list[int]] = {}
    on_switch: set[int] = set()
    for gpu in gpus:
        links = [link for link in gpu.nvlinks if link.active]
        if any(link.remote is NvlinkRemote.NVSWITCH for link in links):
            on_switch.add(gpu.index)
            key: tuple[str | None, int | None] = (None, None)
            if gpu.fabric is not None and gpu.fabric.clique_id is not None:
                key = (gpu.fabric.cluster_uuid, gpu.fabric.clique_id)
            switch_groups.setdefault(key, []).append(gpu.index)
        for link in links:
            if link.remote is NvlinkRemote.GPU and link.remote_gpu in parent:
                union(gpu.index, link.remote_gpu)
    for members in switch_groups.values():
        for member in members[1:]:
            union(members[0], member)

    components: dict[int, list[int]] = {}
    for gpu in gpus:
        components.setdefault(find(gpu.index), []).append(gpu.index)
    groups = sorted(sorted(members) for members in components.values() if len(members) >= 2)
    return [
        NvlinkDomain(
            id=domain_id,
            gpus=tuple(members),
            via=Interconnect.NVSWITCH
            if any(member in on_switch for member in members)
            else Interconnect.NVLINK,
        )
        for domain_id, members in enumerate(groups)
    ]


def _numa_nodes(
    sys_numa: list[SysNumaNode], gpus: list[Gpu], sys_nics: list[SysRdmaNic]
) -> list[NumaNode]:
    known = {node.id: node for node in sys_numa}
    referenced = {gpu.numa_node for gpu in gpus if gpu.numa_node is not None} | {
        nic.numa_node for nic in sys_nics if nic.numa_node is not None
    }
    synthesised = referenced - set(known)
    ids = sorted(set(known) | synthesised)
    nodes = []
    for node_id in ids:
        sys_node = known.get(node_id)
        nodes.append(
            NumaNode(
                id=node_id,
                cpus=sys_node.cpus if sys_node is not None else (),
                memory_total_bytes=sys_node.memory_total_bytes if sys_node is not None else None,
                # A node sysfs did not list makes the distance rows meaningless: drop them all.
                distances=sys_node.distances if sys_node is not None and not synthesised else (),
                gpus=tuple(gpu.index for gpu in gpus if gpu.numa_node == node_id),
                nics=tuple(nic.name for nic in sys_nics if nic.numa_node == node_id),
            )
        )
    return nodes


def _rdma_nics(sys_nics: list[SysRdmaNic], gpus: list[Gpu]) -> list[RdmaNic]:
    return [
        RdmaNic(
            name=nic.name,
            pci_bus_id=nic.pci_bus_id,
            numa_node=nic.numa_node,
            netdevs=nic.netdevs,
            pcie_switch=nic.pcie_switch,
            local_gpus=tuple(gpu.index for gpu in gpus if _nic_is_local(gpu, nic)),
            pci_path=nic.pci_path,
        )
        for nic in sys_nics
    ]


def _nic_is_local(gpu: Gpu, nic: SysRdmaNic) -> bool:
    """NCCL's GPUDirect RDMA rule: the GPU and the NIC meet at a PCIe switch below one root
    port (PIX or PXB), not only at the nearest switch of both, which DGX A100/H100's two-level
    Broadcom switches never give (their GPU-NIC pairs are PXB)."""
    return pcie_relation(gpu.pci_path, nic.pci_path) in LOCAL_PCIE_RELATIONS


def _pci_only_gpus(
    snapshot: NvmlSnapshot, sys_gpus: list[PciDevice], described: set[str]
) -> list[PciOnlyGpu]:
    result = []
    for device in sys_gpus:
        if device.pci_bus_id in described:
            continue
        if not snapshot.status.available:
            reason = f"NVML unavailable: {snapshot.status.error}"
        elif device.driver is None:
            reason = "no kernel driver bound"
        elif device.driver != "nvidia":
            reason = f"bound to {device.driver}, not the nvidia driver"
        elif snapshot.handle_errors:
            failures = ", ".join(f"index {i}: {e}" for i, e in snapshot.handle_errors)
            reason = f"not enumerated by NVML (NVML failed to open {failures})"
        else:
            reason = "not enumerated by NVML"
        result.append(
            PciOnlyGpu(
                pci_bus_id=device.pci_bus_id,
                device_id=device.device_id,
                pci_class=device.pci_class,
                numa_node=device.numa_node,
                driver=device.driver,
                reason=reason,
            )
        )
    return result


# NVML answers that describe the GPU or the agent's setup ("it has no such thing", "that link
# does not exist", "not with these privileges or this driver", "it is lost", which health
# reports) rather than a read that failed this time: they would make every discovery partial.
_DESCRIPTIVE_NVML_ERRORS = frozenset(
    {
        "NotSupported",
        "NotFound",
        "InvalidArgument",
        "FunctionNotFound",
        "GpuIsLost",
        "NoPermission",
        "Deprecated",
        "ArgumentVersionMismatch",
        "FreqNotSupported",
        "ResetTypeNotSupported",
        "VgpuEccNotSupported",
    }
)


def read_gaps(
    snapshot: NvmlSnapshot,
    sys_gpus: list[PciDevice],
    sys_numa: list[SysNumaNode],
    sysfs: SysfsReader,
) -> tuple[str, ...]:
    """What one discovery could not read; empty when it fully succeeded.

    A transient NVML error on one GPU (UNKNOWN from nvmlDeviceGetName, nvmlDeviceGetNvLinkState)
    or a sysfs tree that could not be read must not pass for a smaller machine: the publisher
    keeps its last good topology values while this is non-empty (docs/publishing.md).
    """
    gaps: list[str] = []
    for gpu in snapshot.gpus:
        if gpu.signals.lost:
            continue  # a lost GPU is a health fact, published as such
        gaps.extend(
            f"GPU {gpu.index}: {error}"
            for error in gpu.errors
            if error.rpartition(": ")[2] not in _DESCRIPTIVE_NVML_ERRORS
        )
    if not sysfs.is_valid_root():
        gaps.append(f"sysfs: {sysfs.root} is not readable")
    else:
        seen = {device.pci_bus_id for device in sys_gpus}
        gaps.extend(
            f"sysfs: GPU {gpu.index} ({gpu.pci_bus_id}) not readable"
            for gpu in snapshot.gpus
            if gpu.pci_bus_id and gpu.pci_bus_id not in seen and not gpu.signals.lost
        )
        numa_dir = os.path.join(sysfs.root, "devices", "system", "node")
        if not sys_numa and os.path.isdir(numa_dir):
            gaps.append(f"sysfs: no NUMA node readable under {numa_dir}")
    return tuple(gaps)
