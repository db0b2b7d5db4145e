"""The vectorised spread and inter-pod affinity filters against a plain per-node reference.

The reference below is a direct transcription of kube-scheduler's PreFilter/Filter loops for
PodTopologySpread (DoNotSchedule) and InterPodAffinity (required terms, both directions), one node
and one pod at a time; random small clusters (seeded) must get identical per-node reasons.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
SPREAD = "node(s) didn't match pod topology spread constraints"
MISSING = SPREAD + " (missing required label)"
AFF = "node(s) didn't match pod affinity rules"
ANTI = "node(s) didn't match pod anti-affinity rules"
EXISTING = "node(s) didn't satisfy existing pods anti-affinity rules"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _reference(
    nodes: list[dict[str, Any]], existing: list[dict[str, Any]], incoming: dict[str, Any]
) -> dict[str, tuple[str, ...]]:
    labels_of = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
    placed = [
        (p["metadata"]["labels"], p["spec"], labels_of[p["spec"]["nodeName"]]) for p in existing
    ]
    spec, own = incoming["spec"], incoming["metadata"]["labels"]
    out: dict[str, tuple[str, ...]] = {}
    constraints = spec.get("topologySpreadConstraints", [])
    keys = [c["topologyKey"] for c in constraints]
    minimum: list[int] = []
    counts: list[dict[str, int]] = []
    for c in constraints:
        per_domain: dict[str, int] = {}
        for node_labels in labels_of.values():
            if all(k in node_labels for k in keys):
                per_domain.setdefault(node_labels[c["topologyKey"]], 0)
        for pod_labels, _, node_labels in placed:
            if all(k in node_labels for k in keys) and _selects(
                c["labelSelector"]["matchLabels"], pod_labels
            ):
                per_domain[node_labels[c["topologyKey"]]] += 1
        low = min(per_domain.values()) if per_domain else 2**31 - 1
        if len(per_domain) < c.get("minDomains", 1):
            low = 0
        minimum.append(low)
        counts.append(per_domain)
    affinity = spec.get("affinity", {})
    required = affinity.get("podAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", []
    )
    anti = affinity.get("podAntiAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", []
    )
    for name, node_labels in labels_of.items():
        reason = None
        for i, c in enumerate(constraints):
            key = c["topologyKey"]
            if key not in node_labels:
                reason = MISSING
                break
            self_match = 1 if _selects(c["labelSelector"]["matchLabels"], own) else 0
            if counts[i].get(node_labels[key], 0) + self_match - minimum[i] > c["maxSkew"]:
                reason = SPREAD
                break
        if reason is None and required:
            matching_all = [
                nl
                for pl, _, nl in placed
                if all(_selects(t["labelSelector"]["matchLabels"], pl) for t in required)
            ]
            any_pair = any(t["topologyKey"] in nl for t in required for nl in matching_all)
            has_keys = all(t["topologyKey"] in node_labels for t in required)
            satisfied = has_keys and all(
                any(
                    nl.get(t["topologyKey"]) == node_labels[t["topologyKey"]] for nl in matching_all
                )
                for t in required
            )
            self_ok = all(_selects(t["labelSelector"]["matchLabels"], own) for t in required)
            if not satisfied and not (has_keys and not any_pair and self_ok):
                reason = AFF
        if reason is None:
            for t in anti:
                key = t["topologyKey"]
                if key in node_labels and any(
                    _selects(t["labelSelector"]["matchLabels"], pl)
                    and nl.get(key) == node_labels[key]
                    for pl, _, nl in placed
                ):
                    reason = ANTI
        if reason is None:
            for _pl, ps, nl in placed:
                for t in (
                    ps.get("affinity", {})
                    .get("podAntiAffinity", {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution", [])
                ):
                    key = t["topologyKey"]
                    if (
                        _selects(t["labelSelector"]["matchLabels"], own)
                        and key in nl
                        and node_labels.get(key) == nl[key]
                    ):
                        reason = EXISTING
        if reason is not None:
            out[name] = (reason,)
    return out


def _term(rng: random.Random) -> dict[str, Any]:
    return {
        "labelSelector": {"matchLabels": {"app": rng.choice("xy")}},
        "topologyKey": rng.choice([ZONE, HOST]),
    }


def _random_case(seed: int) -> tuple[list[Any], list[Any], dict[str, Any]]:
    rng = random.Random(seed)
    nodes = []
    for i in range(rng.randrange(3, 10)):
        zone = rng.choice(["a", "b", "c", None])
        nodes.append(node(f"n{i}", zone=zone))
    existing = []
    for i in range(rng.randrange(0, 12)):
        spec: dict[str, Any] = {}
        if rng.random() < 0.2:
            spec["affinity"] = {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]}
            }
        existing.append(
            pod(
                f"e{i}",
                labels={"app": rng.choice("xyz")},
                node_name=rng.choice(nodes)["metadata"]["name"],
                **spec,
            )
        )
    spec = {}
    if rng.random() < 0.7:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": rng.choice([1, 2]),
                "topologyKey": rng.choice([ZONE, HOST]),
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": rng.choice("xy")}},
                **({"minDomains": rng.choice([2, 4])} if rng.random() < 0.3 else {}),
            }
            for _ in range(rng.choice([1, 1, 2]))
        ]
    affinity: dict[str, Any] = {}
    if rng.random() < 0.4:
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]}
    if rng.random() < 0.4:
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]
        }
    if affinity:
        spec["affinity"] = affinity
    incoming = pod("new", labels={"app": rng.choice("xy")}, **spec)
    return nodes, existing, incoming


@pytest.mark.parametrize("seed", range(300))
def test_vectorised_filters_match_the_reference(seed: int) -> None:
    nodes, existing, incoming = _random_case(seed)
    result = schedule(incoming, cluster(nodes, existing))
    assert reasons(result) == _reference(nodes, existing, incoming)
