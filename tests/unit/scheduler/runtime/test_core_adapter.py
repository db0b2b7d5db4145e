"""The runtime seam: NodeResourceTopology events and binds reach the GPU allocator."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from tests.unit.scheduler.topo_builders import QUADS_8, gpu_node, gpu_pod


def nrt(name: str, available: dict[int, int]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "zones": [
            {
                "name": f"node-{numa}",
                "type": "Node",
                "resources": [
                    {"name": "nvidia.com/gpu", "capacity": 4, "allocatable": 4, "available": n}
                ],
            }
            for numa, n in available.items()
        ],
    }


def test_fresh_nrt_showing_foreign_use_steers_an_aligned_pod_elsewhere() -> None:
    framework = CoreFramework()
    framework.upsert_node(gpu_node("a", QUADS_8))
    framework.upsert_node(gpu_node("b", QUADS_8))
    # Another scheduler's pods hold 3 GPUs in each of node a's quads.
    framework.upsert_nrt(nrt("a", {0: 1, 1: 1}))
    pod = gpu_pod("p", 4, topology="nvlink-and-numa", policy="required")
    placement = framework.schedule(pod)
    assert placement.node_name == "b"
    framework.delete_nrt("a")
    framework.assume(pod, "b")
    assert framework.schedule(
        gpu_pod("q", 4, topology="nvlink-and-numa", policy="required")
    ).node_name in ("a", "b")


def test_nrt_max_age_makes_an_old_nrt_stale_for_the_framework() -> None:
    now = [100.0]
    framework = CoreFramework(nrt_max_age_s=30, clock=lambda: now[0])
    framework.upsert_node(gpu_node("a", QUADS_8))
    framework.upsert_nrt(nrt("a", {0: 0, 1: 0}))  # someone else holds all eight
    pod = gpu_pod("p", 4)
    assert framework.schedule(pod).node_name is None
    now[0] += 31
    assert framework.schedule(pod).node_name == "a"


def test_a_malformed_nrt_is_refused_naming_object_and_zone() -> None:
    framework = CoreFramework()
    bad = nrt("a", {0: 1})
    bad["zones"][0]["resources"][0]["available"] = "lots"
    with pytest.raises(ValueError, match=r"^NodeResourceTopology a: zone node-0: nvidia.com/gpu"):
        framework.upsert_nrt(bad)


def test_assumed_pods_hold_their_predicted_gpus() -> None:
    framework = CoreFramework()
    framework.upsert_node(gpu_node("a", QUADS_8))
    for i in range(2):
        pod = gpu_pod(f"p{i}", 4)
        placement = framework.schedule(pod)
        assert placement.node_name == "a"
        framework.assume(pod, "a")
    state = framework.gpus.state(framework.snapshot.slot_of("a") or 0)
    assert state is not None
    assert sorted(gpus for gpus, _ in state.pod_gpus.values()) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    placement = framework.schedule(gpu_pod("late", 1))
    assert placement.node_name is None
    framework.delete_pod("default/p0")
    assert framework.schedule(gpu_pod("late", 1)).node_name == "a"
