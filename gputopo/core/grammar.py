"""The two text grammars every layer shares: the kernel's cpulist and the PCI bus id.

One parser each, with one error behaviour: malformed text raises a :class:`GrammarError` (a
``ValueError``) whose message quotes the input. A caller that must tolerate bad text (sysfs files
on a half-broken machine, NVML strings) says so at its call site by catching the error, so the
leniency is visible where it is chosen instead of hidden in a second grammar.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final


class GrammarError(ValueError):
    """Text that is not a cpulist or a PCI bus id; the message quotes the input."""


# --- cpulist (Linux ``Documentation/admin-guide/cputopology.rst``: "0-3,8,10-11") -------------

_CPU_RANGE: Final = re.compile(r"([0-9]+)(?:-([0-9]+))?")

# The largest CPU id a cpulist may name. Linux's ``CONFIG_NR_CPUS`` is at most 8192 (x86-64
# MAXSMP; arm64 and powerpc allow less or the same), so ids stop at 8191; twice that leaves
# room for a future kernel while ``0-99999999999`` stays an error instead of a set of 10^11 ints.
MAX_CPU_ID: Final = 16383


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` -> ``(0, 1, 2, 3, 8, 10, 11)``, sorted and de-duplicated.

    Surrounding whitespace (the newline at the end of a sysfs file) is ignored; an empty list is
    ``()``. Anything else that is not ``N`` or ``N-M`` with ``N <= M <=`` :data:`MAX_CPU_ID`
    raises, so a hostile list costs at most 16384 set entries.
    """
    stripped = text.strip()
    if not stripped:
        return ()
    cpus: set[int] = set()
    for part in stripped.split(","):
        match = _CPU_RANGE.fullmatch(part.strip())
        if match is None:
            raise GrammarError(f"cpulist {_quote(text)}: {_quote(part)} is not 'N' or 'N-M'")
        start = _cpu_id(match.group(1), text)
        end = start if match.group(2) is None else _cpu_id(match.group(2), text)
        if end < start:
            raise GrammarError(f"cpulist {_quote(text)}: range {part!r} runs backwards")
        cpus.update(range(start, end + 1))
    return tuple(sorted(cpus))


def _cpu_id(digits: str, text: str) -> int:
    """One CPU id of ``text``, refused above :data:`MAX_CPU_ID` before any big integer is made."""
    cpu = int(digits) if len(digits) <= 9 else MAX_CPU_ID + 1
    if cpu > MAX_CPU_ID:
        raise GrammarError(
            f"cpulist {_quote(text)}: CPU {_quote(digits, 12)} is above {MAX_CPU_ID}, "
            "the largest CPU id"
        )
    return cpu


def _quote(text: str, limit: int = 60) -> str:
    """``repr`` of the input, cut short: an error line stays one readable line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist`: compact ranges, ``(0, 1, 2, 3, 8)`` -> ``"0-3,8"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = end = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)


# --- PCI bus id ("domain:bus:device.function") --------------------------------------------------

_BUS_ID: Final = re.compile(r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


def normalize_bus_id(text: str) -> str:
    """Any spelling of a PCI address -> the sysfs form ``0000:18:00.0`` (lower case).

    NVML writes an 8-digit domain (``00000000:18:00.0``), sysfs a 4-digit one, lspci and
    profiles may leave it out (``18:00.0``, domain 0). Domains above ``ffff`` (Intel VMD) keep
    their digits. The result parses to itself: normalising is idempotent.
    """
    match = _BUS_ID.fullmatch(text.strip())
    if match is None:
        raise GrammarError(f"PCI bus id {_quote(text)} is not '[domain:]bus:device.function'")
    domain = int(match.group(1) or "0", 16)
    bus, device, function = match.group(2, 3, 4)
    return f"{domain:04x}:{bus.lower()}:{device.lower()}.{function}"


def split_bus_id(bus_id: str) -> tuple[int, int, int]:
    """(domain, bus, device) of a PCI bus id, as integers."""
    domain, bus, device = normalize_bus_id(bus_id).replace(".", ":").split(":")[:3]
    return int(domain, 16), int(bus, 16), int(device, 16)
