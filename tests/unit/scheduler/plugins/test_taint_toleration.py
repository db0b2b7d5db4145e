"""TaintToleration against kube-scheduler's semantics, reason strings and score."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.model import Taint, Toleration
from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule

SLA = "gputopo.io/sla"


def _taint(key: str, value: str, effect: str = "NoSchedule") -> dict[str, str]:
    return {"key": key, "value": value, "effect": effect}


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "k", "operator": "Equal", "value": "v"}, ("k", "v", "NoSchedule"), True),
        ({"key": "k", "value": "v"}, ("k", "v", "NoSchedule"), True),  # operator defaults Equal
        ({"key": "k", "operator": "Equal", "value": "w"}, ("k", "v", "NoSchedule"), False),
        ({"key": "k", "operator": "Exists"}, ("k", "anything", "NoExecute"), True),
        ({"operator": "Exists"}, ("any-key", "v", "NoSchedule"), True),  # empty key tolerates all
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, ("k", "", "NoSchedule"), False),
        ({"key": "other", "operator": "Exists"}, ("k", "v", "NoSchedule"), False),
        # KEP-5471: Gt tolerates a taint whose value is greater than the toleration's
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "960", "NoSchedule"), True),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "950", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "900", "NoSchedule"), False),
        ({"key": SLA, "operator": "Lt", "value": "950"}, (SLA, "900", "NoSchedule"), True),
        ({"key": SLA, "operator": "Lt", "value": "950"}, (SLA, "950", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "high", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "x"}, (SLA, "990", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "-5"}, (SLA, "+0", "NoSchedule"), True),
    ],
)
def test_toleration_matching(
    toleration: dict[str, str], taint: tuple[str, str, str], tolerated: bool
) -> None:
    parsed = Toleration(
        toleration.get("key", ""),
        toleration.get("operator", ""),
        toleration.get("value", ""),
        toleration.get("effect", ""),
    )
    assert parsed.tolerates(Taint(*taint)) is tolerated


def test_untolerated_taint_reason_names_key_and_value() -> None:
    snapshot = cluster([node("a", taints=[_taint(SLA, "900")])])
    result = schedule(pod("p"), snapshot)
    assert result.message == (
        "0/1 nodes are available: 1 node(s) had untolerated taint {gputopo.io/sla: 900}."
    )


def test_first_untolerated_taint_in_node_order_is_reported() -> None:
    taints = [_taint("a", "1"), _taint("b", "2")]
    snapshot = cluster([node("n", taints=taints)])
    tolerate_a = [{"key": "a", "operator": "Exists"}]
    assert reasons(schedule(pod("p", tolerations=tolerate_a), snapshot)) == {
        "n": ("node(s) had untolerated taint {b: 2}",)
    }


def test_no_execute_blocks_and_prefer_no_schedule_does_not() -> None:
    snapshot = cluster(
        [
            node("exec", taints=[_taint("k", "v", "NoExecute")]),
            node("prefer", taints=[_taint("k", "v", "PreferNoSchedule")]),
        ]
    )
    result = schedule(pod("p"), snapshot)
    assert result.node == "prefer"
    assert reasons(result) == {"exec": ("node(s) had untolerated taint {k: v}",)}


def test_sla_gt_toleration_selects_nodes_above_threshold() -> None:
    snapshot = cluster(
        [
            node("gold", taints=[_taint(SLA, "990")]),
            node("silver", taints=[_taint(SLA, "950")]),
            node("bronze", taints=[_taint(SLA, "800")]),
        ]
    )
    tolerations = [{"key": SLA, "operator": "Gt", "value": "950", "effect": "NoSchedule"}]
    result = schedule(pod("p", tolerations=tolerations), snapshot)
    assert result.node == "gold"
    assert reasons(result) == {
        "bronze": ("node(s) had untolerated taint {gputopo.io/sla: 800}",),
        "silver": ("node(s) had untolerated taint {gputopo.io/sla: 950}",),
    }


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_prefer_no_schedule_taints_score_reversed() -> None:
    def tainted(name: str, count: int) -> dict[str, Any]:
        taints = [
            {"key": f"t{i}", "value": "x", "effect": "PreferNoSchedule"} for i in range(count)
        ]
        return node(name, taints=taints)

    snapshot = cluster([tainted("none", 0), tainted("one", 1), tainted("two", 2)])
    result = schedule(pod("p"), snapshot)
    scores = _scores(result)
    assert [scores[n]["TaintToleration"] for n in ("none", "one", "two")] == [100, 50, 0]
    assert result.node == "none"
    tolerant = pod("q", tolerations=[{"operator": "Exists", "effect": "PreferNoSchedule"}])
    assert {s["TaintToleration"] for s in _scores(schedule(tolerant, snapshot)).values()} == {100}
