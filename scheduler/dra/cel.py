"""DeviceClass and request selectors: CEL in Kubernetes' DRA environment, on cel-python.

The environment is k8s.io/dynamic-resource-allocation/cel's (v0.37.2, ``compile.go``): one
variable ``device`` with ``driver``, ``allowMultipleAllocations``, ``attributes`` and
``capacity``; both maps are keyed by domain first (an unqualified attribute belongs to the
driver's domain) and an unknown domain reads as an empty map, while a missing attribute inside a
known domain is an evaluation error. Attribute values are ints, bools, strings or semantic
versions; capacities are quantities. The Kubernetes library functions selectors use are here:
``semver()``/``isSemver()`` with ``major``/``minor``/``patch``/``compareTo``/``isGreaterThan``/
``isLessThan``, and ``quantity()``/``isQuantity()`` with ``compareTo``/``isGreaterThan``/
``isLessThan``/``add``/``sub``/``sign``/``isInteger``/``asInteger``/``asApproximateFloat``.

Cost: Kubernetes refuses a selector longer than 10 KiB and stops one whose runtime cost passes
1,000,000 units. cel-python has no cost accounting, so the bound here is static: the expression's
length (Kubernetes' own limit) and the size of its syntax tree, with nested comprehensions
(``all``/``exists``/``map``/``filter`` inside one another, the only way a selector over a
device's few dozen attributes can get expensive) refused. A selector that is refused or fails
on a device is reported as a one-line reason naming the expression, as kube-scheduler reports a
CEL runtime error, never taken as a match.

Results are memoised per (expression, device): slices change rarely, and cel-python takes about
a millisecond per evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, Final

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from gputopo.scheduler.dra.model import Attribute, Device
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.quantity import parse_quantity

MAX_EXPRESSION_LENGTH: Final = 10 * 1024  # resourceapi.CELSelectorExpressionMaxLength
MAX_TREE_NODES: Final = 2000
MAX_COMPREHENSION_DEPTH: Final = 1
_COMPREHENSIONS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_SEMVER: Final = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


class CelError(Exception):
    """A selector that cannot be compiled or evaluated; the message is one line."""


class Semver:
    """Kubernetes' CEL semver value (blang/semver): compare by major, minor, patch, pre-release."""

    __slots__ = ("major", "minor", "patch", "pre")

    def __init__(self, text: str) -> None:
        match = _SEMVER.match(text)
        if match is None:
            raise ValueError(f"invalid semantic version {text!r}")
        self.major, self.minor, self.patch = (int(match.group(i)) for i in (1, 2, 3))
        self.pre = tuple(match.group(4).split(".")) if match.group(4) else ()

    def _order(self) -> tuple[Any, ...]:
        # a version without pre-release sorts after every pre-release of it
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def compare(self, other: Semver) -> int:
        a, b = self._order(), other._order()
        return (a > b) - (a < b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Semver) and self.compare(other) == 0

    def __hash__(self) -> int:
        return hash(self._order())

    def __repr__(self) -> str:
        return f"Semver({self.major}.{self.minor}.{self.patch})"


class Quantity:
    """Kubernetes' CEL quantity value: an exact amount."""

    __slots__ = ("amount",)

    def __init__(self, amount: Fraction) -> None:
        self.amount = amount

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.amount == other.amount

    def __hash__(self) -> int:
        return hash(self.amount)

    def __repr__(self) -> str:
        return f"Quantity({self.amount})"


class _DomainMap(celtypes.MapType):
    """``device.attributes``/``device.capacity``: an unknown domain is an empty map."""

    def __missing__(self, key: Any) -> celtypes.MapType:
        return celtypes.MapType({})


def _semver(text: Any) -> Semver:
    try:
        return Semver(str(text))
    except ValueError as error:
        raise CelError(str(error)) from None


def _is_semver(text: Any) -> celtypes.BoolType:
    return celtypes.BoolType(_SEMVER.match(str(text)) is not None)


def _quantity(text: Any) -> Quantity:
    try:
        return Quantity(parse_quantity(str(text)))
    except SchedulerInputError as error:
        raise CelError(str(error)) from None


