"""The cpulist and PCI bus-id grammars: one parser each, one error naming the input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gputopo.core.grammar import (
    GrammarError,
    format_cpulist,
    normalize_bus_id,
    parse_cpulist,
    split_bus_id,
)

CPU_SETS = st.frozensets(st.integers(min_value=0, max_value=4096), max_size=64)


@given(CPU_SETS)
def test_cpulist_format_then_parse_is_the_sorted_set(cpus: frozenset[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == tuple(sorted(cpus))


@given(CPU_SETS)
def test_cpulist_format_is_a_fixed_point(cpus: frozenset[int]) -> None:
    text = format_cpulist(cpus)
    assert format_cpulist(parse_cpulist(text)) == text


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8,10-11", (0, 1, 2, 3, 8, 10, 11)),
        ("0-55,112-167\n", tuple(range(56)) + tuple(range(112, 168))),
        ("", ()),
        (" \n", ()),
        ("5", (5,)),
        ("3, 1-2", (1, 2, 3)),
        ("1,1,0-1", (0, 1)),
    ],
)
def test_cpulist_parses_kernel_text(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-a", r"cpulist '0-a': '0-a' is not 'N' or 'N-M'"),
        ("3-1", r"cpulist '3-1': range '3-1' runs backwards"),
        ("0,,2", r"cpulist '0,,2': '' is not"),
        ("-1", r"'-1' is not"),
        ("1-2-3", r"'1-2-3' is not"),
    ],
)
def test_malformed_cpulist_raises_naming_the_input(text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        parse_cpulist(text)


def test_grammar_error_is_a_value_error() -> None:
    assert issubclass(GrammarError, ValueError)


BUS_IDS = st.builds(
    "{}{:02x}:{:02x}.{}".format,
    st.sampled_from(["", "0000:", "00000000:", "0001:", "10000:"]),
    st.integers(0, 255),
    st.integers(0, 31),
    st.integers(0, 7),
).flatmap(lambda text: st.sampled_from([text, text.upper(), f" {text}\n"]))


@given(BUS_IDS)
def test_bus_id_normalising_is_idempotent(text: str) -> None:
    once = normalize_bus_id(text)
    assert normalize_bus_id(once) == once
    assert once == once.lower()


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("00000000:18:00.0", "0000:18:00.0"),  # NVML
        ("00000000:CA:00.0", "0000:ca:00.0"),
        ("0000:ca:00.0", "0000:ca:00.0"),  # sysfs
        ("1b:00.0", "0000:1b:00.0"),  # lspci, profiles
        ("10000:e1:00.0", "10000:e1:00.0"),  # Intel VMD domain
    ],
)
def test_bus_id_spellings_become_the_sysfs_form(text: str, normal: str) -> None:
    assert normalize_bus_id(text) == normal


@pytest.mark.parametrize("text", ["1b:00", "", "0000:18:00.8", "000000000:18:00.0", "zz:00.0"])
def test_malformed_bus_id_raises_naming_the_input(text: str) -> None:
    with pytest.raises(GrammarError, match=f"PCI bus id {text!r} is not"):
        normalize_bus_id(text)


def test_split_bus_id_gives_domain_bus_device() -> None:
    assert split_bus_id("0000:ca:01.0") == (0, 0xCA, 1)
    assert split_bus_id("00000000:18:00.0") == (0, 0x18, 0)
