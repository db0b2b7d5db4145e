"""The one typed document decoder: dataclasses from JSON/YAML values, errors naming the path."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from gputopo.core.decode import DecodeError, decode, decode_value, wire, wire_keys


class Via(enum.StrEnum):
    NVLINK = "nvlink"
    NVSWITCH = "nvswitch"


def _upper(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a name, got {value!r}")
    return value.upper()


@dataclass(frozen=True)
class Gpu:
    index: int
    numa_node: int | None
    pci_path: tuple[str, ...]
    power_w: float | None = None
    mig: bool = False
    health: str | None = field(default=None, metadata=wire(choices=("ok", "failed")))


@dataclass(frozen=True)
class Machine:
    name: str = field(metadata=wire(parse=_upper))
    gpus: tuple[Gpu, ...] = ()
    via: Via = Via.NVLINK
    version: int = field(default=1, metadata=wire(key="v"))
    mode: Literal["a", "b"] = "a"


def test_a_document_becomes_the_dataclass() -> None:
    document = {
        "name": "dgx",
        "v": 2,
        "via": "nvswitch",
        "gpus": [{"index": 0, "numa_node": None, "pci_path": ["0000:15:01.0"], "power_w": 70}],
        "unknown_future_field": True,
    }
    assert decode(Machine, document, "machine") == Machine(
        name="DGX",
        version=2,
        via=Via.NVSWITCH,
        gpus=(Gpu(0, None, ("0000:15:01.0",), power_w=70.0),),
    )


def test_absent_optional_is_unknown_and_absent_tuple_is_empty() -> None:
    assert decode(Gpu, {"index": 3}, "gpu") == Gpu(3, None, ())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "machine: expected an object, got list"),
        ({}, "machine.name: required field is missing"),
        ({"name": 3}, "machine.name: expected a name, got 3"),
        ({"name": "x", "v": "2"}, "machine.v: expected an integer, got '2'"),
        ({"name": "x", "v": True}, "machine.v: expected an integer, got True"),
        ({"name": "x", "gpus": {}}, "machine.gpus: expected a list, got dict"),
        ({"name": "x", "gpus": [3]}, "machine.gpus[0]: expected an object, got int"),
        (
            {"name": "x", "gpus": [{"index": 0, "numa_node": "x"}]},
            "machine.gpus[0].numa_node: expected an integer, got 'x'",
        ),
        (
            {"name": "x", "gpus": [{"index": 0, "pci_path": [1]}]},
            "machine.gpus[0].pci_path[0]: expected a string, got 1",
        ),
        (
            {"name": "x", "gpus": [{"index": 0, "mig": "yes"}]},
            "machine.gpus[0].mig: expected true or false, got 'yes'",
        ),
        (
            {"name": "x", "gpus": [{"index": 0, "power_w": "hot"}]},
            "machine.gpus[0].power_w: expected a number, got 'hot'",
        ),
        (
            {"name": "x", "gpus": [{"index": 0, "health": "sick"}]},
            "machine.gpus[0].health: expected one of ['ok', 'failed'], got 'sick'",
        ),
        ({"name": "x", "via": "pcie"}, "machine.via: 'pcie' is not one of ['nvlink', 'nvswitch']"),
        ({"name": "x", "mode": "c"}, "machine.mode: expected one of ['a', 'b'], got 'c'"),
    ],
)
def test_errors_name_the_path_and_what_was_expected(document: Any, message: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(Machine, document, "machine")
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)


def test_error_carries_path_and_problem() -> None:
    with pytest.raises(DecodeError) as raised:
        decode_value(int, "x", "doc.count")
    assert (raised.value.path, raised.value.problem) == (
        "doc.count",
        "expected an integer, got 'x'",
    )


def test_wire_keys_are_the_document_keys() -> None:
    assert wire_keys(Machine) == {"name", "gpus", "via", "v", "mode"}


def test_an_unsupported_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="cannot decode"):
        decode_value(dict, {}, "doc")


@dataclass(frozen=True)
class Counters:
    corrected: int = field(default=0, metadata=wire(minimum=0))
    score: int | None = field(default=None, metadata=wire(minimum=0, maximum=100))
    pages: tuple[int, ...] = field(default=(), metadata=wire(minimum=0))
    limit: int = field(default=0, metadata=wire(maximum=9))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"corrected": -1}, "ecc.corrected: expected an integer >= 0, got -1"),
        ({"score": 101}, "ecc.score: expected an integer in 0..100, got 101"),
        ({"pages": [1, -2]}, "ecc.pages[1]: expected an integer >= 0, got -2"),
        ({"limit": 10}, "ecc.limit: expected an integer <= 9, got 10"),
    ],
)
def test_bounds_name_the_path(document: Any, message: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(Counters, document, "ecc")
    assert str(raised.value) == message


def test_unknown_keys_are_ignored_unless_rejected() -> None:
    assert decode(Counters, {"corected": 1}, "ecc") == Counters()
    with pytest.raises(DecodeError) as raised:
        decode(Counters, {"corected": 1}, "ecc", unknown="reject")
    assert str(raised.value) == (
        "ecc.corected: unknown field (allowed: corrected, limit, pages, score)"
    )


def test_rejecting_unknown_keys_reaches_nested_objects() -> None:
    document = {"name": "x", "gpus": [{"index": 0, "numa": 1}]}
    with pytest.raises(DecodeError, match=r"^machine\.gpus\[0\]\.numa: unknown field"):
        decode(Machine, document, "machine", unknown="reject")
