"""GpuTopology filter and score through schedule_one: which node a GPU pod lands on, and why."""

from __future__ import annotations

from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from tests.unit.scheduler.topo_builders import (
    CROSSED_8,
    NVSWITCH_8,
    PCIE_4,
    QUADS_8,
    annotation,
    cluster,
    gpu_node,
    gpu_pod,
    place,
)


def test_multi_gpu_pod_without_annotation_prefers_an_aligned_node() -> None:
    snapshot = cluster(gpu_node("crossed", CROSSED_8), gpu_node("quads", QUADS_8))
    assert place(snapshot, gpu_pod("p", 4)) == "quads"


def test_pcie_only_and_cross_numa_rank_last() -> None:
    snapshot = cluster(gpu_node("pcie", PCIE_4, 4), gpu_node("crossed", CROSSED_8))
    # 4 GPUs: the crossed node keeps them in one NVLink domain (across NUMA); PCIe spreads.
    assert place(snapshot, gpu_pod("p", 4)) == "crossed"


def test_best_fit_fills_the_partly_used_group_first() -> None:
    snapshot = cluster(
        gpu_node("busy", QUADS_8),
        gpu_node("empty", QUADS_8),
        pods=(gpu_pod("old", 2, node_name="busy"),),
    )
    # A 2-GPU pod fits exactly into the busy node's half-used quad.
    assert place(snapshot, gpu_pod("p", 2)) == "busy"
    # A 4-GPU pod then still finds a whole quad on either node; 1-GPU pods keep packing.
    assert place(snapshot, gpu_pod("q", 4)) in ("busy", "empty")


def test_single_gpu_pods_pack_instead_of_breaking_whole_groups() -> None:
    snapshot = cluster(gpu_node("a", QUADS_8), gpu_node("b", QUADS_8))
    first = place(snapshot, gpu_pod("p0", 1))
    assert all(place(snapshot, gpu_pod(f"p{i}", 1)) == first for i in range(1, 4))
    # Four single-GPU pods filled one quad of one node; an 8-GPU pod still fits on the other.
    assert place(snapshot, gpu_pod("big", 8)) not in (None, first)


def test_required_nvlink_domain_filters_nodes_with_a_reason() -> None:
    snapshot = cluster(gpu_node("pcie", PCIE_4, 4))
    pod = parse_pod(gpu_pod("p", 2, topology="single-nvlink-domain", policy="required"))
    result = schedule_one(pod, snapshot)
    assert result.node is None
    assert result.message == (
        "0/1 nodes are available: 1 node(s) couldn't fit the GPUs in one NVLink domain."
    )
    assert result.diagnosis()["pcie"].failed_plugin == "GpuTopology"


def test_required_single_numa_accepts_pcie_gpus_on_one_numa_node() -> None:
    snapshot = cluster(gpu_node("pcie", PCIE_4, 4), gpu_node("crossed", CROSSED_8))
    pod = gpu_pod("p", 4, topology="single-numa", policy="required")
    assert place(snapshot, pod) == "crossed"  # NUMA 0 holds GPUs 0,1,4,5
    pod2 = gpu_pod("q", 2, topology="single-numa", policy="required")
    assert place(snapshot, pod2) in ("pcie", "crossed")


def test_required_nvlink_and_numa_rejects_crossed_quads() -> None:
    snapshot = cluster(gpu_node("crossed", CROSSED_8), gpu_node("quads", QUADS_8))
    assert place(snapshot, gpu_pod("p", 4, topology="nvlink-and-numa", policy="required")) == (
        "quads"
    )
    result = schedule_one(
        parse_pod(gpu_pod("q", 4, topology="nvlink-and-numa", policy="required")), snapshot
    )
    assert result.node == "quads"
    placed = place(snapshot, gpu_pod("q", 4, topology="nvlink-and-numa", policy="required"))
    assert placed == "quads"
    result = schedule_one(
        parse_pod(gpu_pod("r", 4, topology="nvlink-and-numa", policy="required")), snapshot
    )
    assert result.node is None
    assert "1 node(s) couldn't fit the GPUs in one NVLink domain and one NUMA node" in (
        result.message
    )


def test_preferred_policy_never_filters() -> None:
    snapshot = cluster(gpu_node("pcie", PCIE_4, 4))
    assert place(snapshot, gpu_pod("p", 4, topology="nvlink-and-numa")) == "pcie"


def test_failed_gpus_are_not_handed_out() -> None:
    broken = annotation([0, 0, 0, 0], [0, 0, 0, 0], failed=(0, 1))
    snapshot = cluster(gpu_node("broken", broken, 4))
    result = schedule_one(parse_pod(gpu_pod("p", 3)), snapshot)
    assert result.node is None
    assert result.message == (
        "0/1 nodes are available: 1 node(s) didn't have enough healthy free GPUs."
    )
    assert place(snapshot, gpu_pod("q", 2)) == "broken"


def test_higher_sla_wins_between_equally_placed_nodes() -> None:
    snapshot = cluster(
        gpu_node("low", NVSWITCH_8, labels={"gputopo.io/sla": "850"}),
        gpu_node("high", NVSWITCH_8, labels={"gputopo.io/sla": "990"}),
    )
    assert all(place(snapshot, gpu_pod(f"p{i}", 4)) == "high" for i in range(2))
    # "high" is full now; the aligned placement on "low" is the only one left.
    assert place(snapshot, gpu_pod("p2", 4)) == "low"


