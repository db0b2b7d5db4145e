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


def _term_domain_sums(snapshot: ClusterSnapshot, term: AffinityTerm) -> IntArray:
    """Per topology domain of the term's key, the assigned pods the term selects (with a
    trailing 0 for nodes without the key: see `ClusterSnapshot.domain_sums`)."""
    total: IntArray | None = None
    for namespace in snapshot.term_namespaces(term):
        counted = snapshot.selector_count(namespace, term.selector)
        sums = snapshot.domain_sums(term.topology_key, counted)
        total = sums if total is None else total + sums
    if total is None:
        return np.zeros(len(snapshot.topology(term.topology_key).values) + 1, dtype=np.int64)
    return total


def _occupied(snapshot: ClusterSnapshot, key: str, sums: IntArray) -> BoolArray:
    """Per node slot, whether its domain of ``key`` holds any of ``sums`` (per domain)."""
    occupied: BoolArray = sums[snapshot.topology(key).domain] > 0
    return occupied


def _existing_anti_affinity_blocks(pod: Pod, snapshot: ClusterSnapshot) -> BoolArray | None:
    if not snapshot.terms[REQUIRED_ANTI_AFFINITY]:
        return None
    blocked: BoolArray | None = None
    for aggregate in snapshot.matching_terms(REQUIRED_ANTI_AFFINITY, pod):
        key = aggregate.term.topology_key
        hit = _occupied(snapshot, key, snapshot.domain_sums(key, aggregate))
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
        np.putmask(reasons, ~satisfied, AFFINITY)
    if pod.required_anti_affinity:
        blocked = np.zeros(snapshot.capacity, dtype=np.bool_)
        for term in pod.required_anti_affinity:
            blocked |= _occupied(snapshot, term.topology_key, _term_domain_sums(snapshot, term))
        np.putmask(reasons, (reasons == 0) & blocked, ANTI_AFFINITY)
    if existing is not None:
        np.putmask(reasons, (reasons == 0) & existing, EXISTING_ANTI_AFFINITY)
    reasons *= snapshot.alive  # free slots pass (this and putmask: a third of a mask write)
    return reasons


def score(
    pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, profile: SchedulerProfile
) -> IntArray | None:
    """Min-max normalised preferred (anti-)affinity, both directions; None when nothing applies.

    Every contribution is summed per topology domain (kept with the counts it sums) and read
    only for the feasible nodes, so the cost follows the domains and the nodes scored, not the
    cluster's size."""
    per_key: dict[str, IntArray] = {}

    def add(key: str, sums: IntArray, weight: int) -> None:
        weighted = sums * weight
        known = per_key.get(key)
        per_key[key] = weighted if known is None else known + weighted

    for weighted_term in pod.preferred_affinity:
        term = weighted_term.term
        add(term.topology_key, _term_domain_sums(snapshot, term), weighted_term.weight)
    for weighted_term in pod.preferred_anti_affinity:
        term = weighted_term.term
        add(term.topology_key, _term_domain_sums(snapshot, term), -weighted_term.weight)
    for category, sign in (
        (REQUIRED_AFFINITY, 1),
        (PREFERRED_AFFINITY, 1),
        (PREFERRED_ANTI_AFFINITY, -1),
    ):
        if not snapshot.terms[category]:
            continue
        for aggregate in snapshot.matching_terms(category, pod):
            weight = (
                profile.hard_pod_affinity_weight
                if category == REQUIRED_AFFINITY
                else aggregate.weight
            )
            if weight == 0:
                continue
            key = aggregate.term.topology_key
            add(key, snapshot.domain_sums(key, aggregate), sign * weight)
    if not per_key:
        return None
    if len(per_key) > 1:
        scores = np.zeros(len(feasible), dtype=np.int64)
        for key, sums in per_key.items():
            scores += sums[snapshot.topology(key).domain[feasible]]
        return _min_max(scores)
    # One topology key (the usual case): each node scores its domain's sum.
    ((key, sums),) = per_key.items()
    domains = snapshot.topology(key).domain[feasible]
    if len(sums) > len(feasible):  # more domains than nodes (hostname): per node
        return _min_max(sums[domains])
    # Min and max over the nodes, then the same arithmetic per domain (zones: a handful).
    normalised = _min_max(sums, sums[domains])
    return normalised[domains]


def _min_max(values: IntArray, over: IntArray | None = None) -> IntArray:
    """``values`` scaled to 0..100 between the minimum and maximum of ``over`` (default
    ``values``), truncated; all 0 when those are equal."""
    seen = values if over is None else over
    lowest, highest = int(seen.min()), int(seen.max())
    spread = highest - lowest
    if spread <= 0:
        return np.zeros(len(values), dtype=np.int64)
    return np.trunc(100.0 * ((values - lowest).astype(np.float64) / spread)).astype(np.int64)


class InterPodAffinity:
    name: Final = NAME

    def filter(self, ctx: CycleContext) -> CodedVerdict | None:
        codes = filter_nodes(ctx.pod, ctx.snapshot)
        return None if codes is None else CodedVerdict(codes, _VERDICT_REASONS)

    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        return score(ctx.pod, ctx.snapshot, feasible, ctx.profile)


PLUGIN: Final = InterPodAffinity()
