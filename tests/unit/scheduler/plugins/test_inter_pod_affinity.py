"""InterPodAffinity against kube-scheduler's semantics, reason strings and score."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.scheduler.sched_builders import cluster, namespace, node, pod, reasons, schedule

ZONE = "topology.kubernetes.io/zone"


HOST = "kubernetes.io/hostname"


def _feasible(result: Any) -> set[str]:
    return {name for name, d in result.diagnosis().items() if d.feasible}


def _term(labels: dict[str, str], key: str = ZONE, **extra: Any) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **extra}


def _pod_affinity(kind: str, *terms: dict[str, Any]) -> dict[str, Any]:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


AFF = "node(s) didn't match pod affinity rules"


ANTI = "node(s) didn't match pod anti-affinity rules"


EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"


@pytest.fixture
def zones() -> Any:
    return cluster(
        [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"), node("nozone")],
        [pod("db", labels={"app": "db"}, node_name="a1")],
    )


def test_pod_affinity_requires_a_matching_pod_in_the_domain(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAffinity", _term({"app": "db"}))), zones
    )
    assert _feasible(result) == {"a1", "a2"}
    assert reasons(result) == {"b1": (AFF,), "nozone": (AFF,)}


def test_pod_affinity_without_any_match_fails_everywhere(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAffinity", _term({"app": "cache"}))), zones
    )
    assert result.message == f"0/4 nodes are available: 4 {AFF}."


def test_first_pod_of_a_group_may_schedule_on_labelled_nodes(zones: Any) -> None:
    affinity = _pod_affinity("podAffinity", _term({"app": "cache"}))
    result = schedule(pod("cache-0", labels={"app": "cache"}, affinity=affinity), zones)
    assert _feasible(result) == {"a1", "a2", "b1"}  # every node carrying the topology key
    assert reasons(result) == {"nozone": (AFF,)}


def test_pod_affinity_only_counts_its_namespace_by_default(zones: Any) -> None:
    affinity = _pod_affinity("podAffinity", _term({"app": "db"}))
    result = schedule(pod("web", namespace="other", affinity=affinity), zones)
    assert result.node is None


def test_pod_affinity_namespaces_and_namespace_selector() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("db", namespace="data", labels={"app": "db"}, node_name="b1")],
        namespaces=[namespace("data", {"team": "storage"}), namespace("web")],
    )
    explicit = _pod_affinity("podAffinity", _term({"app": "db"}, namespaces=["data"]))
    assert schedule(pod("w", namespace="web", affinity=explicit), snapshot).node == "b1"
    by_label = _pod_affinity(
        "podAffinity",
        _term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "storage"}}),
    )
    assert schedule(pod("w", namespace="web", affinity=by_label), snapshot).node == "b1"
    everywhere = _pod_affinity("podAffinity", _term({"app": "db"}, namespaceSelector={}))
    assert schedule(pod("w", namespace="web", affinity=everywhere), snapshot).node == "b1"
    wrong_team = _pod_affinity(
        "podAffinity",
        _term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "web"}}),
    )
    assert schedule(pod("w", namespace="web", affinity=wrong_team), snapshot).node is None


def test_pod_anti_affinity_blocks_the_whole_domain(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAntiAffinity", _term({"app": "db"}))), zones
    )
    assert _feasible(result) == {"b1", "nozone"}
    assert reasons(result) == {"a1": (ANTI,), "a2": (ANTI,)}


def test_existing_pods_anti_affinity_is_symmetric() -> None:
    loner = pod(
        "loner",
        labels={"app": "loner"},
        node_name="a1",
        affinity=_pod_affinity("podAntiAffinity", _term({"app": "web"})),
    )
    snapshot = cluster([node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b")], [loner])
    result = schedule(pod("web", labels={"app": "web"}), snapshot)
    assert result.node == "b1"
    assert reasons(result) == {"a1": (EXISTING_ANTI,), "a2": (EXISTING_ANTI,)}
    # a pod the term does not select is unaffected
    assert schedule(pod("db", labels={"app": "db"}), snapshot).node in {"a1", "a2", "b1"}


def test_anti_affinity_match_expressions_and_mismatch_label_keys() -> None:
    snapshot = cluster(
        [node("n1"), node("n2")],
        [pod("t-a", labels={"tenant": "a", "app": "x"}, node_name="n1")],
    )
    # NotIn via mismatchLabelKeys: keep away from other tenants' pods
    term = {
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        "mismatchLabelKeys": ["tenant"],
        "topologyKey": HOST,
    }
    result = schedule(
        pod(
            "t-b",
            labels={"tenant": "b", "app": "x"},
            affinity=_pod_affinity("podAntiAffinity", term),
        ),
        snapshot,
    )
    assert result.node == "n2"
    same_tenant = schedule(
        pod(
            "t-a2",
            labels={"tenant": "a", "app": "x"},
            affinity=_pod_affinity("podAntiAffinity", term),
        ),
        snapshot,
    )
    assert _feasible(same_tenant) == {"n1", "n2"}


def test_affinity_match_label_keys_narrow_the_selector() -> None:
    snapshot = cluster(
        [node("n1", zone="a"), node("n2", zone="b")],
        [
            pod("v1", labels={"app": "x", "rev": "1"}, node_name="n1"),
            pod("v2", labels={"app": "x", "rev": "2"}, node_name="n2"),
        ],
    )
    term = _term({"app": "x"}, matchLabelKeys=["rev"])
    result = schedule(
        pod("new", labels={"app": "x", "rev": "2"}, affinity=_pod_affinity("podAffinity", term)),
        snapshot,
    )
    assert result.node == "n2"


def _scores(result: Any) -> dict[str, dict[str, int]]:
    return {name: dict(d.plugin_scores) for name, d in result.diagnosis().items() if d.feasible}


def test_preferred_pod_affinity_and_anti_affinity() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("db", labels={"app": "db"}, node_name="a1")],
    )
    term = {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}
    near = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term}
            ]
        }
    }
    far = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term}
            ]
        }
    }
    near_result = schedule(pod("web", affinity=near), snapshot)
    assert _scores(near_result)["a1"]["InterPodAffinity"] == 100
    assert _scores(near_result)["b1"]["InterPodAffinity"] == 0
    assert schedule(pod("web", affinity=far), snapshot).node == "b1"


def test_existing_pods_preferred_terms_attract_the_incoming_pod() -> None:
    likes_web = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": ZONE,
                    },
                }
            ]
        }
    }
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("cache", node_name="b1", affinity=likes_web)],
    )
    result = schedule(pod("web", labels={"app": "web"}), snapshot)
    assert _scores(result)["b1"]["InterPodAffinity"] == 100