def test_mig_request_fits_against_free_devices_of_its_profile() -> None:
    mig_node = gpu_node(
        "mig",
        annotation([0], [None], mig={0: ["1g.10gb", "1g.10gb"]}),
        0,
        extra={"nvidia.com/mig-1g.10gb": "2"},
    )
    mig_node["status"]["allocatable"].pop("nvidia.com/gpu")
    snapshot = cluster(mig_node)
    assert place(snapshot, gpu_pod("a", mig={"1g.10gb": 1})) == "mig"
    assert place(snapshot, gpu_pod("b", mig={"1g.10gb": 1})) == "mig"
    # Resource counts agree it is full; with a failed GPU the count would not.
    assert place(snapshot, gpu_pod("c", mig={"1g.10gb": 1})) is None


def test_mig_devices_of_a_failed_gpu_are_not_free() -> None:
    mig_node = gpu_node(
        "mig",
        annotation([0, 0], [None, None], mig={0: ["1g.10gb"], 1: ["1g.10gb"]}, failed=(1,)),
        0,
        extra={"nvidia.com/mig-1g.10gb": "2"},
    )
    snapshot = cluster(mig_node)
    assert place(snapshot, gpu_pod("a", mig={"1g.10gb": 1})) == "mig"
    result = schedule_one(parse_pod(gpu_pod("b", mig={"1g.10gb": 1})), snapshot)
    assert result.node is None
    assert "didn't have enough free MIG devices of the requested profile" in result.message


def test_invalid_annotation_value_makes_the_pod_unschedulable_with_a_reason() -> None:
    snapshot = cluster(gpu_node("n", NVSWITCH_8))
    result = schedule_one(parse_pod(gpu_pod("p", 2, topology="one-rack")), snapshot)
    assert result.node is None
    assert "gputopo.io/gpu-topology annotations are invalid" in result.message


def test_cpu_pods_get_no_gpu_topology_score() -> None:
    snapshot = cluster(gpu_node("n", NVSWITCH_8))
    result = schedule_one(parse_pod(gpu_pod("cpu-only")), snapshot)
    assert result.node == "n"
    assert "GpuTopology" not in result.diagnosis()["n"].plugin_scores


def test_labels_only_nodes_still_get_domain_aware_scores() -> None:
    quads = {"gputopo.io/gpu.nvlink-domain-size": "4", "gputopo.io/gpu.numa-max": "4"}
    pcie = {"gputopo.io/gpu.nvlink-domain-size": "1", "gputopo.io/gpu.numa-max": "4"}
    snapshot = cluster(gpu_node("a100", None, 8, quads), gpu_node("l4", None, 8, pcie))
    assert place(snapshot, gpu_pod("p", 4)) == "a100"


NVLINK_PAIRS_4 = annotation([0, 0, 1, 1], [0, 0, 1, 1])  # a100-pcie-nvlink-pairs


def test_four_gpu_pod_fills_the_half_used_nvswitch_machine_and_keeps_the_other_whole() -> None:
    snapshot = cluster(
        gpu_node("dgx-used", NVSWITCH_8),
        gpu_node("dgx-whole", NVSWITCH_8),
        pods=(gpu_pod("old", 4, node_name="dgx-used"),),
    )
    # Both offer an exact aligned quad; the used machine's NVSwitch domain ends full.
    assert place(snapshot, gpu_pod("p", 4)) == "dgx-used"
    assert place(snapshot, gpu_pod("big", 8)) == "dgx-whole"


def test_single_gpu_pod_avoids_an_intact_nvswitch_machine() -> None:
    snapshot = cluster(
        gpu_node("dgx", NVSWITCH_8, labels={"gputopo.io/sla": "1000"}),
        gpu_node("pairs", NVLINK_PAIRS_4, 4),
    )
    # Even against a higher SLA, the small pod breaks an NVLink pair rather than the DGX.
    assert place(snapshot, gpu_pod("small", 1)) == "pairs"
    # The second one completes that pair (exact fit, domain full) instead of opening another.
    assert place(snapshot, gpu_pod("small-2", 1)) == "pairs"
    assert place(snapshot, gpu_pod("big", 8)) == "dgx"


def test_two_gpu_pod_prefers_a_whole_pair_over_a_quad_of_a_larger_domain() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("pairs", NVLINK_PAIRS_4, 4))
    assert place(snapshot, gpu_pod("p", 2)) == "pairs"
    assert place(snapshot, gpu_pod("q", 2)) == "pairs"
    assert place(snapshot, gpu_pod("r", 2)) == "dgx"  # the pairs are gone: aligned still wins


def test_gpu_topology_scores_are_tier_then_packing_then_sla() -> None:
    snapshot = cluster(
        gpu_node("dgx", NVSWITCH_8, labels={"gputopo.io/sla": "1000"}),
        gpu_node("pcie", PCIE_4, 4),
    )
    result = schedule_one(parse_pod(gpu_pod("p", 2)), snapshot)
    scores = {name: d.plugin_scores["GpuTopology"] for name, d in result.diagnosis().items()}
    # dgx: aligned 60 + domain size 0 (6 GPUs beyond the request) + group fit 6 (2 left in the
    # quad) + packing 0 (intact NVSwitch domain) + SLA 4; PCIe: one NUMA node over PCIe (20).
    assert scores == {"dgx": 70, "pcie": 20}


def test_single_gpu_pod_takes_a_free_nvlink_pair_before_the_rest_of_a_half_used_dgx() -> None:
    snapshot = cluster(
        gpu_node("dgx", NVSWITCH_8),
        gpu_node("pairs", NVLINK_PAIRS_4, 4),
        pods=(gpu_pod("old", 6, node_name="dgx"), gpu_pod("old-2", 2, node_name="pairs")),
    )
    # The DGX has 2 GPUs left in one quad, the pairs node one whole pair: the small pod goes
    # to the pair, so the DGX is whole again as soon as its 6-GPU pod ends.
    assert place(snapshot, gpu_pod("small", 1)) == "pairs"
