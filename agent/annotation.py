"""Build the ``<prefix>/topology`` annotation from the topology model.

Static facts only (GPU identity and placement, NVLink domains, NUMA CPUs and distances, MIG
layout, RDMA NICs): health, counters and temperatures are left out so the annotation — and the
Node — change only when hardware or the MIG layout does. The schema and its parser live in
``agent.contract`` so the scheduler reads it without importing the agent.

:func:`topology_from_annotation` goes the other way, for ``kubectl gputopo topo``: a Node's
annotation drawn by the same renderer as ``discover -o text``; every fact the annotation does
not carry (driver, NVLink links, PCIe link speed, counters) is left unknown, never guessed.
"""

from __future__ import annotations

from gputopo.agent.topology import (
    ComputeInstance,
    Gpu,
    GpuInstance,
    Health,
    Interconnect,
    MigInfo,
    NodeInfo,
    NodeTopology,
    NumaNode,
    NvlinkDomain,
    NvmlStatus,
    RdmaNic,
)
from gputopo.core.contract import (
    AnnotatedComputeInstance,
    AnnotatedGpu,
    AnnotatedMigInstance,
    AnnotatedNumaNode,
    AnnotatedNvlinkDomain,
    AnnotatedRdmaNic,
    TopologyAnnotation,
)


def build_topology_annotation(topology: NodeTopology) -> TopologyAnnotation:
    return TopologyAnnotation(
        interconnect=topology.interconnect.value,
        gpus=tuple(
            AnnotatedGpu(
                index=gpu.index,
                uuid=gpu.uuid,
                model=gpu.name,
                memory_mib=gpu.memory_mib,
                numa_node=gpu.numa_node,
                nvlink_domain=gpu.nvlink_domain,
                pci_bus_id=gpu.pci_bus_id,
                pci_path=gpu.pci_path,
                pcie_switch=gpu.pcie_switch,
                mig_enabled=bool(gpu.mig.enabled),
                health="failed" if gpu.health.value == "failed" else None,
                mig=tuple(
                    AnnotatedMigInstance(
                        id=gi.id,
                        profile=gi.profile,
                        placement_start=gi.placement_start,
                        placement_size=gi.placement_size,
                        memory_mib=gi.memory_mib,
                        compute_instances=tuple(
                            AnnotatedComputeInstance(id=ci.id, profile=ci.profile)
                            for ci in sorted(gi.compute_instances, key=lambda c: c.id)
                        ),
                    )
                    for gi in sorted(gpu.mig.instances, key=lambda g: g.id)
                )
                if gpu.mig.enabled
                else (),
            )
            for gpu in sorted(topology.gpus, key=lambda g: g.index)
        ),
        nvlink_domains=tuple(
            AnnotatedNvlinkDomain(id=d.id, gpus=tuple(sorted(d.gpus)), via=d.via.value)
            for d in sorted(topology.nvlink_domains, key=lambda d: d.id)
        ),
        numa_nodes=tuple(
            AnnotatedNumaNode(
                id=n.id, cpus=n.cpus, distances=n.distances, gpus=tuple(sorted(n.gpus))
            )
            for n in sorted(topology.numa_nodes, key=lambda n: n.id)
        ),
        rdma_nics=tuple(
            AnnotatedRdmaNic(
                name=nic.name,
                pci_bus_id=nic.pci_bus_id,
                numa_node=nic.numa_node,
                pcie_switch=nic.pcie_switch,
                local_gpus=tuple(sorted(nic.local_gpus)),
            )
            for nic in sorted(topology.rdma_nics, key=lambda n: n.name)
        ),
    )


def topology_annotation_value(topology: NodeTopology) -> str:
    return build_topology_annotation(topology).to_json()


def topology_from_annotation(annotation: TopologyAnnotation, hostname: str) -> NodeTopology:
    """The model of a node as far as its annotation tells: the inverse of
    :func:`build_topology_annotation` on the facts the annotation keeps.

    A GPU the annotation marks failed is failed; any other is ``ok`` as far as the annotation
    can say (it leaves degraded states out). NVML is taken as available, its versions unknown:
    the agent writes an annotation only from a discovery that described the GPUs. A NUMA node's
    NICs are the RDMA NICs on it, as discovery assigns them. Raises ValueError (naming the
    field) for an ``interconnect`` or ``via`` this build does not know.
    """
    nics_by_numa: dict[int, list[str]] = {}
    for nic in annotation.rdma_nics:
        if nic.numa_node is not None:
            nics_by_numa.setdefault(nic.numa_node, []).append(nic.name)
    return NodeTopology(
        node=NodeInfo(hostname=hostname),
        nvml=NvmlStatus(available=True),
        gpus=tuple(
            Gpu(
                index=gpu.index,
                pci_bus_id=gpu.pci_bus_id,
                uuid=gpu.uuid,
                name=gpu.model,
                memory_mib=gpu.memory_mib,
                pci_path=gpu.pci_path,
                pcie_switch=gpu.pcie_switch,
                numa_node=gpu.numa_node,
                nvlink_domain=gpu.nvlink_domain,
                mig=MigInfo(
                    enabled=gpu.mig_enabled,
                    instances=tuple(
                        GpuInstance(
                            id=gi.id,
                            profile=gi.profile,
                            placement_start=gi.placement_start,
                            placement_size=gi.placement_size,
                            memory_mib=gi.memory_mib,
                            compute_instances=tuple(
                                ComputeInstance(id=ci.id, profile=ci.profile)
                                for ci in gi.compute_instances
                            ),
                        )
                        for gi in gpu.mig
                    ),
                ),
                health=Health.FAILED if gpu.health == "failed" else Health.OK,
                health_reasons=("marked failed in the topology annotation",)
                if gpu.health == "failed"
                else (),
            )
            for gpu in annotation.gpus
        ),
        nvlink_domains=tuple(
            NvlinkDomain(
                id=domain.id,
                gpus=domain.gpus,
                via=_interconnect(domain.via, f"nvlink_domains[{number}].via"),
            )
            for number, domain in enumerate(annotation.nvlink_domains)
        ),
        numa_nodes=tuple(
            NumaNode(
                id=node.id,
                cpus=node.cpus,
                distances=node.distances,
                gpus=node.gpus,
                nics=tuple(nics_by_numa.get(node.id, ())),
            )
            for node in annotation.numa_nodes
        ),
        rdma_nics=tuple(
            RdmaNic(
                name=nic.name,
                pci_bus_id=nic.pci_bus_id,
                numa_node=nic.numa_node,
                pcie_switch=nic.pcie_switch,
                local_gpus=nic.local_gpus,
            )
            for nic in annotation.rdma_nics
        ),
        interconnect=_interconnect(annotation.interconnect, "interconnect"),
    )


def _interconnect(value: str, path: str) -> Interconnect:
    try:
        return Interconnect(value)
    except ValueError:
        expected = ", ".join(item.value for item in Interconnect)
        raise ValueError(
            f"topology annotation: {path}: expected one of {expected}, got {value!r}"
        ) from None
