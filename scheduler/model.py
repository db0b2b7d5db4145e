"""Typed, slotted forms of the Kubernetes objects the scheduler reads.

Objects arrive as plain Kubernetes JSON dicts (camelCase keys, as from YAML or the API). They are
parsed once, here, into small structures the filters and scores read many times; malformed input
raises `SchedulerInputError` naming the object (`Pod ns/name`) and the field.

Defaulting the API server would have applied is applied here too, because simulate's input never
went through an API server: container requests default to limits, `hostNetwork` ports become host
ports, affinity `matchLabelKeys`/`mismatchLabelKeys` are merged into the label selector, and every
Namespace carries `kubernetes.io/metadata.name`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.quantity import CPU, MEMORY, PODS, resource_amount

JsonObject = Mapping[str, Any]

# Effects and operators, spelled as in the API.
NO_SCHEDULE: Final = "NoSchedule"
PREFER_NO_SCHEDULE: Final = "PreferNoSchedule"
NO_EXECUTE: Final = "NoExecute"
TAINT_EFFECTS: Final = frozenset({NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE})

LABEL_HOSTNAME: Final = "kubernetes.io/hostname"
LABEL_NAMESPACE_NAME: Final = "kubernetes.io/metadata.name"
TAINT_NODE_UNSCHEDULABLE: Final = "node.kubernetes.io/unschedulable"

# kube-scheduler's defaults for containers that request nothing (used by scores only).
DEFAULT_MILLI_CPU_REQUEST: Final = 100
DEFAULT_MEMORY_REQUEST: Final = 200 * 1024 * 1024

BUILTIN_PRIORITY_CLASSES: Final = {
    "system-cluster-critical": 2_000_000_000,
    "system-node-critical": 2_000_001_000,
}

_INT64 = re.compile(r"^[+-]?[0-9]+$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_int64(text: str) -> int | None:
    """Go's `strconv.ParseInt(s, 10, 64)`: the integer, or None where Go returns an error."""
    if not _INT64.match(text):
        return None
    value = int(text)
    if value < _INT64_MIN or value > _INT64_MAX:
        return None
    return value


class _Where:
    """Names the object being parsed, so every error is one line that says what and where."""

    __slots__ = ("ref",)

    def __init__(self, kind: str, obj: JsonObject) -> None:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
        shown = name if isinstance(name, str) and name else "<unnamed>"
        if kind == "Pod":
            shown = (
                f"{namespace if isinstance(namespace, str) and namespace else 'default'}/{shown}"
            )
        self.ref = f"{kind} {shown}"

    def error(self, path: str, problem: str) -> SchedulerInputError:
        return SchedulerInputError(f"{self.ref}: {path}: {problem}")

    def mapping(self, obj: JsonObject, key: str, path: str) -> JsonObject:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected an object, got {type(value).__name__}")
        return value

    def sequence(self, obj: JsonObject, key: str, path: str) -> Sequence[Any]:
        value = obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, obj: JsonObject, key: str, path: str, default: str = "") -> str:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def integer(self, obj: JsonObject, key: str, path: str) -> int | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {type(value).__name__} {value!r}")
        return value

    def object_at(self, items: Sequence[Any], index: int, path: str) -> JsonObject:
        item = items[index]
        if not isinstance(item, Mapping):
            raise self.error(f"{path}[{index}]", f"expected an object, got {type(item).__name__}")
        return item

    def string_map(self, obj: JsonObject, key: str, path: str) -> dict[str, str]:
        raw = self.mapping(obj, key, path)
        out: dict[str, str] = {}
        for k, v in raw.items():
            if not isinstance(v, str):
                raise self.error(
                    f"{path}[{k!r}]",
                    f"expected a string, got {type(v).__name__} {v!r} (quote it in YAML)",
                )
            out[str(k)] = v
        return out

    def strings(self, obj: JsonObject, key: str, path: str) -> tuple[str, ...]:
        items = self.sequence(obj, key, path)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{path}[{i}]", f"expected a string, got {type(item).__name__}")
        return tuple(items)

    def resources(self, obj: JsonObject, key: str, path: str) -> dict[str, int]:
        raw = self.mapping(obj, key, path)
        out: dict[str, int] = {}
        for name, text in raw.items():
            try:
                amount = resource_amount(str(name), text)
            except ValueError as exc:
                raise self.error(f"{path}.{name}", str(exc)) from None
            if amount < 0:
                raise self.error(f"{path}.{name}", f"must be non-negative, got {text!r}")
            out[str(name)] = amount
        return out


