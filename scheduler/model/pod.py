"""The Pod as the scheduler reads it, parsed once into the fields filters and scores read often.

`parse_pod` reads the object in a fixed order — identity, resources, node selection, pod
affinity, topology spread, then what gputopo reports but does not evaluate — so of several
malformed fields the same one is always named first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import orjson

from gputopo.scheduler.model.affinity import (
    AffinityTerm,
    SpreadConstraint,
    WeightedAffinityTerm,
    parse_affinity_term,
    parse_spread_constraint,
    parse_weight,
)
from gputopo.scheduler.model.pod_resources import HostPort, parse_pod_resources
from gputopo.scheduler.model.reader import FieldReader, JsonObject
from gputopo.scheduler.model.selectors import (
    NodeSelectorTerm,
    parse_node_selector_term,
    required_node_names,
)
from gputopo.scheduler.model.tolerations import Toleration, parse_toleration


class Pod:
    """What the scheduler needs of a Pod, computed once."""

    __slots__ = (
        "annotations",
        "blockers",
        "claim_statuses",
        "has_controller",
        "host_ports",
        "key",
        "label_signature",
        "labels",
        "name",
        "namespace",
        "node_name",
        "node_selector",
        "nonzero_cpu",
        "nonzero_memory",
        "phase",
        "pod_group_name",
        "preferred_affinity",
        "preferred_anti_affinity",
        "preferred_node_affinity",
        "priority",
        "priority_class_name",
        "requests",
        "required_affinity",
        "required_anti_affinity",
        "required_node_affinity",
        "required_node_names",
        "resource_claims",
        "scheduler_name",
        "scheduling_gates",
        "spread_constraints",
        "static_key",
        "terminating",
        "tolerations",
        "uid",
        "warnings",
    )

    namespace: str
    name: str
    key: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    has_controller: bool  # an ownerReference with controller: true (something recreates it)
    label_signature: tuple[tuple[str, str], ...]
    node_name: str
    phase: str
    terminating: bool
    priority_class_name: str
    priority: int | None
    scheduler_name: str
    pod_group_name: str  # spec.schedulingGroup.podGroupName: a native (scheduling.k8s.io) gang
    requests: dict[str, int]
    nonzero_cpu: int
    nonzero_memory: int
    host_ports: tuple[HostPort, ...]
    node_selector: dict[str, str]
    required_node_affinity: tuple[NodeSelectorTerm, ...] | None
    required_node_names: frozenset[str] | None
    preferred_node_affinity: tuple[tuple[int, NodeSelectorTerm], ...]
    tolerations: tuple[Toleration, ...]
    required_affinity: tuple[AffinityTerm, ...]
    required_anti_affinity: tuple[AffinityTerm, ...]
    preferred_affinity: tuple[WeightedAffinityTerm, ...]
    preferred_anti_affinity: tuple[WeightedAffinityTerm, ...]
    spread_constraints: tuple[SpreadConstraint, ...]
    scheduling_gates: tuple[str, ...]
    warnings: tuple[str, ...]
    blockers: tuple[str, ...]
    # spec.resourceClaims: (name, resourceClaimName, resourceClaimTemplateName), "" when unset
    resource_claims: tuple[tuple[str, str, str], ...]
    # status.resourceClaimStatuses: pod claim name -> the ResourceClaim made for it
    claim_statuses: dict[str, str]
    static_key: str

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def has_affinity_terms(self) -> bool:
        return bool(
            self.required_affinity
            or self.required_anti_affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )

    def bound_to(self, node_name: str) -> Pod:
        """A copy of this pod assigned to `node_name` (what `assume` records)."""
        # Every slot spelled out: a sixth of the cost of a getattr/setattr loop, on every
        # placement (tests/unit/scheduler/test_model.py holds it to __slots__).
        copy = Pod.__new__(Pod)
        copy.annotations = self.annotations
        copy.blockers = self.blockers
        copy.claim_statuses = self.claim_statuses
        copy.has_controller = self.has_controller
        copy.host_ports = self.host_ports
        copy.key = self.key
        copy.label_signature = self.label_signature
        copy.labels = self.labels
        copy.name = self.name
        copy.namespace = self.namespace
        copy.node_name = node_name
        copy.node_selector = self.node_selector
        copy.nonzero_cpu = self.nonzero_cpu
        copy.nonzero_memory = self.nonzero_memory
        copy.phase = self.phase
        copy.pod_group_name = self.pod_group_name
        copy.preferred_affinity = self.preferred_affinity
        copy.preferred_anti_affinity = self.preferred_anti_affinity
        copy.preferred_node_affinity = self.preferred_node_affinity
        copy.priority = self.priority
        copy.priority_class_name = self.priority_class_name
        copy.requests = self.requests
        copy.required_affinity = self.required_affinity
        copy.required_anti_affinity = self.required_anti_affinity
        copy.required_node_affinity = self.required_node_affinity
        copy.required_node_names = self.required_node_names
        copy.resource_claims = self.resource_claims
        copy.scheduler_name = self.scheduler_name
        copy.scheduling_gates = self.scheduling_gates
        copy.spread_constraints = self.spread_constraints
        copy.static_key = self.static_key
        copy.terminating = self.terminating
        copy.tolerations = self.tolerations
        copy.uid = self.uid
        copy.warnings = self.warnings
        return copy

    def __repr__(self) -> str:
        return f"Pod({self.key} on {self.node_name or '-'})"


def parse_pod(obj: JsonObject) -> Pod:
    """Parse a Pod dict. Raises SchedulerInputError naming `Pod ns/name` and the field."""
    where = FieldReader("Pod", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    spec = where.mapping(obj, "spec", "spec")
    status = where.mapping(obj, "status", "status")
    pod = Pod.__new__(Pod)
    _read_identity(pod, where, meta, spec, status)

    resources = parse_pod_resources(where, spec)
    pod.requests = resources.requests
    pod.nonzero_cpu = resources.nonzero_cpu
    pod.nonzero_memory = resources.nonzero_memory
    pod.host_ports = resources.host_ports

    affinity = where.mapping(spec, "affinity", "spec.affinity")
    node_affinity = where.mapping(affinity, "nodeAffinity", "spec.affinity.nodeAffinity")
    static = [
        pod.node_name,
        spec.get("nodeSelector"),
        affinity.get("nodeAffinity"),
        spec.get("tolerations"),
    ]
    try:
        static_key = orjson.dumps(static, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # not JSON orjson writes (a number as a key): the parse below decides
        static_key = None
    parsed = _STATIC_PARSED.get(static_key) if static_key is not None else None
    if parsed is None:
        parsed = (
            where.string_map(spec, "nodeSelector", "spec.nodeSelector"),
            _required_node_affinity(where, node_affinity),
            _preferred_node_affinity(where, node_affinity),
            _tolerations(where, spec),
        )
        if static_key is not None:
            if len(_STATIC_PARSED) >= _STATIC_PARSED_LIMIT:
                _STATIC_PARSED.clear()
            _STATIC_PARSED[static_key] = parsed
    (
        pod.node_selector,
        pod.required_node_affinity,
        pod.preferred_node_affinity,
        pod.tolerations,
    ) = parsed
    pod.required_node_names = required_node_names(pod.required_node_affinity)

    pod.required_affinity, pod.preferred_affinity = _pod_affinity(
        where, affinity, "podAffinity", pod.namespace, pod.labels
    )
    pod.required_anti_affinity, pod.preferred_anti_affinity = _pod_affinity(
        where, affinity, "podAntiAffinity", pod.namespace, pod.labels
    )
    pod.spread_constraints = _spread_constraints(where, spec, pod.labels)

    pod.scheduling_gates = _scheduling_gates(where, spec)
    pod.blockers = ()
    pod.resource_claims = _resource_claims(where, spec)
    pod.claim_statuses = _claim_statuses(where, status)
    pod.warnings = _volume_warnings(where, spec)
    # What orjson refuses and the parse let through (a YAML number as a selector key), keyed
    # the standard library's way, apart from orjson's keys (its prefix is never JSON's).
    pod.static_key = static_key if static_key is not None else "json:" + _STATIC_KEY.encode(static)
    return pod


# The static key: orjson (the scheduler extra's) writes it in about a fifth of the standard
# library's time; the fallback keeps one encoder (`json.dumps` with options builds one per call).
_STATIC_KEY: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# What the static key's fields parse to (node selector, required and preferred node affinity,
# tolerations), per static key: the pods of one controller share them, and parsing two
# tolerations took 40 % of a pod's parse. Immutable values (tuples; the selector dict is never
# written, as `Pod.bound_to` shares it too), so pods share them.
_STATIC_PARSED: dict[
    str,
    tuple[
        dict[str, str],
        tuple[NodeSelectorTerm, ...] | None,
        tuple[tuple[int, NodeSelectorTerm], ...],
        tuple[Toleration, ...],
    ],
] = {}
_STATIC_PARSED_LIMIT: Final = 1024


def _read_identity(
    pod: Pod, where: FieldReader, meta: JsonObject, spec: JsonObject, status: JsonObject
) -> None:
    """Name, namespace, labels, phase, priority: what says which pod this is and where it is."""
    pod.name = where.string(meta, "name", "metadata.name")
    if not pod.name:
        raise where.error("metadata.name", "must be set")
    pod.namespace = where.string(meta, "namespace", "metadata.namespace") or "default"
    pod.key = f"{pod.namespace}/{pod.name}"
    pod.uid = where.string(meta, "uid", "metadata.uid") or pod.key
    pod.labels = where.string_map(meta, "labels", "metadata.labels")
    pod.label_signature = tuple(sorted(pod.labels.items()))
    pod.annotations = where.string_map(meta, "annotations", "metadata.annotations")
    pod.terminating = meta.get("deletionTimestamp") is not None
    owners = where.sequence(meta, "ownerReferences", "metadata.ownerReferences")
    pod.has_controller = any(
        isinstance(owner, Mapping) and owner.get("controller") is True for owner in owners
    )
    pod.node_name = where.string(spec, "nodeName", "spec.nodeName")
    pod.phase = where.string(status, "phase", "status.phase")
    pod.priority_class_name = where.string(spec, "priorityClassName", "spec.priorityClassName")
    pod.priority = where.integer(spec, "priority", "spec.priority")
    pod.scheduler_name = where.string(spec, "schedulerName", "spec.schedulerName")
    group = where.mapping(spec, "schedulingGroup", "spec.schedulingGroup")
    pod.pod_group_name = where.string(group, "podGroupName", "spec.schedulingGroup.podGroupName")


def _required_node_affinity(
    where: FieldReader, node_affinity: JsonObject
) -> tuple[NodeSelectorTerm, ...] | None:
    """The required node selector terms (ORed); None when there is no required node affinity."""
    path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    if not isinstance(required, Mapping):
        raise where.error(path, "expected an object")
    terms = where.sequence(required, "nodeSelectorTerms", f"{path}.nodeSelectorTerms")
    return tuple(
        parse_node_selector_term(
            where,
            where.object_at(terms, i, f"{path}.nodeSelectorTerms"),
            f"{path}.nodeSelectorTerms[{i}]",
        )
        for i in range(len(terms))
    )


def _preferred_node_affinity(
    where: FieldReader, node_affinity: JsonObject
) -> tuple[tuple[int, NodeSelectorTerm], ...]:
    path = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
    preferred = where.sequence(
        node_affinity, "preferredDuringSchedulingIgnoredDuringExecution", path
    )
    weighted: list[tuple[int, NodeSelectorTerm]] = []
    for i in range(len(preferred)):
        item = where.object_at(preferred, i, path)
        weight = parse_weight(where, item, f"{path}[{i}].weight")
        preference = where.mapping(item, "preference", f"{path}[{i}].preference")
        weighted.append(
            (weight, parse_node_selector_term(where, preference, f"{path}[{i}].preference"))
        )
    return tuple(weighted)


def _tolerations(where: FieldReader, spec: JsonObject) -> tuple[Toleration, ...]:
    tolerations = where.sequence(spec, "tolerations", "spec.tolerations")
    return tuple(
        parse_toleration(
            where, where.object_at(tolerations, i, "spec.tolerations"), f"spec.tolerations[{i}]"
        )
        for i in range(len(tolerations))
    )


def _pod_affinity(
    where: FieldReader,
    affinity: JsonObject,
    kind: str,
    namespace: str,
    pod_labels: Mapping[str, str],
) -> tuple[tuple[AffinityTerm, ...], tuple[WeightedAffinityTerm, ...]]:
    """The required and the preferred terms of `podAffinity` or `podAntiAffinity` (``kind``)."""
    section = where.mapping(affinity, kind, f"spec.affinity.{kind}")
    path = f"spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution"
    items = where.sequence(section, "requiredDuringSchedulingIgnoredDuringExecution", path)
    required = tuple(
        parse_affinity_term(
            where, where.object_at(items, i, path), f"{path}[{i}]", namespace, pod_labels
        )
        for i in range(len(items))
    )
    path = f"spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution"
    items = where.sequence(section, "preferredDuringSchedulingIgnoredDuringExecution", path)
    preferred: list[WeightedAffinityTerm] = []
    for i in range(len(items)):
        item = where.object_at(items, i, path)
        weight = parse_weight(where, item, f"{path}[{i}].weight")
        term_raw = where.mapping(item, "podAffinityTerm", f"{path}[{i}].podAffinityTerm")
        term = parse_affinity_term(
            where, term_raw, f"{path}[{i}].podAffinityTerm", namespace, pod_labels
        )
        preferred.append(WeightedAffinityTerm(weight, term))
    return required, tuple(preferred)


def _spread_constraints(
    where: FieldReader, spec: JsonObject, pod_labels: Mapping[str, str]
) -> tuple[SpreadConstraint, ...]:
    constraints = where.sequence(
        spec, "topologySpreadConstraints", "spec.topologySpreadConstraints"
    )
    return tuple(
        parse_spread_constraint(
            where,
            where.object_at(constraints, i, "spec.topologySpreadConstraints"),
            f"spec.topologySpreadConstraints[{i}]",
            pod_labels,
        )
        for i in range(len(constraints))
    )


def _scheduling_gates(where: FieldReader, spec: JsonObject) -> tuple[str, ...]:
    gates = where.sequence(spec, "schedulingGates", "spec.schedulingGates")
    names: list[str] = []
    for i in range(len(gates)):
        gate = where.object_at(gates, i, "spec.schedulingGates")
        names.append(where.string(gate, "name", f"spec.schedulingGates[{i}].name"))
    return tuple(names)


def _resource_claims(where: FieldReader, spec: JsonObject) -> tuple[tuple[str, str, str], ...]:
    """DRA claims the pod names; allocating them is the DynamicResources plugin's work."""
    claims = where.sequence(spec, "resourceClaims", "spec.resourceClaims")
    found = []
    for i in range(len(claims)):
        claim = where.object_at(claims, i, "spec.resourceClaims")
        path = f"spec.resourceClaims[{i}]"
        name = where.string(claim, "name", f"{path}.name")
        if not name:
            raise where.error(f"{path}.name", "must be set")
        claim_name = where.string(claim, "resourceClaimName", f"{path}.resourceClaimName")
        template = where.string(
            claim, "resourceClaimTemplateName", f"{path}.resourceClaimTemplateName"
        )
        if bool(claim_name) == bool(template):
            raise where.error(
                path, "exactly one of resourceClaimName and resourceClaimTemplateName must be set"
            )
        found.append((name, claim_name, template))
    return tuple(found)


