"""What a filter says about every node at once: which fail, with which fixed reasons, and whether
evicting pods could change that (kube-scheduler's `Unschedulable` vs
`UnschedulableAndUnresolvable`).

A verdict holds per-node arrays indexed by node slot; the reasons are looked up only for the
nodes that end up reporting them (the failure message counts them with array operations, the
per-node diagnosis reads one slot), so a cycle that places its pod never builds a string.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.snapshot import BoolArray, IntArray


class Code(enum.Enum):
    """kube-scheduler's status codes for a node that fails a filter."""

    UNSCHEDULABLE = "Unschedulable"  # preemption may help: evicting pods can make room
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"  # it cannot


@dataclass(frozen=True, slots=True)
class Reason:
    """One fixed, human reason (what `kubectl describe pod` shows) and its status code."""

    message: str
    code: Code = Code.UNSCHEDULABLE

    @property
    def unresolvable(self) -> bool:
        return self.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def unresolvable(message: str) -> Reason:
    return Reason(message, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)


class FilterVerdict(Protocol):
    """A filter's answer for every node slot."""

    @property
    def failing(self) -> BoolArray:
        """Per slot: the node fails this filter."""
        ...

    def reasons_of(self, slot: int) -> tuple[Reason, ...]:
        """The reasons a failing node reports."""
        ...

    def count(self, slots: IntArray) -> Iterator[tuple[Reason, int]]:
        """How many of ``slots`` (all failing here) report each reason."""
        ...


class CodedVerdict:
    """One reason per failing node: a small code per slot (0 passes) and the code's reason."""

    __slots__ = ("codes", "failing", "reasons")

    def __init__(self, codes: npt.NDArray[np.integer[Any]], reasons: Mapping[int, Reason]) -> None:
        self.codes = codes
        self.reasons = reasons
        self.failing: BoolArray = codes > 0

    def reasons_of(self, slot: int) -> tuple[Reason, ...]:
        return (self.reasons[int(self.codes[slot])],)

    def count(self, slots: IntArray) -> Iterator[tuple[Reason, int]]:
        if not len(slots):
            return
        counts = np.bincount(self.codes[slots].astype(np.int64), minlength=max(self.reasons) + 1)
        for code, reason in self.reasons.items():
            if counts[code]:
                yield reason, int(counts[code])


class MaskVerdict:
    """Any number of reasons per failing node: one node mask per reason, in reporting order
    (NodeResourcesFit reports every resource a node is short of)."""

    __slots__ = ("failing", "masks")

    def __init__(self, masks: Sequence[tuple[Reason, BoolArray]]) -> None:
        self.masks = masks
        failing = masks[0][1].copy()
        for _, mask in masks[1:]:
            failing |= mask
        self.failing: BoolArray = failing

    def reasons_of(self, slot: int) -> tuple[Reason, ...]:
        return tuple(reason for reason, mask in self.masks if mask[slot])

    def count(self, slots: IntArray) -> Iterator[tuple[Reason, int]]:
        for reason, mask in self.masks:
            count = int(mask[slots].sum())
            if count:
                yield reason, count