# --------------------------------------------------------------------------------------------
# Label selectors and node selectors


class Requirement:
    """One `key op values` requirement of a label or node selector."""

    __slots__ = ("int_value", "key", "op", "values")

    def __init__(self, key: str, op: str, values: frozenset[str], int_value: int | None) -> None:
        self.key = key
        self.op = op
        self.values = values
        self.int_value = int_value

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "In":
            value = labels.get(self.key)
            return value is not None and value in self.values
        if op == "NotIn":
            value = labels.get(self.key)
            return value is None or value not in self.values
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        # Gt / Lt: both sides must parse as integers, otherwise the requirement never matches.
        raw = labels.get(self.key)
        if raw is None or self.int_value is None:
            return False
        label_value = parse_int64(raw)
        if label_value is None:
            return False
        return label_value > self.int_value if op == "Gt" else label_value < self.int_value

    def signature(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.key, self.op, tuple(sorted(self.values)))


class LabelSelector:
    """`metav1.LabelSelector`. A missing selector matches nothing; an empty one matches all."""

    __slots__ = ("nothing", "requirements", "signature")

    def __init__(self, requirements: tuple[Requirement, ...], nothing: bool = False) -> None:
        self.requirements = requirements
        self.nothing = nothing
        self.signature: tuple[object, ...] = (
            ("nothing",) if nothing else tuple(sorted(r.signature() for r in requirements))
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(requirement.matches(labels) for requirement in self.requirements)

    def with_requirements(self, extra: Sequence[Requirement]) -> LabelSelector:
        if self.nothing or not extra:
            return self
        return LabelSelector(self.requirements + tuple(extra))


MATCH_NOTHING: Final = LabelSelector((), nothing=True)
MATCH_EVERYTHING: Final = LabelSelector(())

_LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_NODE_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})


