"""Labelers: GFD-compatible nvidia.com/* keys and gputopo's topology and health labels."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gputopo.agent.labels import InvalidOption, LabelOptions, compute_labels, merge
from gputopo.agent.labels._gpus import arch_family, sanitise
from gputopo.agent.topology import ComputeCapability, Health
from gputopo.core.contract import Contract, Gfd
from tests.unit.agent.machines import (
    a100_mig,
    cpu_only,
    degraded,
    dgx_h100,
    gb200_fabric,
    h100,
    l4_pcie,
    one_g,
    three_g,
)


def labels_of(topology, **options):  # type: ignore[no-untyped-def]
    return compute_labels(topology, LabelOptions(**options))


def test_gfd_sanitise_matches_gfd_product_format() -> None:
    assert sanitise("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert sanitise("NVIDIA GeForce RTX 4090 (TM)  ") == "NVIDIA-GeForce-RTX-4090-TM"
    assert sanitise("Tesla  V100-SXM2_16GB") == "Tesla-V100-SXM2_16GB"


@pytest.mark.parametrize(
    ("major", "minor", "family"),
    [
        (7, 0, "volta"),
        (7, 5, "turing"),
        (8, 0, "ampere"),
        (8, 6, "ampere"),
        (8, 9, "ada-lovelace"),
        (9, 0, "hopper"),
        (10, 0, "blackwell"),
        (12, 0, "blackwell"),
        (11, 0, "undefined"),
    ],
)
def test_gpu_family_follows_gfd(major: int, minor: int, family: str) -> None:
    assert arch_family(major, minor) == family


def test_dgx_h100_gfd_labels() -> None:
    labels = labels_of(dgx_h100())
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"
    assert labels[Gfd.GPU_COUNT] == "8"
    assert labels[Gfd.GPU_MEMORY] == "81559"
    assert labels[Gfd.GPU_FAMILY] == "hopper"
    assert (labels[Gfd.GPU_COMPUTE_MAJOR], labels[Gfd.GPU_COMPUTE_MINOR]) == ("9", "0")
    assert labels[Gfd.GPU_MACHINE] == "DGXH100"
    assert labels[Gfd.GPU_MODE] == "compute"
    assert labels[Gfd.MIG_CAPABLE] == "true"
    assert labels[Gfd.GPU_REPLICAS] == "1"
    assert labels[Gfd.GPU_SHARING_STRATEGY] == "none"
    assert Gfd.MIG_STRATEGY not in labels  # GFD sets it only for single and mixed


def test_driver_and_cuda_versions_follow_gfd() -> None:
    labels = labels_of(dgx_h100())
    assert labels[Gfd.CUDA_DRIVER_VERSION_FULL] == "550.54.15"
    assert labels[Gfd.CUDA_DRIVER_VERSION_MAJOR] == "550"
    assert labels[Gfd.CUDA_DRIVER_VERSION_MINOR] == "54"
    assert labels[Gfd.CUDA_DRIVER_VERSION_REVISION] == "15"
    # GFD's "runtime" version is the CUDA version the driver supports
    assert labels[Gfd.CUDA_RUNTIME_VERSION_FULL] == "12.4"
    assert labels[Gfd.CUDA_RUNTIME_MAJOR] == "12"


def test_gb200_fabric_gets_clique_label() -> None:
    labels = labels_of(gb200_fabric())
    assert labels[Gfd.GPU_CLIQUE] == "7c2a8c56-1e6b-4a3d-9a41-5c1f0d0e2b11.32766"
    assert labels[Gfd.GPU_FAMILY] == "blackwell"


def test_clique_left_out_when_gpus_disagree() -> None:
    topology = gb200_fabric()
    first = topology.gpus[0]
    assert first.fabric is not None
    other = replace(first, fabric=replace(first.fabric, clique_id=1))
    labels = labels_of(replace(topology, gpus=(other, *topology.gpus[1:])))
    assert Gfd.GPU_CLIQUE not in labels


def test_l4_pcie_topology_labels() -> None:
    labels = labels_of(l4_pcie())
    c = Contract()
    assert labels[c.gpu_interconnect] == "pcie"
    assert labels[c.gpu_nvlink_domain_size] == "1"
    assert labels[c.gpu_nvlink_domains] == "0"
    assert labels[c.gpu_aligned_max] == "1"
    assert labels[c.gpu_numa_max] == "2"
    assert labels[c.gpu_rdma] == "false"
    assert labels[Gfd.GPU_FAMILY] == "ada-lovelace"
    assert labels[Gfd.MIG_CAPABLE] == "false"


def test_dgx_h100_topology_labels() -> None:
    labels = labels_of(dgx_h100(), sla_score=990)
    c = Contract()
    assert labels[c.gpu_present] == "true"
    assert labels[c.gpu_interconnect] == "nvswitch"
    assert labels[c.gpu_nvlink_domain_size] == "8"
    assert labels[c.gpu_nvlink_domains] == "1"
    assert labels[c.numa_nodes] == "2"
    assert labels[c.gpu_numa_max] == "4"
    assert labels[c.gpu_aligned_max] == "4"
    assert labels[c.gpu_pcie_gen] == "5"
    assert labels[c.gpu_rdma] == "true"
    assert labels[c.gpu_health] == "ok"
    assert labels[c.sla] == "990"


def test_cpu_only_node_gets_only_gpu_present_false() -> None:
    assert labels_of(cpu_only(), sla_score=None) == {"gputopo.io/gpu.present": "false"}


def test_configurable_prefix_moves_every_gputopo_key() -> None:
    labels = labels_of(dgx_h100(), contract=Contract("gpus.example.com"), sla_score=1000)
    assert "gpus.example.com/gpu.interconnect" in labels
    assert not [k for k in labels if k.startswith("gputopo.io/")]
    assert Gfd.GPU_PRODUCT in labels  # GFD keys stay under nvidia.com


def test_heterogeneous_node_labels_the_majority_model_deterministically() -> None:
    topology = dgx_h100()
    l40 = tuple(
        replace(
            gpu, name="NVIDIA L40S", memory_mib=46068, compute_capability=ComputeCapability(8, 9)
        )
        for gpu in topology.gpus[:3]
    )
    mixed = replace(topology, gpus=l40 + topology.gpus[3:])
    labels = labels_of(mixed)
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"
    assert labels[Gfd.GPU_COUNT] == "5"
    assert labels[Gfd.GPU_FAMILY] == "hopper"
    assert labels["gputopo.io/gpu.heterogeneous"] == "true"
    assert labels["gputopo.io/gpu.models"] == "2"
    reordered = replace(mixed, gpus=tuple(reversed(mixed.gpus)))
    assert labels_of(reordered) == labels


def test_heterogeneous_tie_goes_to_the_model_of_the_lowest_index() -> None:
    topology = l4_pcie(2)
    other = replace(topology.gpus[1], name="NVIDIA T4", compute_capability=ComputeCapability(7, 5))
    labels = labels_of(replace(topology, gpus=(topology.gpus[0], other)))
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-L4"
    assert labels[Gfd.GPU_COUNT] == "1"


def test_mig_single_uniform_layout_overloads_gpu_labels() -> None:
    topology = a100_mig({0: (one_g(1, 0), one_g(2, 1)), 1: (one_g(3, 0),)})
    labels = labels_of(topology, mig_strategy="single")
    assert labels[Gfd.MIG_STRATEGY] == "single"
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels[Gfd.GPU_COUNT] == "3"
    assert labels[Gfd.GPU_MEMORY] == "4864"
    assert labels["nvidia.com/gpu.multiprocessors"] == "14"
    assert labels["nvidia.com/gpu.slices.gi"] == "1"
    assert labels["nvidia.com/gpu.slices.ci"] == "1"
    assert labels["nvidia.com/gpu.engines.copy"] == "1"
    assert labels[Gfd.GPU_REPLICAS] == "1"


@pytest.mark.parametrize(
    "layouts",
    [
        {0: (one_g(1, 0),), 1: (three_g(2, 0),)},  # two profiles
        {0: (one_g(1, 0),), 1: None},  # MIG enabled next to disabled
        {0: (one_g(1, 0),), 1: ()},  # MIG enabled but empty
    ],
    ids=["two-profiles", "enabled-and-disabled", "enabled-but-empty"],
)
def test_mig_single_invalid_layouts(layouts) -> None:  # type: ignore[no-untyped-def]
    labels = labels_of(a100_mig(layouts), mig_strategy="single")
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-A100-SXM4-40GB-MIG-INVALID"
    assert labels[Gfd.GPU_COUNT] == "0"
    assert labels[Gfd.GPU_REPLICAS] == "0"
    assert labels[Gfd.GPU_MEMORY] == "0"


def test_mig_single_without_mig_enabled_gpus_is_like_none() -> None:
    labels = labels_of(dgx_h100(), mig_strategy="single")
    assert labels[Gfd.MIG_STRATEGY] == "single"
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"


def test_mig_mixed_labels_each_profile() -> None:
    topology = a100_mig({0: (one_g(1, 0), three_g(2, 4)), 1: (three_g(3, 0),), 2: ()})
    labels = labels_of(topology, mig_strategy="mixed")
    assert labels["nvidia.com/mig-1g.5gb.count"] == "1"
    assert labels["nvidia.com/mig-3g.20gb.count"] == "2"
    assert labels["nvidia.com/mig-3g.20gb.memory"] == "19968"
    assert labels["nvidia.com/mig-3g.20gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"
    assert labels["nvidia.com/mig-3g.20gb.slices.gi"] == "3"
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-A100-SXM4-40GB"  # full-GPU labels stay
    assert labels[Gfd.GPU_COUNT] == "3"


def test_mig_mixed_turns_plus_into_dot() -> None:
    me = replace(one_g(1, 0), profile="1g.10gb+me")
    me = replace(me, compute_instances=(replace(me.compute_instances[0], profile="1g.10gb+me"),))
    labels = labels_of(a100_mig({0: (me,)}), mig_strategy="mixed")
    assert labels["nvidia.com/mig-1g.10gb.me.count"] == "1"


def test_unknown_mig_strategy_is_refused_with_the_flag_named() -> None:
    with pytest.raises(InvalidOption, match="--mig-strategy 'auto'"):
        LabelOptions(mig_strategy="auto")


def test_health_labels_take_the_worst_gpu() -> None:
    sick = degraded(dgx_h100(), 3, health=Health.DEGRADED, nvlinks_down=2)
    labels = labels_of(sick)
    assert labels["gputopo.io/gpu.health"] == "degraded"
    assert labels["gputopo.io/gpu.healthy"] == "7"
    lost = degraded(dgx_h100(), 5, lost=True)
    assert labels_of(lost)["gputopo.io/gpu.health"] == "failed"


def test_pci_only_gpu_makes_the_node_failed() -> None:
    from gputopo.agent.topology import PciOnlyGpu

    topology = replace(dgx_h100(), pci_only_gpus=(PciOnlyGpu("0000:99:00.0", reason="no driver"),))
    assert labels_of(topology)["gputopo.io/gpu.health"] == "failed"


def test_numa_unknown_on_multi_socket_is_not_guessed() -> None:
    topology = dgx_h100()
    topology = replace(topology, gpus=tuple(replace(g, numa_node=None) for g in topology.gpus))
    labels = labels_of(topology)
    assert "gputopo.io/gpu.numa-max" not in labels
    assert "gputopo.io/gpu.aligned-max" not in labels


def test_aligned_max_counts_nvlink_domain_and_numa_together() -> None:
    # two NVLink pairs, each pair split across the two sockets -> aligned max 1
    gpus = (h100(0, 0, 0), h100(1, 1, 0), h100(2, 0, 1), h100(3, 1, 1))
    labels = labels_of(replace(dgx_h100(), gpus=gpus))
    assert labels["gputopo.io/gpu.aligned-max"] == "1"


def test_merge_later_labeler_wins() -> None:
    class Fixed:
        def __init__(self, value: str) -> None:
            self.value = value

        def labels(self, topology):  # type: ignore[no-untyped-def]
            return {"k": self.value}

    assert merge(Fixed("a"), Fixed("b")).labels(dgx_h100()) == {"k": "b"}


def test_gpu_with_unknown_name_does_not_make_the_node_heterogeneous() -> None:
    topology = degraded(dgx_h100(), 6, lost=True)
    topology = replace(
        topology,
        gpus=tuple(replace(g, name=None) if g.index == 6 else g for g in topology.gpus),
    )
    labels = labels_of(topology)
    assert labels["gputopo.io/gpu.heterogeneous"] == "false"
    assert labels["gputopo.io/gpu.models"] == "1"
    assert labels[Gfd.GPU_COUNT] == "7"


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA RTX A6000", "RTX-A6000"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA GB200", "GB200"),
        ("NVIDIA H100 NVL", "H100"),
        ("NVIDIA", ""),
    ],
)
def test_short_model_drops_vendor_memory_and_form_factor(name: str, model: str) -> None:
    from gputopo.agent.labels.model import short_model

    assert short_model(name) == model


def test_dgx_h100_gets_the_short_model_label_guides_select_on() -> None:
    labels = labels_of(dgx_h100())
    assert labels["gputopo.io/gpu.model"] == "H100"
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-80GB-HBM3"  # GFD's value stays exact


def test_cpu_only_node_has_no_model_label() -> None:
    assert "gputopo.io/gpu.model" not in labels_of(cpu_only())
