"""KeptScores and KeptNodeScores: scores kept per request shape for the nodes that did not
change; and the GPU topology, NodeResourcesFit and BalancedAllocation scores that use them,
always equal to computing them afresh."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins import (
    balanced_allocation,
    gpu_topology,
    kept_scores,
    resources_fit,
)
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.kept_scores import FEW, LIMIT, RECENT, KeptNodeScores, KeptScores
from gputopo.scheduler.scheduling_profile import default_profile
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.sched_builders import node as sched_node
from tests.unit.scheduler.sched_builders import pod as sched_pod
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


# -- KeptNodeScores: NodeResourcesFit and BalancedAllocation kept for every node ------------

_ALLOCATABLE = [
    {"cpu": "8", "memory": "32Gi", "pods": "110"},
    {"cpu": "4", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
    {"cpu": "2", "pods": "110", "example.com/fpga": "2"},  # no memory
    {"cpu": "16", "memory": "8Gi", "pods": "110"},
]
_PROFILES = {
    "default": default_profile(),
    "most": dataclasses.replace(default_profile(), fit_strategy="MostAllocated"),
    "weighted": dataclasses.replace(
        default_profile(),
        fit_resources=(("cpu", 3), ("memory", 1), ("example.com/fpga", 2)),
        balanced_resources=(("cpu", 1), ("memory", 1), ("ephemeral-storage", 1)),
    ),
    "one": dataclasses.replace(default_profile(), balanced_resources=(("memory", 1),)),
}
_REQUESTS = st.dictionaries(
    st.sampled_from(["cpu", "memory", "ephemeral-storage", "example.com/fpga"]),
    st.sampled_from(["0", "1", "3", "500m", "2Gi", "40Gi"]),
    max_size=3,
)
_NODE_OPS = st.lists(
    st.tuples(
        st.sampled_from(["place", "remove", "resize", "drop-node", "score"]),
        st.integers(0, 5),  # pod, or node allocatable
        st.integers(0, len(_ALLOCATABLE) - 1),  # node
        _REQUESTS,  # the placed pod's
        # the incoming pod's, scored after the change: mostly a few shapes, which come back
        # (and are kept), now and then any
        st.one_of(
            st.sampled_from(
                [
                    {"cpu": "1"},
                    {"cpu": "1", "memory": "8Gi"},
                    {"cpu": "500m", "memory": "40Gi"},
                    {"memory": "2Gi", "ephemeral-storage": "1Gi"},
                    {"cpu": "3", "example.com/fpga": "1"},
                ]
            ),
            _REQUESTS,
        ),
    ),
    max_size=25,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_PROFILES)), _NODE_OPS)
def test_kept_fit_and_balance_scores_equal_scores_computed_afresh(
    profile_name: str, ops: list[tuple[str, int, int, dict[str, str], dict[str, str]]]
) -> None:
    """Pods placed and removed, nodes resized and dropped (and added back): after each change
    the kept scores (one-node Python for a few changed nodes, arrays for more) equal the
    plugins' array scores over the live nodes, computed afresh."""
    profile = _PROFILES[profile_name]
    snapshot = ClusterSnapshot()
    for index, allocatable in enumerate(_ALLOCATABLE):
        snapshot.add_node(sched_node(f"n{index}", allocatable=allocatable))
    for op, number, node_index, requests, incoming in ops:
        name = f"n{node_index}"
        if op == "place" and snapshot.pod(f"default/p{number}") is None:
            if snapshot.slot_of(name) is not None:
                snapshot.assume(parse_pod(sched_pod(f"p{number}", requests=requests)), name)
        elif op == "remove":
            snapshot.remove_pod(f"default/p{number}")
        elif op == "resize":
            allocatable = dict(_ALLOCATABLE[number % len(_ALLOCATABLE)])
            snapshot.add_node(sched_node(name, allocatable=allocatable))
        elif op == "drop-node":
            snapshot.remove_node(name)
        pod = parse_pod(sched_pod("incoming", requests=incoming))
        ctx = CycleContext(pod, snapshot, profile, gpu_alloc.GpuAllocator.of(snapshot), None)
        feasible = snapshot.live_slots()
        fit = resources_fit.PLUGIN.score(ctx, feasible)
        fresh_fit = resources_fit.score(pod, snapshot, feasible, profile).tolist()
        assert fit.tolist() == fresh_fit
        balance = balanced_allocation.PLUGIN.score(ctx, feasible)
        fresh = balanced_allocation.score(pod, snapshot, feasible, profile)
        assert (balance is None) == (fresh is None)
        if balance is not None and fresh is not None:
            assert balance.tolist() == fresh.tolist(), (op, name, requests, incoming)
        # The one-node functions on every node, whether or not the kept path reached them.
        slots = feasible.tolist()
        assert [resources_fit.slot_score(pod, snapshot, s, profile) for s in slots] == fresh_fit
        if fresh is not None:
            assert [
                balanced_allocation.slot_score(pod, snapshot, s, profile) for s in slots
            ] == fresh.tolist()


