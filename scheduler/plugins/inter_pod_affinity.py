"""InterPodAffinity: required pod affinity/anti-affinity (both directions) and preferred terms.

Filter, in kube-scheduler's order: the pod's required affinity (every term's topology domain
must hold a pod matching all terms — unless no pod anywhere matches and the pod matches its own
terms, the first pod of a group), its required anti-affinity, then existing pods' required
anti-affinity terms that match the incoming pod (symmetry).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.model import AffinityTerm, Pod
from gputopo.scheduler.plugins.context import CycleContext
from gputopo.scheduler.plugins.verdict import CodedVerdict, Reason, unresolvable
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import (
    PREFERRED_AFFINITY,
    PREFERRED_ANTI_AFFINITY,
    REQUIRED_AFFINITY,
    REQUIRED_ANTI_AFFINITY,
    BoolArray,
    ClusterSnapshot,
    IntArray,
    PodEntry,
)

NAME: Final = "InterPodAffinity"
REASON_AFFINITY: Final = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY: Final = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY: Final = "node(s) didn't satisfy existing pods anti-affinity rules"

AFFINITY: Final = 1
ANTI_AFFINITY: Final = 2
EXISTING_ANTI_AFFINITY: Final = 3
REASONS: Final = {
    AFFINITY: REASON_AFFINITY,
    ANTI_AFFINITY: REASON_ANTI_AFFINITY,
    EXISTING_ANTI_AFFINITY: REASON_EXISTING_ANTI_AFFINITY,
}
# No eviction brings the pods a required affinity term asks for: UnschedulableAndUnresolvable.
# Anti-affinity is cured by evicting the pods it refuses to share a domain with.
_VERDICT_REASONS: Final = {
    AFFINITY: unresolvable(REASON_AFFINITY),
    ANTI_AFFINITY: Reason(REASON_ANTI_AFFINITY),
    EXISTING_ANTI_AFFINITY: Reason(REASON_EXISTING_ANTI_AFFINITY),
}


def _pods_matching_term(snapshot: ClusterSnapshot, term: AffinityTerm) -> list[PodEntry]:
    out: list[PodEntry] = []
    for namespace in snapshot.term_namespaces(term):
        out.extend(snapshot.pods_matching(namespace, term.selector))
    return out


def _count_matching_term(snapshot: ClusterSnapshot, term: AffinityTerm) -> IntArray:
    """Per node, the assigned pods the term selects (the snapshot keeps these counts)."""
    total: IntArray | None = None
    for namespace in snapshot.term_namespaces(term):
        counts = snapshot.count_matching(namespace, term.selector)
        total = counts if total is None else total + counts
    return np.zeros(snapshot.capacity, dtype=np.int64) if total is None else total


def _occupied_domains(snapshot: ClusterSnapshot, key: str, per_node: IntArray) -> IntArray:
    """For every node, the count summed over the node's topology domain (0 if unlabelled)."""
    index = snapshot.topology(key)
    return index.spread(index.aggregate(per_node))


def _existing_anti_affinity_blocks(pod: Pod, snapshot: ClusterSnapshot) -> BoolArray | None:
    aggregates = snapshot.terms[REQUIRED_ANTI_AFFINITY]
    if not aggregates:
        return None
    blocked: BoolArray | None = None
    for aggregate in aggregates.values():
        if not snapshot.term_matches(aggregate, pod):
            continue
        hit = _occupied_domains(snapshot, aggregate.term.topology_key, aggregate.counts) > 0
        blocked = hit if blocked is None else (blocked | hit)
    return blocked


def filter_nodes(pod: Pod, snapshot: ClusterSnapshot) -> npt.NDArray[np.int8] | None:
    """Per-slot reason codes (0 = passes); None when nothing affinity-related applies."""
    existing = _existing_anti_affinity_blocks(pod, snapshot)
    if existing is None and not pod.required_affinity and not pod.required_anti_affinity:
        return None
    reasons = np.zeros(snapshot.capacity, dtype=np.int8)
    if pod.required_affinity:
        namespace_labels = snapshot.namespace_labels(pod.namespace)
        first, *rest = pod.required_affinity
        matching = [
            entry
            for entry in _pods_matching_term(snapshot, first)
            if all(
                term.matches(
                    entry.pod.namespace,
                    entry.pod.labels,
                    snapshot.namespace_labels(entry.pod.namespace),
                )
                for term in rest
            )
        ]
        per_node = snapshot.per_node_count(matching)
        satisfied = snapshot.alive.copy()
        labelled_all = snapshot.alive.copy()
        any_match = False
        for term in pod.required_affinity:
            index = snapshot.topology(term.topology_key)
            per_domain = index.aggregate(per_node)
            any_match = any_match or bool(per_domain.sum() > 0)
            labelled = index.domain >= 0
            labelled_all &= labelled
            satisfied &= labelled & (index.spread(per_domain) > 0)
        if not any_match and all(
            term.matches(pod.namespace, pod.labels, namespace_labels)
            for term in pod.required_affinity
        ):
            satisfied = labelled_all
        reasons[~satisfied] = AFFINITY
    if pod.required_anti_affinity:
        blocked = np.zeros(snapshot.capacity, dtype=np.bool_)
        for term in pod.required_anti_affinity:
            per_node = _count_matching_term(snapshot, term)
            blocked |= _occupied_domains(snapshot, term.topology_key, per_node) > 0
        reasons[(reasons == 0) & blocked] = ANTI_AFFINITY
    if existing is not None:
        reasons[(reasons == 0) & existing] = EXISTING_ANTI_AFFINITY
    reasons[~snapshot.alive] = 0
    return reasons


def score(
    pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, profile: SchedulerProfile
) -> IntArray | None:
    """Min-max normalised preferred (anti-)affinity, both directions; None when nothing applies."""
    contributions: list[tuple[str, IntArray]] = []
    for weighted in pod.preferred_affinity:
        per_node = _count_matching_term(snapshot, weighted.term)
        contributions.append((weighted.term.topology_key, per_node * weighted.weight))
    for weighted in pod.preferred_anti_affinity:
        per_node = _count_matching_term(snapshot, weighted.term)
        contributions.append((weighted.term.topology_key, per_node * -weighted.weight))
    for category, sign in (
        (REQUIRED_AFFINITY, 1),
        (PREFERRED_AFFINITY, 1),
        (PREFERRED_ANTI_AFFINITY, -1),
    ):
        for aggregate in snapshot.terms[category].values():
            weight = (
                profile.hard_pod_affinity_weight
                if category == REQUIRED_AFFINITY
                else (aggregate.weight)
            )
            if weight == 0:
                continue
            if snapshot.term_matches(aggregate, pod):
                contributions.append(
                    (aggregate.term.topology_key, aggregate.counts * (sign * weight))
                )
    if not contributions:
        return None
    raw = np.zeros(snapshot.capacity, dtype=np.int64)
    for key, per_node in contributions:
        raw += _occupied_domains(snapshot, key, per_node)
    scores = raw[feasible]
    lowest, highest = int(scores.min()), int(scores.max())
    spread = highest - lowest
    if spread <= 0:
        return np.zeros(len(feasible), dtype=np.int64)
    return np.trunc(100.0 * ((scores - lowest).astype(np.float64) / spread)).astype(np.int64)


class InterPodAffinity:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        codes = filter_nodes(ctx.pod, ctx.snapshot)
        return None if codes is None else CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        return score(ctx.pod, ctx.snapshot, feasible, ctx.profile)


PLUGIN: Final = InterPodAffinity()
