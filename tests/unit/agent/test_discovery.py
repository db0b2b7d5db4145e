"""Discovery assembly on hand-built machines (built-in profiles: test_discovery_profiles)."""

from __future__ import annotations

from pathlib import Path

import pynvml

from gputopo.agent.discovery import Discoverer, discover
from gputopo.agent.topology import Health, Interconnect, NodeTopology, NvlinkRemote
from tests.unit.agent.agent_fixtures import PciFunction, TinyGpu, build_tree, tiny_nvml

NUMA = {0: ("0-3", "10 21", 1024), 1: ("4-7", "21 10", 1024)}


def pcie_pairs_machine(tmp_path: Path, *, remote_type_supported: bool) -> tuple[object, Path]:
    """Four PCIe GPUs, bridged in pairs (0,1) and (2,3), two per NUMA node."""
    buses = ["18", "3b", "86", "af"]
    gpus = []
    for position, bus in enumerate(buses):
        peer = buses[position ^ 1]
        remote = 0 if remote_type_supported else None
        links = {n: (1, 5, remote, f"00000000:{peer.upper()}:00.0") for n in range(4)}
        gpus.append(
            TinyGpu(
                bus_id=f"00000000:{bus.upper()}:00.0",
                name="NVIDIA A100 80GB PCIe",
                cc=(8, 0),
                numa=position // 2,
                links=links,
            )
        )
    functions = [
        PciFunction(f"0000:{bus}:00.0", parents=(f"0000:{bus[0]}0:01.0",), numa_node=i // 2)
        for i, bus in enumerate(buses)
    ]
    root = build_tree(tmp_path / "sys", functions, numa=NUMA, dmi=("R750xa", "Dell Inc."))
    return tiny_nvml(gpus), root


def test_direct_bridges_make_two_nvlink_domains(tmp_path: Path) -> None:
    module, root = pcie_pairs_machine(tmp_path, remote_type_supported=True)
    topology = discover(module, root, hostname="node-a")
    assert [d.gpus for d in topology.nvlink_domains] == [(0, 1), (2, 3)]
    assert all(d.via is Interconnect.NVLINK for d in topology.nvlink_domains)
    assert topology.interconnect is Interconnect.NVLINK
    assert [g.nvlink_domain for g in topology.gpus] == [0, 0, 1, 1]
    assert topology.gpu(0).nvlinks[0].remote_gpu == 1
    assert [n.gpus for n in topology.numa_nodes] == [(0, 1), (2, 3)]
    assert topology.node.product_name == "R750xa"
    assert topology.node.hostname == "node-a"


def test_unsupported_remote_type_is_inferred_from_the_peer_bus_id(tmp_path: Path) -> None:
    module, root = pcie_pairs_machine(tmp_path, remote_type_supported=False)
    topology = discover(module, root, hostname="node-a")
    link = topology.gpu(2).nvlinks[0]
    assert link.remote is NvlinkRemote.GPU
    assert link.remote_gpu == 3
    assert [d.gpus for d in topology.nvlink_domains] == [(0, 1), (2, 3)]


def test_links_to_an_unknown_bus_id_are_inferred_as_nvswitch(tmp_path: Path) -> None:
    links = {n: (1, 6, None, "00000000:A5:00.0") for n in range(18)}
    gpus = [TinyGpu(bus_id=f"00000000:{b}:00.0", links=dict(links)) for b in ("18", "2A")]
    root = build_tree(
        tmp_path / "sys", [PciFunction("0000:18:00.0"), PciFunction("0000:2a:00.0")], numa=NUMA
    )
    topology = discover(tiny_nvml(gpus), root, hostname="n")
    assert topology.gpu(0).nvlinks[0].remote is NvlinkRemote.NVSWITCH
    assert topology.interconnect is Interconnect.NVSWITCH
    assert [(d.gpus, d.via) for d in topology.nvlink_domains] == [((0, 1), Interconnect.NVSWITCH)]


def test_lost_gpu_is_failed_and_keeps_index_and_sysfs_bus_id(tmp_path: Path) -> None:
    links = {n: (1, 6, 2, "00000000:A5:00.0") for n in range(18)}
    gpus = [
        TinyGpu(bus_id="00000000:18:00.0", links=dict(links)),
        TinyGpu(bus_id="00000000:2A:00.0", links=dict(links), lost=True),
        TinyGpu(bus_id="00000000:3B:00.0", links=dict(links)),
    ]
    functions = [PciFunction(f"0000:{b}:00.0") for b in ("18", "2a", "3b")]
    root = build_tree(tmp_path / "sys", functions, numa=NUMA)
    topology = discover(tiny_nvml(gpus), root, hostname="n")
    lost = topology.gpu(1)
    assert lost.pci_bus_id == "0000:2a:00.0"
    assert lost.health is Health.FAILED
    assert lost.nvlink_domain is None
    assert topology.pci_only_gpus == ()
    assert [d.gpus for d in topology.nvlink_domains] == [(0, 2)]


def test_nvml_unavailable_still_describes_numa_and_pci_gpus(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "sys", [PciFunction("0000:18:00.0")], numa=NUMA)
    module = tiny_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    topology = discover(module, root, hostname="n")
    assert not topology.nvml.available
    assert topology.gpus == ()
    assert topology.interconnect is Interconnect.NONE
    assert len(topology.numa_nodes) == 2
    (pci_only,) = topology.pci_only_gpus
    assert pci_only.reason.startswith("NVML unavailable: LibraryNotFound")


def test_gpu_nvml_does_not_enumerate_is_reported_with_a_reason(tmp_path: Path) -> None:
    functions = [
        PciFunction("0000:18:00.0"),
        PciFunction("0000:2a:00.0", driver="vfio-pci"),
        PciFunction("0000:3b:00.0"),
    ]
    root = build_tree(tmp_path / "sys", functions, numa=NUMA)
    topology = discover(tiny_nvml([TinyGpu(bus_id="00000000:18:00.0")]), root, hostname="n")
    reasons = {g.pci_bus_id: g.reason for g in topology.pci_only_gpus}
    assert reasons == {
        "0000:2a:00.0": "bound to vfio-pci, not the nvidia driver",
        "0000:3b:00.0": "not enumerated by NVML",
    }
    assert topology.interconnect is Interconnect.PCIE


def test_all_links_down_on_an_nvswitch_node_degrades_that_gpu(tmp_path: Path) -> None:
    up = {n: (1, 6, 2, "00000000:A5:00.0") for n in range(18)}
    down = {n: (0, 6, 2, "00000000:A5:00.0") for n in range(18)}
    gpus = [
        TinyGpu(bus_id="00000000:18:00.0", links=dict(up)),
        TinyGpu(bus_id="00000000:2A:00.0", links=dict(up)),
        TinyGpu(bus_id="00000000:3B:00.0", links=dict(down)),
    ]
    functions = [PciFunction(f"0000:{b}:00.0") for b in ("18", "2a", "3b")]
    root = build_tree(tmp_path / "sys", functions, numa=NUMA)
    topology = discover(tiny_nvml(gpus), root, hostname="n")
    assert topology.gpu(2).health is Health.DEGRADED
    assert topology.gpu(2).health_reasons == ("NVLinks down: 18",)
    assert topology.gpu(0).health is Health.OK


def test_discoverer_keeps_nvml_open_across_cycles_and_accumulates_xids(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "sys", [PciFunction("0000:18:00.0")], numa=NUMA)
    module = tiny_nvml([TinyGpu(bus_id="00000000:18:00.0")], xids=[(0, 79)])
    with Discoverer(module, root, "n") as discoverer:
        first = discoverer.discover()
        second = discoverer.discover()
    assert first.gpu(0).health is Health.FAILED
    assert second.gpu(0).health_reasons == ("XID 79 (GPU has fallen off the bus) x1",)


def test_topology_json_round_trips(tmp_path: Path) -> None:
    module, root = pcie_pairs_machine(tmp_path, remote_type_supported=True)
    topology = discover(module, root, hostname="n")
    assert NodeTopology.from_json(topology.to_json()) == topology