def test_kept_node_scores_rescore_only_the_live_nodes_that_changed() -> None:
    snapshot = ClusterSnapshot()
    for index in range(6):
        snapshot.add_node(sched_node(f"n{index}"))
    kept, compute = KeptNodeScores(snapshot), _Compute()
    one: list[int] = []

    def compute_one(slot: int) -> int:
        one.append(slot)
        return slot * 10 + compute.bonus

    every = snapshot.live_slots()
    # Met once: scored afresh, not kept; met again (within RECENT shapes): every live node.
    assert kept.scores("shape", every[:3], compute, compute_one).tolist() == [0, 10, 20]
    assert kept.scores("shape", every[:3], compute, compute_one).tolist() == [0, 10, 20]
    assert compute.calls == [every[:3].tolist(), every.tolist()]
    kept.scores("shape", every, compute, compute_one)
    assert (len(compute.calls), one) == (2, [])
    compute.bonus = 5
    changed = snapshot.slot_of("n4")
    assert changed is not None
    snapshot.assume(parse_pod(sched_pod("p", requests={"cpu": "1"})), "n4")
    snapshot.remove_node("n1")
    assert kept.scores("shape", every[:1], compute, compute_one).tolist() == [0]
    assert one == [changed]  # n1's freed slot is not scored
    for index in (0, 2, 3, 4, 5):  # more than FEW changed: the array function takes them
        snapshot.assume(parse_pod(sched_pod(f"q{index}", requests={"cpu": "1"})), f"n{index}")
    kept.scores("shape", every[:1], compute, compute_one)
    assert len(compute.calls) == 3 and len(compute.calls[-1]) == 5 > FEW


def test_kept_node_scores_keep_only_shapes_that_come_back_and_score_most_nodes() -> None:
    snapshot = ClusterSnapshot()
    for index in range(10):
        snapshot.add_node(sched_node(f"n{index}"))
    kept, compute = KeptNodeScores.of(snapshot), _Compute()
    every = snapshot.live_slots()
    sample = every[:4]  # fewer than half the nodes: never starts keeping
    assert not KeptNodeScores.worth_asking(snapshot, sample)
    for _ in range(3):
        kept.scores("sampled", sample, compute, lambda slot: 0)
    assert compute.calls == [sample.tolist()] * 3
    for shape in range(RECENT + 1):  # each met once: none kept
        kept.scores(shape, every, compute, lambda slot: 0)
    kept.scores(0, every, compute, lambda slot: 0)  # back after RECENT others: still not kept
    assert not KeptNodeScores.worth_asking(snapshot, sample)
    kept.scores(0, every, compute, lambda slot: 0)  # back at once: kept
    assert KeptNodeScores.worth_asking(snapshot, sample)  # a kept shape may serve a sample
    calls = len(compute.calls)
    assert kept.scores(0, sample, compute, lambda slot: 0).tolist() == (sample * 10).tolist()
    assert len(compute.calls) == calls


def test_kept_node_scores_keep_at_most_their_shape_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(kept_scores, "NODE_SHAPES_LIMIT", 5)
    snapshot = ClusterSnapshot()
    for index in range(4):
        snapshot.add_node(sched_node(f"n{index}"))
    kept, compute = KeptNodeScores.of(snapshot), _Compute()
    every = snapshot.live_slots()
    for shape in range(10):
        for _ in range(2):  # met twice in a row: kept
            kept.scores(shape, every, compute, lambda slot: 0)
    assert list(kept._kept) == [5, 6, 7, 8, 9]  # the least recently used dropped
