"""Discovery on every built-in machine profile (mocks/profiles): the facts each one pins."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gputopo.agent.cli import discover_topology, machine_source
from gputopo.agent.discovery import Discoverer
from gputopo.agent.topology import Health, Interconnect, NodeTopology, NvlinkRemote, XidEvent
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import builtin_profile_names, load_profile
from gputopo.mocks.sysfs import build_sysfs


def discover_profile(name: str) -> NodeTopology:
    args = argparse.Namespace(mock=name, sysfs_root=None, node_name=None)
    with machine_source(args) as source:
        return discover_topology(source)


@pytest.fixture(scope="module")
def dgx_h100() -> NodeTopology:
    return discover_profile("dgx-h100")


def test_every_builtin_profile_discovers_and_round_trips() -> None:
    names = builtin_profile_names()
    assert {"dgx-h100", "l4-pcie", "cpu-only"} <= set(names)
    for name in names:
        topology = discover_profile(name)
        assert NodeTopology.from_json(topology.to_json()) == topology, name


def test_dgx_h100_is_one_nvswitch_domain_of_eight(dgx_h100: NodeTopology) -> None:
    assert len(dgx_h100.gpus) == 8
    assert dgx_h100.interconnect is Interconnect.NVSWITCH
    (domain,) = dgx_h100.nvlink_domains
    assert domain.gpus == tuple(range(8))
    assert domain.via is Interconnect.NVSWITCH
    assert all(gpu.nvlink_domain == 0 for gpu in dgx_h100.gpus)
    assert all(gpu.architecture == "hopper" for gpu in dgx_h100.gpus)
    assert all(gpu.health is Health.OK for gpu in dgx_h100.gpus)
    links = dgx_h100.gpu(0).nvlinks
    assert len(links) == 18
    assert all(link.active and link.remote is NvlinkRemote.NVSWITCH for link in links)
    assert sum(link.bandwidth_gbps or 0 for link in links) == 450


def test_dgx_h100_numa_and_nics(dgx_h100: NodeTopology) -> None:
    numa0 = next(node for node in dgx_h100.numa_nodes if node.id == 0)
    assert numa0.gpus == (0, 1, 2, 3)
    assert len(dgx_h100.rdma_nics) >= 8
    compute_nics = [nic for nic in dgx_h100.rdma_nics if nic.local_gpus]
    assert len(compute_nics) == 8
    assert sorted(len(nic.local_gpus) for nic in compute_nics) == [1] * 8
    assert sorted(g for nic in compute_nics for g in nic.local_gpus) == list(range(8))
    for gpu in dgx_h100.gpus:
        assert gpu.pcie_switch is not None
        assert gpu.pcie.gen_current == 5


def test_a100_pcie_pairs_are_two_direct_nvlink_domains() -> None:
    topology = discover_profile("a100-pcie-nvlink-pairs")
    assert [d.gpus for d in topology.nvlink_domains] == [(0, 1), (2, 3)]
    assert {d.via for d in topology.nvlink_domains} == {Interconnect.NVLINK}
    assert topology.interconnect is Interconnect.NVLINK


def test_l4_pcie_has_no_nvlink_domains() -> None:
    topology = discover_profile("l4-pcie")
    assert topology.gpus
    assert topology.nvlink_domains == ()
    assert topology.interconnect is Interconnect.PCIE
    assert all(gpu.nvlink_domain is None for gpu in topology.gpus)


def test_rtx4090_unsupported_queries_are_unknowns_not_crashes() -> None:
    topology = discover_profile("rtx4090-workstation")
    assert topology.gpus
    gpu = topology.gpu(0)
    assert gpu.architecture == "ada-lovelace"
    assert gpu.health_signals.ecc.volatile_uncorrected is None
    assert gpu.mig.capable is False
    assert gpu.health is Health.OK


def test_gb200_has_a_fabric_clique_and_cpu_less_numa_nodes() -> None:
    topology = discover_profile("gb200-nvl4")
    assert all(gpu.fabric is not None and gpu.fabric.clique_id is not None for gpu in topology.gpus)
    assert any(node.cpus == () for node in topology.numa_nodes)
    assert all(gpu.architecture == "blackwell" for gpu in topology.gpus)
    (domain,) = topology.nvlink_domains
    assert domain.gpus == tuple(g.index for g in topology.gpus)
    assert topology.gpu(0).nvlinks[0].bandwidth_gbps == 50.0


def test_degraded_dgx_marks_lost_xid_and_ecc_gpus_failed() -> None:
    topology = discover_profile("dgx-h100-degraded")
    failed = {gpu.index: gpu.health_reasons for gpu in topology.gpus if gpu.health is Health.FAILED}
    reasons = " | ".join(reason for gpu_reasons in failed.values() for reason in gpu_reasons)
    assert "GPU is lost" in reasons
    assert "XID 79" in reasons
    assert "uncorrectable ECC" in reasons
    assert len(topology.gpus) == 8  # the lost GPU keeps its index


def test_cpu_only_has_nvml_unavailable_and_numa_described() -> None:
    topology = discover_profile("cpu-only")
    assert not topology.nvml.available
    assert topology.nvml.error
    assert topology.gpus == ()
    assert topology.interconnect is Interconnect.NONE
    assert topology.numa_nodes
    assert all(node.cpus for node in topology.numa_nodes)


def test_dgx_a100_mig_instances_and_numa_layout() -> None:
    topology = discover_profile("dgx-a100-mig")
    assert [gpu.numa_node for gpu in topology.gpus] == [3, 3, 1, 1, 7, 7, 5, 5]
    mig_gpus = [gpu for gpu in topology.gpus if gpu.mig.enabled]
    assert mig_gpus
    for gpu in mig_gpus:
        assert gpu.mig.instances
        for instance in gpu.mig.instances:
            assert instance.profile.endswith("gb") or instance.profile.endswith("+me")
            assert instance.placement_start is not None
            assert instance.compute_instances
            for ci in instance.compute_instances:
                assert ci.uuid and ci.uuid.startswith("MIG-")


def test_xid_injected_while_running_fails_that_gpu_on_the_next_discovery(tmp_path: Path) -> None:
    profile = load_profile("l4-pcie")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    with Discoverer(module, root, "l4") as discoverer:
        assert discoverer.discover().gpu(1).health is Health.OK
        module.control.inject_xid(1, 79)
        assert discoverer.drain_xid_events()[1] == (XidEvent(79, 1),)
        topology = discoverer.discover()
        module.control.set_lost(2)
        later = discoverer.discover()
    assert topology.gpu(1).health is Health.FAILED
    assert later.gpu(1).health is Health.FAILED  # counts accumulate across cycles
    assert later.gpu(2).health is Health.FAILED
    assert later.gpu(2).pci_bus_id == topology.gpu(2).pci_bus_id
