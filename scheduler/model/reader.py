"""Reads the fields of one Kubernetes object dict, naming the object and the path on any error.

Every parser in this package takes a `FieldReader`, so every malformed field becomes one
`SchedulerInputError` line: `Pod ns/name: spec.containers[0].resources.requests.cpu: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.quantity import resource_amount

JsonObject = Mapping[str, Any]


_INT64 = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_int64(text: str) -> int | None:
    """Go's `strconv.ParseInt(s, 10, 64)`: the integer, or None where Go returns an error.

    A digit string longer than int64 can hold is refused before it becomes a number, so a
    5000-digit `Gt` value costs what a short one does."""
    if not _INT64.fullmatch(text) or len(text.lstrip("+-").lstrip("0")) > 19:
        return None
    value = int(text)
    if value < _INT64_MIN or value > _INT64_MAX:
        return None
    return value


_SHOWN = 200  # characters of a name, path or problem an error line shows


def _short(text: str) -> str:
    """An error stays one readable line even when the input holds a megabyte-long value."""
    if len(text) <= _SHOWN and "\n" not in text:
        return text
    text = text.replace("\n", "\\n")
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 20]}... ({len(text)} characters)"


class FieldReader:
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
        return SchedulerInputError(f"{_short(self.ref)}: {_short(path)}: {_short(problem)}")

    def mapping(self, obj: JsonObject, key: str, path: str) -> JsonObject:
        value = obj.get(key)
        if value is None:
            return {}
        if type(value) is not dict and not isinstance(value, Mapping):  # dict: skip the ABC
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
        if type(item) is not dict and not isinstance(item, Mapping):
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
