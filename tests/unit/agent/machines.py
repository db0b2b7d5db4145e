"""Hand-built NodeTopology values for the publishing tests (no NVML, no sysfs).

They mirror the built-in mock profiles closely enough to pin the labelers' behaviour; the
golden tests run the real profiles through discovery.
"""

from __future__ import annotations

from dataclasses import replace

from gputopo.agent.topology import (
    ComputeCapability,
    ComputeInstance,
    DriverInfo,
    FabricInfo,
    Gpu,
    GpuInstance,
    Health,
    HealthSignals,
    Interconnect,
    MigInfo,
    NodeInfo,
    NodeTopology,
    NumaNode,
    NvlinkDomain,
    NvmlStatus,
    PcieInfo,
    PciOnlyGpu,
    RdmaNic,
)

DRIVER = DriverInfo(driver_version="550.54.15", cuda_driver_version="12.4", nvml_version="12.550")


def h100(index: int, numa: int, domain: int | None = 0, **changes: object) -> Gpu:
    gpu = Gpu(
        index=index,
        pci_bus_id=f"0000:{0x18 + index * 0x10:02x}:00.0",
        uuid=f"GPU-{index:08d}-h100",
        name="NVIDIA H100 80GB HBM3",
        memory_mib=81559,
        compute_capability=ComputeCapability(9, 0),
        architecture="hopper",
        pcie=PcieInfo(gen_current=5, gen_max=5, width_current=16, width_max=16),
        pci_path=(f"0000:{0x10 + index * 0x10:02x}:01.0",),
        pcie_switch=f"0000:{0x10 + index * 0x10:02x}:00.0",
        pci_class="0x030200",
        numa_node=numa,
        mig=MigInfo(capable=True, enabled=False, pending=False),
        nvlink_domain=domain,
    )
    return replace(gpu, **changes)  # type: ignore[arg-type]


def numa_nodes(
    count: int, cpus_per_node: int, gpus_by_node: dict[int, tuple[int, ...]]
) -> tuple[NumaNode, ...]:
    return tuple(
        NumaNode(
            id=n,
            cpus=tuple(range(n * cpus_per_node, (n + 1) * cpus_per_node)),
            memory_total_bytes=1024**4,
            distances=tuple(10 if m == n else 21 for m in range(count)),
            gpus=gpus_by_node.get(n, ()),
        )
        for n in range(count)
    )


def dgx_h100(**changes: object) -> NodeTopology:
    gpus = tuple(h100(i, numa=0 if i < 4 else 1) for i in range(8))
    topology = NodeTopology(
        node=NodeInfo(hostname="dgx-h100-01", product_name="DGXH100", vendor="NVIDIA"),
        nvml=NvmlStatus(available=True),
        driver=DRIVER,
        gpus=gpus,
        nvlink_domains=(NvlinkDomain(id=0, gpus=tuple(range(8)), via=Interconnect.NVSWITCH),),
        numa_nodes=numa_nodes(2, 112, {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}),
        rdma_nics=tuple(
            RdmaNic(
                name=f"mlx5_{i}",
                pci_bus_id=f"0000:{0x19 + i * 0x10:02x}:00.0",
                numa_node=0 if i < 4 else 1,
                pcie_switch=gpus[i].pcie_switch,
                local_gpus=(i,),
            )
            for i in range(8)
        ),
        interconnect=Interconnect.NVSWITCH,
    )
    return replace(topology, **changes)  # type: ignore[arg-type]


def mig_instance(
    gi_id: int, profile: str, slices: int, memory: int, sms: int, start: int
) -> GpuInstance:
    return GpuInstance(
        id=gi_id,
        profile=profile,
        placement_start=start,
        placement_size=slices,
        slices=slices,
        memory_mib=memory,
        multiprocessors=sms,
        copy_engines=slices,
        decoders=slices // 2 or 0,
        encoders=0,
        jpegs=1 if slices == 7 else 0,
        ofas=1 if slices == 7 else 0,
        compute_instances=(
            ComputeInstance(id=0, profile=profile, slices=slices, multiprocessors=sms),
        ),
    )