def _is_quantity(text: Any) -> celtypes.BoolType:
    try:
        parse_quantity(str(text))
    except SchedulerInputError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _compare(a: Any, b: Any) -> int:
    if isinstance(a, Semver) and isinstance(b, Semver):
        return a.compare(b)
    if isinstance(a, Quantity) and isinstance(b, Quantity):
        return (a.amount > b.amount) - (a.amount < b.amount)
    raise CelError(f"no such overload: compareTo({type(a).__name__}, {type(b).__name__})")


def _semver_part(part: str) -> Callable[[Any], celtypes.IntType]:
    def read(value: Any) -> celtypes.IntType:
        if not isinstance(value, Semver):
            raise CelError(f"no such overload: {part}({type(value).__name__})")
        return celtypes.IntType(getattr(value, part))

    return read


def _quantity_op(
    name: str, op: Callable[[Fraction, Fraction], Fraction]
) -> Callable[..., Quantity]:
    def apply(a: Any, b: Any) -> Quantity:
        if not isinstance(a, Quantity):
            raise CelError(f"no such overload: {name}({type(a).__name__})")
        other = b.amount if isinstance(b, Quantity) else Fraction(int(b))
        return Quantity(op(a.amount, other))

    return apply


def _as_quantity(value: Any, name: str) -> Quantity:
    if not isinstance(value, Quantity):
        raise CelError(f"no such overload: {name}({type(value).__name__})")
    return value


FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "semver": _semver,
    "isSemver": _is_semver,
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "compareTo": lambda a, b: celtypes.IntType(_compare(a, b)),
    "isGreaterThan": lambda a, b: celtypes.BoolType(_compare(a, b) > 0),
    "isLessThan": lambda a, b: celtypes.BoolType(_compare(a, b) < 0),
    "major": _semver_part("major"),
    "minor": _semver_part("minor"),
    "patch": _semver_part("patch"),
    "add": _quantity_op("add", lambda x, y: x + y),
    "sub": _quantity_op("sub", lambda x, y: x - y),
    "sign": lambda q: celtypes.IntType(
        (_as_quantity(q, "sign").amount > 0) - (_as_quantity(q, "sign").amount < 0)
    ),
    "isInteger": lambda q: celtypes.BoolType(_as_quantity(q, "isInteger").amount.denominator == 1),
    "asInteger": lambda q: celtypes.IntType(int(_as_quantity(q, "asInteger").amount)),
    "asApproximateFloat": lambda q: celtypes.DoubleType(float(_as_quantity(q, "f").amount)),
}


def _attribute_value(attribute: Attribute) -> Any:
    if attribute.kind == "int":
        return celtypes.IntType(int(attribute.value))
    if attribute.kind == "bool":
        return celtypes.BoolType(bool(attribute.value))
    if attribute.kind == "version":
        return Semver(str(attribute.value))
    return celtypes.StringType(str(attribute.value))


def _split(name: str) -> tuple[str, str]:
    domain, _, ident = name.rpartition("/")
    return domain, ident


def device_activation(device: Device) -> dict[str, Any]:
    """The ``device`` variable for one device (raises CelError for an unparsable version)."""
    attributes: dict[str, dict[Any, Any]] = {}
    for name, attribute in device.attributes.items():
        domain, ident = _split(name)
        try:
            value = _attribute_value(attribute)
        except ValueError as error:
            raise CelError(f"attribute {name}: {error}") from None
        attributes.setdefault(domain, {})[celtypes.StringType(ident)] = value
    capacity: dict[str, dict[Any, Any]] = {}
    for name, amount in device.capacity.items():
        domain, ident = _split(name)
        capacity.setdefault(domain, {})[celtypes.StringType(ident)] = Quantity(amount)
    return {
        "device": celtypes.MapType(
            {
                celtypes.StringType("driver"): celtypes.StringType(device.driver),
                celtypes.StringType("allowMultipleAllocations"): celtypes.BoolType(False),
                celtypes.StringType("attributes"): _DomainMap(
                    {celtypes.StringType(d): celtypes.MapType(v) for d, v in attributes.items()}
                ),
                celtypes.StringType("capacity"): _DomainMap(
                    {celtypes.StringType(d): celtypes.MapType(v) for d, v in capacity.items()}
                ),
            }
        )
    }


