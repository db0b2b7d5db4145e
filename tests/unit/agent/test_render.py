"""The ``discover -o text`` renderer on facts it may lack (a topology read from an annotation)."""

from __future__ import annotations

from dataclasses import replace

from gputopo.agent.render import gpu_nic_code, gpu_pair_code
from gputopo.agent.topology import HealthSignals, NvlinkLink, NvlinkRemote, P2PLevel, P2PLink
from tests.unit.agent.machines import dgx_h100


def test_nvswitch_links_give_the_link_count() -> None:
    links = tuple(NvlinkLink(link=i, active=True, remote=NvlinkRemote.NVSWITCH) for i in range(18))
    topology = dgx_h100()
    gpus = tuple(replace(gpu, nvlinks=links) for gpu in topology.gpus)
    topology = replace(topology, gpus=gpus)
    assert gpu_pair_code(topology, gpus[0], gpus[5]) == "NV18"


def test_one_domain_without_known_links_is_nv_unknown() -> None:
    topology = dgx_h100()
    assert gpu_pair_code(topology, topology.gpus[0], topology.gpus[7]) == "NV?"


def test_nvml_p2p_level_wins_over_the_pci_paths() -> None:
    topology = dgx_h100()
    a = replace(topology.gpus[0], nvlink_domain=None, p2p=(P2PLink(1, P2PLevel.HOSTBRIDGE),))
    b = replace(topology.gpus[1], nvlink_domain=None)
    assert gpu_pair_code(topology, a, b) == "PHB"


def test_without_a_p2p_level_numa_nodes_decide() -> None:
    topology = dgx_h100()
    a, b, c = (replace(topology.gpus[i], nvlink_domain=None) for i in (0, 1, 4))
    assert gpu_pair_code(topology, a, b) == "NODE"
    assert gpu_pair_code(topology, a, c) == "SYS"
    assert gpu_pair_code(topology, a, replace(c, numa_node=None)) == "?"


def test_a_nic_that_lists_the_gpu_as_local_is_below_a_switch() -> None:
    topology = dgx_h100()
    gpu = topology.gpus[0]
    own = replace(topology.rdma_nics[0], pcie_switch="0000:aa:00.0")  # a higher switch
    assert gpu_nic_code(gpu, own) == "PXB"
    assert gpu_nic_code(gpu, topology.rdma_nics[0]) == "PIX"  # the nearest switch of both
    assert gpu_nic_code(gpu, topology.rdma_nics[1]) == "NODE"


def test_a_pair_nvml_did_not_answer_for_stays_unknown() -> None:
    topology = dgx_h100()
    a = replace(topology.gpus[0], nvlink_domain=None, p2p=(P2PLink(1, P2PLevel.NODE),))
    c = replace(topology.gpus[4], nvlink_domain=None)
    assert gpu_pair_code(topology, a, c) == "?"  # a lost GPU may still be on the NVSwitch
    lost = replace(c, health_signals=HealthSignals(lost=True))
    assert gpu_pair_code(topology, replace(a, p2p=()), lost) == "?"
