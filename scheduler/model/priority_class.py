"""PriorityClasses, which give a pod its priority when the API server has not (simulate's input)."""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.model.reader import FieldReader, JsonObject

BUILTIN_PRIORITY_CLASSES: Final = {
    "system-cluster-critical": 2_000_000_000,
    "system-node-critical": 2_000_001_000,
}


class PriorityClass:
    __slots__ = ("global_default", "name", "value")

    def __init__(self, name: str, value: int, global_default: bool) -> None:
        self.name = name
        self.value = value
        self.global_default = global_default


def parse_priority_class(obj: JsonObject) -> PriorityClass:
    where = FieldReader("PriorityClass", obj)
    meta = where.mapping(obj, "metadata", "metadata")
    name = where.string(meta, "name", "metadata.name")
    if not name:
        raise where.error("metadata.name", "must be set")
    value = where.integer(obj, "value", "value")
    if value is None:
        raise where.error("value", "must be set to an integer")
    return PriorityClass(name, value, obj.get("globalDefault") is True)
