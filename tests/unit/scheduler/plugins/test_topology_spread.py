"""PodTopologySpread against kube-scheduler's semantics, reason strings and score."""

from __future__ import annotations

from typing import Any

from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule

ZONE = "topology.kubernetes.io/zone"


def _feasible(result: Any) -> set[str]:
    return {name for name, d in result.diagnosis().items() if d.feasible}


SPREAD = "node(s) didn't match pod topology spread constraints"


MISSING = "node(s) didn't match pod topology spread constraints (missing required label)"


def _spread(key: str = ZONE, max_skew: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
            **extra,
        }
    ]


def _web(name: str, node_name: str | None = None, **spec: Any) -> dict[str, Any]:
    return pod(name, labels={"app": "web"}, node_name=node_name, **spec)


def test_spread_rejects_skew_above_max_and_nodes_missing_the_key() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b"), node("nozone")],
        [_web("w0", "a1")],
    )
    result = schedule(_web("w1", topologySpreadConstraints=_spread()), snapshot)
    assert result.node == "b1"
    assert reasons(result) == {"a1": (SPREAD,), "nozone": (MISSING,)}


def test_spread_max_skew_two_allows_imbalance() -> None:
    snapshot = cluster([node("a1", zone="a"), node("b1", zone="b")], [_web("w0", "a1")])
    result = schedule(_web("w1", topologySpreadConstraints=_spread(max_skew=2)), snapshot)
    assert _feasible(result) == {"a1", "b1"}


def test_spread_counts_only_same_namespace_pods() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("w0", namespace="other", labels={"app": "web"}, node_name="a1")],
    )
    result = schedule(_web("w1", topologySpreadConstraints=_spread()), snapshot)
    assert _feasible(result) == {"a1", "b1"}


def test_spread_min_domains_treats_global_minimum_as_zero() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    # two domains each holding one pod: fine without minDomains ...
    assert _feasible(schedule(_web("w2", topologySpreadConstraints=_spread()), snapshot)) == {
        "a1",
        "b1",
    }
    # ... but minDomains 3 makes the minimum 0, so 1 + 1 - 0 > 1 everywhere
    result = schedule(_web("w2", topologySpreadConstraints=_spread(minDomains=3)), snapshot)
    assert result.message == f"0/2 nodes are available: 2 {SPREAD}."


def test_spread_node_affinity_policy_honor_ignores_other_nodes_pods() -> None:
    snapshot = cluster(
        [
            node("a1", zone="a", labels={"pool": "gpu"}),
            node("b1", zone="b", labels={"pool": "gpu"}),
            node("c1", zone="c", labels={"pool": "cpu"}),
        ],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    selector = {"pool": "gpu"}
    # Honor (default): zone c is not eligible, so the minimum is 1 and a1/b1 stay feasible.
    honor = schedule(
        _web("w2", nodeSelector=selector, topologySpreadConstraints=_spread()), snapshot
    )
    assert _feasible(honor) == {"a1", "b1"}
    # Ignore: zone c counts with 0 pods, so a1/b1 would have skew 2.
    ignore = schedule(
        _web(
            "w2",
            nodeSelector=selector,
            topologySpreadConstraints=_spread(nodeAffinityPolicy="Ignore"),
        ),
        snapshot,
    )
    assert ignore.message == (
        f"0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 {SPREAD}."
    )


def test_spread_node_taints_policy_honor_skips_tainted_domains() -> None:
    snapshot = cluster(
        [
            node("a1", zone="a"),
            node("b1", zone="b"),
            node(
                "c1", zone="c", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
            ),
        ],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    ignore = schedule(_web("w2", topologySpreadConstraints=_spread()), snapshot)
    assert ignore.node is None  # tainted zone c (0 pods) keeps the minimum at 0
    honor = schedule(
        _web("w2", topologySpreadConstraints=_spread(nodeTaintsPolicy="Honor")), snapshot
    )
    assert _feasible(honor) == {"a1", "b1"}


def test_spread_match_label_keys() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("old", labels={"app": "web", "rev": "1"}, node_name="a1")],
    )
    new = pod(
        "new",
        labels={"app": "web", "rev": "2"},
        topologySpreadConstraints=_spread(matchLabelKeys=["rev"]),
    )
    assert _feasible(schedule(new, snapshot)) == {"a1", "b1"}


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_schedule_anyway_spread_prefers_the_emptier_zone() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod(f"w{i}", labels={"app": "web"}, node_name="a1") for i in range(2)],
    )
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    result = schedule(pod("w2", labels={"app": "web"}, topologySpreadConstraints=spread), snapshot)
    scores = _scores(result)
    # raw: a = round(2 * ln(4)) = 3, b = 0 -> normalised 100 * (3 + 0 - s) / 3
    assert scores["a1"]["PodTopologySpread"] == 0
    assert scores["b1"]["PodTopologySpread"] == 100
    assert result.node == "b1"
