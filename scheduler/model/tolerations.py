"""Taints and tolerations, with `ToleratesTaint` as k8s.io/api implements it (KEP-5471)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gputopo.scheduler.model.reader import FieldReader, JsonObject, parse_int64

# Effects and operators, spelled as in the API.
NO_SCHEDULE: Final = "NoSchedule"
PREFER_NO_SCHEDULE: Final = "PreferNoSchedule"
NO_EXECUTE: Final = "NoExecute"
TAINT_EFFECTS: Final = frozenset({NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE})


TAINT_NODE_UNSCHEDULABLE: Final = "node.kubernetes.io/unschedulable"


class Taint:
    __slots__ = ("effect", "key", "value")

    def __init__(self, key: str, value: str, effect: str) -> None:
        self.key = key
        self.value = value
        self.effect = effect

    def __repr__(self) -> str:
        return f"Taint({self.key}={self.value}:{self.effect})"


class Toleration:
    """`v1.Toleration` with `ToleratesTaint` exactly as k8s.io/api implements it.

    Including KEP-5471's `Gt`/`Lt`: a `Gt` toleration tolerates a taint whose value is an integer
    strictly greater than the toleration's; a non-integer on either side never tolerates.
    """

    __slots__ = ("effect", "key", "op", "value", "value_int")

    def __init__(self, key: str, op: str, value: str, effect: str) -> None:
        self.key = key
        self.op = op
        self.value = value
        self.effect = effect
        self.value_int = parse_int64(value) if op in ("Gt", "Lt") else None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        op = self.op
        if op in ("", "Equal"):
            return self.value == taint.value
        if op == "Exists":
            return True
        if self.value_int is None:
            return False
        taint_value = parse_int64(taint.value)
        if taint_value is None:
            return False
        return taint_value > self.value_int if op == "Gt" else taint_value < self.value_int

    def signature(self) -> tuple[str, str, str, str]:
        return (self.key, self.op, self.value, self.effect)


def tolerated(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    return any(toleration.tolerates(taint) for toleration in tolerations)


def parse_taint(where: FieldReader, raw: JsonObject, path: str) -> Taint:
    key = where.string(raw, "key", f"{path}.key")
    if not key:
        raise where.error(f"{path}.key", "must be set")
    effect = where.string(raw, "effect", f"{path}.effect")
    if effect not in TAINT_EFFECTS:
        raise where.error(
            f"{path}.effect", f"unknown effect {effect!r}, expected one of {sorted(TAINT_EFFECTS)}"
        )
    return Taint(key, where.string(raw, "value", f"{path}.value"), effect)


_TOLERATION_OPERATORS = frozenset({"", "Equal", "Exists", "Gt", "Lt"})


def parse_toleration(where: FieldReader, raw: JsonObject, path: str) -> Toleration:
    key = where.string(raw, "key", f"{path}.key")
    op = where.string(raw, "operator", f"{path}.operator")
    if op not in _TOLERATION_OPERATORS:
        raise where.error(
            f"{path}.operator", f"unknown operator {op!r}, expected Equal, Exists, Gt or Lt"
        )
    value = raw.get("value", "")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise where.error(f"{path}.value", f"expected a string, got {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise where.error(f"{path}.value", "expected a string, got an integer beyond int64")
    value = str(value)
    seconds = where.integer(raw, "tolerationSeconds", f"{path}.tolerationSeconds")
    if seconds is not None and not -(2**63) <= seconds < 2**63:
        raise where.error(f"{path}.tolerationSeconds", "expected an int64 number of seconds")
    effect = where.string(raw, "effect", f"{path}.effect")
    if effect and effect not in TAINT_EFFECTS:
        raise where.error(f"{path}.effect", f"unknown effect {effect!r}")
    if not key and op != "Exists":
        raise where.error(f"{path}.operator", "must be Exists when key is empty")
    if op == "Exists" and value:
        raise where.error(f"{path}.value", "must be empty when operator is Exists")
    return Toleration(key, op, value, effect)
