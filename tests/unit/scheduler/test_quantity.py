from fractions import Fraction

import pytest

from gputopo.scheduler.quantity import (
    parse_quantity,
    quantity_milli_value,
    quantity_value,
    resource_amount,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100m", Fraction(1, 10)),
        ("1", Fraction(1)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1Ki", Fraction(1024)),
        ("1Ei", Fraction(2**60)),
        ("2k", Fraction(2000)),
        ("1M", Fraction(10**6)),
        ("1E", Fraction(10**18)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("129e6", Fraction(129 * 10**6)),
        ("5e-3", Fraction(5, 1000)),
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("+2", Fraction(2)),
        ("-2", Fraction(-2)),
        (8, Fraction(8)),
        (0.5, Fraction(1, 2)),
    ],
)
def test_quantity_grammar_parses_exactly(text: object, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text", ["1x", "", "K", "1K", "1.2.3", "Gi", " 1", "1 ", "1Gib", True, None]
)
def test_quantity_outside_grammar_is_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)


def test_values_round_up_like_apimachinery() -> None:
    assert quantity_milli_value("1n") == 1  # MilliValue rounds up
    assert quantity_milli_value("0.1") == 100
    assert quantity_milli_value("1.0005") == 1001
    assert quantity_value("100m") == 1
    assert quantity_value("1.5") == 2
    assert quantity_value("128974848") == 128974848


def test_no_float_drift_on_many_small_cpu_requests() -> None:
    total = sum(resource_amount("cpu", "0.1") for _ in range(10))
    assert total == resource_amount("cpu", "1")


def test_cpu_is_accounted_in_millicores_everything_else_in_units() -> None:
    assert resource_amount("cpu", "2") == 2000
    assert resource_amount("memory", "1Gi") == 2**30
    assert resource_amount("nvidia.com/gpu", "8") == 8


@pytest.mark.parametrize("name", ["cpu", "memory", "nvidia.com/gpu"])
@pytest.mark.parametrize(
    "text",
    ["0", "8", "08", "100m", "1500m", "1m", "16Gi", "512Mi", "1Ki", "3Ei", "2k", "7M", "1G",
     "4T", "1P", "2E", "1n", "5u", "1e3", "1E3", "+2", "0.5", ".5", "1.5Gi", 12, 0],
)  # fmt: skip
def test_integer_fast_path_agrees_with_exact_parsing(name: str, text: object) -> None:
    exact = quantity_milli_value(text) if name == "cpu" else quantity_value(text)
    assert resource_amount(name, text) == exact


@pytest.mark.parametrize("text", ["", "1mi", "1kE", "1Gib", "١٢", "1 Gi", True])
def test_integer_fast_path_rejects_what_the_grammar_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        resource_amount("memory", text)
