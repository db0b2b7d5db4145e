"""Label selectors and node selector terms: the `key op values` requirements objects match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gputopo.scheduler.model.reader import FieldReader, JsonObject, parse_int64


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


def parse_requirement(
    where: FieldReader, raw: JsonObject, path: str, operators: frozenset[str]
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


def parse_label_selector(where: FieldReader, raw: object, path: str) -> LabelSelector:
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
        req, _ = parse_requirement(where, item, f"{path}.matchExpressions[{i}]", _LABEL_OPERATORS)
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


def parse_node_selector_term(where: FieldReader, raw: JsonObject, path: str) -> NodeSelectorTerm:
    valid = True
    expressions: list[Requirement] = []
    items = where.sequence(raw, "matchExpressions", f"{path}.matchExpressions")
    for i in range(len(items)):
        item = where.object_at(items, i, f"{path}.matchExpressions")
        req, ok = parse_requirement(where, item, f"{path}.matchExpressions[{i}]", _NODE_OPERATORS)
        expressions.append(req)
        valid = valid and ok
    fields: list[Requirement] = []
    items = where.sequence(raw, "matchFields", f"{path}.matchFields")
    for i in range(len(items)):
        item = where.object_at(items, i, f"{path}.matchFields")
        req, ok = parse_requirement(
            where, item, f"{path}.matchFields[{i}]", frozenset({"In", "NotIn"})
        )
        if req.key != "metadata.name":
            raise where.error(
                f"{path}.matchFields[{i}].key", f"only metadata.name is supported, got {req.key!r}"
            )
        fields.append(req)
        valid = valid and ok
    return NodeSelectorTerm(tuple(expressions), tuple(fields), valid)


def required_node_names(terms: tuple[NodeSelectorTerm, ...] | None) -> frozenset[str] | None:
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
