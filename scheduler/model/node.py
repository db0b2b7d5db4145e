"""The Node as the filters read it: labels, taints, unschedulable, allocatable resources."""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model.reader import FieldReader, JsonObject
from gputopo.scheduler.model.tolerations import Taint, parse_taint
from gputopo.scheduler.quantity import PODS

LABEL_HOSTNAME: Final = "kubernetes.io/hostname"


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
    where = FieldReader("Node", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    spec = where.mapping(obj, "spec", "spec")
    status = where.mapping(obj, "status", "status")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    labels = where.string_map(meta, "labels", "metadata.labels")
    raw_taints = where.sequence(spec, "taints", "spec.taints")
    taints = tuple(
        parse_taint(where, where.object_at(raw_taints, i, "spec.taints"), f"spec.taints[{i}]")
        for i in range(len(raw_taints))
    )
    unschedulable = spec.get("unschedulable") is True
    field = "allocatable" if status.get("allocatable") is not None else "capacity"
    allocatable = where.resources(status, field, f"status.{field}")
    allowed_pods = allocatable.pop(PODS, 0)
    annotations = where.string_map(meta, "annotations", "metadata.annotations")
    return Node(name, labels, taints, unschedulable, allocatable, allowed_pods, annotations)
