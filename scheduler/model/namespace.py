"""Namespaces, as pod affinity's `namespaceSelector` matches them.

Every Namespace carries `kubernetes.io/metadata.name`, as the API server sets it.
"""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model.reader import FieldReader, JsonObject

LABEL_NAMESPACE_NAME: Final = "kubernetes.io/metadata.name"


class Namespace:
    __slots__ = ("labels", "name")

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels


def parse_namespace(obj: JsonObject) -> Namespace:
    where = FieldReader("Namespace", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    labels = where.string_map(meta, "labels", "metadata.labels")
    labels[LABEL_NAMESPACE_NAME] = name
    return Namespace(name, labels)
