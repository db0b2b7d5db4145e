"""The GPU allocation model: layouts, the predicted device-plugin choice, bookkeeping, NRT."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gputopo.scheduler.gpu_alloc import (
    LEVEL_ALIGNED,
    LEVEL_NUMA,
    LEVEL_NVLINK,
    LEVEL_SPREAD,
    MEMO_LIMIT,
    GpuAllocator,
    GpuSlot,
    layout_of,
    parse_nrt,
    preferred_allocation,
)
from gputopo.scheduler.model import parse_node, parse_pod
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.topo_builders import (
    CROSSED_8,
    NVSWITCH_8,
    PCIE_4,
    QUADS_8,
    annotation,
    gpu_node,
    gpu_pod,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def slots(numa: list[int | None], domains: list[int | None]) -> list[GpuSlot]:
    return [GpuSlot(i, n, d, True) for i, (n, d) in enumerate(zip(numa, domains, strict=True))]


def nrt(name: str, available: dict[int, int]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "zones": [
            {
                "name": f"node-{numa}",
                "type": "Node",
                "resources": [
                    {"name": "cpu", "capacity": 8, "allocatable": 8, "available": 8},
                    {"name": "nvidia.com/gpu", "capacity": 4, "allocatable": 4, "available": free},
                ],
            }
            for numa, free in available.items()
        ],
    }


def allocator_with(node: dict[str, Any], *pods: dict[str, Any]) -> tuple[GpuAllocator, Clock]:
    snapshot = ClusterSnapshot()
    snapshot.add_node(node)
    for pod in pods:
        snapshot.add_pod(pod)
    clock = Clock()
    return GpuAllocator(snapshot, nrt_max_age_s=30, clock=clock), clock


def test_layout_from_annotation_keeps_numa_domain_and_skips_failed_gpus() -> None:
    node = parse_node(gpu_node("dgx", annotation([0, 0, 1, 1], [0, 0, 0, 0], failed=(2,)), 4))
    layout = layout_of(node)
    assert layout is not None and layout.source == "annotation"
    assert [(g.index, g.numa_node, g.nvlink_domain, g.healthy) for g in layout.gpus] == [
        (0, 0, 0, True),
        (1, 0, 0, True),
        (2, 1, 0, False),
        (3, 1, 0, True),
    ]


def test_layout_from_labels_when_the_annotation_is_missing() -> None:
    labels = {
        "gputopo.io/gpu.nvlink-domain-size": "4",
        "gputopo.io/gpu.numa-max": "4",
        "gputopo.io/gpu.healthy": "7",
    }
    layout = layout_of(parse_node(gpu_node("a100", None, 8, labels)))
    assert layout is not None and layout.source == "labels"
    assert [g.nvlink_domain for g in layout.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [g.numa_node for g in layout.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [g.healthy for g in layout.gpus] == [True] * 7 + [False]


def test_node_without_gpus_has_no_layout() -> None:
    assert layout_of(parse_node(gpu_node("cpu", None, 0))) is None


def test_preferred_allocation_is_aligned_and_best_fit() -> None:
    free = slots([0, 0, 0, 0, 1, 1, 1, 1], [0] * 8)
    # GPUs 0,1 are busy, so NUMA 0 has 2 free and NUMA 1 has 4: a 2-GPU pod takes NUMA 0's pair.
    choice = preferred_allocation([g for g in free if g.index not in (0, 1)], 2)
    assert choice is not None
    assert (choice.gpus, choice.level, choice.leftover) == ((2, 3), LEVEL_ALIGNED, 0)


def test_preferred_allocation_levels_for_crossed_and_pcie_machines() -> None:
    crossed = slots([0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
    choice = preferred_allocation(crossed, 4)
    assert choice is not None and choice.level == LEVEL_NVLINK and choice.gpus == (0, 1, 2, 3)
    pcie = slots([0, 0, 1, 1], [None] * 4)
    choice = preferred_allocation(pcie, 2)
    assert choice is not None and choice.level == LEVEL_NUMA and choice.gpus == (0, 1)
    choice = preferred_allocation(pcie, 3)
    assert choice is not None and choice.level == LEVEL_SPREAD and len(choice.gpus) == 3


def _reference_preferred(free: list[GpuSlot], count: int) -> tuple[tuple[int, ...], int, int]:
    """The device plugin's preferred allocation as first written (sort every group, pick the
    minimum by (size, lowest index)): the oracle for the faster `preferred_allocation`."""

    def domain(g: GpuSlot) -> object:
        return g.nvlink_domain if g.nvlink_domain is not None else ("pcie", g.index)

    def group(gpus: list[GpuSlot], key: Any) -> list[list[GpuSlot]]:
        grouped: dict[object, list[GpuSlot]] = {}
        for gpu in gpus:
            grouped.setdefault(key(gpu), []).append(gpu)
        return [sorted(members, key=lambda g: g.index) for members in grouped.values()]

    def best(groups: list[list[GpuSlot]]) -> list[GpuSlot] | None:
        fitting = [g for g in groups if len(g) >= count]
        return min(fitting, key=lambda g: (len(g), g[0].index)) if fitting else None

    def largest_first(members: list[GpuSlot], key: Any) -> tuple[int, ...]:
        chosen: list[GpuSlot] = []
        for g in sorted(group(members, key), key=lambda g: (-len(g), g[0].index)):
            chosen.extend(g[: count - len(chosen)])
        return tuple(sorted(g.index for g in chosen))

    healthy = [g for g in free if g.healthy]
    aligned = best(group(healthy, lambda g: (domain(g), g.numa_node)))
    if aligned is not None:
        return tuple(g.index for g in aligned[:count]), LEVEL_ALIGNED, len(aligned) - count
    in_domain = best(group(healthy, domain))
    if in_domain is not None:
        return largest_first(in_domain, lambda g: g.numa_node), LEVEL_NVLINK, len(in_domain) - count
    in_numa = best(group(healthy, lambda g: g.numa_node))
    if in_numa is not None:
        return largest_first(in_numa, domain), LEVEL_NUMA, len(in_numa) - count
    return largest_first(healthy, lambda g: g.numa_node), LEVEL_SPREAD, len(healthy) - count


@settings(max_examples=400, deadline=None)
@given(
    gpus=st.lists(
        st.tuples(
            st.integers(0, 3),  # NUMA node
            st.one_of(st.none(), st.integers(0, 3)),  # NVLink domain
            st.booleans(),  # healthy
        ),
        min_size=1,
        max_size=16,
    ),
    count=st.integers(1, 9),
    order=st.randoms(),
)
def test_preferred_allocation_matches_its_plain_definition(
    gpus: list[tuple[int, int | None, bool]], count: int, order: Any
) -> None:
    free = [GpuSlot(i, numa, domain, healthy) for i, (numa, domain, healthy) in enumerate(gpus)]
    order.shuffle(free)  # whatever order the caller hands them in
    choice = preferred_allocation(free, count)
    if sum(g.healthy for g in free) < count:
        assert choice is None
    else:
        assert choice is not None
        assert (choice.gpus, choice.level, choice.leftover) == _reference_preferred(free, count)


def test_preferred_allocation_never_returns_failed_gpus() -> None:
    gpus = [GpuSlot(0, 0, 0, False), GpuSlot(1, 0, 0, True)]
    assert preferred_allocation(gpus, 2) is None
    choice = preferred_allocation(gpus, 1)
    assert choice is not None and choice.gpus == (1,)


def test_bookkeeping_allocates_known_pods_and_frees_deleted_ones() -> None:
    allocator, _ = allocator_with(
        gpu_node("dgx", NVSWITCH_8),
        gpu_pod("a", 2, node_name="dgx"),
        gpu_pod("b", 4, node_name="dgx"),
    )
    state = allocator.state(0)
    assert state is not None
    assert state.pod_gpus["default/a"][0] == (0, 1)
    assert state.pod_gpus["default/b"][0] == (4, 5, 6, 7)
    assert [g.index for g in state.free_gpus()] == [2, 3]
    allocator.snapshot.remove_pod("default/b")
    state = allocator.state(0)
    assert state is not None and [g.index for g in state.free_gpus()] == [2, 3, 4, 5, 6, 7]


def test_summary_arrays_count_free_gpus_per_group() -> None:
    allocator, _ = allocator_with(gpu_node("q", QUADS_8), gpu_pod("a", 3, node_name="q"))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 5
    assert sorted(x for x in allocator.aligned_free[0] if x >= 0) == [1, 4]
    assert sorted(x for x in allocator.numa_free[0] if x >= 0) == [1, 4]
    assert sorted(x for x in allocator.domain_free[0] if x >= 0) == [1, 4]


def test_failed_gpu_is_never_free() -> None:
    allocator, _ = allocator_with(gpu_node("dgx", annotation([0] * 4, [0] * 4, failed=(1,)), 4))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 3
    state = allocator.states[0]
    assert state is not None and 1 not in [g.index for g in state.free_gpus()]


def test_fresh_nrt_reveals_gpus_held_by_pods_the_scheduler_does_not_know() -> None:
    allocator, _ = allocator_with(gpu_node("dgx", NVSWITCH_8))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 8
    allocator.observe_nrt(nrt("dgx", {0: 1, 1: 4}))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 5
    assert sorted(x for x in allocator.numa_free[0] if x >= 0) == [1, 4]


def test_stale_nrt_is_ignored() -> None:
    allocator, clock = allocator_with(gpu_node("dgx", NVSWITCH_8))
    allocator.observe_nrt(nrt("dgx", {0: 0, 1: 0}))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 0
    clock.now += 31
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 8


def test_unchanged_nrt_has_no_age_limit_by_default() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("dgx", NVSWITCH_8))
    clock = Clock()
    allocator = GpuAllocator(snapshot, clock=clock)  # the runtime's default: no max age
    allocator.observe_nrt(nrt("dgx", {0: 0, 1: 4}))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 4
    clock.now += 3600  # the agent writes only on change: an hour-old NRT is still current
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 4


def test_nrt_older_than_our_last_bind_is_ignored_and_never_raises_free() -> None:
    allocator, clock = allocator_with(gpu_node("dgx", NVSWITCH_8))
    allocator.observe_nrt(nrt("dgx", {0: 4, 1: 4}))
    clock.now += 1
    allocator.snapshot.add_pod(gpu_pod("a", 4, node_name="dgx"))
    allocator.refresh(np.array([0]))
    # The NRT predates the bind, so bookkeeping alone decides: 4 left.
    assert allocator.free_total[0] == 4
    clock.now += 1
    # A newer NRT that still claims 8 free cannot free the pod the scheduler knows about.
    allocator.observe_nrt(nrt("dgx", {0: 4, 1: 4}))
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 4


def test_nrt_observed_after_a_deletion_is_fresh_without_a_cycle_in_between() -> None:
    allocator, clock = allocator_with(gpu_node("dgx", NVSWITCH_8), gpu_pod("a", 4, node_name="dgx"))
    allocator.refresh(np.array([0]))
    clock.now += 1
    allocator.snapshot.remove_pod("default/a")  # watched; no scheduling cycle looks yet
    clock.now += 1
    allocator.observe_nrt(nrt("dgx", {0: 4, 1: 0}))  # the agent's NRT after the deletion
    clock.now += 1
    allocator.refresh(np.array([0]))
    assert allocator.free_total[0] == 4  # the NRT is trusted: GPUs 4-7 held by someone else


def test_parse_nrt_reads_gpu_availability_per_numa_zone() -> None:
    assert parse_nrt(nrt("n1", {0: 2, 1: 3})) == ("n1", {0: 2, 1: 3})


def test_pcie_and_crossed_machines_have_no_aligned_group_for_large_pods() -> None:
    for topology, gpus in ((PCIE_4, 4), (CROSSED_8, 8)):
        allocator, _ = allocator_with(gpu_node("m", topology, gpus))
        allocator.refresh(np.array([0]))
        largest_aligned = max(allocator.aligned_free[0])
        assert largest_aligned == (1 if topology == PCIE_4 else 2)


def test_mig_devices_are_bookkept_per_profile() -> None:
    node = gpu_node(
        "mig",
        annotation([0, 0], [0, 0], mig={0: ["1g.10gb", "1g.10gb", "3g.40gb"]}),
        2,
        extra={"nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-3g.40gb": "1"},
    )
    allocator, _ = allocator_with(node, gpu_pod("m", mig={"1g.10gb": 1}, node_name="mig"))
    state = allocator.state(0)
    assert state is not None
    assert len(state.free_migs("nvidia.com/mig-1g.10gb")) == 1
    assert len(state.free_migs("nvidia.com/mig-3g.40gb")) == 1
    # The MIG-enabled GPU 0 is not a whole GPU.
    assert [g.index for g in state.free_gpus()] == [1]


def test_refresh_recomputes_only_what_changed_since_the_last_refresh(monkeypatch: Any) -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("a", NVSWITCH_8))
    snapshot.add_node(gpu_node("b", NVSWITCH_8))
    allocator = GpuAllocator(snapshot)
    updates: list[int] = []
    real_update = allocator._update
    monkeypatch.setattr(
        allocator, "_update", lambda slot, now: (updates.append(slot), real_update(slot, now))
    )
    both = np.array([0, 1])
    allocator.refresh(both)
    assert sorted(updates) == [0, 1]
    allocator.refresh(both)  # a cycle's score after its filter: nothing changed
    allocator.refresh(np.array([1]))
    assert sorted(updates) == [0, 1]
    snapshot.add_pod(gpu_pod("p", 2, node_name="b"))
    allocator.refresh(both)
    assert sorted(updates) == [0, 1, 1]
    assert allocator.free_total[1] == 6
    snapshot.update_node(gpu_node("a", NVSWITCH_8, labels={"x": "y"}))  # a new Node object
    allocator.refresh(both)
    assert sorted(updates) == [0, 0, 1, 1]


def test_mig_devices_match_the_agents_count_labels_split_compute_instances_included() -> None:
    """dgx-a100-mig has a 3g.40gb GPU instance split into 1c and 2c compute instances: the
    device plugin (and the agent's labels) count one device per compute instance."""
    import argparse

    from gputopo.agent.cli import discover_topology, machine_source
    from gputopo.agent.cli_publish import labels_document
    from gputopo.agent.publish.desired import PublishOptions

    args = argparse.Namespace(mock="dgx-a100-mig", sysfs_root=None, node_name=None)
    with machine_source(args) as source:
        topology = discover_topology(source)
    document = labels_document(topology, PublishOptions(mig_strategy="mixed"))
    counts = {
        key.removesuffix(".count"): int(value)
        for key, value in document["labels"].items()
        if key.startswith("nvidia.com/mig-") and key.endswith(".count")
    }
    node = gpu_node("a100", document["annotations"]["gputopo.io/topology"], 4)
    layout = layout_of(parse_node(node))
    assert layout is not None
    modelled: dict[str, int] = {}
    for mig in layout.migs:
        modelled[mig.resource] = modelled.get(mig.resource, 0) + 1
    assert modelled == counts
    assert counts["nvidia.com/mig-1c.3g.40gb"] == 1
    assert len({mig.key for mig in layout.migs}) == len(layout.migs)


def test_nodes_of_one_model_share_one_layout_and_its_memo() -> None:
    snapshot = ClusterSnapshot()
    for name in ("a", "b"):
        snapshot.add_node(gpu_node(name, NVSWITCH_8))
    snapshot.add_node(gpu_node("q", QUADS_8))
    allocator = GpuAllocator(snapshot)
    allocator.refresh(np.array([0, 1, 2]))
    a, b, q = (allocator.states[slot] for slot in (0, 1, 2))
    assert a is not None and b is not None and q is not None
    assert a.layout is b.layout and q.layout is not a.layout
    assert a.layout.memo  # the summary of eight free GPUs, worked out once for both


_LAYOUTS = {
    "nvswitch": NVSWITCH_8,
    "quads": QUADS_8,
    "crossed": CROSSED_8,
    "pcie": PCIE_4,
    "failed": annotation([0, 0, 0, 0, 1, 1, 1, 1], [0] * 8, failed=(2, 5)),
}


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(_LAYOUTS)),
    st.lists(st.tuples(st.integers(0, 7), st.integers(1, 4)), max_size=12),
)
def test_memo_gives_what_the_allocator_works_out_afresh(
    layout_name: str, ops: list[tuple[int, int]]
) -> None:
    """Pods come and go (index i: pod i placed when absent, deleted when present); after each
    change the node's allocation and summary, read through the layout's memo, equal those
    worked out without it (the memo emptied first)."""
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("n", _LAYOUTS[layout_name]))
    allocator = GpuAllocator(snapshot)
    placed: set[int] = set()
    for index, gpus in ops:
        if index in placed:
            snapshot.remove_pod(f"default/p{index}")
            placed.discard(index)
        else:
            snapshot.add_pod(gpu_pod(f"p{index}", gpus, node_name="n"))
            placed.add(index)
        state = allocator.state(0)
        assert state is not None
        kept = (
            allocator._groups[:, 0].tolist(),
            int(allocator.free_total[0]),
            int(allocator.largest_aligned_domain[0]),
            allocator.summary_keys[0],
        )
        free = state.free_gpus(include_foreign=False)
        for count in range(1, 5):
            choice = preferred_allocation(free, count)
            fresh = choice.gpus if choice else tuple(g.index for g in free[:count])
            probe = parse_pod(gpu_pod("probe", count))
            for _ in ("worked out and kept", "read back"):
                twin = state.copy()
                twin._allocate(probe)
                assert twin.pod_gpus[probe.key][0] == fresh
        state.layout.memo.clear()
        allocator._summarise(0, state, state.node)
        assert (
            allocator._groups[:, 0].tolist(),
            int(allocator.free_total[0]),
            int(allocator.largest_aligned_domain[0]),
            allocator.summary_keys[0],
        ) == kept


def test_layout_memo_starts_over_past_its_limit() -> None:
    node = parse_node(gpu_node("n", NVSWITCH_8))
    layout = layout_of(node)
    assert layout is not None
    for bits in range(MEMO_LIMIT):
        layout.remember(("test", 0, bits), bits)
    assert len(layout.memo) == MEMO_LIMIT
    layout.remember(("test", 0, MEMO_LIMIT), MEMO_LIMIT)
    assert layout.memo == {("test", 0, MEMO_LIMIT): MEMO_LIMIT}
