"""Selector counts the snapshot keeps up to date (`count_matching`): always what counting the
matching pods afresh gives, through pods added, removed, assumed, forgotten, terminating, nodes
removed and returning, and the node arrays growing."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler import snapshot as snapshot_module
from gputopo.scheduler.model import LabelSelector, Requirement, parse_pod
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.sched_builders import cluster, node, pod

APPS = ("web", "db", "cache")
# Selectors the property test keeps counts for: indexed by one label, by several, not at all.
SELECTORS = {
    "web-or-db": LabelSelector((Requirement("app", "In", frozenset({"web", "db"}), None),)),
    "not-web": LabelSelector((Requirement("app", "NotIn", frozenset({"web"}), None),)),
    "has-app": LabelSelector((Requirement("app", "Exists", frozenset(), None),)),
    "db-in-tier": LabelSelector(
        (
            Requirement("app", "Exists", frozenset(), None),
            Requirement("tier", "In", frozenset({"db"}), None),
        )
    ),
}


def _selector(app: str) -> LabelSelector:
    return SELECTORS.get(app) or LabelSelector((Requirement("app", "In", frozenset({app}), None),))


def _fresh(snapshot: ClusterSnapshot, namespace: str, app: str, live_only: bool) -> list[int]:
    entries = snapshot.pods_matching(namespace, _selector(app))
    if live_only:
        entries = [entry for entry in entries if not entry.pod.terminating]
    return snapshot.per_node_count(entries).tolist()


def _labels(app: str) -> dict[str, str]:
    return {"app": app, "tier": "db"} if app == "db" else {"app": app}


def _bound(name: str, app: str, node_name: str, terminating: bool = False) -> dict[str, Any]:
    body = pod(name, labels=_labels(app), node_name=node_name)
    if terminating:
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return body


def test_counts_follow_pods_added_and_removed() -> None:
    snapshot = cluster([node("a"), node("b")], [_bound("p1", "web", "a")])
    counts = snapshot.count_matching("default", _selector("web"))
    assert counts[snapshot.slot_of("a")] == 1

    snapshot.add_pod(_bound("p2", "web", "b"))
    snapshot.add_pod(_bound("p3", "db", "b"))
    snapshot.remove_pod("default/p1")

    counts = snapshot.count_matching("default", _selector("web"))
    assert (counts[snapshot.slot_of("a")], counts[snapshot.slot_of("b")]) == (0, 1)


def test_counts_are_read_only() -> None:
    snapshot = cluster([node("a")], [_bound("p1", "web", "a")])
    counts = snapshot.count_matching("default", _selector("web"))
    with pytest.raises(ValueError, match="read-only"):
        counts[0] = 5


def test_live_only_counts_leave_out_terminating_pods() -> None:
    snapshot = cluster([node("a")], [_bound("p1", "web", "a")])
    snapshot.count_matching("default", _selector("web"), live_only=True)

    snapshot.add_pod(_bound("p1", "web", "a", terminating=True))

    slot = snapshot.slot_of("a")
    assert slot is not None
    assert snapshot.count_matching("default", _selector("web"), live_only=True)[slot] == 0
    assert snapshot.count_matching("default", _selector("web"))[slot] == 1


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "terminate", "remove", "assume", "forget", "drop_node", "node"]),
        st.integers(0, 11),  # pod
        st.integers(0, 9),  # node
        st.sampled_from(APPS),
        st.sampled_from(["default", "other"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS, st.integers(0, 40), st.sampled_from([2, 512]))
def test_kept_counts_equal_a_fresh_count(
    ops: list[tuple[str, int, int, str, str]], ask: int, kept: int
) -> None:
    # kept=2: counts are dropped and asked for again all the time
    with mock.patch.object(snapshot_module, "_SELECTOR_COUNTS_SIZE", kept):
        _check_kept_counts(ops, ask)


def _check_kept_counts(ops: list[tuple[str, int, int, str, str]], ask: int) -> None:
    snapshot = cluster([node(f"n{i}") for i in range(3)])
    names = [f"n{i}" for i in range(3)]
    for index, (op, pod_index, node_index, app, namespace) in enumerate(ops):
        if index == ask:  # start keeping the counts part way through
            for selector_name in (*APPS, *SELECTORS):
                for live_only in (False, True):
                    snapshot.count_matching(
                        "default", _selector(selector_name), live_only=live_only
                    )
        name = f"p{pod_index}"
        target = names[node_index % len(names)]
        if op == "add":
            snapshot.add_pod(_bound(name, app, target) | {"metadata": _meta(name, app, namespace)})
        elif op == "terminate":
            snapshot.add_pod(_bound(name, app, target, terminating=True))
        elif op == "remove":
            snapshot.remove_pod(f"{namespace}/{name}")
        elif op == "assume":
            key = f"default/{name}"
            if snapshot.pod(key) is None and snapshot.slot_of(target) is not None:
                snapshot.assume(parse_pod(pod(name, labels=_labels(app))), target)
        elif op == "forget":
            snapshot.forget(f"default/{name}")
        elif op == "drop_node":
            snapshot.remove_node(target)
        else:  # a new node (or one dropped before, back): the arrays may grow
            new = f"n{node_index}"
            snapshot.add_node(node(new))
            if new not in names:
                names.append(new)
    for selector_name in (*APPS, *SELECTORS):
        for live_only in (False, True):
            counts = snapshot.count_matching(
                "default", _selector(selector_name), live_only=live_only
            )
            assert counts.tolist() == _fresh(snapshot, "default", selector_name, live_only)
            assert counts.dtype == np.int64


def _meta(name: str, app: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": _labels(app)}


def test_a_selector_of_several_values_counts_pods_of_each() -> None:
    snapshot = cluster([node("a")])
    snapshot.count_matching("default", SELECTORS["web-or-db"])

    snapshot.add_pod(_bound("p1", "web", "a"))
    snapshot.add_pod(_bound("p2", "db", "a"))

    assert snapshot.count_matching("default", SELECTORS["web-or-db"]).tolist()[:1] == [2]
