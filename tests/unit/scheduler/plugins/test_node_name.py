"""NodeName against kube-scheduler's semantics and reason string."""

from __future__ import annotations

from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule


def test_node_name_must_match() -> None:
    snapshot = cluster([node("a"), node("b")])
    result = schedule(pod("p", nodeName="b"), snapshot)
    assert result.node == "b"
    assert reasons(result) == {"a": ("node(s) didn't match the requested node name",)}
