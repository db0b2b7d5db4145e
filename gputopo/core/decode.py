"""One typed document decoder: a parsed JSON/YAML value into frozen dataclasses, by type hints.

Every error is a :class:`DecodeError` whose message names the path of the bad value and what was
expected, e.g. ``topology.gpus[3].numa_node: expected an integer, got 'x'``. Callers that own a
user-facing error type (``TopologyError``, ``ContractError``) catch it once at their boundary.

The dataclass is the schema. An absent field takes its dataclass default; without one, an
``Optional`` field is ``None`` (unknown) and a tuple is empty, so writers may drop empty values;
anything else absent is "required field is missing". Unknown keys are ignored (a document of
the same version may carry fields a newer writer added) unless the caller rejects them. A field
whose wire form differs from its type (a cpulist string for a tuple of CPUs, a short key, a
closed set of strings, bounds) says so in its metadata with :func:`wire`.

Each class and type hint is compiled once into a reader, and a path is only spelled out when
something is wrong, because the scheduler decodes a topology annotation for every node.

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
from typing import Any, Final, Literal, NoReturn, TypeVar, Union

T = TypeVar("T")

Unknown = Literal["ignore", "reject"]

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
    # value -> field value; a ValueError it raises becomes "<path>: <its message>"
    parse: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] | None = None  # a closed set of strings
    minimum: int | None = None  # bounds of an integer, or of every integer in a tuple
    maximum: int | None = None


def wire(
    *,
    key: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> dict[str, Wire]:
    """Field metadata: ``field(metadata=wire(key="v"))``, ``parse=...``, ``minimum=0`` and so on."""
    return {_WIRE: Wire(key, parse, choices, minimum, maximum)}


def wire_keys(cls: type[Any]) -> frozenset[str]:
    """The document keys a dataclass reads (to tell a caller which keys are unknown)."""
    return _schema(cls).keys


def decode(cls: type[T], document: Any, path: str, *, unknown: Unknown = "ignore") -> T:
    """Build the dataclass ``cls`` from ``document``; a :class:`DecodeError` names the path.

    ``unknown="reject"`` refuses keys the schema does not name (hand-written files, where an
    unknown key is a typo); the default ignores them (documents another version wrote).
    """
    try:
        result: T = _schema(cls).read(document, unknown)
    except _Problem as problem:
        raise DecodeError(path + problem.where(), problem.problem) from None
    return result


def decode_value(hint: Any, value: Any, path: str, *, unknown: Unknown = "ignore") -> Any:
    """One value against one type hint (the building block of :func:`decode`)."""
    try:
        return _reader(hint)(value, unknown)
    except _Problem as problem:
        raise DecodeError(path + problem.where(), problem.problem) from None


# --- the compiled readers -------------------------------------------------------------------------


class _Problem(Exception):
    """Raised by a reader without a path; each level on the way up adds its step."""

    def __init__(self, problem: str, step: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.steps = [step] if step else []

    def where(self) -> str:
        return "".join(reversed(self.steps))


_Read = Callable[[Any, Unknown], Any]


def _fail(problem: str) -> NoReturn:
    raise _Problem(problem)


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    key: str
    hint: Any
    wire: Wire | None
    required: bool  # no dataclass default


class _Schema:
    """One dataclass, worked out once: its fields, its keys and how to read each field."""

    def __init__(self, cls: type[Any]) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields = tuple(
            _Field(
                f.name,
                _key(f),
                hints[f.name],
                f.metadata.get(_WIRE),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        self.keys = frozenset(f.key for f in self.fields)
        self._readers: tuple[_Read, ...] | None = None  # compiled on first use

    def read(self, document: Any, unknown: Unknown) -> Any:
        if not isinstance(document, Mapping):
            _fail(f"expected an object, got {_kind(document)}")
        if unknown == "reject":
            strangers = sorted(str(key) for key in document if key not in self.keys)
            if strangers:
                allowed = ", ".join(sorted(self.keys))
                raise _Problem(f"unknown field (allowed: {allowed})", f".{strangers[0]}")
        readers = self._readers
        if readers is None:
            readers = self._readers = tuple(_field_reader(f) for f in self.fields)
        values: dict[str, Any] = {}
        for f, read in zip(self.fields, readers, strict=True):
            if f.key in document:
                try:
                    values[f.name] = read(document[f.key], unknown)
                except _Problem as problem:
                    problem.steps.append(f".{f.key}")
                    raise
            elif f.required:
                values[f.name] = _absent(f)
        return self.cls(**values)


_SCHEMAS: dict[type[Any], _Schema] = {}
_READERS: dict[Any, _Read] = {}


def _schema(cls: type[Any]) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = _Schema(cls)
    return schema


def _reader(hint: Any) -> _Read:
    read = _READERS.get(hint)
    if read is None:
        read = _READERS[hint] = _compile(hint)
    return read


def _compile(hint: Any) -> _Read:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"cannot decode the union {hint!r}")
        read_inner = _reader(inner[0])
        if type(None) not in args:
            return read_inner
        return lambda value, unknown: None if value is None else read_inner(value, unknown)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"cannot decode the fixed-length tuple {hint!r}")
        return _tuple_reader(args[0])
    if origin is Literal:
        choices = tuple(args)
        return lambda value, unknown: _choice(choices, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_reader(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _schema(hint).read
    return _SCALARS.get(hint) or _refuse(hint)


def _tuple_reader(item_hint: Any) -> _Read:
    read_item = _reader(item_hint)
    exact = item_hint if item_hint in (int, str) else None

    def read(value: Any, unknown: Unknown) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            _fail(f"expected a list, got {_kind(value)}")
        if exact is not None and all(type(item) is exact for item in value):
            return tuple(value)  # the common case: nothing to convert
        items = []
        for index, item in enumerate(value):
            try:
                items.append(read_item(item, unknown))
            except _Problem as problem:
                problem.steps.append(f"[{index}]")
                raise
        return tuple(items)

    return read


def _enum_reader(hint: type[enum.Enum]) -> _Read:
    allowed = [member.value for member in hint]

    def read(value: Any, unknown: Unknown) -> enum.Enum:
        try:
            return hint(value)
        except ValueError:
            _fail(f"{value!r} is not one of {allowed}")

    return read


def _read_bool(value: Any, unknown: Unknown) -> bool:
    if value is True or value is False:
        return value
    _fail(f"expected true or false, got {value!r}")


def _read_int(value: Any, unknown: Unknown) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    _fail(f"expected an integer, got {value!r}")


def _read_float(value: Any, unknown: Unknown) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    _fail(f"expected a number, got {value!r}")


def _read_str(value: Any, unknown: Unknown) -> str:
    if isinstance(value, str):
        return value
    _fail(f"expected a string, got {value!r}")


def _read_any(value: Any, unknown: Unknown) -> Any:
    return value


_SCALARS: Final[dict[Any, _Read]] = {
    bool: _read_bool,
    int: _read_int,
    float: _read_float,
    str: _read_str,
    Any: _read_any,
}


def _refuse(hint: Any) -> _Read:
    """A type the decoder does not know is a programming error, raised where it is used."""

    def read(value: Any, unknown: Unknown) -> NoReturn:
        raise TypeError(f"cannot decode type {hint!r}")

    return read


def _field_reader(f: _Field) -> _Read:
    read = _reader(f.hint)
    spec = f.wire
    if spec is None:
        return read
    if spec.parse is not None:
        parse = spec.parse

        def read_parsed(value: Any, unknown: Unknown) -> Any:
            try:
                return parse(value)
            except ValueError as error:
                _fail(str(error))

        return read_parsed
    if spec.choices is not None:
        choices = spec.choices
        return lambda value, unknown: None if value is None else _choice(choices, value)
    if spec.minimum is None and spec.maximum is None:
        return read
    bounded = spec

    def read_bounded(value: Any, unknown: Unknown) -> Any:
        result = read(value, unknown)
        if isinstance(result, tuple):
            for index, item in enumerate(result):
                if not _within(bounded, item):
                    raise _Problem(_bounds_problem(bounded, item), f"[{index}]")
        elif result is not None and not _within(bounded, result):
            _fail(_bounds_problem(bounded, result))
        return result

    return read_bounded


def _within(spec: Wire, value: int) -> bool:
    return (spec.minimum is None or value >= spec.minimum) and (
        spec.maximum is None or value <= spec.maximum
    )


def _bounds_problem(spec: Wire, value: int) -> str:
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None:
        return f"expected an integer in {low}..{high}, got {value}"
    if low is not None:
        return f"expected an integer >= {low}, got {value}"
    return f"expected an integer <= {high}, got {value}"


def _choice(choices: tuple[Any, ...], value: Any) -> Any:
    if value not in choices or type(value) not in {type(choice) for choice in choices}:
        _fail(f"expected one of {list(choices)}, got {value!r}")
    return value


def _absent(f: _Field) -> Any:
    args = typing.get_args(f.hint)
    origin = typing.get_origin(f.hint)
    if (origin is Union or origin is types.UnionType) and type(None) in args:
        return None
    if origin is tuple:
        return ()
    raise _Problem("required field is missing", f".{f.key}")


def _key(f: dataclasses.Field[Any]) -> str:
    spec = f.metadata.get(_WIRE)
    return spec.key if spec is not None and spec.key is not None else f.name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