def _requirement(
    where: _Where, raw: JsonObject, path: str, operators: frozenset[str]
) -> tuple[Requirement, bool]:
    """Parse one requirement; the flag says whether it is well-formed (Gt/Lt with an integer)."""
    key = where.string(raw, "key", f"{path}.key")
    if not key:
        raise where.error(f"{path}.key", "must be set")
    op = where.string(raw, "operator", f"{path}.operator")
    if op not in operators:
        raise where.error(
            f"{path}.operator", f"unknown operator {op!r}, expected one of {sorted(operators)}"
        )
    values = where.strings(raw, "values", f"{path}.values")
    if op in ("In", "NotIn") and not values:
        raise where.error(f"{path}.values", f"must be non-empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and values:
        raise where.error(f"{path}.values", f"must be empty for operator {op}")
    int_value: int | None = None
    well_formed = True
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            raise where.error(f"{path}.values", f"must have exactly one value for operator {op}")
        int_value = parse_int64(values[0])
        well_formed = int_value is not None
    return Requirement(key, op, frozenset(values), int_value), well_formed


def parse_label_selector(where: _Where, raw: object, path: str) -> LabelSelector:
    if raw is None:
        return MATCH_NOTHING
    if not isinstance(raw, Mapping):
        raise where.error(path, f"expected an object, got {type(raw).__name__}")
    requirements: list[Requirement] = []
    for key, value in sorted(where.string_map(raw, "matchLabels", f"{path}.matchLabels").items()):
        requirements.append(Requirement(key, "In", frozenset({value}), None))
    expressions = where.sequence(raw, "matchExpressions", f"{path}.matchExpressions")
    for i in range(len(expressions)):
        item = where.object_at(expressions, i, f"{path}.matchExpressions")
        req, _ = _requirement(where, item, f"{path}.matchExpressions[{i}]", _LABEL_OPERATORS)
        requirements.append(req)
    return LabelSelector(tuple(requirements))


class NodeSelectorTerm:
    """One `nodeSelectorTerms` entry: expressions and fields ANDed; an empty term matches nothing.

    A term with a malformed Gt/Lt value never matches (kube-scheduler skips it the same way).
    """

    __slots__ = ("expressions", "fields", "valid")

    def __init__(
        self, expressions: tuple[Requirement, ...], fields: tuple[Requirement, ...], valid: bool
    ) -> None:
        self.expressions = expressions
        self.fields = fields
        self.valid = valid and bool(expressions or fields)

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        if not self.valid:
            return False
        for requirement in self.expressions:
            if not requirement.matches(labels):
                return False
        if self.fields:
            fields = {"metadata.name": node_name}
            for requirement in self.fields:
                if not requirement.matches(fields):
                    return False
        return True


def _node_selector_term(where: _Where, raw: JsonObject, path: str) -> NodeSelectorTerm:
    valid = True
    expressions: list[Requirement] = []
    items = where.sequence(raw, "matchExpressions", f"{path}.matchExpressions")
    for i in range(len(items)):
        item = where.object_at(items, i, f"{path}.matchExpressions")
        req, ok = _requirement(where, item, f"{path}.matchExpressions[{i}]", _NODE_OPERATORS)
        expressions.append(req)
        valid = valid and ok
    fields: list[Requirement] = []
    items = where.sequence(raw, "matchFields", f"{path}.matchFields")
    for i in range(len(items)):
        item = where.object_at(items, i, f"{path}.matchFields")
        req, ok = _requirement(where, item, f"{path}.matchFields[{i}]", frozenset({"In", "NotIn"}))
        if req.key != "metadata.name":
            raise where.error(
                f"{path}.matchFields[{i}].key", f"only metadata.name is supported, got {req.key!r}"
            )
        fields.append(req)
        valid = valid and ok
    return NodeSelectorTerm(tuple(expressions), tuple(fields), valid)


# --------------------------------------------------------------------------------------------
# Taints and tolerations


class Taint:
    __slots__ = ("effect", "key", "value")

    def __init__(self, key: str, value: str, effect: str) -> None:
        self.key = key
        self.value = value
        self.effect = effect

    def __repr__(self) -> str:
        return f"Taint({self.key}={self.value}:{self.effect})"


class Toleration:
    """`v1.Toleration` with `ToleratesTaint` exactly as k8s.io/api implements it.

    Including KEP-5471's `Gt`/`Lt`: a `Gt` toleration tolerates a taint whose value is an integer
    strictly greater than the toleration's; a non-integer on either side never tolerates.
    """

    __slots__ = ("effect", "key", "op", "value", "value_int")

    def __init__(self, key: str, op: str, value: str, effect: str) -> None:
        self.key = key
        self.op = op
        self.value = value
        self.effect = effect
        self.value_int = parse_int64(value) if op in ("Gt", "Lt") else None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        op = self.op
        if op in ("", "Equal"):
            return self.value == taint.value
        if op == "Exists":
            return True
        if self.value_int is None:
            return False
        taint_value = parse_int64(taint.value)
        if taint_value is None:
            return False
        return taint_value > self.value_int if op == "Gt" else taint_value < self.value_int

    def signature(self) -> tuple[str, str, str, str]:
        return (self.key, self.op, self.value, self.effect)


def tolerated(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    return any(toleration.tolerates(taint) for toleration in tolerations)


def _taint(where: _Where, raw: JsonObject, path: str) -> Taint:
    key = where.string(raw, "key", f"{path}.key")
    if not key:
        raise where.error(f"{path}.key", "must be set")
    effect = where.string(raw, "effect", f"{path}.effect")
    if effect not in TAINT_EFFECTS:
        raise where.error(
            f"{path}.effect", f"unknown effect {effect!r}, expected one of {sorted(TAINT_EFFECTS)}"
        )
    return Taint(key, where.string(raw, "value", f"{path}.value"), effect)


_TOLERATION_OPERATORS = frozenset({"", "Equal", "Exists", "Gt", "Lt"})


def _toleration(where: _Where, raw: JsonObject, path: str) -> Toleration:
    key = where.string(raw, "key", f"{path}.key")
    op = where.string(raw, "operator", f"{path}.operator")
    if op not in _TOLERATION_OPERATORS:
        raise where.error(
            f"{path}.operator", f"unknown operator {op!r}, expected Equal, Exists, Gt or Lt"
        )
    value = raw.get("value", "")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise where.error(f"{path}.value", f"expected a string, got {type(value).__name__}")
    value = str(value)
    effect = where.string(raw, "effect", f"{path}.effect")
    if effect and effect not in TAINT_EFFECTS:
        raise where.error(f"{path}.effect", f"unknown effect {effect!r}")
    if not key and op != "Exists":
        raise where.error(f"{path}.operator", "must be Exists when key is empty")
    if op == "Exists" and value:
        raise where.error(f"{path}.value", "must be empty when operator is Exists")
    return Toleration(key, op, value, effect)


# --------------------------------------------------------------------------------------------
# Pod affinity and topology spread


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


def _label_key_requirements(
    where: _Where, raw: JsonObject, key: str, path: str, op: str, pod_labels: Mapping[str, str]
) -> list[Requirement]:
    out: list[Requirement] = []
    for label_key in where.strings(raw, key, path):
        if label_key in pod_labels:
            out.append(Requirement(label_key, op, frozenset({pod_labels[label_key]}), None))
    return out


def _affinity_term(
    where: _Where, raw: JsonObject, path: str, namespace: str, pod_labels: Mapping[str, str]
) -> AffinityTerm:
    topology_key = where.string(raw, "topologyKey", f"{path}.topologyKey")
    if not topology_key:
        raise where.error(f"{path}.topologyKey", "must be set")
    selector = parse_label_selector(where, raw.get("labelSelector"), f"{path}.labelSelector")
    selector = selector.with_requirements(
        _label_key_requirements(
            where, raw, "matchLabelKeys", f"{path}.matchLabelKeys", "In", pod_labels
        )
        + _label_key_requirements(
            where, raw, "mismatchLabelKeys", f"{path}.mismatchLabelKeys", "NotIn", pod_labels
        )
    )
    namespaces = frozenset(where.strings(raw, "namespaces", f"{path}.namespaces"))
    raw_ns_selector = raw.get("namespaceSelector")
    ns_selector = parse_label_selector(where, raw_ns_selector, f"{path}.namespaceSelector")
    if not namespaces and raw_ns_selector is None:
        namespaces = frozenset({namespace})
    return AffinityTerm(selector, namespaces, ns_selector, topology_key)


def _spread_constraint(
    where: _Where, raw: JsonObject, path: str, pod_labels: Mapping[str, str]
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
        _label_key_requirements(
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


# --------------------------------------------------------------------------------------------
# Pods


class HostPort:
    __slots__ = ("ip", "port", "protocol")

    def __init__(self, protocol: str, ip: str, port: int) -> None:
        self.protocol = protocol
        self.ip = ip
        self.port = port


class Pod:
    """What the scheduler needs of a Pod, computed once."""

    __slots__ = (
        "annotations",
        "blockers",
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
    label_signature: tuple[tuple[str, str], ...]
    node_name: str
    phase: str
    terminating: bool
    priority_class_name: str
    priority: int | None
    scheduler_name: str
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
        copy = Pod.__new__(Pod)
        for slot in Pod.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy.node_name = node_name
        return copy

    def __repr__(self) -> str:
        return f"Pod({self.key} on {self.node_name or '-'})"


def _add_into(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, 0) + amount


def _max_into(total: dict[str, int], other: Mapping[str, int]) -> None:
    for name, amount in other.items():
        if amount > total.get(name, 0):
            total[name] = amount


def _pod_requests(
    containers: Sequence[tuple[dict[str, int], bool]],
    init_containers: Sequence[tuple[dict[str, int], bool]],
    overhead: Mapping[str, int],
) -> dict[str, int]:
    """`resourcehelper.PodRequests`: max(init, sum(app)) with KEP-753 sidecars, plus overhead."""
    requests: dict[str, int] = {}
    for container_requests, _ in containers:
        _add_into(requests, container_requests)
    restartable: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for container_requests, is_sidecar in init_containers:
        if is_sidecar:
            _add_into(requests, container_requests)
            _add_into(restartable, container_requests)
            effective = dict(restartable)
        else:
            effective = dict(container_requests)
            _add_into(effective, restartable)
        _max_into(init_max, effective)
    _max_into(requests, init_max)
    _add_into(requests, overhead)
    return requests


def _with_nonzero_defaults(requests: dict[str, int]) -> dict[str, int]:
    out = dict(requests)
    out.setdefault(CPU, DEFAULT_MILLI_CPU_REQUEST)
    out.setdefault(MEMORY, DEFAULT_MEMORY_REQUEST)
    return out


def parse_pod(obj: JsonObject) -> Pod:
    """Parse a Pod dict. Raises SchedulerInputError naming `Pod ns/name` and the field."""
    where = _Where("Pod", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    spec = where.mapping(obj, "spec", "spec")
    status = where.mapping(obj, "status", "status")
    pod = Pod.__new__(Pod)
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
    pod.node_name = where.string(spec, "nodeName", "spec.nodeName")
    pod.phase = where.string(status, "phase", "status.phase")
    pod.priority_class_name = where.string(spec, "priorityClassName", "spec.priorityClassName")
    pod.priority = where.integer(spec, "priority", "spec.priority")
    pod.scheduler_name = where.string(spec, "schedulerName", "spec.schedulerName")
    warnings: list[str] = []
    blockers: list[str] = []

    # Resources.
    host_network = spec.get("hostNetwork") is True
    host_ports: list[HostPort] = []
    app: list[tuple[dict[str, int], bool]] = []
    app_nonzero: list[tuple[dict[str, int], bool]] = []
    init: list[tuple[dict[str, int], bool]] = []
    init_nonzero: list[tuple[dict[str, int], bool]] = []
    for field, into, into_nonzero in (
        ("containers", app, app_nonzero),
        ("initContainers", init, init_nonzero),
    ):
        containers = where.sequence(spec, field, f"spec.{field}")
        for i in range(len(containers)):
            path = f"spec.{field}[{i}]"
            container = where.object_at(containers, i, f"spec.{field}")
            resources = where.mapping(container, "resources", f"{path}.resources")
            requests = where.resources(resources, "requests", f"{path}.resources.requests")
            for name, amount in where.resources(
                resources, "limits", f"{path}.resources.limits"
            ).items():
                requests.setdefault(name, amount)
            restart = where.string(container, "restartPolicy", f"{path}.restartPolicy")
            if restart and (field == "containers" or restart != "Always"):
                raise where.error(f"{path}.restartPolicy", f"unsupported value {restart!r}")
            sidecar = restart == "Always"
            into.append((requests, sidecar))
            into_nonzero.append((_with_nonzero_defaults(requests), sidecar))
            if field == "containers":
                host_ports.extend(_container_ports(where, container, path, host_network))
    overhead = where.resources(spec, "overhead", "spec.overhead")
    pod.requests = _pod_requests(app, init, overhead)
    nonzero = _pod_requests(app_nonzero, init_nonzero, overhead)
    pod_level = where.mapping(spec, "resources", "spec.resources")
    if pod_level:
        level_requests = where.resources(pod_level, "requests", "spec.resources.requests")
        for name, amount in where.resources(pod_level, "limits", "spec.resources.limits").items():
            level_requests.setdefault(name, amount)
        for name, amount in level_requests.items():
            pod.requests[name] = amount + overhead.get(name, 0)
            nonzero[name] = amount + overhead.get(name, 0)
    pod.requests = {name: amount for name, amount in pod.requests.items() if amount}
    pod.nonzero_cpu = nonzero.get(CPU, 0)
    pod.nonzero_memory = nonzero.get(MEMORY, 0)
    pod.host_ports = tuple(host_ports)

    # Node selection.
    pod.node_selector = where.string_map(spec, "nodeSelector", "spec.nodeSelector")
    affinity = where.mapping(spec, "affinity", "spec.affinity")
    node_affinity = where.mapping(affinity, "nodeAffinity", "spec.affinity.nodeAffinity")
    path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        pod.required_node_affinity = None
    else:
        if not isinstance(required, Mapping):
            raise where.error(path, "expected an object")
        terms = where.sequence(required, "nodeSelectorTerms", f"{path}.nodeSelectorTerms")
        pod.required_node_affinity = tuple(
            _node_selector_term(
                where,
                where.object_at(terms, i, f"{path}.nodeSelectorTerms"),
                f"{path}.nodeSelectorTerms[{i}]",
            )
            for i in range(len(terms))
        )
    pod.required_node_names = _required_node_names(pod.required_node_affinity)
    path = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
    preferred = where.sequence(
        node_affinity, "preferredDuringSchedulingIgnoredDuringExecution", path
    )
    weighted: list[tuple[int, NodeSelectorTerm]] = []
    for i in range(len(preferred)):
        item = where.object_at(preferred, i, path)
        weight = _weight(where, item, f"{path}[{i}].weight")
        preference = where.mapping(item, "preference", f"{path}[{i}].preference")
        weighted.append((weight, _node_selector_term(where, preference, f"{path}[{i}].preference")))
    pod.preferred_node_affinity = tuple(weighted)
    tolerations = where.sequence(spec, "tolerations", "spec.tolerations")
    pod.tolerations = tuple(
        _toleration(
            where, where.object_at(tolerations, i, "spec.tolerations"), f"spec.tolerations[{i}]"
        )
        for i in range(len(tolerations))
    )

    # Pod affinity.
    required_terms: dict[str, tuple[AffinityTerm, ...]] = {}
    preferred_terms: dict[str, tuple[WeightedAffinityTerm, ...]] = {}
    for kind in ("podAffinity", "podAntiAffinity"):
        section = where.mapping(affinity, kind, f"spec.affinity.{kind}")
        path = f"spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution"
        items = where.sequence(section, "requiredDuringSchedulingIgnoredDuringExecution", path)
        required_terms[kind] = tuple(
            _affinity_term(
                where, where.object_at(items, i, path), f"{path}[{i}]", pod.namespace, pod.labels
            )
            for i in range(len(items))
        )
        path = f"spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution"
        items = where.sequence(section, "preferredDuringSchedulingIgnoredDuringExecution", path)
        weighted_terms: list[WeightedAffinityTerm] = []
        for i in range(len(items)):
            item = where.object_at(items, i, path)
            weight = _weight(where, item, f"{path}[{i}].weight")
            term_raw = where.mapping(item, "podAffinityTerm", f"{path}[{i}].podAffinityTerm")
            term = _affinity_term(
                where, term_raw, f"{path}[{i}].podAffinityTerm", pod.namespace, pod.labels
            )
            weighted_terms.append(WeightedAffinityTerm(weight, term))
        preferred_terms[kind] = tuple(weighted_terms)
    pod.required_affinity = required_terms["podAffinity"]
    pod.required_anti_affinity = required_terms["podAntiAffinity"]
    pod.preferred_affinity = preferred_terms["podAffinity"]
    pod.preferred_anti_affinity = preferred_terms["podAntiAffinity"]

    constraints = where.sequence(
        spec, "topologySpreadConstraints", "spec.topologySpreadConstraints"
    )
    pod.spread_constraints = tuple(
        _spread_constraint(
            where,
            where.object_at(constraints, i, "spec.topologySpreadConstraints"),
            f"spec.topologySpreadConstraints[{i}]",
            pod.labels,
        )
        for i in range(len(constraints))
    )

    # Scheduling gates and constructs gputopo does not evaluate: reported, never ignored.
    gates = where.sequence(spec, "schedulingGates", "spec.schedulingGates")
    names: list[str] = []
    for i in range(len(gates)):
        gate = where.object_at(gates, i, "spec.schedulingGates")
        names.append(where.string(gate, "name", f"spec.schedulingGates[{i}].name"))
    pod.scheduling_gates = tuple(names)
    claims = where.sequence(spec, "resourceClaims", "spec.resourceClaims")
    if claims:
        blockers.append(
            "pod uses DRA resourceClaims, which gputopo does not allocate; not scheduled"
        )
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
    pod.warnings = tuple(warnings)
    pod.blockers = tuple(blockers)
    pod.static_key = json.dumps(
        [
            pod.node_name,
            spec.get("nodeSelector"),
            affinity.get("nodeAffinity"),
            spec.get("tolerations"),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return pod


def _required_node_names(terms: tuple[NodeSelectorTerm, ...] | None) -> frozenset[str] | None:
    """NodeAffinity's PreFilter: the node names `matchFields metadata.name In` pins to, if any.

    Every term must pin names (terms are ORed, so one unpinned term means all nodes); within a
    term the `In` lists are intersected. An empty result means the terms conflict.
    """
    if not terms:
        return None
    names: set[str] = set()
    for term in terms:
        pinned: set[str] | None = None
        for requirement in term.fields:
            if requirement.op == "In":
                pinned = set(requirement.values) if pinned is None else pinned & requirement.values
        if pinned is None:
            return None
        names |= pinned
    return frozenset(names)


def _weight(where: _Where, raw: JsonObject, path: str) -> int:
    weight = where.integer(raw, "weight", path)
    if weight is None or not 1 <= weight <= 100:
        raise where.error(path, "must be an integer in 1..100")
    return weight


def _container_ports(
    where: _Where, container: JsonObject, path: str, host_network: bool
) -> list[HostPort]:
    out: list[HostPort] = []
    ports = where.sequence(container, "ports", f"{path}.ports")
    for i in range(len(ports)):
        port = where.object_at(ports, i, f"{path}.ports")
        host_port = where.integer(port, "hostPort", f"{path}.ports[{i}].hostPort") or 0
        if host_network and not host_port:
            host_port = (
                where.integer(port, "containerPort", f"{path}.ports[{i}].containerPort") or 0
            )
        if host_port <= 0:
            continue
        protocol = where.string(port, "protocol", f"{path}.ports[{i}].protocol") or "TCP"
        ip = where.string(port, "hostIP", f"{path}.ports[{i}].hostIP") or "0.0.0.0"
        out.append(HostPort(protocol, ip, host_port))
    return out


# --------------------------------------------------------------------------------------------
# Nodes, Namespaces, PriorityClasses


class Node:
    __slots__ = (
        "allocatable",
        "allowed_pods",
        "annotations",
        "labels",
        "name",
        "static_signature",
        "taints",
        "unschedulable",
    )

    def __init__(
        self,
        name: str,
        labels: dict[str, str],
        taints: tuple[Taint, ...],
        unschedulable: bool,
        allocatable: dict[str, int],
        allowed_pods: int,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.labels = labels
        self.annotations = annotations or {}
        self.taints = taints
        self.unschedulable = unschedulable
        self.allocatable = allocatable
        self.allowed_pods = allowed_pods
        self.static_signature = (
            tuple(sorted(labels.items())),
            tuple((t.key, t.value, t.effect) for t in taints),
            unschedulable,
        )

    def __repr__(self) -> str:
        return f"Node({self.name})"


def parse_node(obj: JsonObject) -> Node:
    where = _Where("Node", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    spec = where.mapping(obj, "spec", "spec")
    status = where.mapping(obj, "status", "status")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    labels = where.string_map(meta, "labels", "metadata.labels")
    raw_taints = where.sequence(spec, "taints", "spec.taints")
    taints = tuple(
        _taint(where, where.object_at(raw_taints, i, "spec.taints"), f"spec.taints[{i}]")
        for i in range(len(raw_taints))
    )
    unschedulable = spec.get("unschedulable") is True
    field = "allocatable" if status.get("allocatable") is not None else "capacity"
    allocatable = where.resources(status, field, f"status.{field}")
    allowed_pods = allocatable.pop(PODS, 0)
    annotations = where.string_map(meta, "annotations", "metadata.annotations")
    return Node(name, labels, taints, unschedulable, allocatable, allowed_pods, annotations)


class Namespace:
    __slots__ = ("labels", "name")

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels


def parse_namespace(obj: JsonObject) -> Namespace:
    where = _Where("Namespace", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    labels = where.string_map(meta, "labels", "metadata.labels")
    labels[LABEL_NAMESPACE_NAME] = name
    return Namespace(name, labels)


class PriorityClass:
    __slots__ = ("global_default", "name", "value")

    def __init__(self, name: str, value: int, global_default: bool) -> None:
        self.name = name
        self.value = value
        self.global_default = global_default


def parse_priority_class(obj: JsonObject) -> PriorityClass:
    where = _Where("PriorityClass", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    value = where.integer(obj, "value", "value")
    if value is None:
        raise where.error("value", "must be set to an integer")
    return PriorityClass(name, value, obj.get("globalDefault") is True)
