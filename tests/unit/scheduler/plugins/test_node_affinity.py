"""NodeAffinity (and the node selector) against kube-scheduler's semantics, reason strings and
score."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule

GPU = "nvidia.com/gpu.product"


def _required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"


@pytest.fixture
def labelled() -> Any:
    return cluster(
        [
            node("h100", labels={GPU: "H100", "gpu.count": "8"}),
            node("a100", labels={GPU: "A100", "gpu.count": "4"}),
            node("cpu", labels={"gpu.count": "none"}),
        ]
    )


def _feasible(result: Any) -> set[str]:
    return {name for name, d in result.diagnosis().items() if d.feasible}


@pytest.mark.parametrize(
    ("affinity", "feasible"),
    [
        (_required({"matchExpressions": [_expr(GPU, "In", "H100", "A100")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr(GPU, "NotIn", "H100")]}), {"a100", "cpu"}),
        (_required({"matchExpressions": [_expr(GPU, "Exists")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr(GPU, "DoesNotExist")]}), {"cpu"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "4")]}), {"h100"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "3")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Lt", "8")]}), {"a100"}),
        # terms are ORed
        (
            _required(
                {"matchExpressions": [_expr(GPU, "In", "H100")]},
                {"matchExpressions": [_expr(GPU, "DoesNotExist")]},
            ),
            {"h100", "cpu"},
        ),
        # expressions are ANDed
        (
            _required({"matchExpressions": [_expr(GPU, "Exists"), _expr("gpu.count", "Lt", "5")]}),
            {"a100"},
        ),
        # an empty term matches nothing
        (_required({}), set()),
        (_required({"matchExpressions": []}), set()),
        # a Gt value that is not an integer makes its term match nothing
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "four")]}), set()),
        # matchFields on metadata.name (NotIn: no PreFilter pinning, plain filter)
        (_required({"matchFields": [_expr("metadata.name", "NotIn", "a100")]}), {"h100", "cpu"}),
    ],
)
def test_required_node_affinity(
    labelled: Any, affinity: dict[str, Any], feasible: set[str]
) -> None:
    result = schedule(pod("p", affinity=affinity), labelled)
    assert _feasible(result) == feasible
    for reason in reasons(result).values():
        assert reason == (AFFINITY_REASON,)


PINNED_REASON = "node(s) didn't satisfy plugin(s) [NodeAffinity]"


def test_match_fields_pinning_reports_other_nodes_like_prefilter(labelled: Any) -> None:
    # how the DaemonSet controller pins its pods to one node
    pinned = _required({"matchFields": [_expr("metadata.name", "In", "a100")]})
    result = schedule(pod("p", affinity=pinned), labelled)
    assert result.node == "a100"
    assert reasons(result) == {"h100": (PINNED_REASON,), "cpu": (PINNED_REASON,)}
    full = schedule(pod("p", affinity=pinned, requests={"cpu": "100"}), labelled)
    assert full.message == f"0/3 nodes are available: 1 Insufficient cpu, 2 {PINNED_REASON}."


def test_match_fields_pinning_in_every_term_unions_names(labelled: Any) -> None:
    terms = _required(
        {"matchFields": [_expr("metadata.name", "In", "a100")]},
        {
            "matchFields": [_expr("metadata.name", "In", "h100", "cpu")],
            "matchExpressions": [_expr(GPU, "Exists")],
        },
    )
    result = schedule(pod("p", affinity=terms), labelled)
    assert reasons(result) == {"cpu": (AFFINITY_REASON,)}  # pinned, but fails the expression


def test_conflicting_match_fields_pinning(labelled: Any) -> None:
    conflict = _required(
        {
            "matchFields": [
                _expr("metadata.name", "In", "a100"),
                _expr("metadata.name", "In", "h100"),
            ]
        }
    )
    result = schedule(pod("p", affinity=conflict), labelled)
    assert result.message == "0/3 nodes are available: pod affinity terms conflict."


def test_node_selector_and_affinity_must_both_match(labelled: Any) -> None:
    affinity = _required({"matchExpressions": [_expr(GPU, "Exists")]})
    result = schedule(pod("p", nodeSelector={"gpu.count": "4"}, affinity=affinity), labelled)
    assert result.node == "a100"
    assert result.message == ""


def test_node_selector_mismatch_message(labelled: Any) -> None:
    result = schedule(pod("p", nodeSelector={GPU: "B200"}), labelled)
    assert result.message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_preferred_node_affinity_weights() -> None:
    snapshot = cluster(
        [node("h100", labels={"gpu": "h100"}), node("a100", labels={"gpu": "a100"}), node("cpu")]
    )
    preferred = [
        {
            "weight": 80,
            "preference": {
                "matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]
            },
        },
        {"weight": 20, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
    ]
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    result = schedule(pod("p", affinity=affinity), snapshot)
    scores = _scores(result)
    assert [scores[n]["NodeAffinity"] for n in ("h100", "a100", "cpu")] == [100, 20, 0]
    assert result.node == "h100"
