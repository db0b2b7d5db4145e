"""Kubernetes resource quantities, parsed exactly and in bounded time for any input.

The grammar is apimachinery's documented one (`resource.Quantity`): an optionally signed decimal
number (``1``, ``1.5``, ``1.``, ``.5``) followed by a binary-SI suffix (Ki..Ei), a decimal-SI
suffix (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (``e3``, ``E-2``, ``e+6``). Values
are exact (`Fraction`) and rounded up the way `Quantity.Value()` and `Quantity.MilliValue()`
round, so there is never float drift.

The limits are Kubernetes' own, and none of them needs arithmetic on a number the input makes
large (``1e9999999`` used to cost seconds, ``1e99999999`` never ended):

* **exponent**: it must be an int64 (``strconv.ParseInt``), else the quantity is invalid; like
  apimachinery (``int32(parsed)``, TOB-K8S-015) it is then truncated to 32 bits, so
  ``1e4294967296`` is 1 there and here.
* **precision**: a non-zero value is rounded away from zero to a whole number of nano
  (``1e-99999999`` is ``1n``), as `ParseQuantity` rounds.
* **magnitude**: capped at 2^63-1, as `ParseQuantity` caps a binary-SI quantity; a larger
  decimal one overflows every int64 accessor Kubernetes has, so a cap is the only defined value.
* **amounts**: what the scheduler accounts (`resource_amount`, `quantity_value`,
  `quantity_milli_value`) saturates at :data:`MAX_AMOUNT` (2^50: 1 PiB in bytes, 10^12 cores in
  millicores). The per-node sums and scores are int64 arrays; at this cap 8192 pods of the
  largest amount on one node, times a score of 100, still fit, so a hostile pod cannot wrap a
  node's free capacity negative. Such a pod simply fits nowhere.

Digits are only converted where they matter: a value whose magnitude is decided by its length
and exponent alone (above 2^63 or below 1n) never becomes a number, and the rest is exact
`decimal` arithmetic, linear in the length of the text.
"""

from __future__ import annotations

import decimal
import math
import re
from fractions import Fraction
from typing import Final

from gputopo.scheduler.errors import SchedulerInputError

# sign, integer digits, fraction digits; the rest of the text is the suffix. Each part is
# delimited by a character the others cannot hold, so matching never backtracks.
_NUMBER: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_EXPONENT: Final = re.compile(r"[eE]([+-]?[0-9]+)")

_BINARY: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # powers of 2
_DECIMAL: Final = {
    "n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}  # fmt: skip

INT64_MAX: Final = 2**63 - 1
MAX_QUANTITY: Final = Fraction(INT64_MAX)  # apimachinery's maxAllowed
NANO: Final = Fraction(1, 10**9)
MAX_AMOUNT: Final = 2**50

_EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
)
_NANO_EXPONENT: Final = decimal.Decimal("1e-9")

# kube-scheduler's resource names with their own accounting; everything else is "scalar".
CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"


def _shown(text: object) -> str:
    """The repr of an input, shortened: an error line stays one short line."""
    if not isinstance(text, str | float | bool | None):
        return f"of type {type(text).__name__}"
    shown = repr(text[:61] if isinstance(text, str) else text)
    return shown if len(shown) <= 60 else shown[:56] + "...'"


def _invalid(text: object, why: str = "") -> SchedulerInputError:
    return SchedulerInputError(f"invalid quantity {_shown(text)}{': ' + why if why else ''}")


def parse_quantity(text: object) -> Fraction:
    """Parse a quantity (a string, or a YAML int/float) into an exact, bounded Fraction: a
    multiple of 1n, at most 2^63-1 in magnitude.

    Raises SchedulerInputError (a ValueError) naming the text for anything outside the grammar.
    """
    if isinstance(text, bool):
        raise _invalid(text)
    if isinstance(text, int):
        return Fraction(max(-INT64_MAX, min(INT64_MAX, text)))
    if isinstance(text, float):
        if not math.isfinite(text):
            raise _invalid(text, "not a finite number")
        text = repr(text)
    if not isinstance(text, str):
        raise _invalid(text, "expected a string or number")
    number = _NUMBER.match(text)
    assert number is not None  # every part is optional
    sign, whole, fraction = number.group(1), number.group(2), number.group(3) or ""
    if not whole and not fraction:
        raise _invalid(text)
    suffix = text[number.end() :]
    if suffix in _BINARY:
        power_of_two, power_of_ten = _BINARY[suffix], 0
    elif suffix in _DECIMAL:
        power_of_two, power_of_ten = 0, _DECIMAL[suffix]
    elif (exponent := _EXPONENT.fullmatch(suffix)) is not None:
        power_of_two, power_of_ten = 0, _exponent(text, exponent.group(1))
    else:
        raise _invalid(text, f"unknown suffix {_shown(suffix)}")
    magnitude = _magnitude(whole + fraction, power_of_ten - len(fraction), power_of_two)
    return -magnitude if sign == "-" else magnitude


