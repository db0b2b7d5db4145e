"""Kubernetes resource quantities, parsed exactly.

The grammar is apimachinery's (`resource.Quantity`): an optionally signed decimal number followed
by a binary-SI suffix (Ki..Ei), a decimal-SI suffix (n, u, m, "", k, M, G, T, P, E) or a decimal
exponent (e3, E-2). Values are kept as `Fraction`s and rounded up the way `Quantity.Value()` and
`Quantity.MilliValue()` round, so there is never float drift.
"""

from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

# kube-scheduler's resource names with their own accounting; everything else is "scalar".
CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"


def parse_quantity(text: object) -> Fraction:
    """Parse a quantity (a string, or a YAML int/float) into an exact Fraction.

    Raises ValueError with the offending text for anything outside the grammar.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid quantity {text!r}")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        text = repr(text)
    if not isinstance(text, str):
        raise ValueError(f"invalid quantity {text!r}: expected a string or number")
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = match.groups()
    value = Fraction(number)
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    exponent = _EXPONENT.match(suffix)
    if exponent is not None:
        return value * Fraction(10) ** int(exponent.group(1))
    raise ValueError(f"invalid quantity {text!r}: unknown suffix {suffix!r}")


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def quantity_value(text: object) -> int:
    """`Quantity.Value()`: the integer value, rounded up (bytes, counts, devices)."""
    return _ceil(parse_quantity(text))


def quantity_milli_value(text: object) -> int:
    """`Quantity.MilliValue()`: the value in thousandths, rounded up (CPU in millicores)."""
    return _ceil(parse_quantity(text) * 1000)


_SIMPLE_MULTIPLIERS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    **_BINARY,
}


def resource_amount(name: str, text: object) -> int:
    """The integer the scheduler accounts a resource in: millicores for cpu, else `Value()`."""
    simple = _simple_amount(name, text)
    if simple is not None:
        return simple
    if name == CPU:
        return quantity_milli_value(text)
    return quantity_value(text)


def _simple_amount(name: str, text: object) -> int | None:
    """Integer arithmetic for the shapes nearly every manifest uses ("8", "100m", "16Gi");
    None for anything else (fractions, exponents, signs), which goes through ``Fraction``."""
    if type(text) is int:
        return text * 1000 if name == CPU else text
    if type(text) is not str:
        return None
    digits = text.rstrip("kMGTPEimn")
    if not digits.isascii() or not digits.isdigit():
        return None
    suffix = text[len(digits) :]
    number = int(digits)
    if suffix == "m":
        return number if name == CPU else -(-number // 1000)
    multiplier = _SIMPLE_MULTIPLIERS.get(suffix)
    if multiplier is None:
        return None
    return number * multiplier * 1000 if name == CPU else number * multiplier
