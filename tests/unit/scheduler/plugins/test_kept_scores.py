"""KeptScores: scores kept per request shape for the nodes that did not change; and the GPU
topology score that uses them, always equal to computing it afresh."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins import gpu_topology
from gputopo.scheduler.plugins.kept_scores import LIMIT, KeptScores
from tests.unit.scheduler.topo_builders import annotation, cluster, gpu_node, gpu_pod


class _Compute:
    """A score per slot that also says which slots were computed, and how often."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.bonus = 0

    def __call__(self, slots: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self.calls.append(slots.tolist())
        return np.asarray(slots * 10 + self.bonus, dtype=np.int64)


def test_only_slots_whose_version_moved_are_computed_again() -> None:
    kept, compute = KeptScores(), _Compute()
    versions = np.ones(4, dtype=np.int64)
    slots = np.array([0, 2, 3], dtype=np.int64)

    assert kept.scores("shape", slots, versions, compute).tolist() == [0, 20, 30]
    assert kept.scores("shape", slots, versions, compute).tolist() == [0, 20, 30]
    assert compute.calls == [[0, 2, 3]]  # the second call was lookups only

    compute.bonus = 5  # what slot 2 would score now; only slot 2 changed
    versions[2] = 7
    assert kept.scores("shape", slots, versions, compute).tolist() == [0, 25, 30]
    assert compute.calls[-1] == [2]
    # A slot never asked for before is computed when first asked for.
    assert kept.scores("shape", np.array([1], dtype=np.int64), versions, compute).tolist() == [15]
    assert compute.calls[-1] == [1]


def test_shapes_are_kept_apart_and_the_oldest_dropped_past_the_limit() -> None:
    kept, compute = KeptScores(), _Compute()
    versions = np.ones(1, dtype=np.int64)
    slots = np.array([0], dtype=np.int64)
    for shape in range(LIMIT + 1):
        kept.scores(shape, slots, versions, compute)
    assert len(compute.calls) == LIMIT + 1
    kept.scores(LIMIT, slots, versions, compute)  # the newest: kept
    assert len(compute.calls) == LIMIT + 1
    kept.scores(0, slots, versions, compute)  # the oldest: dropped, computed again
    assert len(compute.calls) == LIMIT + 2


def test_growing_capacity_starts_the_shape_afresh() -> None:
    kept, compute = KeptScores(), _Compute()
    kept.scores("shape", np.array([0], dtype=np.int64), np.ones(2, dtype=np.int64), compute)
    wider = np.ones(8, dtype=np.int64)
    kept.scores("shape", np.array([0, 6], dtype=np.int64), wider, compute)
    assert compute.calls[-1] == [0, 6]


# name -> (NUMA node of each GPU, NVLink domain of each GPU)
LAYOUTS: dict[str, tuple[list[int | None], list[int | None]]] = {
    "nvswitch": ([0, 0, 0, 0, 1, 1, 1, 1], [0] * 8),
    "quads": ([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]),
    "crossed": ([0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]),
    "pcie": ([0, 0, 1, 1], [None] * 4),
}


def _nodes(failed: frozenset[str]) -> list[dict[str, Any]]:
    """The nodes, those in ``failed`` with GPU 0 failed (a new layout: a new Node object)."""
    return [
        gpu_node(
            name,
            annotation(numa, domains, failed=(0,) if name in failed else ()),
            len(numa),
            labels={"gputopo.io/sla": "990"},
        )
        for name, (numa, domains) in LAYOUTS.items()
    ]


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["assume", "remove", "fail", "heal", "nrt", "score"]),
        st.integers(0, 7),  # pod
        st.sampled_from(sorted(LAYOUTS)),
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from([None, "single-numa", "single-nvlink-domain", "nvlink-and-numa"]),
    ),
    max_size=30,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_kept_gpu_scores_equal_scores_computed_afresh(
    ops: list[tuple[str, int, str, int, str | None]],
) -> None:
    failed: frozenset[str] = frozenset()
    snapshot = cluster(*_nodes(failed))
    allocator = gpu_alloc.GpuAllocator.of(snapshot)
    slots = np.array(sorted(snapshot.slot_of(name) or 0 for name in LAYOUTS), dtype=np.int64)
    for op, pod_index, node_name, gpus, scope in ops:
        if op == "assume":
            body = gpu_pod(f"p{pod_index}", gpus)
            if snapshot.pod(f"default/p{pod_index}") is None:
                snapshot.assume(parse_pod(body), node_name)
        elif op == "remove":
            snapshot.remove_pod(f"default/p{pod_index}")
        elif op in ("fail", "heal"):
            failed = failed | {node_name} if op == "fail" else failed - {node_name}
            for node in _nodes(failed):
                snapshot.add_node(node)
        elif op == "nrt":  # the node reports fewer GPUs available than the scheduler thinks
            allocator.observe_nrt(_nrt(node_name, available=gpus // 2))
        pod = parse_pod(gpu_pod("incoming", gpus, topology=scope))
        kept = gpu_topology.score(pod, allocator, slots)
        request = gpu_topology.request_of(pod)
        assert request is not None and kept is not None
        fresh = gpu_topology._scores(request, allocator, slots)  # the oracle
        assert kept.tolist() == fresh.tolist(), (op, node_name, gpus, scope)


def _nrt(node_name: str, available: int) -> dict[str, Any]:
    zones = [
        {
            "name": f"node-{numa}",
            "type": "Node",
            "resources": [
                {
                    "name": "nvidia.com/gpu",
                    "capacity": "4",
                    "allocatable": "4",
                    "available": str(min(available, 4)),
                }
            ],
        }
        for numa in (0, 1)
    ]
    return {
        "apiVersion": "topology.node.k8s.io/v1alpha2",
        "kind": "NodeResourceTopology",
        "metadata": {"name": node_name},
        "zones": zones,
    }
