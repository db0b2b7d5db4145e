"""What the snapshot keeps beside its counts so that a cycle reads instead of recomputing: free
resources and pod room per node, per-slot versions, and per-domain sums of the selector and
term counts (`domain_sums`). Each always equals what computing it afresh gives, through pods
added, removed, assumed, forgotten and made terminating, nodes replaced, removed and returning,
and the node arrays growing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler.model import LabelSelector, Requirement, parse_pod
from gputopo.scheduler.snapshot import ClusterSnapshot, SelectorCount, TermAggregate
from tests.unit.scheduler.sched_builders import cluster, node, pod

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
APPS = ("web", "db")
WEB = LabelSelector((Requirement("app", "In", frozenset({"web"}), None),))


def _node(name: str, big: bool = False) -> dict[str, Any]:
    index = int(name[1:])
    allocatable = {"cpu": "16" if big else "8", "memory": "32Gi", "pods": "4"}
    # n9 has no zone: its domain id is -1 and sums must read 0 there.
    return node(name, allocatable=allocatable, zone=None if index == 9 else f"z{index % 2}")


def _bound(name: str, app: str, node_name: str, terminating: bool = False) -> dict[str, Any]:
    body = pod(name, labels={"app": app}, node_name=node_name, requests={"cpu": "1"})
    if app == "db":  # db pods carry a preferred affinity to web pods in their zone
        body["spec"]["affinity"] = {
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "web"}},
                            "topologyKey": ZONE,
                        },
                    }
                ]
            }
        }
    if terminating:
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return body


def _fresh_sums(
    snapshot: ClusterSnapshot, key: str, counts: np.ndarray[Any, Any], mask: Any
) -> list[int]:
    index = snapshot.topology(key)
    per_node = counts if mask is None else np.where(mask, counts, 0)
    return [*index.aggregate(per_node).tolist(), 0]


def _masks(snapshot: ClusterSnapshot) -> dict[str, Any]:
    # One kept mask object per node set, as the spread plugin keeps one per pod shape.
    even = np.zeros(snapshot.capacity, dtype=np.bool_)
    even[::2] = True
    return {"none": None, "even": even & snapshot.alive}


def _check(snapshot: ClusterSnapshot, masks: dict[str, Any]) -> None:
    for name, allocatable in snapshot.allocatable.items():
        _, free = snapshot.free_arrays(name)
        assert free.tolist() == (allocatable - snapshot.requested[name]).tolist(), name
    assert snapshot.pod_room.tolist() == (snapshot.allowed_pods - snapshot.pod_count).tolist()
    counted: list[TermAggregate | SelectorCount] = [
        snapshot.selector_count("default", WEB),
        snapshot.selector_count("default", WEB, live_only=True),
        *(aggregate for terms in snapshot.terms.values() for aggregate in terms.values()),
    ]
    for count in counted:
        for key in (ZONE, HOST):
            for mask in masks.values():
                if mask is not None and len(mask) != snapshot.capacity:
                    continue
                sums = snapshot.domain_sums(key, count, mask)
                assert sums.tolist() == _fresh_sums(snapshot, key, count.counts, mask)
                assert not sums.flags.writeable


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add", "terminate", "remove", "assume", "forget", "drop", "node", "big", "read"]
        ),
        st.integers(0, 9),  # pod
        st.integers(0, 11),  # node
        st.sampled_from(APPS),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_kept_arrays_equal_a_fresh_computation(ops: list[tuple[str, int, int, str]]) -> None:
    snapshot = cluster([_node(f"n{i}") for i in range(3)])
    names = [f"n{i}" for i in range(3)]
    masks = _masks(snapshot)
    for op, pod_index, node_index, app in ops:
        name = f"p{pod_index}"
        target = names[node_index % len(names)]
        before = snapshot.slot_version.copy()
        touched: set[str] = set()
        if op == "add":
            entry = snapshot.pods.get(f"default/{name}")
            if entry is not None and entry.slot >= 0:
                touched.add(snapshot.node_names[entry.slot])
            snapshot.add_pod(_bound(name, app, target))
            touched.add(target)
        elif op == "terminate":
            snapshot.add_pod(_bound(name, app, target, terminating=True))
        elif op == "remove":
            snapshot.remove_pod(f"default/{name}")
        elif op == "assume":
            if snapshot.pod(f"default/{name}") is None and snapshot.slot_of(target) is not None:
                snapshot.assume(parse_pod(_bound(name, app, "")), target)
                touched.add(target)
        elif op == "forget":
            snapshot.forget(f"default/{name}")
        elif op == "drop":
            snapshot.remove_node(target)
        elif op in ("node", "big"):  # new, returning or replaced (other allocatable)
            new = f"n{node_index}"
            snapshot.add_node(_node(new, big=op == "big"))
            touched.add(new)
            if new not in names:
                names.append(new)
        else:  # read the kept sums part way through: later changes must update them
            masks = _masks(snapshot)
            _check(snapshot, masks)
        for touched_name in touched:
            slot = snapshot.slot_of(touched_name)
            if slot is not None and slot < len(before):
                assert snapshot.slot_version[slot] != before[slot], (op, touched_name)
    _check(snapshot, masks)


def test_slot_versions_never_repeat_and_move_only_where_something_changed() -> None:
    snapshot = cluster([_node("n0"), _node("n1")])
    a, b = snapshot.slot_of("n0"), snapshot.slot_of("n1")
    assert a is not None and b is not None
    first = snapshot.slot_version.copy()

    snapshot.add_pod(_bound("p1", "web", "n0"))
    assert snapshot.slot_version[a] > first[a]
    assert snapshot.slot_version[b] == first[b]

    seen = int(snapshot.slot_version[a])
    snapshot.remove_pod("default/p1")
    snapshot.add_pod(_bound("p1", "web", "n0"))  # back as it was: still a new version
    assert snapshot.slot_version[a] > seen


def test_domain_sums_are_kept_until_counts_change() -> None:
    snapshot = cluster([_node("n0"), _node("n1")], [_bound("p1", "web", "n0")])
    counted = snapshot.selector_count("default", WEB)
    zone_of = snapshot.topology(ZONE).ids

    first = snapshot.domain_sums(ZONE, counted)
    assert first.tolist()[zone_of["z0"]] == 1
    assert np.shares_memory(first, snapshot.domain_sums(ZONE, counted))  # a lookup

    snapshot.add_pod(_bound("p2", "web", "n1"))
    after = snapshot.domain_sums(ZONE, counted)
    assert after.tolist()[zone_of["z1"]] == 1
    with pytest.raises(ValueError, match="read-only"):
        after[0] = 7
