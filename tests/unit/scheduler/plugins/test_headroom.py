"""Headroom: NVSwitch machines are kept for the pods that need a whole one, while others fit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.scheduling_profile import default_profile, parse_profile
from tests.unit.scheduler.topo_builders import (
    NVSWITCH_8,
    PCIE_4,
    annotation,
    cluster,
    gpu_node,
    gpu_pod,
    place,
)

# 4 GPUs in one NVLink domain, 2 per NUMA node (GB200 NVL4-like): one NVLink domain, not aligned.
NVLINK_4 = annotation([0, 0, 1, 1], [0, 0, 0, 0])
KEPT = "node(s) kept for pods of 8 or more GPUs (headroom)"


def with_affinity(pod: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference": term}]
        }
    }
    return pod


def test_four_gpu_pod_takes_an_nvlink_domain_elsewhere_and_the_dgx_stays_whole() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("nvl4", NVLINK_4, 4))
    result = schedule_one(parse_pod(gpu_pod("p", 4)), snapshot)
    assert result.node == "nvl4"
    verdict = result.diagnosis()["dgx"]
    assert verdict.feasible is False
    assert verdict.reasons == (KEPT,)
    assert verdict.failed_plugin == "Headroom"
    assert place(snapshot, gpu_pod("p", 4)) == "nvl4"
    assert place(snapshot, gpu_pod("big", 8)) == "dgx"


def test_a_half_used_dgx_is_not_topped_up_while_an_nvlink_domain_is_free_elsewhere() -> None:
    snapshot = cluster(
        gpu_node("dgx", NVSWITCH_8),
        gpu_node("nvl4", NVLINK_4, 4),
        pods=(gpu_pod("old", 4, node_name="dgx"),),
    )
    # The DGX frees whole once its 4-GPU pod ends, instead of holding the next one too.
    assert place(snapshot, gpu_pod("p", 4)) == "nvl4"


def test_a_pod_that_would_be_spread_elsewhere_takes_the_aligned_dgx() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("pcie", PCIE_4, 4))
    # PCIe GPUs over two NUMA nodes are no NVLink placement: the headroom steps aside.
    assert place(snapshot, gpu_pod("p", 4)) == "dgx"


def test_a_pod_that_fits_nowhere_else_is_never_kept_waiting() -> None:
    snapshot = cluster(
        gpu_node("dgx", NVSWITCH_8),
        gpu_node("nvl4", NVLINK_4, 4),
        pods=(gpu_pod("old", 4, node_name="nvl4"),),
    )
    assert place(snapshot, gpu_pod("p", 4)) == "dgx"
    assert place(snapshot, gpu_pod("q", 4)) == "dgx"
    result = schedule_one(parse_pod(gpu_pod("r", 4)), snapshot)
    assert result.node is None
    assert KEPT not in result.message
    assert result.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def test_single_gpu_pods_go_anywhere_else_first() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("pcie", PCIE_4, 4))
    assert [place(snapshot, gpu_pod(f"p{i}", 1)) for i in range(5)] == [
        "pcie",
        "pcie",
        "pcie",
        "pcie",
        "dgx",
    ]


def test_requested_scope_elsewhere_is_good_enough() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("pcie", PCIE_4, 4))
    # Two PCIe GPUs on one NUMA node meet a single-numa ask: the DGX is kept.
    assert place(snapshot, gpu_pod("p", 2, topology="single-numa")) == "pcie"


def test_a_required_placement_only_the_dgx_offers_gets_the_dgx() -> None:
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("nvl4", NVLINK_4, 4))
    pod = gpu_pod("p", 4, topology="nvlink-and-numa", policy="required")
    assert place(snapshot, pod) == "dgx"


def test_preferred_node_affinity_comes_before_the_headroom() -> None:
    dgx = gpu_node("dgx", NVSWITCH_8, labels={"nvidia.com/gpu.product": "H100"})
    nvl4 = gpu_node("nvl4", NVLINK_4, 4, labels={"nvidia.com/gpu.product": "GB200"})
    snapshot = cluster(dgx, nvl4)
    assert place(snapshot, with_affinity(gpu_pod("h", 4), "nvidia.com/gpu.product", "H100")) == (
        "dgx"
    )
    # Preferring what both offer equally leaves the rule as it is.
    snapshot = cluster(dgx, nvl4)
    pod = with_affinity(gpu_pod("any", 4), "kubernetes.io/os", "linux")
    assert place(snapshot, pod) == "nvl4"


def test_large_and_mig_pods_are_not_affected() -> None:
    # 8 whole GPUs in one NVSwitch domain (kept for GPU pods) and a ninth in MIG mode.
    mig_node = annotation([0] * 4 + [1] * 5, [0] * 9, mig={8: ["1g.10gb"]})
    snapshot = cluster(
        gpu_node("dgx", mig_node, 8, extra={"nvidia.com/mig-1g.10gb": "1"}),
        gpu_node("nvl4", NVLINK_4, 4, extra={"nvidia.com/mig-1g.10gb": "0"}),
    )
    assert schedule_one(parse_pod(gpu_pod("p", 1)), snapshot).node == "nvl4"  # kept for GPUs
    result = schedule_one(parse_pod(gpu_pod("m", mig={"1g.10gb": 1})), snapshot)
    assert result.node == "dgx"
    assert all(KEPT not in d.reasons for d in result.diagnosis().values())
    assert place(snapshot, gpu_pod("big", 8)) == "dgx"


def test_a_dgx_with_failed_gpus_below_the_size_is_not_kept() -> None:
    broken = annotation([0, 0, 0, 0, 1, 1, 1, 1], [0] * 8, failed=(7,))
    snapshot = cluster(gpu_node("broken", broken), gpu_node("nvl4", NVLINK_4, 4))
    # 7 healthy GPUs can never host an 8-GPU pod, so nothing is kept: best fit decides.
    result = schedule_one(parse_pod(gpu_pod("p", 4)), snapshot)
    assert result.diagnosis()["broken"].feasible is True


def test_min_gpus_zero_switches_it_off() -> None:
    profile = dataclasses.replace(default_profile(), headroom_min_gpus=0)
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("nvl4", NVLINK_4, 4))
    assert place(snapshot, gpu_pod("p", 4), profile) == "dgx"  # aligned wins again


def test_min_gpus_follows_the_profile() -> None:
    profile = dataclasses.replace(default_profile(), headroom_min_gpus=4)
    snapshot = cluster(gpu_node("dgx", NVSWITCH_8), gpu_node("nvl4", NVLINK_4, 4))
    # A 2-GPU pod now keeps off both (each has a domain of 4+): nothing else, so best fit.
    result = schedule_one(parse_pod(gpu_pod("p", 2)), snapshot, profile)
    assert result.node is not None
    assert all(d.feasible for d in result.diagnosis().values())


def test_profile_reads_and_validates_headroom() -> None:
    assert default_profile().headroom_min_gpus == 8
    assert parse_profile({"headroom": {"minGpus": 0}}, "p.yaml").headroom_min_gpus == 0
    with pytest.raises(SchedulerInputError, match=r"profile p.yaml: headroom.minGpus: expected"):
        parse_profile({"headroom": {"minGpus": -1}}, "p.yaml")
    with pytest.raises(SchedulerInputError, match=r"headroom.keep: unknown field"):
        parse_profile({"headroom": {"keep": 1}}, "p.yaml")
