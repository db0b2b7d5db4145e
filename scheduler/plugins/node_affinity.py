"""NodeAffinity: nodeSelector and required node affinity filter; preferred terms score."""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model import Node, Pod

NAME: Final = "NodeAffinity"
REASON: Final = "node(s) didn't match Pod's node affinity/selector"
# PreFilter: `matchFields: metadata.name In [...]` (how DaemonSet pods are pinned) narrows the
# nodes considered; the others are reported with this reason, exactly as kube-scheduler does.
REASON_NOT_PINNED: Final = f"node(s) didn't satisfy plugin(s) [{NAME}]"
REASON_CONFLICT: Final = "pod affinity terms conflict"


def required_matches(pod: Pod, node: Node) -> bool:
    """nodeSelector (all pairs) AND required affinity (terms ORed, expressions ANDed)."""
    labels = node.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = pod.required_node_affinity
    if terms is None:
        return True
    return any(term.matches(labels, node.name) for term in terms)


def filter_node(pod: Pod, node: Node) -> str | None:
    return None if required_matches(pod, node) else REASON


def preferred_score(pod: Pod, node: Node) -> int:
    """Raw score: the sum of weights of matching preferred terms."""
    total = 0
    for weight, term in pod.preferred_node_affinity:
        if term.matches(node.labels, node.name):
            total += weight
    return total