def _exponent(text: str, digits: str) -> int:
    """`strconv.ParseInt(s, 10, 64)` then `int32(...)`, as apimachinery reads an exponent."""
    sign = -1 if digits.startswith("-") else 1
    body = digits.lstrip("+-").lstrip("0") or "0"
    if len(body) > 19 or not -(2**63) <= sign * int(body) <= INT64_MAX:
        raise _invalid(text, "exponent out of the int64 range")
    wrapped = (sign * int(body)) & 0xFFFFFFFF
    return wrapped - 2**32 if wrapped >= 2**31 else wrapped


def _magnitude(digits: str, power_of_ten: int, power_of_two: int) -> Fraction:
    """``int(digits) * 10**power_of_ten * 2**power_of_two``, rounded up to a multiple of 1n and
    capped at 2^63-1, without building a number larger than the text or the cap."""
    significant = digits.lstrip("0")
    if not significant:
        return Fraction(0)
    kept = significant.rstrip("0")
    power_of_ten += len(significant) - len(kept)
    # kept * 10**power_of_ten lies in [10**(order-1), 10**order); 2**60 < 10**19.
    order = len(kept) + power_of_ten
    if order - 1 >= 19:
        return MAX_QUANTITY
    if order + 19 < -9:
        return NANO
    value = _EXACT.multiply(
        decimal.Decimal(kept).scaleb(power_of_ten, _EXACT), decimal.Decimal(2**power_of_two)
    )
    rounded = value.quantize(_NANO_EXPONENT, rounding=decimal.ROUND_UP, context=_EXACT)
    return min(Fraction(rounded), MAX_QUANTITY)


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def _saturate(amount: int) -> int:
    return max(-MAX_AMOUNT, min(MAX_AMOUNT, amount))


def quantity_value(text: object) -> int:
    """`Quantity.Value()`: the integer value, rounded up (bytes, counts, devices); saturated
    at :data:`MAX_AMOUNT`."""
    return _saturate(_ceil(parse_quantity(text)))


def quantity_milli_value(text: object) -> int:
    """`Quantity.MilliValue()`: the value in thousandths, rounded up (CPU in millicores);
    saturated at :data:`MAX_AMOUNT`."""
    return _saturate(_ceil(parse_quantity(text) * 1000))


_SIMPLE_MULTIPLIERS: Final[dict[str, int]] = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    **{suffix: 2**power for suffix, power in _BINARY.items()},
}


def resource_amount(name: str, text: object) -> int:
    """The integer the scheduler accounts a resource in: millicores for cpu, else `Value()`;
    saturated at :data:`MAX_AMOUNT`."""
    simple = _simple_amount(name, text)
    if simple is not None:
        return _saturate(simple)
    if name == CPU:
        return quantity_milli_value(text)
    return quantity_value(text)


def _simple_amount(name: str, text: object) -> int | None:
    """Integer arithmetic for the shapes nearly every manifest uses ("8", "100m", "16Gi");
    None for anything else (fractions, exponents, signs, long digit strings), which goes
    through :func:`parse_quantity`."""
    if type(text) is int:
        if not -INT64_MAX <= text <= INT64_MAX:
            return None
        return text * 1000 if name == CPU else text
    if type(text) is not str:
        return None
    digits = text.rstrip("kMGTPEimn")
    if len(digits) > 18 or not digits.isascii() or not digits.isdigit():
        return None
    suffix = text[len(digits) :]
    number = int(digits)
    if suffix == "m":
        return number if name == CPU else -(-number // 1000)
    multiplier = _SIMPLE_MULTIPLIERS.get(suffix)
    if multiplier is None:
        return None
    return number * multiplier * 1000 if name == CPU else number * multiplier