def _check_cost(tree: Any, expression: str) -> None:
    """Walk cel-python's syntax tree (lark trees: ``data`` and ``children``; tokens are str)."""
    nodes = 0
    pending: list[tuple[Any, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_TREE_NODES:
            raise CelError(f"selector {_short(expression)}: exceeds the cost limit (too large)")
        children = getattr(node, "children", None)
        if children is None or isinstance(node, str):
            continue
        inner = depth
        if node.data == "member_dot_arg" and any(
            isinstance(c, str) and str(c) in _COMPREHENSIONS for c in children
        ):
            inner = depth + 1
            if inner > MAX_COMPREHENSION_DEPTH:
                raise CelError(
                    f"selector {_short(expression)}: exceeds the cost limit (nested comprehensions)"
                )
        pending.extend((child, inner) for child in children)


def _short(expression: str) -> str:
    one_line = " ".join(expression.split())
    return repr(one_line if len(one_line) <= 80 else one_line[:77] + "...")


class SelectorCache:
    """Compiled selectors and their results per device, shared across scheduling cycles."""

    def __init__(self) -> None:
        # Built on the first selector compiled: building celpy's parser costs a quarter of a
        # second or more, which clusters without CEL selectors should not pay at start-up.
        self._environment: celpy.Environment | None = None
        self._programs: dict[str, celpy.Runner | CelError] = {}
        self._results: dict[tuple[str, Device], bool | CelError] = {}
        self._activations: dict[Device, dict[str, Any] | CelError] = {}

    def program(self, expression: str) -> celpy.Runner:
        found = self._programs.get(expression)
        if found is None:
            found = self._compile(expression)
            self._programs[expression] = found
        if isinstance(found, CelError):
            raise found
        return found

    def _compile(self, expression: str) -> celpy.Runner | CelError:
        if len(expression) > MAX_EXPRESSION_LENGTH:
            return CelError(
                f"selector {_short(expression)}: longer than {MAX_EXPRESSION_LENGTH} characters"
            )
        if self._environment is None:
            self._environment = celpy.Environment()
        environment = self._environment
        try:
            tree = environment.compile(expression)
        except CELParseError as error:
            first = str(error).splitlines()[0] if str(error) else "syntax error"
            return CelError(f"selector {_short(expression)}: compilation failed: {first}")
        try:
            _check_cost(tree, expression)
        except CelError as error:
            return error
        return environment.program(tree, functions=dict(FUNCTIONS))

    def matches(self, expression: str, device: Device) -> bool:
        """Whether the selector selects the device; CelError for a compile or runtime error."""
        key = (expression, device)
        found = self._results.get(key)
        if found is None:
            found = self._evaluate(expression, device)
            if len(self._results) > 1_000_000:
                self._results.clear()
            self._results[key] = found
        if isinstance(found, CelError):
            raise found
        return found

    def _evaluate(self, expression: str, device: Device) -> bool | CelError:
        try:
            program = self.program(expression)
        except CelError as error:
            return error
        activation = self._activations.get(device)
        if activation is None:
            try:
                activation = device_activation(device)
            except CelError as error:
                activation = error
            if len(self._activations) > 100_000:
                self._activations.clear()
            self._activations[device] = activation
        if isinstance(activation, CelError):
            return activation
        try:
            result = program.evaluate(activation)
        except (CELEvalError, CelError, TypeError, ValueError, ArithmeticError) as error:
            return CelError(
                f"selector {_short(expression)}: CEL runtime error on device "
                f"{device.pool}/{device.name}: {_first(error)}"
            )
        if isinstance(result, CELEvalError):
            return CelError(
                f"selector {_short(expression)}: CEL runtime error on device "
                f"{device.pool}/{device.name}: {_first(result)}"
            )
        if not isinstance(result, bool | celtypes.BoolType):
            return CelError(f"selector {_short(expression)}: result is not a bool")
        return bool(result)


def _first(error: BaseException) -> str:
    if error.args and isinstance(error.args[0], str):
        return error.args[0].splitlines()[0]
    return str(error).splitlines()[0] if str(error) else type(error).__name__