def _claim_statuses(where: FieldReader, status: JsonObject) -> dict[str, str]:
    statuses = where.sequence(status, "resourceClaimStatuses", "status.resourceClaimStatuses")
    found: dict[str, str] = {}
    for i in range(len(statuses)):
        entry = where.object_at(statuses, i, "status.resourceClaimStatuses")
        path = f"status.resourceClaimStatuses[{i}]"
        claim_name = where.string(entry, "resourceClaimName", f"{path}.resourceClaimName")
        if claim_name:
            found[where.string(entry, "name", f"{path}.name")] = claim_name
    return found


def _volume_warnings(where: FieldReader, spec: JsonObject) -> tuple[str, ...]:
    """Volume checks gputopo does not evaluate: the pod is placed, with a warning that says so."""
    warnings: list[str] = []
    volumes = where.sequence(spec, "volumes", "spec.volumes")
    for i in range(len(volumes)):
        volume = where.object_at(volumes, i, "spec.volumes")
        name = where.string(volume, "name", f"spec.volumes[{i}].name")
        if "persistentVolumeClaim" in volume or "ephemeral" in volume:
            warnings.append(
                f"volume {name!r}: PersistentVolumeClaim binding, volume topology and attach "
                "limits are not evaluated (VolumeBinding, VolumeZone, NodeVolumeLimits)"
            )
        elif "csi" in volume:
            warnings.append(
                f"volume {name!r}: CSI attach limits are not evaluated (NodeVolumeLimits)"
            )
    return tuple(warnings)
