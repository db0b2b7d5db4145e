"""Build the ``<prefix>/topology`` annotation from the topology model.

Static facts only (GPU identity and placement, NVLink domains, NUMA CPUs and distances, MIG
layout, RDMA NICs): health, counters and temperatures are left out so the annotation — and the
Node — change only when hardware or the MIG layout does. The schema and its parser live in
``agent.contract`` so the scheduler reads it without importing the agent.
"""

from __future__ import annotations

from gputopo.agent.topology import NodeTopology
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
