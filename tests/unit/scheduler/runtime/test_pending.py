"""The pending pods and their nominations, as the scheduling cycle and the binder read them."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.runtime.pending import PendingPods, nominated_node


def _pod(name: str, nominated: str = "") -> dict[str, Any]:
    pod: dict[str, Any] = {"metadata": {"name": name, "namespace": "ml"}, "status": {}}
    if nominated:
        pod["status"]["nominatedNodeName"] = nominated
    return pod


def test_a_nomination_is_tracked_and_cleared_with_the_pods_newest_version() -> None:
    pending = PendingPods()
    pending.put("ml/a", _pod("a", nominated="dgx-1"))
    assert pending.any_nominated()
    assert pending.nominated_nodes(besides="ml/other") == {"dgx-1"}
    pending.put("ml/a", _pod("a"))
    assert not pending.any_nominated()
    assert pending.nominated_nodes(besides="ml/other") == set()


def test_nominations_skip_the_asking_pod_and_pods_no_longer_pending() -> None:
    pending = PendingPods()
    pending.put("ml/a", _pod("a", nominated="dgx-1"))
    pending.put("ml/b", _pod("b", nominated="dgx-2"))
    pending.drop("ml/b")
    assert pending.nominations(besides="ml/a", held={}) == []
    assert [node for _, node in pending.nominations(besides="ml/c", held={})] == ["dgx-1"]


def test_a_reserved_node_counts_before_its_nomination_is_watched() -> None:
    pending = PendingPods()
    pending.put("ml/big", _pod("big"))
    assert pending.nominations(besides="ml/small", held={"ml/big": "dgx-3"}) == [
        (_pod("big"), "dgx-3")
    ]
    assert pending.nominations(besides="ml/small", held={"ml/gone": "dgx-4"}) == []


def test_nominated_node_reads_status_or_empty() -> None:
    assert nominated_node(_pod("a", nominated="dgx-1")) == "dgx-1"
    assert nominated_node({"metadata": {"name": "a"}}) == ""
    assert nominated_node({"metadata": {"name": "a"}, "status": None}) == ""
