"""One typed document decoder: a parsed JSON/YAML value into frozen dataclasses, by type hints.

Every error is a :class:`DecodeError` whose message names the path of the bad value and what was
expected, e.g. ``topology.gpus[3].numa_node: expected an integer, got 'x'``. Callers that own a
user-facing error type (``TopologyError``, ``ContractError``) catch it once at their boundary.

The dataclass is the schema. An absent field takes its dataclass default; without one, an
``Optional`` field is ``None`` (unknown) and a tuple is empty, so writers may drop empty values;
anything else absent is "required field is missing". Unknown keys are ignored: a document of
the same version may carry fields a newer writer added. A field whose wire form differs from
its type (a cpulist string for a tuple of CPUs, a short key, a closed set of strings) says so in
its metadata with :func:`wire`.

Why hand-grown and not pydantic: pydantic (2.x, already in the scheduler's environment) would be
a new dependency of the agent, which runs on every GPU node. Measured on the development machine
(Python 3.11, ``python -X importtime`` and ``time.perf_counter``): importing pydantic costs about
57 ms, building a ``TypeAdapter(NodeTopology)`` another 45 ms, and together about 13 MB of RSS,
against this module's couple of hundred lines. Its error texts ("Input should be a valid
integer", paths as tuples) would also have to be rewritten to keep the one-line messages users
already see.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar, Union

T = TypeVar("T")

_WIRE: Final = "gputopo.decode"


class DecodeError(ValueError):
    """A document value does not fit its schema; ``path`` names it, ``problem`` says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Wire:
    """How one field appears in the document when that is not simply its name and type."""

    key: str | None = None  # the document's key, when it is not the field's name
    parse: Callable[[Any, str], Any] | None = None  # (value, path) -> field value
    choices: tuple[str, ...] | None = None  # a closed set of strings
    minimum: int | None = None  # bounds of an integer, or of every integer in a tuple
    maximum: int | None = None


def wire(
    *,
    key: str | None = None,
    parse: Callable[[Any, str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> dict[str, Wire]:
    """Field metadata: ``field(metadata=wire(key="v"))``, ``parse=...``, ``minimum=0`` and so on."""
    return {_WIRE: Wire(key, parse, choices, minimum, maximum)}


def wire_keys(cls: type[Any]) -> frozenset[str]:
    """The document keys a dataclass reads (to tell a caller which keys are unknown)."""
    return frozenset(_key(f) for f in dataclasses.fields(cls))


Unknown = Literal["ignore", "reject"]


def decode(cls: type[T], document: Any, path: str, *, unknown: Unknown = "ignore") -> T:
    """Build the dataclass ``cls`` from ``document``; a :class:`DecodeError` names the path.

    ``unknown="reject"`` refuses keys the schema does not name (hand-written files, where an
    unknown key is a typo); the default ignores them (documents another version wrote).
    """
    if not isinstance(document, Mapping):
        raise DecodeError(path, f"expected an object, got {_kind(document)}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if unknown == "reject":
        keys = {_key(f) for f in fields}
        strangers = sorted(str(key) for key in document if key not in keys)
        if strangers:
            allowed = ", ".join(sorted(keys))
            raise DecodeError(f"{path}.{strangers[0]}", f"unknown field (allowed: {allowed})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields:
        key = _key(f)
        where = f"{path}.{key}"
        if key in document:
            values[f.name] = _field_value(f, hints[f.name], document[key], where, unknown)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = _absent(hints[f.name], where)
    return cls(**values)


def decode_value(hint: Any, value: Any, path: str, *, unknown: Unknown = "ignore") -> Any:
    """One value against one type hint (the building block of :func:`decode`)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{path}: cannot decode the union {hint!r}")
        return decode_value(inner[0], value, path, unknown=unknown)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise DecodeError(path, f"expected a list, got {_kind(value)}")
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{path}: cannot decode the fixed-length tuple {hint!r}")
        return tuple(
            decode_value(args[0], item, f"{path}[{i}]", unknown=unknown)
            for i, item in enumerate(value)
        )
    if origin is Literal:
        return _choice(tuple(args), value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = [member.value for member in hint]
            raise DecodeError(path, f"{value!r} is not one of {allowed}") from None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return decode(hint, value, path, unknown=unknown)
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise DecodeError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DecodeError(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise DecodeError(path, f"expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"{path}: cannot decode type {hint!r}")


def _field_value(
    f: dataclasses.Field[Any], hint: Any, value: Any, path: str, unknown: Unknown
) -> Any:
    spec = f.metadata.get(_WIRE)
    if spec is None:
        return decode_value(hint, value, path, unknown=unknown)
    if spec.parse is not None:
        return spec.parse(value, path)
    if spec.choices is not None and value is not None:
        return _choice(spec.choices, value, path)
    result = decode_value(hint, value, path, unknown=unknown)
    if spec.minimum is not None or spec.maximum is not None:
        if isinstance(result, tuple):
            for i, item in enumerate(result):
                _bounded(spec, item, f"{path}[{i}]")
        elif result is not None:
            _bounded(spec, result, path)
    return result


def _bounded(spec: Wire, value: int, path: str) -> None:
    low, high = spec.minimum, spec.maximum
    if (low is None or value >= low) and (high is None or value <= high):
        return
    if low is not None and high is not None:
        raise DecodeError(path, f"expected an integer in {low}..{high}, got {value}")
    if low is not None:
        raise DecodeError(path, f"expected an integer >= {low}, got {value}")
    raise DecodeError(path, f"expected an integer <= {high}, got {value}")


def _choice(choices: tuple[Any, ...], value: Any, path: str) -> Any:
    if value not in choices or type(value) not in {type(choice) for choice in choices}:
        raise DecodeError(path, f"expected one of {list(choices)}, got {value!r}")
    return value


def _absent(hint: Any, path: str) -> Any:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if (origin is Union or origin is types.UnionType) and type(None) in args:
        return None
    if origin is tuple:
        return ()
    raise DecodeError(path, "required field is missing")


def _key(f: dataclasses.Field[Any]) -> str:
    spec = f.metadata.get(_WIRE)
    return spec.key if spec is not None and spec.key is not None else f.name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