def a100_mig(layouts: dict[int, tuple[GpuInstance, ...] | None]) -> NodeTopology:
    """A100-SXM4-40GB GPUs; ``layouts[i]`` None means MIG disabled on GPU i."""
    gpus = []
    for index, instances in sorted(layouts.items()):
        gpus.append(
            Gpu(
                index=index,
                pci_bus_id=f"0000:{0x07 + index * 0x10:02x}:00.0",
                uuid=f"GPU-{index:08d}-a100",
                name="NVIDIA A100-SXM4-40GB",
                memory_mib=40960,
                compute_capability=ComputeCapability(8, 0),
                pcie=PcieInfo(gen_max=4),
                pci_class="0x030200",
                numa_node=0,
                mig=MigInfo(
                    capable=True,
                    enabled=instances is not None,
                    instances=instances or (),
                ),
            )
        )
    return NodeTopology(
        node=NodeInfo(hostname="dgx-a100", product_name="DGXA100 920-23687-2530-000"),
        nvml=NvmlStatus(available=True),
        driver=DRIVER,
        gpus=tuple(gpus),
        numa_nodes=numa_nodes(1, 128, {0: tuple(layouts)}),
        interconnect=Interconnect.PCIE,
    )


def one_g(gi_id: int, start: int) -> GpuInstance:
    return mig_instance(gi_id, "1g.5gb", 1, 4864, 14, start)


def three_g(gi_id: int, start: int) -> GpuInstance:
    return mig_instance(gi_id, "3g.20gb", 3, 19968, 42, start)


def l4_pcie(count: int = 2) -> NodeTopology:
    gpus = tuple(
        Gpu(
            index=i,
            pci_bus_id=f"0000:{0x3B + i:02x}:00.0",
            uuid=f"GPU-{i:08d}-l4",
            name="NVIDIA L4",
            memory_mib=23034,
            compute_capability=ComputeCapability(8, 9),
            pcie=PcieInfo(gen_max=4),
            pci_class="0x030200",
            numa_node=0,
            mig=MigInfo(capable=False),
        )
        for i in range(count)
    )
    return NodeTopology(
        node=NodeInfo(hostname="l4-node", product_name="PowerEdge R760"),
        nvml=NvmlStatus(available=True),
        driver=DRIVER,
        gpus=gpus,
        numa_nodes=numa_nodes(1, 64, {0: tuple(range(count))}),
        interconnect=Interconnect.PCIE,
    )


def cpu_only() -> NodeTopology:
    return NodeTopology(
        node=NodeInfo(hostname="cpu-node"),
        nvml=NvmlStatus(available=False, error="NVML library not found"),
        numa_nodes=numa_nodes(2, 32, {}),
        interconnect=Interconnect.NONE,
    )


def nvml_down_with_gpus() -> NodeTopology:
    """A transient NVML failure: the driver does not answer but the GPUs are on the bus."""
    return NodeTopology(
        node=NodeInfo(hostname="dgx-h100-01", product_name="DGXH100"),
        nvml=NvmlStatus(available=False, error="NVML_ERROR_DRIVER_NOT_LOADED"),
        pci_only_gpus=tuple(
            PciOnlyGpu(pci_bus_id=f"0000:{0x18 + i * 0x10:02x}:00.0", reason="NVML unavailable")
            for i in range(8)
        ),
        numa_nodes=numa_nodes(2, 112, {}),
    )


def gb200_fabric() -> NodeTopology:
    gpus = tuple(
        Gpu(
            index=i,
            pci_bus_id=f"0008:{i:02x}:00.0",
            uuid=f"GPU-{i:08d}-gb200",
            name="NVIDIA GB200",
            memory_mib=189471,
            compute_capability=ComputeCapability(10, 0),
            pci_class="0x030200",
            numa_node=i // 2,
            mig=MigInfo(capable=True, enabled=False),
            fabric=FabricInfo(
                cluster_uuid="7c2a8c56-1e6b-4a3d-9a41-5c1f0d0e2b11",
                clique_id=32766,
                state="completed",
            ),
            nvlink_domain=0,
        )
        for i in range(4)
    )
    return NodeTopology(
        node=NodeInfo(hostname="gb200-0", product_name="GB200 NVL"),
        nvml=NvmlStatus(available=True),
        driver=DriverInfo(driver_version="570.124.06", cuda_driver_version="12.8"),
        gpus=gpus,
        nvlink_domains=(NvlinkDomain(id=0, gpus=(0, 1, 2, 3), via=Interconnect.NVSWITCH),),
        numa_nodes=numa_nodes(2, 72, {0: (0, 1), 1: (2, 3)}),
        interconnect=Interconnect.NVSWITCH,
    )


def degraded(topology: NodeTopology, index: int, **signals: object) -> NodeTopology:
    """``topology`` with GPU ``index``'s health signals and health replaced."""
    health = signals.pop("health", Health.OK)
    reasons = signals.pop("reasons", ())
    gpus = tuple(
        replace(
            gpu,
            health=health,  # type: ignore[arg-type]
            health_reasons=reasons,  # type: ignore[arg-type]
            health_signals=HealthSignals(**signals),  # type: ignore[arg-type]
        )
        if gpu.index == index
        else gpu
        for gpu in topology.gpus
    )
    return replace(topology, gpus=gpus)
