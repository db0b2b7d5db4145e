"""Hostile quantities: Kubernetes' grammar and limits, and a bounded answer for any text.

Nothing here is timed. Boundedness is shown by what comes back: every parse is a multiple of
1n at most 2^63-1 in magnitude (so the arithmetic that made it was on numbers of that size),
every accounted amount at most MAX_AMOUNT, and a pod with ``cpu: 1e9999999`` costs a node
exactly MAX_AMOUNT millicores, never an int64 wrap.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.model import parse_int64, parse_node, parse_pod
from gputopo.scheduler.quantity import (
    INT64_MAX,
    MAX_AMOUNT,
    MAX_QUANTITY,
    NANO,
    parse_quantity,
    quantity_milli_value,
    quantity_value,
    resource_amount,
)
from gputopo.scheduler.snapshot import ClusterSnapshot


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e9999999", MAX_QUANTITY),  # issue 16: 7 s of scheduler time per event
        ("1e99999999", MAX_QUANTITY),  # issue 17: simulate never ended
        ("1e400", MAX_QUANTITY),
        ("-1e400", -MAX_QUANTITY),
        ("99E", MAX_QUANTITY),  # overflows int64 in Go's accessors
        ("8Ei", MAX_QUANTITY),  # ParseQuantity's own binary-SI cap
        ("9E", Fraction(9 * 10**18)),
        ("1" * 5000, MAX_QUANTITY),
        ("1e-99999999", NANO),  # rounded away from zero to 1n
        ("1e-400", NANO),
        ("0.0000000011", 2 * NANO),
        ("0e99999999", Fraction(0)),
        ("-0", Fraction(0)),
        ("1.", Fraction(1)),
        ("1e+3", Fraction(1000)),
        ("1e4294967296", Fraction(1)),  # apimachinery's int32(exponent): 2^32 wraps to 0
        ("1e2147483648", NANO),  # ... and 2^31 to -2^31
        ("0." + "9" * 100_000, Fraction(1)),
        ("1." + "0" * 5000 + "1Ki", Fraction(1024) + NANO),
        (10**40, MAX_QUANTITY),  # a Python int from a caller without the document limits
        (1e300, MAX_QUANTITY),
        (5e-324, NANO),
    ],
)
def test_hostile_quantity_saturates_or_rounds_like_kubernetes(
    text: object, expected: Fraction
) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1e99999999999999999999", "exponent out of the int64 range"),
        ("1e" + "9" * 5000, "exponent out of the int64 range"),
        ("1e", "unknown suffix 'e'"),
        ("1e+", "unknown suffix"),
        ("1e3.5", "unknown suffix"),
        ("1ee3", "unknown suffix"),
        ("1k3", "unknown suffix"),
        ("+", "invalid quantity '+'"),
        (".", "invalid quantity '.'"),
        ("\uff11", "invalid quantity"),  # a full-width digit one is not [0-9]
        ("1\n", "unknown suffix"),
        ("1" * 5000 + "x", "unknown suffix 'x'"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ([1], "of type list"),
        ({"a": 1}, "of type dict"),
    ],
)
def test_hostile_quantity_outside_the_grammar_is_one_short_error(
    text: object, problem: str
) -> None:
    with pytest.raises(SchedulerInputError) as error:
        parse_quantity(text)
    message = str(error.value)
    assert message.startswith("invalid quantity")
    assert problem in message
    assert "\n" not in message and len(message) < 200


def test_accounted_amounts_saturate_at_max_amount() -> None:
    assert resource_amount("cpu", "1e9999999") == MAX_AMOUNT
    assert resource_amount("memory", "1e9999999") == MAX_AMOUNT
    assert resource_amount("cpu", "9E") == MAX_AMOUNT  # the integer fast path saturates too
    assert resource_amount("memory", "3Ei") == quantity_value("3Ei") == MAX_AMOUNT
    assert quantity_milli_value("1e400") == MAX_AMOUNT
    assert resource_amount("memory", str(2**50 - 1)) == 2**50 - 1
    assert resource_amount("cpu", 10**40) == MAX_AMOUNT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("-5", -5),
        ("+5", 5),
        ("00000000000000000000000000005", 5),
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MAX + 1), None),
        ("9" * 5000, None),  # a 5000-digit Gt value: refused before it is a number
        ("5\n", None),
        ("", None),
        ("1e3", None),
    ],
)
def test_gt_lt_values_parse_as_int64_or_never_match(text: str, expected: int | None) -> None:
    assert parse_int64(text) == expected


def _node(cpu: str) -> dict[str, object]:
    return {
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"}},
    }


def _pod(name: str, cpu: str, node: str | None = "n1") -> dict[str, object]:
    spec: dict[str, object] = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
    }
    if node is not None:
        spec["nodeName"] = node
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_runtime_pod_with_hostile_cpu_costs_a_node_max_amount_and_never_wraps() -> None:
    """Issue 16 item 4: the pod the apiserver stores with ``cpu: "1e9999999"``, pinned with
    spec.nodeName, is load like any pod: MAX_AMOUNT millicores, a bounded integer."""
    hostile = parse_pod(_pod("hostile", "1e9999999"))
    assert hostile.requests["cpu"] == MAX_AMOUNT
    snapshot = ClusterSnapshot()
    snapshot.add_node(_node("8"))
    for index in range(3):  # three of them delayed the first bind by 22 s
        snapshot.add_pod(_pod(f"hostile-{index}", "1e9999999"))
    allocatable, requested = snapshot.resource_arrays("cpu")
    slot = snapshot.slot_of("n1")
    assert slot is not None
    assert int(requested[slot]) == 3 * MAX_AMOUNT  # no wrap: still far below int64
    assert int(allocatable[slot] - requested[slot]) < 0  # the node is full, not free


def test_node_with_hostile_capacity_is_bounded() -> None:
    node = parse_node(_node("1e99999999"))
    assert node.allocatable["cpu"] == MAX_AMOUNT


_QUANTITY_ALPHABET = "0123456789+-.eEinumkKMGTPi"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=_QUANTITY_ALPHABET, max_size=40))
def test_any_text_from_the_quantity_alphabet_parses_bounded_or_is_refused(text: str) -> None:
    try:
        value = parse_quantity(text)
    except SchedulerInputError as error:
        assert str(error).startswith("invalid quantity")
        return
    assert abs(value) <= MAX_QUANTITY
    assert (value / NANO).denominator == 1  # a whole number of nano
    for name in ("cpu", "memory", "nvidia.com/gpu"):
        assert abs(resource_amount(name, text)) <= MAX_AMOUNT


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mantissa=st.from_regex(r"[0-9]{1,30}(\.[0-9]{0,30})?", fullmatch=True),
    exponent=st.one_of(
        st.integers(-40, 40),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([-(2**31), 2**31 - 1, 2**31, 2**32, -(2**32), 2**63 - 1, -(2**63)]),
    ),
)
def test_numbers_at_the_edges_agree_with_exact_arithmetic(mantissa: str, exponent: int) -> None:
    """Within the window where no limit applies the result is exact; outside it, the cap."""
    value = parse_quantity(f"{mantissa}e{exponent}")
    wrapped = (exponent + 2**31) % 2**32 - 2**31
    if -40 <= wrapped <= 40:
        exact = Fraction(mantissa) * Fraction(10) ** wrapped
        if exact == 0:
            assert value == 0
        elif exact >= MAX_QUANTITY:
            assert value == MAX_QUANTITY
        else:
            nanos = -((-exact.numerator * 10**9) // exact.denominator)
            assert value == Fraction(nanos, 10**9)
    else:
        assert value in (0, NANO, MAX_QUANTITY)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)))
def test_yaml_numbers_parse_bounded_or_are_refused(number: float) -> None:
    try:
        value = parse_quantity(number)
    except SchedulerInputError:
        return
    assert abs(value) <= MAX_QUANTITY


def test_runtime_core_schedules_around_hostile_pods_like_any_other() -> None:
    """The running scheduler's core (what `run` and the extender call per event): the hostile
    bound pod fills its node, a hostile pending pod is unschedulable with the usual reason, and
    a normal pod goes to the other node."""
    from gputopo.scheduler.runtime.core_adapter import CoreFramework

    core = CoreFramework()
    core.upsert_node(_node("8"))
    other = _node("8")
    other["metadata"] = {"name": "n2", "labels": {"kubernetes.io/hostname": "n2"}}
    core.upsert_node(other)
    core.upsert_pod(_pod("hostile", "1e9999999"))
    pending = core.schedule(_pod("huge", "1e9999999", node=None))
    assert pending.node_name is None
    assert "Insufficient cpu" in pending.message
    normal = core.schedule(_pod("normal", "1", node=None))
    assert normal.node_name == "n2"
