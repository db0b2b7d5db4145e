"""Recording: a topology becomes a profile document that load_profile accepts."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml

from gputopo.agent.record import dump_profile, profile_from_topology
from gputopo.agent.topology import (
    ComputeCapability,
    ComputeInstance,
    EccCounts,
    Gpu,
    GpuInstance,
    HealthSignals,
    MigInfo,
    NodeInfo,
    NodeTopology,
    NumaNode,
    NvlinkLink,
    NvlinkRemote,
    NvmlStatus,
    PcieInfo,
    RdmaNic,
    XidEvent,
)
from gputopo.mocks.profile import load_profile, parse_profile


def two_gpu_topology() -> NodeTopology:
    links = tuple(
        NvlinkLink(
            link=i, active=i != 2, version=3, remote=NvlinkRemote.GPU, remote_pci_bus_id=peer
        )
        for i, peer in enumerate(["0000:19:00.0"] * 3)
    )
    back = tuple(
        NvlinkLink(
            link=i,
            active=True,
            version=3,
            remote=NvlinkRemote.GPU,
            remote_pci_bus_id="0000:18:00.0",
        )
        for i in range(3)
    )
    mig = MigInfo(
        capable=True,
        enabled=True,
        pending=True,
        instances=(
            GpuInstance(
                id=1,
                profile="3g.40gb",
                placement_start=4,
                compute_instances=(ComputeInstance(0, "3g.40gb"),),
            ),
        ),
    )
    common = {
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_mib": 81920,
        "compute_capability": ComputeCapability(8, 0),
        "architecture": "ampere",
        "pcie": PcieInfo(4, 4, 16, 16),
        "numa_node": 0,
    }
    return NodeTopology(
        node=NodeInfo("recorded-01", "DGXA100", "NVIDIA"),
        nvml=NvmlStatus(available=True),
        gpus=(
            Gpu(
                index=0,
                pci_bus_id="0000:18:00.0",
                uuid="GPU-00000000-0000-0000-0000-000000000001",
                pci_path=("0000:15:01.0", "0000:16:00.0", "0000:17:00.0"),
                nvlinks=links,
                mig=mig,
                health_signals=HealthSignals(
                    xid_events=(XidEvent(79, 2),),
                    ecc=EccCounts(0, 1, 0, 1),
                    throttle_reasons=("sw_power_cap",),
                ),
                **common,  # type: ignore[arg-type]
            ),
            Gpu(index=1, pci_bus_id="0000:19:00.0", nvlinks=back, **common),  # type: ignore[arg-type]
        ),
        numa_nodes=(
            NumaNode(0, cpus=tuple(range(8)), memory_total_bytes=8 << 30, distances=(10,)),
        ),
        rdma_nics=(RdmaNic("mlx5_0", "0000:1a:00.0", 0, ("ib0",), pcie_switch="0000:16:00.0"),),
    )


def test_recorded_profile_loads_and_keeps_the_facts() -> None:
    document = profile_from_topology(two_gpu_topology())
    profile = parse_profile(document, source="<recorded>", name="recorded")
    first, second = profile.gpus
    assert profile.node.hostname == "recorded-01"
    assert profile.pci_path(first.bus_id) == (
        "0000:15:01.0",
        "0000:16:00.0",
        "0000:17:00.0",
        "0000:18:00.0",
    )
    assert first.nvlinks is not None and [link.active for link in first.nvlinks] == [
        True,
        True,
        False,
    ]
    assert first.mig.instances[0].placement_start == 4
    assert first.health.xid_events == (79, 79)
    assert first.health.ecc is not None and first.health.ecc.volatile_uncorrected == 1
    assert first.health.throttle_reasons == 0x4
    assert second.parent is None
    assert profile.nics[0].parent is not None


def test_dump_profile_has_recorded_header_and_reloads(tmp_path: Path) -> None:
    document = profile_from_topology(two_gpu_topology())
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    text = dump_profile(document, now=moment)
    assert text.startswith("# recorded by gputopo ")
    assert "on 2026-01-02T03:04:05Z" in text.splitlines()[0]
    path = tmp_path / "recorded.yaml"
    path.write_text(text)
    assert yaml.safe_load(text) == document
    assert len(load_profile(path).gpus) == 2


def test_recording_a_node_without_nvml() -> None:
    topology = NodeTopology(
        node=NodeInfo("cpu"),
        nvml=NvmlStatus(available=False, error="LibraryNotFound: NVML Shared Library Not Found"),
        numa_nodes=(NumaNode(0, cpus=(0, 1)),),
    )
    document = profile_from_topology(topology)
    assert document["nvml"] == {"load_error": "LIBRARY_NOT_FOUND"}
    assert parse_profile(document).nvml.load_error == "LIBRARY_NOT_FOUND"
