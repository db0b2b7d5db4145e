"""NodeUnschedulable against kube-scheduler's semantics and reason string."""

from __future__ import annotations

from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule


def test_cordoned_node_is_unschedulable() -> None:
    snapshot = cluster([node("a", unschedulable=True)])
    result = schedule(pod("p"), snapshot)
    assert result.node is None
    assert result.message == "0/1 nodes are available: 1 node(s) were unschedulable."


def test_unschedulable_taint_toleration_allows_cordoned_node() -> None:
    snapshot = cluster([node("a", unschedulable=True)])
    toleration = {
        "key": "node.kubernetes.io/unschedulable",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    assert schedule(pod("p", tolerations=[toleration]), snapshot).node == "a"
