"""The validation gate: every key and value it emits is valid, for any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gputopo.core.validate import (
    VALUE_MAX,
    ValidationCounter,
    ValidationError,
    ValidationGate,
    is_label_value,
    is_qualified_name,
    repair_key,
    repair_value,
)

any_text = st.text(max_size=400)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.one_of(any_text, ascii_text))
def test_repaired_value_is_always_valid(value: str) -> None:
    assert is_label_value(repair_value(value))


@settings(max_examples=300, deadline=None)
@given(st.one_of(any_text, ascii_text))
def test_repaired_key_is_always_valid(key: str) -> None:
    assert is_qualified_name(repair_key(key))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.one_of(any_text, ascii_text), st.one_of(any_text, ascii_text), max_size=8)
)
def test_gate_emits_only_valid_labels(labels: dict[str, str]) -> None:
    gate = ValidationGate()
    try:
        result = gate.labels(labels)
    except ValidationError as error:
        assert "both become" in str(error)  # two inputs repaired onto one key: refused, not lost
        return
    assert len(result) == len(labels)
    for key, value in result.items():
        assert is_qualified_name(key)
        assert is_label_value(value)


@settings(max_examples=200, deadline=None)
@given(ascii_text, ascii_text)
def test_gate_emits_only_valid_taints(key: str, value: str) -> None:
    taint = ValidationGate().taint(key, value, "NoSchedule")
    assert is_qualified_name(taint.key)
    assert is_label_value(taint.value)


@settings(deadline=None)
@given(any_text)
def test_repair_is_deterministic(value: str) -> None:
    assert repair_value(value) == repair_value(value)
    assert repair_key(value) == repair_key(value)


def test_valid_input_passes_unchanged() -> None:
    gate = ValidationGate()
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "gputopo.io/sla": "1000"}
    assert gate.labels(labels) == labels
    assert gate.counter.snapshot() == {
        "keys_repaired": 0,
        "values_repaired": 0,
        "values_shortened": 0,
        "annotations_rejected": 0,
    }
    assert gate.repairs == []


def test_overlong_value_is_shortened_with_readable_prefix_and_hash() -> None:
    long_value = "NVIDIA-" + "X" * 100
    repaired = repair_value(long_value)
    assert len(repaired) <= VALUE_MAX
    assert repaired.startswith("NVIDIA-XXXX")
    assert repaired != repair_value("NVIDIA-" + "X" * 101)  # the hash keeps them apart


def test_invalid_characters_are_replaced_and_counted() -> None:
    counter = ValidationCounter()
    gate = ValidationGate(counter)
    result = gate.labels({"gputopo.io/model": "GeForce RTX 4090 (rev a1)"})
    assert result == {"gputopo.io/model": "GeForce_RTX_4090__rev_a1"}
    assert counter.values_repaired == 1
    assert gate.repairs[0].original == "GeForce RTX 4090 (rev a1)"


def test_overlong_value_is_counted_as_shortened(caplog: pytest.LogCaptureFixture) -> None:
    gate = ValidationGate()
    gate.labels({"gputopo.io/x": "a" * 64})
    assert gate.counter.values_shortened == 1
    assert "publishing" in caplog.text


def test_invalid_key_name_is_repaired_with_hash() -> None:
    assert repair_key("nvidia.com/mig-1g.10gb+me.count") == repair_key(
        "nvidia.com/mig-1g.10gb+me.count"
    )
    repaired = repair_key("nvidia.com/mig-1g.10gb+me.count")
    assert repaired.startswith("nvidia.com/mig-1g.10gb_me.count-")
    assert is_qualified_name(repaired)


def test_bad_taint_effect_is_refused_with_the_effect_named() -> None:
    with pytest.raises(ValidationError, match="'Sometimes'"):
        ValidationGate().taint("gputopo.io/sla", "900", "Sometimes")


def test_annotations_over_the_size_limit_are_refused_and_counted() -> None:
    gate = ValidationGate()
    with pytest.raises(ValidationError, match="262144-byte limit"):
        gate.annotations({"gputopo.io/topology": "x" * 300_000}, {})
    assert gate.counter.annotations_rejected == 1


def test_qualified_name_rules() -> None:
    assert is_qualified_name("a")
    assert is_qualified_name("example.com/a-b_c.d")
    assert not is_qualified_name("Example.com/a")  # prefix must be lower case
    assert not is_qualified_name("/a")
    assert not is_qualified_name("a/")
    assert not is_qualified_name("-a")
    assert not is_qualified_name("a" * 64)
    assert is_label_value("")
    assert not is_label_value("a" * 64)
