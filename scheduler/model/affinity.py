"""Pod (anti-)affinity terms and topology spread constraints, with the API server's defaulting.

`matchLabelKeys`/`mismatchLabelKeys` are merged into the label selector here, as the API server
does on admission (simulate's input never went through one).
"""

from __future__ import annotations

from collections.abc import Mapping

from gputopo.scheduler.model.reader import FieldReader, JsonObject
from gputopo.scheduler.model.selectors import LabelSelector, Requirement, parse_label_selector


class AffinityTerm:
    """A pod (anti-)affinity term with its namespaces resolved the way kube-scheduler does.

    No `namespaces` and no `namespaceSelector` means the owning pod's namespace; a
    `namespaceSelector` is matched against Namespace labels (an empty one matches all).
    """

    __slots__ = ("namespace_selector", "namespaces", "selector", "signature", "topology_key")

    def __init__(
        self,
        selector: LabelSelector,
        namespaces: frozenset[str],
        namespace_selector: LabelSelector,
        topology_key: str,
    ) -> None:
        self.selector = selector
        self.namespaces = namespaces
        self.namespace_selector = namespace_selector
        self.topology_key = topology_key
        self.signature = (
            selector.signature,
            tuple(sorted(namespaces)),
            namespace_selector.signature,
            topology_key,
        )

    def matches_namespace(self, namespace: str, namespace_labels: Mapping[str, str]) -> bool:
        return namespace in self.namespaces or self.namespace_selector.matches(namespace_labels)

    def matches(
        self, namespace: str, labels: Mapping[str, str], namespace_labels: Mapping[str, str]
    ) -> bool:
        return self.matches_namespace(namespace, namespace_labels) and self.selector.matches(labels)


class WeightedAffinityTerm:
    __slots__ = ("term", "weight")

    def __init__(self, weight: int, term: AffinityTerm) -> None:
        self.weight = weight
        self.term = term


class SpreadConstraint:
    __slots__ = (
        "do_not_schedule",
        "honor_node_affinity",
        "honor_node_taints",
        "max_skew",
        "min_domains",
        "selector",
        "topology_key",
    )

    def __init__(
        self,
        max_skew: int,
        topology_key: str,
        do_not_schedule: bool,
        selector: LabelSelector,
        min_domains: int,
        honor_node_affinity: bool,
        honor_node_taints: bool,
    ) -> None:
        self.max_skew = max_skew
        self.topology_key = topology_key
        self.do_not_schedule = do_not_schedule
        self.selector = selector
        self.min_domains = min_domains
        self.honor_node_affinity = honor_node_affinity
        self.honor_node_taints = honor_node_taints


def label_key_requirements(
    where: FieldReader, raw: JsonObject, key: str, path: str, op: str, pod_labels: Mapping[str, str]
) -> list[Requirement]:
    out: list[Requirement] = []
    for label_key in where.strings(raw, key, path):
        if label_key in pod_labels:
            out.append(Requirement(label_key, op, frozenset({pod_labels[label_key]}), None))
    return out


def parse_affinity_term(
    where: FieldReader, raw: JsonObject, path: str, namespace: str, pod_labels: Mapping[str, str]
) -> AffinityTerm:
    topology_key = where.string(raw, "topologyKey", f"{path}.topologyKey")
    if not topology_key:
        raise where.error(f"{path}.topologyKey", "must be set")
    selector = parse_label_selector(where, raw.get("labelSelector"), f"{path}.labelSelector")
    selector = selector.with_requirements(
        label_key_requirements(
            where, raw, "matchLabelKeys", f"{path}.matchLabelKeys", "In", pod_labels
        )
        + label_key_requirements(
            where, raw, "mismatchLabelKeys", f"{path}.mismatchLabelKeys", "NotIn", pod_labels
        )
    )
    namespaces = frozenset(where.strings(raw, "namespaces", f"{path}.namespaces"))
    raw_ns_selector = raw.get("namespaceSelector")
    ns_selector = parse_label_selector(where, raw_ns_selector, f"{path}.namespaceSelector")
    if not namespaces and raw_ns_selector is None:
        namespaces = frozenset({namespace})
    return AffinityTerm(selector, namespaces, ns_selector, topology_key)


def parse_spread_constraint(
    where: FieldReader, raw: JsonObject, path: str, pod_labels: Mapping[str, str]
) -> SpreadConstraint:
    max_skew = where.integer(raw, "maxSkew", f"{path}.maxSkew")
    if max_skew is None or max_skew <= 0:
        raise where.error(f"{path}.maxSkew", "must be an integer greater than 0")
    topology_key = where.string(raw, "topologyKey", f"{path}.topologyKey")
    if not topology_key:
        raise where.error(f"{path}.topologyKey", "must be set")
    when = where.string(raw, "whenUnsatisfiable", f"{path}.whenUnsatisfiable")
    if when not in ("DoNotSchedule", "ScheduleAnyway"):
        raise where.error(
            f"{path}.whenUnsatisfiable",
            f"expected DoNotSchedule or ScheduleAnyway, got {when!r}",
        )
    min_domains = where.integer(raw, "minDomains", f"{path}.minDomains")
    if min_domains is not None:
        if min_domains <= 0:
            raise where.error(f"{path}.minDomains", "must be greater than 0")
        if when != "DoNotSchedule":
            raise where.error(
                f"{path}.minDomains", "can only be set with whenUnsatisfiable: DoNotSchedule"
            )
    policies: list[bool] = []
    for field, default in (("nodeAffinityPolicy", "Honor"), ("nodeTaintsPolicy", "Ignore")):
        policy = where.string(raw, field, f"{path}.{field}", default)
        if policy not in ("Honor", "Ignore"):
            raise where.error(f"{path}.{field}", f"expected Honor or Ignore, got {policy!r}")
        policies.append(policy == "Honor")
    selector = parse_label_selector(where, raw.get("labelSelector"), f"{path}.labelSelector")
    selector = selector.with_requirements(
        label_key_requirements(
            where, raw, "matchLabelKeys", f"{path}.matchLabelKeys", "In", pod_labels
        )
    )
    return SpreadConstraint(
        max_skew,
        topology_key,
        when == "DoNotSchedule",
        selector,
        min_domains or 1,
        policies[0],
        policies[1],
    )


def parse_weight(where: FieldReader, raw: JsonObject, path: str) -> int:
    weight = where.integer(raw, "weight", path)
    if weight is None or not 1 <= weight <= 100:
        raise where.error(path, "must be an integer in 1..100")
    return weight
